// Ampere-class path (mma.sync, ldmatrix, cp.async): runs on sm80..sm90.
// Host-callable without CUDA headers; `stream` is a cudaStream_t.
#pragma once

#include <cstddef>
#include <string>

#include "flash/params.h"

namespace flash::sm80 {

// Whether this path handles the params; when not, *why names the argument that blocks it.
bool supports_fwd(const FwdParams& params, std::string* why);
bool supports_bwd(const BwdParams& params, std::string* why);

size_t fwd_workspace_size(const FwdParams& params);
size_t bwd_workspace_size(const BwdParams& params);

void run_fwd(const FwdParams& params, void* stream);
void run_bwd(const BwdParams& params, void* stream);

}  // namespace flash::sm80
