// Offers: dropout on m16n8 fp32 accumulator fragments with exactly the mapping of
// csrc/common/philox.h: one philox4x32-10 call per thread per (m-tile, n-tile), covering rows
// (r, r + 8) x cols (c, c + 1), with r = row0 + 16 mt + g (r % 16 < 8 because row0 % 16 == 0)
// and c = col0 + 8 nt + 2 t (even). Words: c0 -> x (r, c), c1 -> y (r, c+1), c2 -> z (r+8, c),
// c3 -> w (r+8, c+1), which is dropout_word_index for each element.
#pragma once

#include <cstdint>

#include "common/philox.h"

namespace flash::sm80 {

struct DropoutState {
  uint64_t seed, offset;
  uint32_t bh;              // batch * nheads + head
  uint32_t keep_threshold;  // keep iff word < threshold
};

// kNegate false: dropped elements become 0 (the forward P). true: dropped elements are negated
// (the S_dmask debug output). Row/col positions are inside the sequence; row0 % 16 == 0.
// Two phases to bound register use: a rolled loop draws the words and packs the drop decisions
// into a 64-bit mask (unrolled, ptxas would interleave all MT*NT philox chains and spill), then an
// unrolled loop applies the mask to the register fragments.
template <bool kNegate, int MT, int NT>
__device__ __forceinline__ void apply_dropout(float (&s)[MT][NT][4], const DropoutState& d, int row0,
                                              int col0, int lane) {
  static_assert(MT * NT * 4 <= 64, "drop mask must fit 64 bits");
  const uint32_t g = lane >> 2, t = lane & 3;
  uint64_t drop = 0;
#pragma unroll 1
  for (int i = 0; i < MT * NT; ++i) {
    const int mt = i / NT, nt = i % NT;
    const uint32_t r = static_cast<uint32_t>(row0 + mt * 16) + g;
    const uint32_t c = static_cast<uint32_t>(col0 + nt * 8) + 2u * t;
    const Philox4 w = dropout_group_bits(d.seed, d.offset, d.bh, r, c);
    const uint64_t bits = (w.x >= d.keep_threshold ? 1u : 0u) | (w.y >= d.keep_threshold ? 2u : 0u) |
                          (w.z >= d.keep_threshold ? 4u : 0u) | (w.w >= d.keep_threshold ? 8u : 0u);
    drop |= bits << (4 * i);
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if ((drop >> (4 * (mt * NT + nt) + e)) & 1u) s[mt][nt][e] = kNegate ? -s[mt][nt][e] : 0.f;
      }
}

}  // namespace flash::sm80
