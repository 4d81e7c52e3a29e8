// Declaration of the per-(dtype, head_dim) backward launchers; definitions are instantiated in
// inst/bwd_hdim<D>_<dtype>.cu. Light: bwd_api.cu includes only this.
#pragma once

#include <cuda_runtime.h>

#include "flash/params.h"

namespace flash::sm90 {

// Runs the whole backward (preprocess, main kernel, dQ convert) on `stream`; params.workspace
// must hold plan_bwd_workspace(params).total bytes.
template <typename Element, int kHeadDim>
void run_bwd_hdim(const BwdParams& params, cudaStream_t stream);

}  // namespace flash::sm90
