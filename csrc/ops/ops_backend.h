// Backends of the fused ops (include/flash/ops.h). Each receives params that ops_api.cpp has
// validated and normalised (defaults filled in).
#pragma once

#include "flash/ops.h"

namespace flash::ops {

void cross_entropy_fwd_cpu(const CrossEntropyParams& p);
void cross_entropy_bwd_cpu(const CrossEntropyParams& p);
void norm_fwd_cpu(const NormParams& p);
void norm_bwd_cpu(const NormParams& p);

// Defined under csrc/ops/cuda/; linked only when the library is built with CUDA.
void cross_entropy_fwd_cuda(const CrossEntropyParams& p, void* stream);
void cross_entropy_bwd_cuda(const CrossEntropyParams& p, void* stream);
void norm_fwd_cuda(const NormParams& p, void* stream);
int64_t norm_bwd_workspace_size_cuda(const NormParams& p);
void norm_bwd_cuda(const NormParams& p, void* stream);
bool gemm_epilogue_cuda(const GemmParams& p, void* stream);
bool cublaslt_loaded();

}  // namespace flash::ops
