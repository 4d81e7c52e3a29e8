// P^T = exp2(S^T * scale_log2 - lse_log2) for the lean (no softcap / ALiBi / dropout) sm90 backward
// consumers (d64/d96/d128 and d192/d256): one uniform branch around a select-only mask pass, then a
// straight-line exp2 pass. A per-score branching mask test cost ~20 instructions per score (session 5).
#pragma once

#include <cmath>

#include <cute/tensor.hpp>

#include "common/mask.h"
#include "fwd_softmax.h"  // fast_exp2

namespace flash::sm90 {

// S, cS: (keys of this thread, queries of this thread) register tile and its coordinates;
// row0 / key0: the tile's first query / key; lse_log2: per query of the tile, in smem.
template <typename TensorS, typename TensorC>
__device__ __forceinline__ void scores_to_probs_t(TensorS& S, const TensorC& cS, int row0, int key0,
                                                  const BranchFreeMask& mask, bool need_mask,
                                                  const float* lse_log2, float scale_log2) {
  using namespace cute;
  if (need_mask) {  // uniform per step
    CUTE_UNROLL
    for (int c = 0; c < size<1>(S); ++c) {
      const int row = row0 + get<1>(cS(0, c));
      CUTE_UNROLL
      for (int r = 0; r < size<0>(S); ++r)
        S(r, c) = mask.visible(row, key0 + get<0>(cS(r, c))) ? S(r, c) : -INFINITY;
    }
  }
  CUTE_UNROLL
  for (int c = 0; c < size<1>(S); ++c) {
    const float lse = lse_log2[get<1>(cS(0, c))];
    CUTE_UNROLL
    for (int r = 0; r < size<0>(S); ++r) S(r, c) = fast_exp2(S(r, c) * scale_log2 - lse);
  }
}

}  // namespace flash::sm90
