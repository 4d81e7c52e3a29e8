// Dropout of the sm90 forward: the keep mask of common/philox.h applied to one thread's
// probabilities, in registers, between the softmax and the P V GEMM.
//
// The wgmma accumulator gives a thread rows (r, r + 8) x columns (c, c + 1) of every 8-column
// group, with r % 16 < 8 -- exactly one Philox group of philox.h, whose four words are
// (r, c), (r, c + 1), (r + 8, c), (r + 8, c + 1) in that order. So one Philox call per column
// pair covers four probabilities. The row sums were taken before the mask (dropout scales the
// normalised probabilities), and the 1 / (1 - p) factor is applied once to O at the end.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "common/philox.h"

namespace flash::sm90 {

struct DropoutArgs {
  uint64_t seed, offset;
  uint32_t bh;              // batch * nheads + head
  uint32_t keep_threshold;  // dropout_keep_threshold(p)
};

// S: rowcol view (2 rows x C columns) of the probabilities; cS: the same view of the tile
// coordinates; row0 / col0: sequence position of the tile's first row / the block's first key.
template <typename TS, typename TC>
__device__ __forceinline__ void apply_dropout(TS& S, TC const& cS, int row0, int col0,
                                              const DropoutArgs& d) {
  using namespace cute;
  static_assert(decltype(size<0>(S))::value == 2, "expects rows r and r + 8 of one wgmma atom");
  static_assert(decltype(size<1>(S))::value % 2 == 0, "expects column pairs");
  const uint32_t row = uint32_t(row0 + get<0>(cS(0, 0)));  // r; r + 8 is row 1 of the view
  CUTE_UNROLL
  for (int c = 0; c < size<1>(S); c += 2) {
    const uint32_t col = uint32_t(col0 + get<1>(cS(0, c)));  // even; c + 1 is the next column
    const Philox4 w = dropout_group_bits(d.seed, d.offset, d.bh, row, col);
    if (w.x >= d.keep_threshold) S(0, c) = 0.f;
    if (w.y >= d.keep_threshold) S(0, c + 1) = 0.f;
    if (w.z >= d.keep_threshold) S(1, c) = 0.f;
    if (w.w >= d.keep_threshold) S(1, c + 1) = 0.f;
  }
}

}  // namespace flash::sm90
