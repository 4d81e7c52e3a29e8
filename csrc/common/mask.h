// The visibility rule and score modifiers of the semantic contract, in one place for every backend.
// Positions are relative to each sequence: row i in [0, seqlen_q), key j in [0, seqlen_k).
#pragma once

#include <climits>
#include <cmath>
#include <cstdint>

#include "hostdevice.h"

namespace flash {

struct MaskRule {
  int seqlen_q;
  int seqlen_k;
  int window_left;   // -1: unbounded (causal is window_right == 0)
  int window_right;  // -1: unbounded

  // Key j relative to the bottom-right-aligned diagonal of row i.
  FLASH_HD int diag_offset(int i, int j) const { return j - (i + seqlen_k - seqlen_q); }

  FLASH_HD bool visible(int i, int j) const {
    if (j < 0 || j >= seqlen_k) return false;
    const int d = diag_offset(i, j);
    if (window_left >= 0 && d < -window_left) return false;
    if (window_right >= 0 && d > window_right) return false;
    return true;
  }

  // First visible key of row i (may exceed last_key when the row sees nothing).
  FLASH_HD int first_key(int i) const {
    if (window_left < 0) return 0;
    const int j = i + seqlen_k - seqlen_q - window_left;
    return j < 0 ? 0 : j;
  }
  // One past the last visible key of row i.
  FLASH_HD int end_key(int i) const {
    if (window_right < 0) return seqlen_k;
    const int j = i + seqlen_k - seqlen_q + window_right + 1;
    return j > seqlen_k ? seqlen_k : (j < 0 ? 0 : j);
  }
};

// softcap c > 0: c * tanh(s / c), applied to the already-scaled score.
FLASH_HD float apply_softcap(float scaled_score, float softcap) {
  return softcap > 0.f ? softcap * tanhf(scaled_score / softcap) : scaled_score;
}

// ALiBi bias added to the (scaled, softcapped) score: -slope * |i + sk - sq - j|.
FLASH_HD float alibi_bias(float slope, const MaskRule& m, int i, int j) {
  const int d = m.diag_offset(i, j);
  return -slope * static_cast<float>(d < 0 ? -d : d);
}

// MaskRule::visible for keys j >= 0 without branches. visible() short-circuits, and ptxas made that
// two branches + BSSY / BSYNC around every score of the sm90 backward's P^T loop, even on blocks that
// need no mask (session 5). The window becomes bounds lo / hi on diag_offset.
struct BranchFreeMask {
  int seqlen_k, shift, lo, hi;
  FLASH_HD explicit BranchFreeMask(const MaskRule& r)
      : seqlen_k(r.seqlen_k), shift(r.seqlen_k - r.seqlen_q),
        lo(r.window_left >= 0 ? -r.window_left : INT_MIN),
        hi(r.window_right >= 0 ? r.window_right : INT_MAX) {}
  FLASH_HD bool visible(int row, int key) const {
    const int d = key - (row + shift);
    return (key < seqlen_k) & (d >= lo) & (d <= hi);
  }
};

}  // namespace flash
