// CUDA flash_attn_with_kvcache: in-place cache append (+ rotary), paged caches of any page size,
// GQA-packed decode/chunked-prefill attention with split-KV and an exact lse combine.
// Host-callable without CUDA headers; `stream` is a cudaStream_t. Compiled for the sm80-path archs.
#pragma once

#include <cstddef>
#include <string>

#include "flash/params.h"

namespace flash::kvcache_cuda {

bool supports(const KvcacheParams& params, std::string* why);
size_t workspace_size(const KvcacheParams& params);
void run(const KvcacheParams& params, void* stream);

}  // namespace flash::kvcache_cuda
