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
#include "common/varlen.h"

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
  int seqlen_q, nheads;  // varlen: seqlen_q = max_seqlen_q
  int64_t seqlen_q_rounded;
  float softmax_scale;
  // Varlen (cu_seqlens_q set): out / dout / dq are (total_q, nheads, d), lse is (nheads, total_q),
  // the workspace is per head with per-sequence padded rows (bwd_workspace.h; ws_block_m is the
  // kernel's kBlockM). Defaults: fixed length.
  const int* cu_seqlens_q = nullptr;
  int total_q = 0;
  int64_t ws_head_stride = 0;
  int ws_block_m = 0;
};

// Sequence b's packed rows (start, length) and its workspace row of (b, h, row 0).
struct BwdAuxSeq {
  int64_t start;
  int len;
  int64_t ws_row0;
};

__device__ __forceinline__ BwdAuxSeq bwd_aux_seq(const BwdAuxParams& p, int b, int h) {
  if (p.cu_seqlens_q == nullptr)
    return BwdAuxSeq{0, p.seqlen_q, (int64_t(b) * p.nheads + h) * p.seqlen_q_rounded};
  // Clamped exactly as the main kernel clamps it (bwd_seq_info), so both agree on every row.
  const PackedRange r = packed_range(p.cu_seqlens_q, b, p.total_q, p.seqlen_q);
  return BwdAuxSeq{r.start, r.len,
                   int64_t(h) * p.ws_head_stride + bwd_varlen_seq_row0(r.start, b, p.ws_block_m)};
}

// Grid (ceil(sq_r / 8), nheads, batch); warp w of the CTA handles row blockIdx.x * 8 + w.
// Varlen: rows of sequence b, up to its length rounded to whole query blocks (sq_r is sized for
// the longest sequence).
template <typename Element, int kHeadDim>
__global__ void __launch_bounds__(kAuxThreads) bwd_preprocess_kernel(BwdAuxParams p) {
  constexpr int kPerLane = kHeadDim / 32;  // 2 or 4 elements
  const int h = blockIdx.y, b = blockIdx.z;
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * (kAuxThreads / 32) + threadIdx.x / 32;
  if (row >= p.seqlen_q_rounded) return;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const BwdAuxSeq seq = bwd_aux_seq(p, b, h);
  if (varlen) {
    const int64_t padded = (int64_t(seq.len) + p.ws_block_m - 1) / p.ws_block_m * p.ws_block_m;
    if (row >= padded) return;
  }
  const int64_t dst = seq.ws_row0 + row;
  if (row >= seq.len) {
    if (lane == 0) {
      p.lse_log2[dst] = INFINITY;
      p.dpsum[dst] = 0.f;
    }
    return;
  }
  // Varlen: packed row start + row, no batch stride.
  const int64_t batch_row = varlen ? seq.start + row : row;
  const int64_t ob = varlen ? 0 : b * p.out_batch_stride;
  const int64_t db = varlen ? 0 : b * p.dout_batch_stride;
  const Element* o = static_cast<const Element*>(p.out) + ob + batch_row * p.out_row_stride +
                     h * p.out_head_stride + lane * kPerLane;
  const Element* d = static_cast<const Element*>(p.dout) + db + batch_row * p.dout_row_stride +
                     h * p.dout_head_stride + lane * kPerLane;
  cutlass::Array<Element, kPerLane> vo = *reinterpret_cast<const cutlass::Array<Element, kPerLane>*>(o);
  cutlass::Array<Element, kPerLane> vd = *reinterpret_cast<const cutlass::Array<Element, kPerLane>*>(d);
  float acc = 0.f;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) acc += float(vo[e]) * float(vd[e]);
#pragma unroll
  for (int s = 16; s > 0; s >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, s);
  if (lane == 0) {
    const float lse = p.lse[(varlen ? 0 : b * p.lse_batch_stride) + h * p.lse_head_stride + batch_row];
    p.dpsum[dst] = acc;
    // +inf (a row that saw no key) stays +inf: P = exp2(x - inf) = 0.
    p.lse_log2[dst] = lse * 1.4426950408889634f;
  }
}

// Grid (ceil(sq / 16), nheads, batch); each thread converts 8 consecutive columns of one row.
// Varlen: rows of sequence b only (the grid is sized for the longest one).
template <typename Element, int kHeadDim>
__global__ void __launch_bounds__(kAuxThreads) bwd_convert_dq_kernel(BwdAuxParams p) {
  constexpr int kRows = 16, kChunks = kHeadDim / 8;
  const int h = blockIdx.y, b = blockIdx.z;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const BwdAuxSeq seq = bwd_aux_seq(p, b, h);
  for (int it = threadIdx.x; it < kRows * kChunks; it += kAuxThreads) {
    const int row = blockIdx.x * kRows + it / kChunks;
    const int col = (it % kChunks) * 8;
    if (row >= seq.len) continue;
    // (the workspace rows of a sequence start on a kBlockM boundary, so row % 8 is the swizzle
    // phase the main kernel used: it swizzles by the row within the query block)
    const float* src = p.dq_accum + (seq.ws_row0 + row) * kHeadDim + dq_swizzle_col_d<kHeadDim>(row, col);
    const float4 lo = *reinterpret_cast<const float4*>(src);
    const float4 hi = *reinterpret_cast<const float4*>(src + 4);
    const float v[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    cutlass::Array<Element, 8> o;
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = Element(v[e] * p.softmax_scale);
    const int64_t batch_row = varlen ? seq.start + row : row;
    Element* dst = static_cast<Element*>(p.dq) + (varlen ? 0 : b * p.dq_batch_stride) +
                   batch_row * p.dq_row_stride + h * p.dq_head_stride + col;
    *reinterpret_cast<cutlass::Array<Element, 8>*>(dst) = o;
  }
}

}  // namespace flash::sm90
