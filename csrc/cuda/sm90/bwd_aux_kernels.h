// The two memory-bound passes around the sm90 backward kernel (layouts in bwd_workspace.h):
//   bwd_preprocess_kernel: D = rowsum(dO * O) and lse_log2 = lse * log2(e) into padded arrays,
//     so the main kernel loads each query block's 64 values with one aligned bulk copy
//     (+inf / 0 in the padding rows make P = 0 and dS = 0 there without any test).
//   bwd_convert_dq_kernel: dq = softmax_scale * dq_accum, undoing the column swizzle.
#pragma once

#include <cstdint>

#include <cutlass/array.h>
#include <cutlass/numeric_types.h>

#include "bwd_workspace.h"

namespace flash::sm90 {

constexpr int kAuxThreads = 256;

struct BwdAuxParams {
  const void* out;
  int64_t out_batch_stride, out_row_stride, out_head_stride;
  const void* dout;
  int64_t dout_batch_stride, dout_row_stride, dout_head_stride;
  const float* lse;
  int64_t lse_batch_stride, lse_head_stride;
  void* dq;
  int64_t dq_batch_stride, dq_row_stride, dq_head_stride;
  float* lse_log2;
  float* dpsum;
  const float* dq_accum;
  int seqlen_q, nheads;
  int64_t seqlen_q_rounded;
  float softmax_scale;
};

// Grid (ceil(sq_r / 8), nheads, batch); warp w of the CTA handles row blockIdx.x * 8 + w.
template <typename Element, int kHeadDim>
__global__ void __launch_bounds__(kAuxThreads) bwd_preprocess_kernel(BwdAuxParams p) {
  constexpr int kPerLane = kHeadDim / 32;  // 2 or 4 elements
  const int h = blockIdx.y, b = blockIdx.z;
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * (kAuxThreads / 32) + threadIdx.x / 32;
  if (row >= p.seqlen_q_rounded) return;
  const int64_t dst = (int64_t(b) * p.nheads + h) * p.seqlen_q_rounded + row;
  if (row >= p.seqlen_q) {
    if (lane == 0) {
      p.lse_log2[dst] = INFINITY;
      p.dpsum[dst] = 0.f;
    }
    return;
  }
  const Element* o = static_cast<const Element*>(p.out) + b * p.out_batch_stride +
                     row * p.out_row_stride + h * p.out_head_stride + lane * kPerLane;
  const Element* d = static_cast<const Element*>(p.dout) + b * p.dout_batch_stride +
                     row * p.dout_row_stride + h * p.dout_head_stride + lane * kPerLane;
  cutlass::Array<Element, kPerLane> vo = *reinterpret_cast<const cutlass::Array<Element, kPerLane>*>(o);
  cutlass::Array<Element, kPerLane> vd = *reinterpret_cast<const cutlass::Array<Element, kPerLane>*>(d);
  float acc = 0.f;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) acc += float(vo[e]) * float(vd[e]);
#pragma unroll
  for (int s = 16; s > 0; s >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, s);
  if (lane == 0) {
    const float lse = p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + row];
    p.dpsum[dst] = acc;
    // +inf (a row that saw no key) stays +inf: P = exp2(x - inf) = 0.
    p.lse_log2[dst] = lse * 1.4426950408889634f;
  }
}

// Grid (ceil(sq / 16), nheads, batch); each thread converts 8 consecutive columns of one row.
template <typename Element, int kHeadDim>
__global__ void __launch_bounds__(kAuxThreads) bwd_convert_dq_kernel(BwdAuxParams p) {
  constexpr int kRows = 16, kChunks = kHeadDim / 8;
  const int h = blockIdx.y, b = blockIdx.z;
  for (int it = threadIdx.x; it < kRows * kChunks; it += kAuxThreads) {
    const int row = blockIdx.x * kRows + it / kChunks;
    const int col = (it % kChunks) * 8;
    if (row >= p.seqlen_q) continue;
    const float* src = p.dq_accum +
                       ((int64_t(b) * p.nheads + h) * p.seqlen_q_rounded + row) * kHeadDim +
                       dq_swizzle_col(row, col);
    const float4 lo = *reinterpret_cast<const float4*>(src);
    const float4 hi = *reinterpret_cast<const float4*>(src + 4);
    const float v[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    cutlass::Array<Element, 8> o;
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = Element(v[e] * p.softmax_scale);
    Element* dst = static_cast<Element*>(p.dq) + b * p.dq_batch_stride + int64_t(row) * p.dq_row_stride +
                   h * p.dq_head_stride + col;
    *reinterpret_cast<cutlass::Array<Element, 8>*>(dst) = o;
  }
}

}  // namespace flash::sm90
