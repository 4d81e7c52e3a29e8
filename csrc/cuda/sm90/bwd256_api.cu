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
  // Not on this path (the sm80 backward takes them): paged KV; seqused_k (as supports_bwd: rows
  // between seqused_k and the sequence end may be uninitialised, and whole K tiles are read).
  if (p.block_table != nullptr) return fail(why, "block_table");
  const bool varlen = p.cu_seqlens_q != nullptr;
  if (varlen != (p.cu_seqlens_k != nullptr)) return fail(why, "cu_seqlens_k");
  if (p.seqused_k != nullptr) return fail(why, "seqused_k");
  if (varlen && !feature_on("FLASH_SM90_BWD256_VARLEN")) return fail(why, "cu_seqlens_q");
  if (varlen && p.total_q < 1) return fail(why, "total_q");  // (TMA maps cannot be empty)
  if (varlen && (p.total_k < 1 || p.total_k > INT32_MAX)) return fail(why, "total_k");
  if (p.dropout_p > 0.f && (p.rng_state == nullptr || !feature_on("FLASH_SM90_BWD256_DROPOUT")))
    return fail(why, "dropout_p");
  if (p.seqlen_k <= 0) return fail(why, "seqlen_k");  // a TMA map cannot be empty
  if (p.seqlen_q <= 0) return fail(why, "seqlen_q");
  // As supports_bwd: the workspace pads every (batch, head) -- varlen: every sequence -- to whole
  // 64-row query blocks; very short sequences would multiply it, so such calls go to the sm80
  // backward.
  {
    const int64_t bm = bwd_block_m(p.head_dim);
    if (varlen) {
      if (int64_t(p.batch) * bm > 3 * int64_t(p.total_q)) return fail(why, "cu_seqlens_q");
    } else {
      const int64_t padded = (int64_t(p.seqlen_q) + bm - 1) / bm * bm;
      if (padded > 4 * int64_t(p.seqlen_q)) return fail(why, "seqlen_q");
    }
  }
  if (p.nheads_k <= 0 || p.nheads % p.nheads_k != 0) return fail(why, "nheads_k");
  if (p.nheads > 65535 || p.batch > 65535)  // grid y / z of the preprocess and convert kernels
    return fail(why, p.batch > 65535 ? "batch" : "nheads");
  // TMA maps (bwd256_launch.h): varlen (total rows, d, heads, 1), else (seqlen, d, heads, batch).
  const int rows_q = varlen ? p.total_q : p.seqlen_q;
  const int rows_k = varlen ? int(p.total_k) : p.seqlen_k;
  const int map_batch = varlen ? 1 : p.batch;
  if (!tma_tensor_ok(p.q, p.q_row_stride, rows_q, p.q_head_stride, p.nheads, p.q_batch_stride, map_batch))
    return fail(why, "q");
  if (!tma_tensor_ok(p.dout, p.dout_row_stride, rows_q, p.dout_head_stride, p.nheads,
                     p.dout_batch_stride, map_batch))
    return fail(why, "dout");
  if (!tma_tensor_ok(p.k, p.k_row_stride, rows_k, p.k_head_stride, p.nheads_k, p.k_batch_stride, map_batch))
    return fail(why, "k");
  if (!tma_tensor_ok(p.v, p.v_row_stride, rows_k, p.v_head_stride, p.nheads_k, p.v_batch_stride, map_batch))
    return fail(why, "v");
  // (varlen: batch strides are not used)
  auto bs = [&](int64_t stride) { return varlen ? int64_t(0) : stride; };
  if (!vec_tensor_ok(p.out, bs(p.out_batch_stride), p.out_row_stride, p.out_head_stride)) return fail(why, "out");
  if (!vec_tensor_ok(p.dout, bs(p.dout_batch_stride), p.dout_row_stride, p.dout_head_stride)) return fail(why, "dout");
  if (!vec_tensor_ok(p.dq, bs(p.dq_batch_stride), p.dq_row_stride, p.dq_head_stride)) return fail(why, "dq");
  if (!vec_tensor_ok(p.dk, bs(p.dk_batch_stride), p.dk_row_stride, p.dk_head_stride)) return fail(why, "dk");
  if (!vec_tensor_ok(p.dv, bs(p.dv_batch_stride), p.dv_row_stride, p.dv_head_stride)) return fail(why, "dv");
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
