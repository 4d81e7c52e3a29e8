// Public entry points: validate, then dispatch by device (CPU backend or CUDA dispatcher).
#include "flash/api.h"

#include "cpu/cpu_backend.h"
#include "validate.h"

#if defined(FLASH_ATTN_WITH_CUDA)
#include "cuda/cuda_backend.h"
#endif

namespace flash {
namespace {

[[noreturn]] void no_cuda() {
  throw Error("device", "this build of flash_attn has no CUDA backend (configure with FLASH_ATTN_CUDA=ON)");
}

}  // namespace

bool built_with_cuda() {
#if defined(FLASH_ATTN_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

Impl select_fwd_impl(const FwdParams& params) {
  FwdParams p = params;
  detail::validate_fwd(p);
  if (p.device == Device::kCPU) return Impl::kCpu;
#if defined(FLASH_ATTN_WITH_CUDA)
  return cuda::select_fwd(p);
#else
  no_cuda();
#endif
}

Impl select_bwd_impl(const BwdParams& params) {
  BwdParams p = params;
  detail::validate_bwd(p);
  if (p.device == Device::kCPU) return Impl::kCpu;
#if defined(FLASH_ATTN_WITH_CUDA)
  return cuda::select_bwd(p);
#else
  no_cuda();
#endif
}

size_t fwd_workspace_size(const FwdParams& params) {
  FwdParams p = params;
  detail::validate_fwd(p);
  if (p.device == Device::kCPU) return 0;
#if defined(FLASH_ATTN_WITH_CUDA)
  return cuda::fwd_workspace_size(p);
#else
  no_cuda();
#endif
}

size_t bwd_workspace_size(const BwdParams& params) {
  BwdParams p = params;
  detail::validate_bwd(p);
  if (p.device == Device::kCPU) return 0;
#if defined(FLASH_ATTN_WITH_CUDA)
  return cuda::bwd_workspace_size(p);
#else
  no_cuda();
#endif
}

size_t kvcache_workspace_size(const KvcacheParams& params) {
  KvcacheParams p = params;
  detail::validate_kvcache(p);
  if (p.device == Device::kCPU) return 0;
#if defined(FLASH_ATTN_WITH_CUDA)
  return cuda::kvcache_workspace_size(p);
#else
  no_cuda();
#endif
}

Impl fwd(FwdParams& params, void* stream) {
  detail::validate_fwd(params);
  if (params.device == Device::kCPU) {
    cpu::fwd(params);
    return Impl::kCpu;
  }
#if defined(FLASH_ATTN_WITH_CUDA)
  detail::check_workspace(params, cuda::fwd_workspace_size(params));
  return cuda::fwd(params, stream);
#else
  (void)stream;
  no_cuda();
#endif
}

Impl bwd(BwdParams& params, void* stream) {
  detail::validate_bwd(params);
  if (params.device == Device::kCPU) {
    cpu::bwd(params);
    return Impl::kCpu;
  }
#if defined(FLASH_ATTN_WITH_CUDA)
  detail::check_workspace(params, cuda::bwd_workspace_size(params));
  return cuda::bwd(params, stream);
#else
  (void)stream;
  no_cuda();
#endif
}

Impl fwd_kvcache(KvcacheParams& params, void* stream) {
  detail::validate_kvcache(params);
  if (params.device == Device::kCPU) {
    cpu::fwd_kvcache(params);
    return Impl::kCpu;
  }
#if defined(FLASH_ATTN_WITH_CUDA)
  detail::check_workspace(params, cuda::kvcache_workspace_size(params));
  return cuda::fwd_kvcache(params, stream);
#else
  (void)stream;
  no_cuda();
#endif
}

}  // namespace flash
