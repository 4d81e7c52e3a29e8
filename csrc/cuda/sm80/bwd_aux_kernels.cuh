// The small kernels around the main backward kernel: D = rowsum(dO * O) before it; dQ conversion
// (sum of the fp32 slices times the softmax scale) and the GQA dK/dV group reduction after it.
// All are memory-bound elementwise passes; the grid is (row blocks of the longest sequence, batch)
// so varlen sequences find their rows through cu_seqlens on the device.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/sm80/bwd_workspace.cuh"

namespace flash::sm80::bwd {

constexpr int kAuxThreads = 256;
constexpr int kAuxRows = 32;  // sequence rows per CTA of the aux kernels

template <typename Element>
__device__ __forceinline__ float to_float(Element x);
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename Element>
__device__ __forceinline__ Element from_float(float x);
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// One warp per (row, head): lanes take 8-element chunks of the head dim (head_dim <= 256).
template <typename Element>
__global__ void __launch_bounds__(kAuxThreads) bwd_dot_do_o_kernel(BwdParams p, BwdWorkspace ws) {
  const int b = blockIdx.y;
  const SeqInfo si(p, b);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int items = kAuxRows * p.nheads;
  const auto* dout = static_cast<const Element*>(p.dout);
  const auto* out = static_cast<const Element*>(p.out);
  for (int it = warp; it < items; it += kAuxThreads / 32) {
    const int i = blockIdx.x * kAuxRows + it / p.nheads;
    const int h = it % p.nheads;
    if (i >= si.sq) continue;
    float acc = 0.f;
    const int c = lane * 8;
    if (c < p.head_dim) {
      const Element* pdo = dout + si.q_offset(p, p.dout_batch_stride, p.dout_row_stride, b, i) +
                           h * p.dout_head_stride + c;
      const Element* po = out + si.q_offset(p, p.out_batch_stride, p.out_row_stride, b, i) +
                          h * p.out_head_stride + c;
      const uint4 vdo = *reinterpret_cast<const uint4*>(pdo);
      const uint4 vo = *reinterpret_cast<const uint4*>(po);
      const Element* edo = reinterpret_cast<const Element*>(&vdo);
      const Element* eo = reinterpret_cast<const Element*>(&vo);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc += to_float(edo[e]) * to_float(eo[e]);
    }
#pragma unroll
    for (int s = 16; s > 0; s >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, s);
    if (lane == 0) ws.d[h * ws.rows_q + si.q_row0 + i] = acc;
  }
}

// Same D as bwd_dot_do_o_kernel (bitwise: the lanes past kChunks only added zeros there), for head_dim
// = 8 kChunks with kChunks | 32: kChunks threads per (row, head), one 16-byte chunk each, and kUnroll
// items per thread loaded before any is reduced, so a warp keeps kUnroll x 1 KB in flight instead of one
// 512-byte item (the old kernel: half the lanes idle at d = 128, one dependent round trip per item).
template <typename Element, int kChunks>
__global__ void __launch_bounds__(kAuxThreads) bwd_dot_do_o_vec_kernel(BwdParams p, BwdWorkspace ws) {
  static_assert(32 % kChunks == 0, "an item's lanes stay inside one warp");
  constexpr int kItemsPerPass = kAuxThreads / kChunks;
  constexpr int kUnroll = 4;
  const int b = blockIdx.y;
  const SeqInfo si(p, b);
  const int c = (threadIdx.x % kChunks) * 8;
  const int items = kAuxRows * p.nheads;
  const auto* dout = static_cast<const Element*>(p.dout);
  const auto* out = static_cast<const Element*>(p.out);
  // The trip count is uniform over the CTA (the shuffles need every lane of a warp).
  for (int pass = 0; pass * kItemsPerPass * kUnroll < items; ++pass) {
    const int base = pass * kItemsPerPass * kUnroll + static_cast<int>(threadIdx.x) / kChunks;
    uint4 vdo[kUnroll], vo[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int it = base + u * kItemsPerPass;
      const int i = blockIdx.x * kAuxRows + it / p.nheads;
      const int h = it % p.nheads;
      vdo[u] = vo[u] = make_uint4(0u, 0u, 0u, 0u);
      if (it < items && i < si.sq) {
        vdo[u] = *reinterpret_cast<const uint4*>(
            dout + si.q_offset(p, p.dout_batch_stride, p.dout_row_stride, b, i) + h * p.dout_head_stride + c);
        vo[u] = *reinterpret_cast<const uint4*>(
            out + si.q_offset(p, p.out_batch_stride, p.out_row_stride, b, i) + h * p.out_head_stride + c);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int it = base + u * kItemsPerPass;
      const int i = blockIdx.x * kAuxRows + it / p.nheads;
      const int h = it % p.nheads;
      const Element* edo = reinterpret_cast<const Element*>(&vdo[u]);
      const Element* eo = reinterpret_cast<const Element*>(&vo[u]);
      float acc = 0.f;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc += to_float(edo[e]) * to_float(eo[e]);
      // The old kernel's tree from s = kChunks / 2 down (its larger offsets only added zeros).
#pragma unroll
      for (int s = kChunks / 2; s > 0; s >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, s);
      if (c == 0 && it < items && i < si.sq) ws.d[h * ws.rows_q + si.q_row0 + i] = acc;
    }
  }
}

// dq = scale * sum over slices of dq_accum, 8 channels per thread.
template <typename Element>
__global__ void __launch_bounds__(kAuxThreads) bwd_convert_dq_kernel(BwdParams p, BwdWorkspace ws) {
  const int b = blockIdx.y;
  const SeqInfo si(p, b);
  const int chunks = p.head_dim / 8;
  const int items = kAuxRows * p.nheads * chunks;
  const int64_t slice_elems = ws.rows_q * p.nheads * p.head_dim;
  auto* dq = static_cast<Element*>(p.dq);
  for (int it = threadIdx.x; it < items; it += kAuxThreads) {
    const int i = blockIdx.x * kAuxRows + it / (p.nheads * chunks);
    const int h = (it / chunks) % p.nheads;
    const int c = (it % chunks) * 8;
    if (i >= si.sq) continue;
    const float* src = ws.dq_accum + ((si.q_row0 + i) * p.nheads + h) * p.head_dim + c;
    float v[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = 0.f;
    for (int s = 0; s < ws.dq_slices; ++s) {  // fixed order: bitwise reproducible
      const float4 lo = *reinterpret_cast<const float4*>(src + s * slice_elems);
      const float4 hi = *reinterpret_cast<const float4*>(src + s * slice_elems + 4);
      v[0] += lo.x; v[1] += lo.y; v[2] += lo.z; v[3] += lo.w;
      v[4] += hi.x; v[5] += hi.y; v[6] += hi.z; v[7] += hi.w;
    }
    alignas(16) Element o[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = from_float<Element>(v[e] * p.softmax_scale);
    Element* dst = dq + si.q_offset(p, p.dq_batch_stride, p.dq_row_stride, b, i) + h * p.dq_head_stride + c;
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(o);
  }
}

// GQA: dk[j, hk] = sum over the group's q heads of dk_exp[j, h] (fixed order), same for dv.
// dk_exp is already scaled by softmax_scale. Keys past seqused_k carry zeros from the main kernel.
template <typename Element>
__global__ void __launch_bounds__(kAuxThreads) bwd_reduce_dkv_kernel(BwdParams p, BwdWorkspace ws) {
  const int b = blockIdx.y;
  const SeqInfo si(p, b);
  const int chunks = p.head_dim / 8;
  const int group = p.nheads / p.nheads_k;
  const int items = kAuxRows * p.nheads_k * chunks;
  auto* dk = static_cast<Element*>(p.dk);
  auto* dv = static_cast<Element*>(p.dv);
  for (int it = threadIdx.x; it < items; it += kAuxThreads) {
    const int j = blockIdx.x * kAuxRows + it / (p.nheads_k * chunks);
    const int hk = (it / chunks) % p.nheads_k;
    const int c = (it % chunks) * 8;
    if (j >= si.sk) continue;
#pragma unroll
    for (int which = 0; which < 2; ++which) {
      const float* src = (which == 0 ? ws.dk_exp : ws.dv_exp) +
                         ((si.k_row0 + j) * p.nheads + static_cast<int64_t>(hk) * group) * p.head_dim + c;
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = 0.f;
      for (int g = 0; g < group; ++g) {
        const float4 lo = *reinterpret_cast<const float4*>(src + g * p.head_dim);
        const float4 hi = *reinterpret_cast<const float4*>(src + g * p.head_dim + 4);
        v[0] += lo.x; v[1] += lo.y; v[2] += lo.z; v[3] += lo.w;
        v[4] += hi.x; v[5] += hi.y; v[6] += hi.z; v[7] += hi.w;
      }
      alignas(16) Element o[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = from_float<Element>(v[e]);
      Element* dst = which == 0 ? dk + si.k_offset(p, p.dk_batch_stride, p.dk_row_stride, b, j) + hk * p.dk_head_stride + c
                                : dv + si.k_offset(p, p.dv_batch_stride, p.dv_row_stride, b, j) + hk * p.dv_head_stride + c;
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(o);
    }
  }
}

}  // namespace flash::sm80::bwd
