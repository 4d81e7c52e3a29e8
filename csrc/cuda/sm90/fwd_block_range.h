// Which key blocks a query tile must visit, and which of them need element-wise masking.
// Shared by the producer (what to load) and the consumers (what to compute) so both walk the
// exact same sequence of blocks: a mismatch would deadlock the mbarrier pipeline.
#pragma once

#include "common/mask.h"

namespace flash::sm90 {

struct KeyBlockRange {
  int n_min;  // first key block (inclusive)
  int n_max;  // last key block (exclusive); n_max <= n_min: the tile sees no key at all
};

template <int kBlockM, int kBlockN>
__device__ __forceinline__ KeyBlockRange key_block_range(const MaskRule& rule, int m_block) {
  const int row_lo = m_block * kBlockM;
  const int row_hi = min(row_lo + kBlockM, rule.seqlen_q) - 1;
  // Visible keys of the tile = union over its rows; first_key/end_key are monotone in the row.
  const int key_lo = min(rule.first_key(row_lo), rule.seqlen_k);
  const int key_hi = rule.end_key(row_hi);
  KeyBlockRange r;
  r.n_min = key_lo / kBlockN;
  r.n_max = (key_hi + kBlockN - 1) / kBlockN;
  return r;
}

// The same for the rows [row_lo, row_lo + rows) of one consumer warpgroup (rows past seqlen_q
// excluded; none left: an empty range). A subset of its tile's range: the blocks outside it are
// fully masked for these rows (FwdTraits::kWgBlockSkip).
template <int kBlockN>
__device__ __forceinline__ KeyBlockRange key_block_range_rows(const MaskRule& rule, int row_lo,
                                                              int rows) {
  const int row_hi = min(row_lo + rows, rule.seqlen_q) - 1;
  if (row_hi < row_lo) return KeyBlockRange{0, 0};
  const int key_lo = min(rule.first_key(row_lo), rule.seqlen_k);
  const int key_hi = rule.end_key(row_hi);
  KeyBlockRange r;
  r.n_min = key_lo / kBlockN;
  r.n_max = (key_hi + kBlockN - 1) / kBlockN;
  return r;
}

// True when some (row, key) pair of the tile x block is invisible: then every element is tested.
template <int kBlockM, int kBlockN>
__device__ __forceinline__ bool block_needs_mask(const MaskRule& rule, int m_block, int n_block) {
  const int row_lo = m_block * kBlockM, row_hi = row_lo + kBlockM - 1;
  const int key_lo = n_block * kBlockN, key_hi = key_lo + kBlockN - 1;
  const int shift = rule.seqlen_k - rule.seqlen_q;  // bottom-right alignment
  if (key_hi >= rule.seqlen_k) return true;                                    // tail keys
  if (rule.window_right >= 0 && key_hi > row_lo + shift + rule.window_right) return true;
  if (rule.window_left >= 0 && key_lo < row_hi + shift - rule.window_left) return true;
  return false;
}

}  // namespace flash::sm90
