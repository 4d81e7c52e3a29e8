// Entry points of the wide-head-dim sm90 backward (declared in sm90_bwd256.h): capability check
// with a reason, workspace size, and dispatch to the (dtype, head_dim) instantiation.
// Build filtering as in bwd_api.cu: FLASH_HDIM_<D>_ENABLED / FLASH_<FP16|BF16>_ENABLED.
#include "cuda/sm90/sm90_bwd256.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include <cutlass/numeric_types.h>

#include "cuda/sm90/api_checks.h"
#include "cuda/sm90/bwd_api_checks.h"
#include "cuda/sm90/bwd256_launch_decl.h"
#include "cuda/sm90/bwd_workspace.h"

#if !defined(FLASH_FP16_ENABLED) && !defined(FLASH_BF16_ENABLED)
#define FLASH_HDIM_192_ENABLED 1
#define FLASH_HDIM_256_ENABLED 1
#define FLASH_FP16_ENABLED 1
#define FLASH_BF16_ENABLED 1
#endif

namespace flash::sm90 {

namespace {

using checks::fail;

// Varlen / dropout on this path (session 5; H100: 1.6-1.9x / 2.0-2.3x the sm80 backward they
// replace): on unless FLASH_SM90_BWD256_VARLEN=0 / FLASH_SM90_BWD256_DROPOUT=0. Read on every call
// (one getenv per backward) so that A/B runs and tests can switch them.
bool feature_on(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr || *v == '\0' || std::atoi(v) != 0;
}

}  // namespace

bool supports_bwd256(const BwdParams& p, std::string* why) {
  if (p.device != Device::kCUDA) return fail(why, "device");
  if (p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16) return fail(why, "dtype");
  if (p.head_dim != 192 && p.head_dim != 256) return fail(why, "head_dim");
  if (!checks::instantiation_built(p.dtype, p.head_dim)) return fail(why, "head_dim");
  return checks::bwd_call_ok(p, feature_on("FLASH_SM90_BWD256_VARLEN"), feature_on("FLASH_SM90_BWD256_DROPOUT"),
                             why);
}

size_t bwd256_workspace_size(const BwdParams& p) {
  return plan_bwd_workspace(p).total;
}

void run_bwd256(const BwdParams& p, void* stream_ptr) {
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  const bool bf16 = p.dtype == DType::kBFloat16;
  switch (p.head_dim) {
#if defined(FLASH_HDIM_192_ENABLED)
    case 192:
#if defined(FLASH_BF16_ENABLED)
      if (bf16) return run_bwd256_hdim<cutlass::bfloat16_t, 192>(p, stream);
#endif
#if defined(FLASH_FP16_ENABLED)
      if (!bf16) return run_bwd256_hdim<cutlass::half_t, 192>(p, stream);
#endif
      break;
#endif
#if defined(FLASH_HDIM_256_ENABLED)
    case 256:
#if defined(FLASH_BF16_ENABLED)
      if (bf16) return run_bwd256_hdim<cutlass::bfloat16_t, 256>(p, stream);
#endif
#if defined(FLASH_FP16_ENABLED)
      if (!bf16) return run_bwd256_hdim<cutlass::half_t, 256>(p, stream);
#endif
      break;
#endif
    default:
      break;
  }
  // Unreachable when the caller checked supports_bwd256 first.
  (void)bf16;
  (void)stream;
}

}  // namespace flash::sm90
