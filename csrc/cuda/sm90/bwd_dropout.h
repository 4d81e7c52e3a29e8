// Dropout keep bits of the sm90 backward: the forward's mask (common/philox.h), regenerated for
// the TRANSPOSED tile the backward holds (keys along the wgmma's M, queries along N).
//
// The S^T accumulator gives a thread keys (k, k + 8) (rows of the view) and, per 16 queries,
// queries (q, q + 1, q + 8, q + 9) with q = 16 j + 2 t. One Philox group of philox.h covers
// queries (q', q' + 8) x keys (2 kp, 2 kp + 1) (q' % 16 < 8): words x = (q', even key),
// y = (q', odd key), z = (q' + 8, even key), w = (q' + 8, odd key). So a thread needs two words
// of each of its groups, and the other two belong to the lane holding the neighbouring key, lane ^ 4
// (same queries, key k ^ 1). Both lanes need the same groups: each computes half of them (the
// queries with q' % 2 == its key parity), keeps its own words' keep bits and sends the partner's
// through ONE shuffle of a bit mask. Cost per thread: one Philox call per 4 elements, as in the
// forward.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "common/philox.h"

namespace flash::sm90 {

// Keep bits of one thread's S^T fragment for one step.
// bit (r * kJ + j) * 2 + h of keep[e]: key row r (0: k, 1: k + 8), queries 16 j + 2 t + e + 8 h.
struct BwdDropoutBits {
  uint32_t keep[2];
};

// cS: rowcol view of the (key, query) tile coordinates of this thread's S^T values (2 x kCols);
// key0 / row0: sequence positions of the CTA's first key / the step's first query.
template <int kCols, typename TC>
__device__ __forceinline__ BwdDropoutBits bwd_dropout_bits(const TC& cS, int key0, int row0,
                                                           uint64_t seed, uint64_t offset,
                                                           uint32_t bh, uint32_t keep_threshold) {
  using namespace cute;
  constexpr int kJ = kCols / 4;  // groups of 16 queries
  static_assert(kCols % 4 == 0 && 2 * kJ * 2 <= 32, "bit masks hold 32 groups");
  const int key_r0 = key0 + get<0>(cS(0, 0));
  const uint32_t parity = uint32_t(key_r0) & 1u;  // k and k + 8 share it
  uint32_t mine = 0, theirs = 0;
  CUTE_UNROLL
  for (int r = 0; r < 2; ++r) {
    const uint32_t key = uint32_t(key0 + get<0>(cS(r, 0)));
    CUTE_UNROLL
    for (int j = 0; j < kJ; ++j) {
      // Column 4j + e of the view is query 16 j + 2 t + e; this lane computes e = parity.
      const uint32_t q = uint32_t(row0 + get<1>(cS(0, 4 * j))) + parity;
      const Philox4 w = dropout_group_bits(seed, offset, bh, q, key);
      const uint32_t lo_mine = parity ? w.y : w.x, hi_mine = parity ? w.w : w.z;
      const uint32_t lo_their = parity ? w.x : w.y, hi_their = parity ? w.z : w.w;
      const int bit = (r * kJ + j) * 2;
      mine |= (uint32_t(lo_mine < keep_threshold) << bit) | (uint32_t(hi_mine < keep_threshold) << (bit + 1));
      theirs |= (uint32_t(lo_their < keep_threshold) << bit) |
                (uint32_t(hi_their < keep_threshold) << (bit + 1));
    }
  }
  // The partner (lane ^ 4) computed the other query parity of the same groups.
  const uint32_t received = __shfl_xor_sync(0xffffffffu, theirs, 4);
  BwdDropoutBits b;  // (selects, not a runtime-indexed store: keeps the array in registers)
  b.keep[0] = parity ? received : mine;
  b.keep[1] = parity ? mine : received;
  return b;
}

// Whether element (r, c) of the rowcol view is kept (c: column of the view).
template <int kCols>
__device__ __forceinline__ bool bwd_dropout_kept(const BwdDropoutBits& b, int r, int c) {
  constexpr int kJ = kCols / 4;
  const int bit = (r * kJ + c / 4) * 2 + ((c / 2) & 1);
  return (b.keep[c & 1] >> bit) & 1u;
}

}  // namespace flash::sm90
