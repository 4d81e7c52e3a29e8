// Entry points of the sm90 backward path (declared in sm90_bwd.h): capability check with a
// reason, workspace size, and dispatch to the (dtype, head_dim) instantiation.
// Build filtering as in fwd_api.cu: FLASH_HDIM_<D>_ENABLED / FLASH_<FP16|BF16>_ENABLED.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include <cutlass/numeric_types.h>

#include "cuda/sm90/api_checks.h"
#include "cuda/sm90/bwd_api_checks.h"
#include "cuda/sm90/bwd_launch_decl.h"
#include "cuda/sm90/bwd_workspace.h"
#include "cuda/sm90/sm90_bwd.h"

#if !defined(FLASH_FP16_ENABLED) && !defined(FLASH_BF16_ENABLED)
#define FLASH_HDIM_64_ENABLED 1
#define FLASH_HDIM_96_ENABLED 1
#define FLASH_HDIM_128_ENABLED 1
#define FLASH_FP16_ENABLED 1
#define FLASH_BF16_ENABLED 1
#endif

namespace flash::sm90 {

namespace {

#if defined(FLASH_HDIM_96_ENABLED)
// FLASH_SM90_BWD_HDIM96=0 sends head_dim 96 back to the sm80 backward (new in session 4).
bool hdim96_disabled() {
  static const bool disabled = [] {
    const char* v = std::getenv("FLASH_SM90_BWD_HDIM96");
    return v != nullptr && *v != '\0' && std::atoi(v) == 0;
  }();
  return disabled;
}
#endif

using checks::fail;

// FLASH_SM90_BWD_VARLEN=0 / FLASH_SM90_BWD_DROPOUT=0 send such calls back to the sm80 backward
// (A/B measurements, and an escape hatch while these features are new); read once per process.
bool feature_disabled(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' && std::atoi(v) == 0;
}
bool varlen_disabled() {
  static const bool disabled = feature_disabled("FLASH_SM90_BWD_VARLEN");
  return disabled;
}
bool dropout_disabled() {
  static const bool disabled = feature_disabled("FLASH_SM90_BWD_DROPOUT");
  return disabled;
}

}  // namespace

bool supports_bwd(const BwdParams& p, std::string* why) {
  if (p.device != Device::kCUDA) return fail(why, "device");
  if (p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16) return fail(why, "dtype");
  if (p.head_dim != 64 && p.head_dim != 96 && p.head_dim != 128) return fail(why, "head_dim");
  if (!checks::instantiation_built(p.dtype, p.head_dim)) return fail(why, "head_dim");
#if defined(FLASH_HDIM_96_ENABLED)
  if (p.head_dim == 96 && hdim96_disabled()) return fail(why, "head_dim");
#endif
  return checks::bwd_call_ok(p, !varlen_disabled(), !dropout_disabled(), why);
}

size_t bwd_workspace_size(const BwdParams& p) { return plan_bwd_workspace(p).total; }

void run_bwd(const BwdParams& p, void* stream_ptr) {
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  const bool bf16 = p.dtype == DType::kBFloat16;
  switch (p.head_dim) {
#if defined(FLASH_HDIM_64_ENABLED)
    case 64:
#if defined(FLASH_BF16_ENABLED)
      if (bf16) return run_bwd_hdim<cutlass::bfloat16_t, 64>(p, stream);
#endif
#if defined(FLASH_FP16_ENABLED)
      if (!bf16) return run_bwd_hdim<cutlass::half_t, 64>(p, stream);
#endif
      break;
#endif
#if defined(FLASH_HDIM_96_ENABLED)
    case 96:
#if defined(FLASH_BF16_ENABLED)
      if (bf16) return run_bwd_hdim<cutlass::bfloat16_t, 96>(p, stream);
#endif
#if defined(FLASH_FP16_ENABLED)
      if (!bf16) return run_bwd_hdim<cutlass::half_t, 96>(p, stream);
#endif
      break;
#endif
#if defined(FLASH_HDIM_128_ENABLED)
    case 128:
#if defined(FLASH_BF16_ENABLED)
      if (bf16) return run_bwd_hdim<cutlass::bfloat16_t, 128>(p, stream);
#endif
#if defined(FLASH_FP16_ENABLED)
      if (!bf16) return run_bwd_hdim<cutlass::half_t, 128>(p, stream);
#endif
      break;
#endif
    default:
      break;
  }
  // Unreachable when the caller checked supports_bwd first.
}

}  // namespace flash::sm90
