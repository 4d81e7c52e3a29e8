// Public C++ API. Each entry point validates its params (throwing flash::Error naming the bad
// argument), canonicalises masks, picks a backend by device and architecture, and runs.
// `stream` is a cudaStream_t for CUDA tensors (nullptr: the legacy default stream) and ignored on
// the CPU. Scratch memory is supplied by the caller: ask *_workspace_size first, allocate that many
// bytes on the tensors' device, and store the pointer/size in params.workspace(_bytes).
#pragma once

#include <cstddef>

#include "flash/errors.h"
#include "flash/params.h"
#include "flash/types.h"

namespace flash {

Impl fwd(FwdParams& params, void* stream = nullptr);
Impl bwd(BwdParams& params, void* stream = nullptr);
Impl fwd_kvcache(KvcacheParams& params, void* stream = nullptr);

size_t fwd_workspace_size(const FwdParams& params);
size_t bwd_workspace_size(const BwdParams& params);
size_t kvcache_workspace_size(const KvcacheParams& params);

// The implementation fwd/bwd would run for these params (after validation), without running.
Impl select_fwd_impl(const FwdParams& params);
Impl select_bwd_impl(const BwdParams& params);

// Whether this build contains the CUDA backend.
bool built_with_cuda();

}  // namespace flash
