// Hopper backward for the wide head dims (192, 256): its own kernel, because dK + dV of a
// 64-key block no longer fit in a consumer warpgroup's registers (see README_bwd.md).
// Host-callable without CUDA headers; `stream` is a cudaStream_t.
#pragma once

#include <cstddef>
#include <string>

#include "flash/params.h"

namespace flash::sm90 {

// Head dims served by this kernel rather than by supports_bwd's (d64 / d128) one.
inline bool is_wide_bwd_head_dim(int head_dim) { return head_dim > 128; }

// Same contract as supports_bwd / bwd_workspace_size / run_bwd (sm90_bwd.h).
bool supports_bwd256(const BwdParams& params, std::string* why);
size_t bwd256_workspace_size(const BwdParams& params);
void run_bwd256(const BwdParams& params, void* stream);

}  // namespace flash::sm90
