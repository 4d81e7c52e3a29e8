// Ampere-class forward entry points of sm80.h: capability check, workspace size (none) and the
// dispatch of a call to the instantiation of its (dtype, head-dim bucket). Which instantiations
// exist is told by CMake through FLASH_HDIM_<D>_ENABLED / FLASH_FP16_ENABLED / FLASH_BF16_ENABLED.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include <cute/numeric/numeric_types.hpp>

#include "cuda/sm80/sm80.h"
#include "flash/errors.h"

namespace flash::sm80 {

template <typename Element, int kHeadDim>
void launch_fwd(const FwdParams& params, cudaStream_t stream);  // inst/fwd_hdim<D>_<dtype>.cu

namespace {

// Smallest bucket holding head_dim (0 when none).
int fwd_bucket(int head_dim) {
  for (int b : {32, 64, 96, 128, 160, 192, 224, 256})
    if (head_dim <= b) return b;
  return 0;
}

bool bucket_enabled(int bucket) {
  switch (bucket) {
#ifdef FLASH_HDIM_32_ENABLED
    case 32: return true;
#endif
#ifdef FLASH_HDIM_64_ENABLED
    case 64: return true;
#endif
#ifdef FLASH_HDIM_96_ENABLED
    case 96: return true;
#endif
#ifdef FLASH_HDIM_128_ENABLED
    case 128: return true;
#endif
#ifdef FLASH_HDIM_160_ENABLED
    case 160: return true;
#endif
#ifdef FLASH_HDIM_192_ENABLED
    case 192: return true;
#endif
#ifdef FLASH_HDIM_224_ENABLED
    case 224: return true;
#endif
#ifdef FLASH_HDIM_256_ENABLED
    case 256: return true;
#endif
    default: return false;
  }
}

bool dtype_enabled(DType t) {
#ifdef FLASH_FP16_ENABLED
  if (t == DType::kFloat16) return true;
#endif
#ifdef FLASH_BF16_ENABLED
  if (t == DType::kBFloat16) return true;
#endif
  return false;
}

// 16-byte cp.async / stores need every row start 16-byte aligned: base pointer aligned and all
// strides that move between rows multiples of 8 elements.
bool rows_aligned(const void* ptr, int64_t s0, int64_t s1, int64_t s2) {
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && s0 % 8 == 0 && s1 % 8 == 0 && s2 % 8 == 0;
}

template <typename Element>
void dispatch_bucket(const FwdParams& params, cudaStream_t stream) {
  switch (fwd_bucket(params.head_dim)) {
#ifdef FLASH_HDIM_32_ENABLED
    case 32: return launch_fwd<Element, 32>(params, stream);
#endif
#ifdef FLASH_HDIM_64_ENABLED
    case 64: return launch_fwd<Element, 64>(params, stream);
#endif
#ifdef FLASH_HDIM_96_ENABLED
    case 96: return launch_fwd<Element, 96>(params, stream);
#endif
#ifdef FLASH_HDIM_128_ENABLED
    case 128: return launch_fwd<Element, 128>(params, stream);
#endif
#ifdef FLASH_HDIM_160_ENABLED
    case 160: return launch_fwd<Element, 160>(params, stream);
#endif
#ifdef FLASH_HDIM_192_ENABLED
    case 192: return launch_fwd<Element, 192>(params, stream);
#endif
#ifdef FLASH_HDIM_224_ENABLED
    case 224: return launch_fwd<Element, 224>(params, stream);
#endif
#ifdef FLASH_HDIM_256_ENABLED
    case 256: return launch_fwd<Element, 256>(params, stream);
#endif
    default: throw Error("head_dim", "no sm80 forward kernel built for head_dim " + std::to_string(params.head_dim));
  }
}

}  // namespace

bool supports_fwd(const FwdParams& p, std::string* why) {
  auto no = [why](const char* arg) {
    if (why != nullptr) *why = arg;
    return false;
  };
  if (p.device != Device::kCUDA) return no("device");
  if (!dtype_enabled(p.dtype)) return no("dtype");
  if (p.head_dim <= 0 || p.head_dim % 8 != 0 || p.head_dim > 256 || !bucket_enabled(fwd_bucket(p.head_dim)))
    return no("head_dim");
  if (p.nheads_k <= 0 || p.nheads % p.nheads_k != 0) return no("nheads_k");
  if (p.nheads > 65535 || p.batch > 65535) return no("batch");  // grid y / z limits
  if (!rows_aligned(p.q, p.q_batch_stride, p.q_row_stride, p.q_head_stride)) return no("q");
  if (!rows_aligned(p.k, p.k_batch_stride, p.k_row_stride, p.k_head_stride)) return no("k");
  if (!rows_aligned(p.v, p.v_batch_stride, p.v_row_stride, p.v_head_stride)) return no("v");
  if (!rows_aligned(p.out, p.out_batch_stride, p.out_row_stride, p.out_head_stride)) return no("out");
  if (p.block_table != nullptr && p.page_size < 1) return no("page_size");
  if (p.dropout_p > 0.f && p.rng_state == nullptr) return no("rng_state");
  if (p.attn_probs != nullptr && reinterpret_cast<uintptr_t>(p.attn_probs) % 2 != 0) return no("attn_probs");
  return true;
}

size_t fwd_workspace_size(const FwdParams&) { return 0; }

void run_fwd(const FwdParams& params, void* stream) {
  std::string why;
  if (!supports_fwd(params, &why)) throw Error(why, "not supported by the sm80 forward path");
  const auto s = static_cast<cudaStream_t>(stream);
  if (params.dtype == DType::kFloat16) {
#ifdef FLASH_FP16_ENABLED
    dispatch_bucket<cutlass::half_t>(params, s);
#endif
  } else {
#ifdef FLASH_BF16_ENABLED
    dispatch_bucket<cutlass::bfloat16_t>(params, s);
#endif
  }
}

}  // namespace flash::sm80
