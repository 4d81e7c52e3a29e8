// Declaration of the per-(dtype, head_dim) launchers; definitions are instantiated in inst/.
// Light: fwd_api.cu includes only this, so the dispatcher does not compile any kernel.
#pragma once

#include <cuda_runtime.h>

#include "flash/params.h"

namespace flash::sm90 {

// kWideN: the tile variant for calls without a window (fwd_traits.h; d=128 only).
template <typename Element, int kHeadDim, bool kWideN = false>
void run_fwd_hdim(const FwdParams& params, cudaStream_t stream);

}  // namespace flash::sm90
