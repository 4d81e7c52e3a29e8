// Hopper backward path (TMA, wgmma, warp specialisation): sm90a only.
// Host-callable without CUDA headers; `stream` is a cudaStream_t.
#pragma once

#include <cstddef>
#include <string>

#include "flash/params.h"

namespace flash::sm90 {

// Whether this path handles the params; when not, *why names the argument that blocks it
// (the dispatcher then runs the sm80 backward).
bool supports_bwd(const BwdParams& params, std::string* why);
size_t bwd_workspace_size(const BwdParams& params);
void run_bwd(const BwdParams& params, void* stream);

}  // namespace flash::sm90
