// Declaration of the per-(dtype, head_dim) launchers; definitions are instantiated in inst/.
// Light: fwd_api.cu includes only this, so the dispatcher does not compile any kernel.
#pragma once

#include <cuda_runtime.h>

#include "flash/params.h"

namespace flash::sm90 {

// kTile: 0 = the head dim's default tile; 1, 2 = the alternatives of fwd_traits.h (d=128: 128 x 176,
// 128 x 128 with 3 stages; d=64: 192 x 128).
template <typename Element, int kHeadDim, int kTile = 0>
void run_fwd_hdim(const FwdParams& params, cudaStream_t stream);

}  // namespace flash::sm90
