// Hopper path (TMA, wgmma, mbarrier pipelines, warp specialisation): sm90a only.
// Host-callable without CUDA headers; `stream` is a cudaStream_t.
#pragma once

#include <cstddef>
#include <string>

#include "flash/params.h"

namespace flash::sm90 {

bool supports_fwd(const FwdParams& params, std::string* why);
size_t fwd_workspace_size(const FwdParams& params);
void run_fwd(const FwdParams& params, void* stream);

}  // namespace flash::sm90
