// Declaration of the per-(dtype, bucket) launcher, defined in bwd_launch.cuh and explicitly
// instantiated by inst/bwd_hdim<D>_<dtype>.cu, so the API file compiles no kernel itself.
#pragma once

#include <cuda_runtime.h>

#include "cuda/sm80/bwd_workspace.cuh"

namespace flash::sm80::bwd {

template <typename Element, int kHeadDim>
void launch_bwd_main(const BwdParams& p, const BwdWorkspace& ws, const BwdExtra& ex, cudaStream_t stream);

}  // namespace flash::sm80::bwd
