// CUDA backend entry: architecture detection and the choice between the sm80 and sm90 paths.
// Included by host C++ (no CUDA headers): the stream travels as void* (a cudaStream_t).
#pragma once

#include <cstddef>

#include "flash/params.h"
#include "flash/types.h"

namespace flash::cuda {

Impl select_fwd(const FwdParams& params);
Impl select_bwd(const BwdParams& params);

size_t fwd_workspace_size(const FwdParams& params);
size_t bwd_workspace_size(const BwdParams& params);
size_t kvcache_workspace_size(const KvcacheParams& params);

Impl fwd(const FwdParams& params, void* stream);
Impl bwd(const BwdParams& params, void* stream);
Impl fwd_kvcache(const KvcacheParams& params, void* stream);

}  // namespace flash::cuda
