// Workspace layout of the sm80 backward and per-sequence geometry, shared by host and kernels.
//
// Rows are "packed": fixed-length batches use row b * seqlen + i, varlen uses cu_seqlens[b] + i.
//   D        fp32 [nheads][rows_q]                         rowsum(dO * O) per query row
//   dq_accum fp32 [dq_slices][rows_q][nheads][head_dim]    dQ / scale, summed over key blocks
//   dk_exp   fp32 [rows_k][nheads][head_dim]               GQA only: dK per q head (already scaled)
//   dv_exp   fp32 [rows_k][nheads][head_dim]               GQA only: dV per q head
// dq_slices is 1 with atomics; in deterministic mode every CTA owns one slice (its split of the
// key blocks) and the convert kernel sums the slices in slice order.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/varlen.h"
#include "flash/params.h"

namespace flash::sm80::bwd {

constexpr int kMaxDeterministicSlices = 16;
constexpr int kTargetCtas = 264;  // about two waves of CTAs on a 132-SM H100

// Run-time scalars derived on the host.
struct BwdExtra {
  uint32_t keep_threshold;  // dropout: words below this are kept
  float rp_keep;            // 1 / (1 - dropout_p)
  bool dropout;
};

// kBlockN of the main kernel for a head-dim bucket (the deterministic split count depends on it).
// 128 up to d = 128, 64 above: the dK + dV accumulators cost 2 * kBlockN * d / 256 fp32 registers
// per thread (8 warps), which must stay <= 128 next to the S / dP fragments, and the smem
// (K, V, Q, dO, P, dS) must fit sm80's 163 KB.
constexpr int block_n_for(int head_dim_bucket) { return head_dim_bucket <= 128 ? 128 : 64; }

struct BwdWorkspace {
  float* d = nullptr;
  float* dq_accum = nullptr;
  float* dk_exp = nullptr;
  float* dv_exp = nullptr;
  int dq_slices = 1;
  int64_t rows_q = 0;
  int64_t rows_k = 0;
};

inline size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// Splits of the key blocks in deterministic mode: enough CTAs to fill the GPU, bounded memory.
inline int deterministic_slices(const BwdParams& p, int block_n) {
  const int n_blocks = (p.seqlen_k + block_n - 1) / block_n;
  const int64_t bh = static_cast<int64_t>(p.batch) * p.nheads;
  int64_t s = (kTargetCtas + bh - 1) / bh;
  if (s > kMaxDeterministicSlices) s = kMaxDeterministicSlices;
  if (s > n_blocks) s = n_blocks;
  return s < 1 ? 1 : static_cast<int>(s);
}

// Computes the layout; with base == nullptr only the size is meaningful (returned).
inline size_t plan_workspace(const BwdParams& p, int block_n, void* base, BwdWorkspace* ws) {
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int64_t rows_q = varlen ? p.total_q : static_cast<int64_t>(p.batch) * p.seqlen_q;
  // varlen: sequences are clamped into [0, total_k) rows (common/varlen.h).
  const int64_t rows_k = varlen ? p.total_k : static_cast<int64_t>(p.batch) * p.seqlen_k;
  const int slices = p.deterministic ? deterministic_slices(p, block_n) : 1;
  const bool gqa = p.nheads != p.nheads_k;
  const int64_t hd = p.head_dim;

  size_t off = 0;
  const size_t d_off = off;
  off = align_up(off + sizeof(float) * rows_q * p.nheads, 256);
  const size_t dq_off = off;
  off = align_up(off + sizeof(float) * slices * rows_q * p.nheads * hd, 256);
  size_t dk_off = 0, dv_off = 0;
  if (gqa) {
    dk_off = off;
    off = align_up(off + sizeof(float) * rows_k * p.nheads * hd, 256);
    dv_off = off;
    off = align_up(off + sizeof(float) * rows_k * p.nheads * hd, 256);
  }
  if (ws != nullptr) {
    char* b = static_cast<char*>(base);
    ws->d = reinterpret_cast<float*>(b + d_off);
    ws->dq_accum = reinterpret_cast<float*>(b + dq_off);
    ws->dk_exp = gqa ? reinterpret_cast<float*>(b + dk_off) : nullptr;
    ws->dv_exp = gqa ? reinterpret_cast<float*>(b + dv_off) : nullptr;
    ws->dq_slices = slices;
    ws->rows_q = rows_q;
    ws->rows_k = rows_k;
  }
  return off + 256;  // slack for a caller pointer that is not 256-aligned
}

// Lengths and packed-row bases of sequence b (device side).
struct SeqInfo {
  int64_t q_row0, k_row0;  // packed row of position 0
  int sq, sk;              // rows of q / k in this sequence
  int sk_used;             // keys that take part (seqused_k), <= sk

  __device__ __forceinline__ SeqInfo(const BwdParams& p, int b) {
    // Device-held lengths are clamped into the tensors (common/varlen.h): never out of bounds.
    if (p.cu_seqlens_q != nullptr) {
      const PackedRange r = packed_range(p.cu_seqlens_q, b, p.total_q, p.seqlen_q);
      q_row0 = r.start, sq = r.len;
    } else {
      q_row0 = static_cast<int64_t>(b) * p.seqlen_q;
      sq = p.seqlen_q;
    }
    if (p.cu_seqlens_k != nullptr) {
      const PackedRange r = packed_range(p.cu_seqlens_k, b, p.total_k, p.seqlen_k);
      k_row0 = r.start, sk = r.len;
    } else {
      k_row0 = static_cast<int64_t>(b) * p.seqlen_k;
      sk = p.seqlen_k;
    }
    sk_used = p.seqused_k != nullptr ? max(0, min(p.seqused_k[b], sk)) : sk;
  }

  // Element offset of row i (relative to the sequence) in a tensor with the given strides.
  __device__ __forceinline__ int64_t q_offset(const BwdParams& p, int64_t batch_stride, int64_t row_stride,
                                              int b, int i) const {
    return p.cu_seqlens_q != nullptr ? (q_row0 + i) * row_stride
                                     : static_cast<int64_t>(b) * batch_stride + static_cast<int64_t>(i) * row_stride;
  }
  __device__ __forceinline__ int64_t k_offset(const BwdParams& p, int64_t batch_stride, int64_t row_stride,
                                              int b, int j) const {
    return p.cu_seqlens_k != nullptr ? (k_row0 + j) * row_stride
                                     : static_cast<int64_t>(b) * batch_stride + static_cast<int64_t>(j) * row_stride;
  }
  // lse of (head h, row i): (b, h, s) with strides, or (h, total_q) for varlen.
  __device__ __forceinline__ int64_t lse_offset(const BwdParams& p, int b, int h, int i) const {
    return p.cu_seqlens_q != nullptr ? h * p.lse_head_stride + q_row0 + i
                                     : b * p.lse_batch_stride + h * p.lse_head_stride + i;
  }
};

}  // namespace flash::sm80::bwd
