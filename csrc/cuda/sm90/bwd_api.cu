// Entry points of the sm90 backward path (declared in sm90_bwd.h): capability check with a
// reason, workspace size, and dispatch to the (dtype, head_dim) instantiation.
// Build filtering as in fwd_api.cu: FLASH_HDIM_<D>_ENABLED / FLASH_<FP16|BF16>_ENABLED.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include <cutlass/numeric_types.h>

#include "cuda/sm90/api_checks.h"
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

using checks::device_is_sm90;
using checks::aligned16;
using checks::tma_stride_ok;
using checks::tma_tensor_ok;
using checks::vec_tensor_ok;

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
  // Not on this path (the sm80 backward takes them): paged KV, seqused_k (rows between seqused_k
  // and the sequence end may be uninitialised: whole K tiles are read and a NaN there would reach
  // dQ through dS K even with dS = 0), degenerate varlen batches.
  if (p.block_table != nullptr) return fail(why, "block_table");
  const bool varlen = p.cu_seqlens_q != nullptr;
  if (varlen != (p.cu_seqlens_k != nullptr)) return fail(why, "cu_seqlens_k");
  if (p.seqused_k != nullptr) return fail(why, "seqused_k");
  if (varlen && varlen_disabled()) return fail(why, "cu_seqlens_q");
  if (varlen && p.total_q < 1) return fail(why, "total_q");  // (TMA maps cannot be empty)
  if (varlen && (p.total_k < 1 || p.total_k > INT32_MAX)) return fail(why, "total_k");
  if (p.dropout_p > 0.f && (p.rng_state == nullptr || dropout_disabled())) return fail(why, "dropout_p");
  if (p.seqlen_k <= 0) return fail(why, "seqlen_k");  // a TMA map cannot be empty
  if (p.seqlen_q <= 0) return fail(why, "seqlen_q");
  // The workspace pads every (batch, head) to whole query blocks (64 / 128 rows): for very short
  // seqlen_q that is up to 128x the data (seqlen_q 1 x 65535 batches x 257 heads asked for 522 GiB).
  // Such calls go to the sm80 backward, whose workspace is not padded. Varlen pads per sequence:
  // total_q + batch * kBlockM rows, refused when that exceeds 4x total_q (mean length < kBlockM / 3).
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
  // TMA maps (bwd_launch.h): varlen (total rows, d, heads, 1), else (seqlen, d, heads, batch).
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
