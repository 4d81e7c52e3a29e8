// Backward entry points of the sm80 path: what it supports, the workspace it needs, and the
// sequence of kernels (D preprocess, main, dQ convert, GQA dK/dV reduce) on the caller's stream.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <string>

#include "common/philox.h"
#include "cuda/sm80/bwd_aux_kernels.cuh"
#include "cuda/sm80/bwd_dispatch.cuh"
#include "cuda/sm80/bwd_config.cuh"  // tile sizes only; the kernels come from inst/
#include "cuda/sm80/sm80.h"
#include "flash/errors.h"

namespace flash::sm80 {
namespace {

int bucket_of(int head_dim) {
  constexpr int kBuckets[] = {32, 64, 96, 128, 160, 192, 224, 256};
  for (int b : kBuckets)
    if (head_dim <= b) return b;
  return 0;
}

bool bucket_compiled(int bucket) {
  switch (bucket) {
#if defined(FLASH_HDIM_32_ENABLED)
    case 32: return true;
#endif
#if defined(FLASH_HDIM_64_ENABLED)
    case 64: return true;
#endif
#if defined(FLASH_HDIM_96_ENABLED)
    case 96: return true;
#endif
#if defined(FLASH_HDIM_128_ENABLED)
    case 128: return true;
#endif
#if defined(FLASH_HDIM_160_ENABLED)
    case 160: return true;
#endif
#if defined(FLASH_HDIM_192_ENABLED)
    case 192: return true;
#endif
#if defined(FLASH_HDIM_224_ENABLED)
    case 224: return true;
#endif
#if defined(FLASH_HDIM_256_ENABLED)
    case 256: return true;
#endif
    default: return false;
  }
}

bool dtype_compiled(DType t) {
#if defined(FLASH_FP16_ENABLED)
  if (t == DType::kFloat16) return true;
#endif
#if defined(FLASH_BF16_ENABLED)
  if (t == DType::kBFloat16) return true;
#endif
  return false;
}

// Dynamic shared memory of the main kernel for a bucket (the layout does not depend on the dtype).
int main_smem_bytes(int bucket) {
  switch (bucket) {
    case 32: return bwd::BwdConfigFor<__half, 32>::kSmemBytes;
    case 64: return bwd::BwdConfigFor<__half, 64>::kSmemBytes;
    case 96: return bwd::BwdConfigFor<__half, 96>::kSmemBytes;
    case 128: return bwd::BwdConfigFor<__half, 128>::kSmemBytes;
    case 160: return bwd::BwdConfigFor<__half, 160>::kSmemBytes;
    case 192: return bwd::BwdConfigFor<__half, 192>::kSmemBytes;
    case 224: return bwd::BwdConfigFor<__half, 224>::kSmemBytes;
    default: return bwd::BwdConfigFor<__half, 256>::kSmemBytes;
  }
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

// 16-byte vector access (cp.async, uint4) needs 16B-aligned bases and strides multiple of 8.
bool tensor_ok(const void* ptr, int64_t bs, int64_t rs, int64_t hs) {
  return aligned16(ptr) && bs % 8 == 0 && rs % 8 == 0 && hs % 8 == 0;
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw DeviceError(std::string("sm80 bwd ") + what + ": " + cudaGetErrorString(err));
}

template <typename Element>
void launch_main_for_bucket(int bucket, const BwdParams& p, const bwd::BwdWorkspace& ws, const bwd::BwdExtra& ex,
                            cudaStream_t stream) {
  switch (bucket) {
#if defined(FLASH_HDIM_32_ENABLED)
    case 32: return bwd::launch_bwd_main<Element, 32>(p, ws, ex, stream);
#endif
#if defined(FLASH_HDIM_64_ENABLED)
    case 64: return bwd::launch_bwd_main<Element, 64>(p, ws, ex, stream);
#endif
#if defined(FLASH_HDIM_96_ENABLED)
    case 96: return bwd::launch_bwd_main<Element, 96>(p, ws, ex, stream);
#endif
#if defined(FLASH_HDIM_128_ENABLED)
    case 128: return bwd::launch_bwd_main<Element, 128>(p, ws, ex, stream);
#endif
#if defined(FLASH_HDIM_160_ENABLED)
    case 160: return bwd::launch_bwd_main<Element, 160>(p, ws, ex, stream);
#endif
#if defined(FLASH_HDIM_192_ENABLED)
    case 192: return bwd::launch_bwd_main<Element, 192>(p, ws, ex, stream);
#endif
#if defined(FLASH_HDIM_224_ENABLED)
    case 224: return bwd::launch_bwd_main<Element, 224>(p, ws, ex, stream);
#endif
#if defined(FLASH_HDIM_256_ENABLED)
    case 256: return bwd::launch_bwd_main<Element, 256>(p, ws, ex, stream);
#endif
    default: throw Error("head_dim", "sm80 backward: head-dim bucket not compiled in");
  }
}

template <typename Element>
void run_bwd_typed(const BwdParams& p, cudaStream_t stream) {
  const int bucket = bucket_of(p.head_dim);
  bwd::BwdWorkspace ws;
  const size_t need = bwd::plan_workspace(p, bwd::block_n_for(bucket), p.workspace, &ws);
  check_arg(p.workspace != nullptr && p.workspace_bytes >= need, "workspace",
            "sm80 backward needs " + std::to_string(need) + " bytes");
  // The layout rounds offsets up from the base; keep every array 16B-aligned.
  check_arg(aligned16(p.workspace), "workspace", "must be 16-byte aligned");

  bwd::BwdExtra ex;
  ex.dropout = p.dropout_p > 0.f;
  ex.keep_threshold = ex.dropout ? dropout_keep_threshold(p.dropout_p) : 0xFFFFFFFFu;
  ex.rp_keep = ex.dropout ? 1.f / (1.f - p.dropout_p) : 1.f;

  const size_t dq_bytes = sizeof(float) * ws.dq_slices * ws.rows_q * p.nheads * p.head_dim;
  if (dq_bytes > 0) check(cudaMemsetAsync(ws.dq_accum, 0, dq_bytes, stream), "memset dq_accum");
  if (p.batch == 0 || p.nheads == 0) return;

  const dim3 block(bwd::kAuxThreads);
  if (p.seqlen_q > 0) {
    const dim3 grid((p.seqlen_q + bwd::kAuxRows - 1) / bwd::kAuxRows, p.batch);
    // bwd_dot_do_o_vec_kernel by default since pass 5 (H100 round 2, bf16, whole backward, 2K / 8K: d64
    // +2.3 / +1.5 %, d128 +0.5 / +0.3 %; bitwise the same D). FLASH_SM80_BWD_DOT=0 runs the one-warp-per-item
    // kernel (A/B switch, read per call).
    const char* dot_env = std::getenv("FLASH_SM80_BWD_DOT");
    const bool vec = dot_env == nullptr || *dot_env == '\0' || std::atoi(dot_env) != 0;
    if (vec && p.head_dim == 128) {
      bwd::bwd_dot_do_o_vec_kernel<Element, 16><<<grid, block, 0, stream>>>(p, ws);
    } else if (vec && p.head_dim == 64) {
      bwd::bwd_dot_do_o_vec_kernel<Element, 8><<<grid, block, 0, stream>>>(p, ws);
    } else if (vec && p.head_dim == 256) {
      bwd::bwd_dot_do_o_vec_kernel<Element, 32><<<grid, block, 0, stream>>>(p, ws);
    } else if (vec && p.head_dim == 32) {
      bwd::bwd_dot_do_o_vec_kernel<Element, 4><<<grid, block, 0, stream>>>(p, ws);
    } else {
      bwd::bwd_dot_do_o_kernel<Element><<<grid, block, 0, stream>>>(p, ws);
    }
    check(cudaGetLastError(), "dot(dO, O) kernel");
  }
  if (p.seqlen_k > 0) launch_main_for_bucket<Element>(bucket, p, ws, ex, stream);
  if (p.seqlen_q > 0) {
    const dim3 grid((p.seqlen_q + bwd::kAuxRows - 1) / bwd::kAuxRows, p.batch);
    bwd::bwd_convert_dq_kernel<Element><<<grid, block, 0, stream>>>(p, ws);
    check(cudaGetLastError(), "dq convert kernel");
  }
  if (p.nheads != p.nheads_k && p.seqlen_k > 0) {
    const dim3 grid((p.seqlen_k + bwd::kAuxRows - 1) / bwd::kAuxRows, p.batch);
    bwd::bwd_reduce_dkv_kernel<Element><<<grid, block, 0, stream>>>(p, ws);
    check(cudaGetLastError(), "dk/dv reduce kernel");
  }
}

}  // namespace

bool supports_bwd(const BwdParams& p, std::string* why) {
  auto no = [&](const char* arg) {
    if (why != nullptr) *why = arg;
    return false;
  };
  if (p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16) return no("dtype");
  if (!dtype_compiled(p.dtype)) return no("dtype");
  if (p.head_dim <= 0 || p.head_dim % 8 != 0 || p.head_dim > 256) return no("head_dim");
  if (!bucket_compiled(bucket_of(p.head_dim))) return no("head_dim");
  if (p.block_table != nullptr) return no("block_table");
  // sm86 / sm89 allow ~99 KB per block: the larger buckets do not fit there.
  int smem_optin = 0;
  if (cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, p.device_index) != cudaSuccess ||
      smem_optin < main_smem_bytes(bucket_of(p.head_dim)))
    return no("head_dim");
  if (p.nheads_k <= 0 || p.nheads % p.nheads_k != 0) return no("nheads_k");
  if (!tensor_ok(p.q, p.q_batch_stride, p.q_row_stride, p.q_head_stride)) return no("q");
  if (!tensor_ok(p.k, p.k_batch_stride, p.k_row_stride, p.k_head_stride)) return no("k");
  if (!tensor_ok(p.v, p.v_batch_stride, p.v_row_stride, p.v_head_stride)) return no("v");
  if (!tensor_ok(p.out, p.out_batch_stride, p.out_row_stride, p.out_head_stride)) return no("out");
  if (!tensor_ok(p.dout, p.dout_batch_stride, p.dout_row_stride, p.dout_head_stride)) return no("dout");
  if (!tensor_ok(p.dq, p.dq_batch_stride, p.dq_row_stride, p.dq_head_stride)) return no("dq");
  if (!tensor_ok(p.dk, p.dk_batch_stride, p.dk_row_stride, p.dk_head_stride)) return no("dk");
  if (!tensor_ok(p.dv, p.dv_batch_stride, p.dv_row_stride, p.dv_head_stride)) return no("dv");
  return true;
}

size_t bwd_workspace_size(const BwdParams& p) {
  return bwd::plan_workspace(p, bwd::block_n_for(bucket_of(p.head_dim)), nullptr, nullptr);
}

void run_bwd(const BwdParams& p, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (p.dtype == DType::kBFloat16) {
#if defined(FLASH_BF16_ENABLED)
    return run_bwd_typed<__nv_bfloat16>(p, s);
#endif
  } else if (p.dtype == DType::kFloat16) {
#if defined(FLASH_FP16_ENABLED)
    return run_bwd_typed<__half>(p, s);
#endif
  }
  throw Error("dtype", "sm80 backward: dtype not compiled in");
}

}  // namespace flash::sm80
