// Offers: element-wise score modifiers and the visibility mask applied directly on m16n8 fp32
// accumulator fragments (C layout, see sm80_mma.cuh), for every Ampere-class kernel.
//
// Element (mt, nt, e) of a thread (lane = 4 g + t) sits at
//   row = row0 + 16 mt + g + 8 (e >> 1),   col = col0 + 8 nt + 2 t + (e & 1),
// where row0 / col0 are the positions (inside the sequence) of the warp's first row / the tile's
// first key. The rule itself is flash::MaskRule (csrc/common/mask.h), shared with the CPU backend.
#pragma once

#include <climits>
#include <cstdint>

#include "common/mask.h"

namespace flash::sm80 {

struct FragCoord {
  int g, t;
  __device__ __forceinline__ explicit FragCoord(int lane) : g(lane >> 2), t(lane & 3) {}
  __device__ __forceinline__ int row(int row0, int mt, int e) const { return row0 + mt * 16 + g + 8 * (e >> 1); }
  __device__ __forceinline__ int col(int col0, int nt, int e) const { return col0 + nt * 8 + 2 * t + (e & 1); }
};

// s <- scale * s, then softcap (c * tanh(s / c)), then ALiBi (- slope * |i + sk - sq - j|).
// Only called when softcap or ALiBi is on; otherwise the scale is folded into the exp2 FFMA.
// Positions are written as one per-thread base plus compile-time offsets, so nothing per element
// is hoisted out of the key loop (that cost ~64 registers and spills).
template <int MT, int NT>
__device__ __forceinline__ void apply_score_mods(float (&s)[MT][NT][4], float scale, float softcap,
                                                 bool has_alibi, float slope, const MaskRule& rule,
                                                 int row0, int col0, int lane) {
  const FragCoord fc(lane);
  const float inv_cap = softcap > 0.f ? 1.f / softcap : 0.f;
  // diag_offset(row, col) = d_base + (col offset) - (row offset).
  const int d_base = rule.diag_offset(row0 + fc.g, col0 + 2 * fc.t);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[mt][nt][e] * scale;
        if (softcap > 0.f) x = softcap * tanhf(x * inv_cap);
        if (has_alibi) {
          const int d = d_base + (nt * 8 + (e & 1)) - (mt * 16 + 8 * (e >> 1));
          x -= slope * static_cast<float>(d < 0 ? -d : d);
        }
        s[mt][nt][e] = x;
      }
}

// Sets invisible elements to -inf: exactly MaskRule::visible (col0 >= 0, so j >= 0 holds).
// key_ok (nullable, shared memory; the flag of key col0 + k is key_ok[k * key_ok_stride]) marks
// keys whose page exists; keys on a missing page are invisible.
template <int MT, int NT>
__device__ __forceinline__ void apply_visibility(float (&s)[MT][NT][4], const MaskRule& rule, int row0,
                                                 int col0, const uint8_t* key_ok, int key_ok_stride,
                                                 int lane) {
  const FragCoord fc(lane);
  const int j_base = col0 + 2 * fc.t;
  const int d_base = rule.diag_offset(row0 + fc.g, j_base);
  const int d_lo = rule.window_left >= 0 ? -rule.window_left : INT_MIN;
  const int d_hi = rule.window_right >= 0 ? rule.window_right : INT_MAX;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int cj = nt * 8 + (e & 1);
        const int d = d_base + cj - (mt * 16 + 8 * (e >> 1));
        bool vis = j_base + cj < rule.seqlen_k && d >= d_lo && d <= d_hi;
        if (key_ok != nullptr) vis = vis && key_ok[(2 * fc.t + cj) * key_ok_stride] != 0;
        if (!vis) s[mt][nt][e] = -INFINITY;
      }
}

// Whether every element of the block rows [m_lo, m_hi] x keys [n0, n0 + n_len) is visible, so
// the element mask can be skipped (the rule's first_key/end_key are monotone in the row).
__device__ __forceinline__ bool block_fully_visible(const MaskRule& rule, int m_lo, int m_hi, int n0,
                                                    int n_len) {
  return n0 + n_len <= rule.seqlen_k && rule.first_key(m_hi) <= n0 &&
         rule.end_key(m_lo) >= n0 + n_len;
}

}  // namespace flash::sm80
