// The two small kernels around the attention kernel:
//  - append: writes k_new (rotated when rotary is on) and v_new into the cache at absolute index
//    cache_seqlens[b] + i, bitwise like the CPU backend (fp32 rotation, no FMA contraction, one
//    round-to-nearest-even into the storage type);
//  - combine: merges the split-KV partials exactly through their lse.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstdlib>

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

// One 128-thread CTA per output row (b, h, i): lse = log sum exp(lse_s), O = sum exp(lse_s - lse)
// O_s. Decode has few rows and many splits (e.g. 32 rows x 32 splits), so the splits are read in
// parallel: thread s reads lse_s (splits <= kMaxCombineSplits), the weights go through smem, and
// the 4 warps each sum a quarter of the splits (4 partial rows in flight per thread) before a
// final reduction through smem. One pass over the partials, 16-byte loads.
constexpr int kCombineThreads = 128;
constexpr int kCombineWarps = kCombineThreads / 32;
static_assert(kCombineThreads >= 128, "one thread per split (at most 128 splits)");
struct CombineSmem {
  float4 acc[kCombineWarps - 1][32];  // warps 1..3's partial sums, 128 dims (a float4 per lane)
  float w[kCombineThreads];                 // per-split weight exp(lse_s - lse)
  float red[kCombineWarps];
};

template <typename Elem>
__global__ void __launch_bounds__(kCombineThreads) combine_kernel(const AttnArgs a) {
  using T = ElemTraits<Elem>;
  extern __shared__ __align__(16) unsigned char combine_smem[];
  CombineSmem& sh = *reinterpret_cast<CombineSmem*>(combine_smem);
  float* s_w = sh.w;
  float* s_red = sh.red;
  auto& s_acc = sh.acc;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent of the attention kernel (sm_90): everything above this
  // line overlapped the attention tail; the partials are read only after it has completed and its
  // writes are visible. A no-op when launched normally.
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
  const int64_t rows = static_cast<int64_t>(a.batch) * a.nheads * a.seqlen_q;
  const int64_t row = blockIdx.x;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int i = static_cast<int>(row % a.seqlen_q);
  const int h = static_cast<int>(row / a.seqlen_q % a.nheads);
  const int b = static_cast<int>(row / (static_cast<int64_t>(a.seqlen_q) * a.nheads));

  const float ls = tid < a.splits ? a.part_lse[tid * rows + row] : -INFINITY;
  float m = ls;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  if (lane == 0) s_red[warp] = m;
  __syncthreads();
  m = s_red[0];
#pragma unroll
  for (int w = 1; w < kCombineWarps; ++w) m = fmaxf(m, s_red[w]);
  // An empty split has lse -inf: weight 0 (its O is 0 too). All empty: m = -inf, row empty.
  float e = (m == -INFINITY || ls == -INFINITY) ? 0.f : expf(ls - m);
  float sum = e;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  __syncthreads();  // every read of s_red (max) is done
  if (lane == 0) s_red[warp] = sum;
  __syncthreads();
  sum = 0.f;
#pragma unroll
  for (int w = 0; w < kCombineWarps; ++w) sum += s_red[w];
  const float lse = m == -INFINITY ? -INFINITY : m + logf(sum);
  s_w[tid] = sum > 0.f ? e / sum : 0.f;  // exp(ls - lse)
  __syncthreads();

  Elem* out = static_cast<Elem*>(a.out) + b * a.o_bs + i * a.o_rs + h * a.o_hs;
  // d0 is block-uniform (the loop holds barriers); lanes past head_dim only join the barriers.
  for (int d0 = 0; d0 < a.head_dim; d0 += 128) {
    const int d = d0 + lane * 4;
    const bool active = d < a.head_dim;  // head_dim % 8 == 0: a 4-dim group is all in or all out
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    const float* src = a.part_o + row * a.head_dim + d;
    const int64_t split_stride = rows * a.head_dim;
#pragma unroll 4
    for (int sp = warp; active && sp < a.splits; sp += kCombineWarps) {
      const float w = s_w[sp];
      const float4 x = *reinterpret_cast<const float4*>(src + sp * split_stride);
      acc.x += w * x.x;
      acc.y += w * x.y;
      acc.z += w * x.z;
      acc.w += w * x.w;
    }
    if (warp > 0) s_acc[warp - 1][lane] = acc;
    __syncthreads();
    if (warp == 0 && active) {
#pragma unroll
      for (int w = 0; w < kCombineWarps - 1; ++w) {
        const float4 x = s_acc[w][lane];
        acc.x += x.x;
        acc.y += x.y;
        acc.z += x.z;
        acc.w += x.w;
      }
      uint2 packed;
      packed.x = T::pack2(acc.x, acc.y);
      packed.y = T::pack2(acc.z, acc.w);
      *reinterpret_cast<uint2*>(out + d) = packed;
    }
    __syncthreads();  // s_acc is reused by the next 128 dims
  }
  if (tid == 0) a.lse[b * a.lse_bs + h * a.lse_hs + i] = lse == -INFINITY ? INFINITY : lse;
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

// Compute capability >= 9.0 on the current device (read once per device), unless the
// environment variable FLASH_KVCACHE_NO_PDL is set (a switch for diagnosing launch problems).
static bool pdl_supported() {
  static const bool disabled = std::getenv("FLASH_KVCACHE_NO_PDL") != nullptr;
  if (disabled) return false;
  static std::atomic<int> cache[64] = {};  // 0 unknown, 1 no, 2 yes
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) {
    cudaGetLastError();
    return false;
  }
  int v = cache[device].load(std::memory_order_relaxed);
  if (v == 0) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      cudaGetLastError();
      major = 0;
    }
    v = major >= 9 ? 2 : 1;
    cache[device].store(v, std::memory_order_relaxed);
  }
  return v == 2;
}

void launch_combine(const AttnArgs& a, DType dtype, void* stream) {
  const int64_t rows = static_cast<int64_t>(a.batch) * a.nheads * a.seqlen_q;
  if (rows == 0) return;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(rows));  // <= 2^31 - 1 for any sane call
  cfg.blockDim = dim3(kCombineThreads);
  cfg.dynamicSmemBytes = sizeof(CombineSmem);
  cfg.stream = static_cast<cudaStream_t>(stream);
  // sm_90+: programmatic dependent launch, so the combine's launch latency hides behind the
  // attention kernel's tail (decode at batch 1 is a few microseconds end to end). The kernel
  // waits on griddepcontrol.wait before touching the partials. Older GPUs: a plain launch.
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  if (pdl_supported()) {
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
  }
  if (dtype == DType::kFloat16) {
    cudaLaunchKernelEx(&cfg, combine_kernel<__half>, a);
  } else {
    cudaLaunchKernelEx(&cfg, combine_kernel<__nv_bfloat16>, a);
  }
}

}  // namespace flash::kvcache_cuda
