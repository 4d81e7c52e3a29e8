// The two small kernels around the attention kernel:
//  - append: writes k_new (rotated when rotary is on) and v_new into the cache at absolute index
//    cache_seqlens[b] + i, bitwise like the CPU backend (fp32 rotation, no FMA contraction, one
//    round-to-nearest-even into the storage type);
//  - combine: merges the split-KV partials exactly through their lse.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "cuda/kvcache/kvcache_args.h"
#include "cuda/kvcache/kvcache_ptx.cuh"

namespace flash::kvcache_cuda {
namespace {

constexpr int kAuxThreads = 256;

// One thread per (sequence b, new row i, kv head, 8-dim chunk).
template <typename Elem>
__global__ void __launch_bounds__(kAuxThreads) append_kernel(const KvcacheParams p) {
  using T = ElemTraits<Elem>;
  const int chunks = p.head_dim / 8;
  const int64_t total = static_cast<int64_t>(p.batch) * p.seqlen_new * p.nheads_k * chunks;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kAuxThreads + threadIdx.x;
  if (idx >= total) return;
  const int c = static_cast<int>(idx % chunks);
  int64_t rest = idx / chunks;
  const int hk = static_cast<int>(rest % p.nheads_k);
  rest /= p.nheads_k;
  const int i = static_cast<int>(rest % p.seqlen_new);
  const int b = static_cast<int>(rest / p.seqlen_new);

  const int cached = p.cache_seqlens ? p.cache_seqlens[b] : p.cache_seqlen_const;
  const int64_t slot64 = static_cast<int64_t>(cached) + i;
  if (slot64 < 0 || slot64 >= p.seqlen_k) return;  // outside the cache: nowhere to write
  const int slot = static_cast<int>(slot64);
  int64_t ko, vo;
  if (p.block_table) {
    const int page = p.block_table[b * p.block_table_batch_stride + slot / p.page_size];
    if (page < 0 || page >= p.num_pages) return;  // never dereference a bad page
    const int row = slot % p.page_size;
    ko = page * p.k_batch_stride + row * p.k_row_stride;
    vo = page * p.v_batch_stride + row * p.v_row_stride;
  } else {
    const int cache_row = p.cache_batch_idx ? p.cache_batch_idx[b] : b;
    if (cache_row < 0 || cache_row >= p.batch_cache) return;
    ko = cache_row * p.k_batch_stride + slot * p.k_row_stride;
    vo = cache_row * p.v_batch_stride + slot * p.v_row_stride;
  }
  ko += hk * p.k_head_stride + c * 8;
  vo += hk * p.v_head_stride + c * 8;

  const Elem* kn = static_cast<const Elem*>(p.k_new) + b * p.knew_batch_stride +
                   i * p.knew_row_stride + hk * p.knew_head_stride;
  const Elem* vn = static_cast<const Elem*>(p.v_new) + b * p.vnew_batch_stride +
                   i * p.vnew_row_stride + hk * p.vnew_head_stride;
  *reinterpret_cast<uint4*>(static_cast<Elem*>(const_cast<void*>(p.v)) + vo) =
      *reinterpret_cast<const uint4*>(vn + c * 8);

  uint4 kv = *reinterpret_cast<const uint4*>(kn + c * 8);
  const bool rotate = p.rotary_cos != nullptr && slot < p.seqlen_rotary && c * 8 < p.rotary_dim;
  if (rotate) {
    Elem* e = reinterpret_cast<Elem*>(&kv);
    Elem out[8];
    const Elem* cos_row = static_cast<const Elem*>(p.rotary_cos) +
                          static_cast<int64_t>(slot) * (p.rotary_dim / 2);
    const Elem* sin_row = static_cast<const Elem*>(p.rotary_sin) +
                          static_cast<int64_t>(slot) * (p.rotary_dim / 2);
    const int half = p.rotary_dim / 2;
#pragma unroll
    for (int t = 0; t < 8; ++t) {
      const int d = c * 8 + t;
      out[t] = e[t];
      if (d >= p.rotary_dim) continue;
      const bool first = p.rotary_interleaved ? (d & 1) == 0 : d < half;
      const int partner = p.rotary_interleaved ? (d ^ 1) : (first ? d + half : d - half);
      const int f = p.rotary_interleaved ? d / 2 : (first ? d : d - half);
      const float x = T::to_float(e[t]);
      const float y = T::to_float(kn[partner]);
      const float cs = T::to_float(cos_row[f]);
      const float sn = T::to_float(sin_row[f]);
      const float r = first ? __fsub_rn(__fmul_rn(x, cs), __fmul_rn(y, sn))
                            : __fadd_rn(__fmul_rn(y, sn), __fmul_rn(x, cs));
      out[t] = T::from_float(r);
    }
    kv = *reinterpret_cast<const uint4*>(out);
  }
  *reinterpret_cast<uint4*>(static_cast<Elem*>(const_cast<void*>(p.k)) + ko) = kv;
}

// One warp per output row (b, h, i): lse = log sum exp(lse_s), O = sum exp(lse_s - lse) O_s.
template <typename Elem>
__global__ void __launch_bounds__(kAuxThreads) combine_kernel(const AttnArgs a) {
  using T = ElemTraits<Elem>;
  const int64_t rows = static_cast<int64_t>(a.batch) * a.nheads * a.seqlen_q;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kAuxThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int i = static_cast<int>(row % a.seqlen_q);
  const int h = static_cast<int>(row / a.seqlen_q % a.nheads);
  const int b = static_cast<int>(row / (static_cast<int64_t>(a.seqlen_q) * a.nheads));

  float m = -INFINITY;
  for (int s = lane; s < a.splits; s += 32) m = fmaxf(m, a.part_lse[s * rows + row]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  float sum = 0.f;
  if (m != -INFINITY) {
    for (int s = lane; s < a.splits; s += 32) sum += expf(a.part_lse[s * rows + row] - m);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float lse = m == -INFINITY ? -INFINITY : m + logf(sum);

  Elem* out = static_cast<Elem*>(a.out) + b * a.o_bs + i * a.o_rs + h * a.o_hs;
  for (int d = lane * 4; d < a.head_dim; d += 128) {
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    if (lse != -INFINITY) {
      for (int s = 0; s < a.splits; ++s) {
        const float ls = a.part_lse[s * rows + row];
        if (ls == -INFINITY) continue;  // empty split: weight 0 (its O is 0 anyway)
        const float w = expf(ls - lse);
        const float4 x = *reinterpret_cast<const float4*>(a.part_o + (s * rows + row) * a.head_dim + d);
        acc.x += w * x.x;
        acc.y += w * x.y;
        acc.z += w * x.z;
        acc.w += w * x.w;
      }
    }
    uint2 packed;
    packed.x = T::pack2(acc.x, acc.y);
    packed.y = T::pack2(acc.z, acc.w);
    *reinterpret_cast<uint2*>(out + d) = packed;
  }
  if (lane == 0) a.lse[b * a.lse_bs + h * a.lse_hs + i] = lse == -INFINITY ? INFINITY : lse;
}

}  // namespace

void launch_append(const KvcacheParams& p, void* stream) {
  const int64_t total = static_cast<int64_t>(p.batch) * p.seqlen_new * p.nheads_k * (p.head_dim / 8);
  if (total == 0) return;
  const unsigned blocks = static_cast<unsigned>((total + kAuxThreads - 1) / kAuxThreads);
  auto st = static_cast<cudaStream_t>(stream);
  if (p.dtype == DType::kFloat16) {
    append_kernel<__half><<<blocks, kAuxThreads, 0, st>>>(p);
  } else {
    append_kernel<__nv_bfloat16><<<blocks, kAuxThreads, 0, st>>>(p);
  }
}

void launch_combine(const AttnArgs& a, DType dtype, void* stream) {
  const int64_t rows = static_cast<int64_t>(a.batch) * a.nheads * a.seqlen_q;
  if (rows == 0) return;
  const unsigned blocks = static_cast<unsigned>((rows + kAuxThreads / 32 - 1) / (kAuxThreads / 32));
  auto st = static_cast<cudaStream_t>(stream);
  if (dtype == DType::kFloat16) {
    combine_kernel<__half><<<blocks, kAuxThreads, 0, st>>>(a);
  } else {
    combine_kernel<__nv_bfloat16><<<blocks, kAuxThreads, 0, st>>>(a);
  }
}

}  // namespace flash::kvcache_cuda
