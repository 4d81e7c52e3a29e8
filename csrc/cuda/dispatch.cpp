// CUDA dispatcher: reads the device's architecture once, picks the sm90 or sm80 path, and runs it
// on the caller's device and stream. Heuristics live here, apart from the kernels.
#include <cuda_runtime.h>

#include <mutex>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/kvcache/kvcache.h"
#include "cuda/sm80/sm80.h"
#include "flash/errors.h"
#if defined(FLASH_ATTN_WITH_SM90)
#include "cuda/sm90/sm90.h"
#include "cuda/sm90/sm90_bwd.h"
#include "cuda/sm90/sm90_bwd256.h"
#endif

namespace flash::cuda {
namespace {

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw DeviceError(std::string("flash_attn CUDA error in ") + what + ": " + cudaGetErrorString(err));
  }
}

// Compute capability of a device, cached: cudaGetDeviceProperties is far too slow per call.
int compute_capability(int device) {
  static std::mutex mutex;
  static std::vector<int> cache;
  std::lock_guard<std::mutex> lock(mutex);
  if (device >= static_cast<int>(cache.size())) cache.resize(device + 1, -1);
  if (cache[device] < 0) {
    int major = 0, minor = 0;
    check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "device query");
    check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "device query");
    cache[device] = major * 10 + minor;
  }
  return cache[device];
}

// Makes `device` current for the scope of a call and restores the caller's device after.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
    target_ = device;
  }
  ~DeviceScope() {
    if (previous_ != target_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
  int target_ = 0;
};

// The kernels put batch and heads on grid dimensions y and z, which CUDA caps at 65535: beyond
// that a launch would fail, so the call is refused up front with the argument named.
void require_grid_limits(const FwdParams& p) {
  constexpr int kMaxGridYZ = 65535;
  check_arg(p.batch <= kMaxGridYZ, p.cu_seqlens_q ? "cu_seqlens_q" : "q",
            "batch " + std::to_string(p.batch) + " exceeds 65535, the CUDA kernels' grid limit; split the batch");
  check_arg(p.nheads <= kMaxGridYZ, "q",
            "nheads " + std::to_string(p.nheads) + " exceeds 65535, the CUDA kernels' grid limit");
}

void require_ampere(const FwdParams& p) {
  const int cc = compute_capability(p.device_index);
  check_arg(cc >= 80, "q", "flash_attn CUDA kernels need compute capability >= 8.0, device has " +
                               std::to_string(cc / 10) + "." + std::to_string(cc % 10));
  require_grid_limits(p);
}

bool sm90_fwd_ok(const FwdParams& p, std::string* why) {
#if defined(FLASH_ATTN_WITH_SM90)
  if (compute_capability(p.device_index) != 90) {
    *why = "device";
    return false;
  }
  return sm90::supports_fwd(p, why);
#else
  (void)p;
  *why = "cuda_path";
  return false;
#endif
}

Impl choose_fwd(const FwdParams& p) {
  require_ampere(p);
  std::string why;
  if (p.cuda_path != CudaPath::kSm80 && sm90_fwd_ok(p, &why)) return Impl::kSm90;
  if (p.cuda_path == CudaPath::kSm90) {
    throw Error(why.empty() ? "cuda_path" : why, "the sm90 forward path does not support this call");
  }
  if (!sm80::supports_fwd(p, &why)) {
    throw Error(why.empty() ? "q" : why, "not supported by the CUDA forward kernels");
  }
  return Impl::kSm80;
}

bool sm90_bwd_ok(const BwdParams& p, std::string* why) {
#if defined(FLASH_ATTN_WITH_SM90)
  if (compute_capability(p.device_index) != 90) {
    *why = "device";
    return false;
  }
  if (sm90::is_wide_bwd_head_dim(p.head_dim)) return sm90::supports_bwd256(p, why);
  return sm90::supports_bwd(p, why);
#else
  (void)p;
  *why = "cuda_path";
  return false;
#endif
}

Impl choose_bwd(const BwdParams& p) {
  require_ampere(p);
  // The sm90 backward when it takes the call (cuda_path kAuto or kSm90); otherwise the sm80
  // backward, which runs on sm90 too -- also for cuda_path kSm90, so that forcing sm90 never
  // fails a backward whose forward it accepted (dropout, varlen, head dims the sm90 backward
  // lacks).
  std::string why;
  if (p.cuda_path != CudaPath::kSm80 && sm90_bwd_ok(p, &why)) return Impl::kSm90;
  if (!sm80::supports_bwd(p, &why)) {
    throw Error(why.empty() ? "q" : why, "not supported by the CUDA backward kernels");
  }
  return Impl::kSm80;
}

void choose_kvcache(const KvcacheParams& p) {
  require_ampere(p);
  std::string why;
  if (!kvcache_cuda::supports(p, &why)) {
    throw Error(why.empty() ? "q" : why, "not supported by the CUDA kvcache kernels");
  }
}

void check_launch() { check_cuda(cudaGetLastError(), "kernel launch"); }

}  // namespace

Impl select_fwd(const FwdParams& params) { return choose_fwd(params); }
Impl select_bwd(const BwdParams& params) { return choose_bwd(params); }

size_t fwd_workspace_size(const FwdParams& params) {
  return choose_fwd(params) == Impl::kSm90 ?
#if defined(FLASH_ATTN_WITH_SM90)
      sm90::fwd_workspace_size(params)
#else
      0
#endif
      : sm80::fwd_workspace_size(params);
}

size_t bwd_workspace_size(const BwdParams& params) {
#if defined(FLASH_ATTN_WITH_SM90)
  if (choose_bwd(params) == Impl::kSm90) {
    return sm90::is_wide_bwd_head_dim(params.head_dim) ? sm90::bwd256_workspace_size(params)
                                                        : sm90::bwd_workspace_size(params);
  }
#else
  choose_bwd(params);
#endif
  return sm80::bwd_workspace_size(params);
}

size_t kvcache_workspace_size(const KvcacheParams& params) {
  choose_kvcache(params);
  return kvcache_cuda::workspace_size(params);
}

Impl fwd(const FwdParams& params, void* stream) {
  DeviceScope scope(params.device_index);
  const Impl impl = choose_fwd(params);
#if defined(FLASH_ATTN_WITH_SM90)
  if (impl == Impl::kSm90) {
    sm90::run_fwd(params, stream);
    check_launch();
    return impl;
  }
#endif
  sm80::run_fwd(params, stream);
  check_launch();
  return impl;
}

Impl bwd(const BwdParams& params, void* stream) {
  DeviceScope scope(params.device_index);
  const Impl impl = choose_bwd(params);
#if defined(FLASH_ATTN_WITH_SM90)
  if (impl == Impl::kSm90) {
    if (sm90::is_wide_bwd_head_dim(params.head_dim)) {
      sm90::run_bwd256(params, stream);
    } else {
      sm90::run_bwd(params, stream);
    }
    check_launch();
    return impl;
  }
#endif
  sm80::run_bwd(params, stream);
  check_launch();
  return impl;
}

Impl fwd_kvcache(const KvcacheParams& params, void* stream) {
  DeviceScope scope(params.device_index);
  choose_kvcache(params);
  kvcache_cuda::run(params, stream);
  check_launch();
  return Impl::kSm80;
}

}  // namespace flash::cuda
