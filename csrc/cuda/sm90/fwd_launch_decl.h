// Declaration of the per-(dtype, head_dim) launchers; definitions are instantiated in inst/.
// Light: fwd_api.cu includes only this, so the dispatcher does not compile any kernel.
#pragma once

#include <cuda_runtime.h>

#include "flash/params.h"

namespace flash::sm90 {

// kAltTile: the opt-in second tile of the head dim (fwd_traits.h: d=128 128 x 176, d=64 192 x 128).
template <typename Element, int kHeadDim, bool kAltTile = false>
void run_fwd_hdim(const FwdParams& params, cudaStream_t stream);

}  // namespace flash::sm90
