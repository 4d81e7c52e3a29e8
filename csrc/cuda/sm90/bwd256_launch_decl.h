// Declaration of the per-(dtype, head_dim) launchers of the wide-head-dim sm90 backward; the
// definitions are instantiated in inst/bwd_hdim{192,256}_<dtype>.cu. Light: bwd256_api.cu
// includes only this.
#pragma once

#include <cuda_runtime.h>

#include "flash/params.h"

namespace flash::sm90 {

// Runs the whole backward (preprocess, main kernel, dQ convert) on `stream`; params.workspace
// must hold bwd256_workspace_size(params) bytes.
template <typename Element, int kHeadDim>
void run_bwd256_hdim(const BwdParams& params, cudaStream_t stream);

}  // namespace flash::sm90
