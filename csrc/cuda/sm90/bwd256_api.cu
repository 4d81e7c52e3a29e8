// Entry points of the wide-head-dim sm90 backward (declared in sm90_bwd256.h): capability check
// with a reason, workspace size, and dispatch to the (dtype, head_dim) instantiation.
// Build filtering as in bwd_api.cu: FLASH_HDIM_<D>_ENABLED / FLASH_<FP16|BF16>_ENABLED.
#include "cuda/sm90/sm90_bwd256.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include <cutlass/numeric_types.h>

#include "cuda/sm90/api_checks.h"
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

using checks::aligned16;
using checks::device_is_sm90;
using checks::fail;
using checks::tma_stride_ok;
using checks::tma_tensor_ok;
using checks::vec_tensor_ok;

}  // namespace

bool supports_bwd256(const BwdParams& p, std::string* why) {
  if (p.device != Device::kCUDA) return fail(why, "device");
  if (p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16) return fail(why, "dtype");
  if (p.head_dim != 192 && p.head_dim != 256) return fail(why, "head_dim");
  if (!checks::instantiation_built(p.dtype, p.head_dim)) return fail(why, "head_dim");
  // Not on this path yet (the sm80 backward takes them): varlen, paged KV, dropout.
  if (p.cu_seqlens_q != nullptr) return fail(why, "cu_seqlens_q");
  if (p.cu_seqlens_k != nullptr) return fail(why, "cu_seqlens_k");
  if (p.seqused_k != nullptr) return fail(why, "seqused_k");
  if (p.block_table != nullptr) return fail(why, "block_table");
  if (p.dropout_p > 0.f) return fail(why, "dropout_p");
  if (p.seqlen_k <= 0) return fail(why, "seqlen_k");  // a TMA map cannot be empty
  if (p.seqlen_q <= 0) return fail(why, "seqlen_q");
  // As supports_bwd: the workspace pads every (batch, head) to whole 64-row query blocks; very
  // short seqlen_q would multiply it, so such calls go to the sm80 backward.
  {
    const int64_t bm = bwd_block_m(p.head_dim);
    const int64_t padded = (int64_t(p.seqlen_q) + bm - 1) / bm * bm;
    if (padded > 4 * int64_t(p.seqlen_q)) return fail(why, "seqlen_q");
  }
  if (p.nheads_k <= 0 || p.nheads % p.nheads_k != 0) return fail(why, "nheads_k");
  if (p.nheads_k > 65535 || p.batch > 65535) return fail(why, p.batch > 65535 ? "batch" : "nheads_k");
  if (!tma_tensor_ok(p.q, p.q_row_stride, p.seqlen_q, p.q_head_stride, p.nheads, p.q_batch_stride, p.batch))
    return fail(why, "q");
  if (!tma_tensor_ok(p.dout, p.dout_row_stride, p.seqlen_q, p.dout_head_stride, p.nheads,
                     p.dout_batch_stride, p.batch))
    return fail(why, "dout");
  if (!tma_tensor_ok(p.k, p.k_row_stride, p.seqlen_k, p.k_head_stride, p.nheads_k, p.k_batch_stride, p.batch))
    return fail(why, "k");
  if (!tma_tensor_ok(p.v, p.v_row_stride, p.seqlen_k, p.v_head_stride, p.nheads_k, p.v_batch_stride, p.batch))
    return fail(why, "v");
  if (!vec_tensor_ok(p.out, p.out_batch_stride, p.out_row_stride, p.out_head_stride)) return fail(why, "out");
  if (!vec_tensor_ok(p.dout, p.dout_batch_stride, p.dout_row_stride, p.dout_head_stride)) return fail(why, "dout");
  if (!vec_tensor_ok(p.dq, p.dq_batch_stride, p.dq_row_stride, p.dq_head_stride)) return fail(why, "dq");
  if (!vec_tensor_ok(p.dk, p.dk_batch_stride, p.dk_row_stride, p.dk_head_stride)) return fail(why, "dk");
  if (!vec_tensor_ok(p.dv, p.dv_batch_stride, p.dv_row_stride, p.dv_head_stride)) return fail(why, "dv");
  if (!device_is_sm90(p.device_index)) return fail(why, "device_index");
  return true;
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
