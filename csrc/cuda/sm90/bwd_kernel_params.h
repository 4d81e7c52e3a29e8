// What the sm90 backward kernel receives (by value, as a __grid_constant__ parameter): four TMA
// descriptors (q, dout, k, v) built on the host for this call, plus the scalars and pointers of
// BwdParams the device needs, and the work ranges both roles derive identically.
#pragma once

#include <utility>

#include "bwd_traits.h"
#include "bwd_workspace.h"
#include "common/mask.h"
#include "common/varlen.h"
#include "fwd_kernel_params.h"  // QkvGmemLayout

namespace flash::sm90 {

template <typename Traits>
struct BwdTmaTypes {
  using Element = typename Traits::Element;
  using GmemTensor = decltype(make_tensor(make_gmem_ptr(static_cast<Element const*>(nullptr)),
                                          std::declval<QkvGmemLayout>()));
  // Q and dO: one stage of the ring = the first two modes of the staged layout.
  using TmaQ = decltype(make_tma_copy(
      SM90_TMA_LOAD{}, std::declval<GmemTensor>(), take<0, 2>(typename Traits::SmemLayoutQ{}),
      Shape<Int<Traits::kBlockM>, Int<Traits::kHeadDim>>{}, _1{}));
  using TmaKV = decltype(make_tma_copy(
      SM90_TMA_LOAD{}, std::declval<GmemTensor>(), typename Traits::SmemLayoutK{},
      Shape<Int<Traits::kBlockN>, Int<Traits::kHeadDim>>{}, _1{}));
};

template <typename Traits>
struct BwdKernelParams {
  using Element = typename Traits::Element;
  typename BwdTmaTypes<Traits>::TmaQ tma_q;
  typename BwdTmaTypes<Traits>::TmaQ tma_do;
  typename BwdTmaTypes<Traits>::TmaKV tma_k;
  typename BwdTmaTypes<Traits>::TmaKV tma_v;

  int batch = 0, nheads = 0, nheads_k = 0, seqlen_q = 0, seqlen_k = 0;  // varlen: max lengths
  int head_ratio = 1;              // nheads / nheads_k: q heads looped over inside one CTA
  // Varlen (both nullptr: fixed length). The TMA maps are then (total rows, d, heads, 1) and a
  // sequence is a row range of them; total_q / total_k also clamp the device-held offsets
  // (common/varlen.h). ws_head_stride: rows of a head in the workspace arrays (bwd_workspace.h).
  const int* cu_seqlens_q = nullptr;
  const int* cu_seqlens_k = nullptr;
  int total_q = 0, total_k = 0;
  int64_t ws_head_stride = 0;
  int num_m_blocks = 0;            // query blocks per (batch, head)
  int64_t seqlen_q_rounded = 0;    // num_m_blocks * kBlockM (row pitch of the workspace arrays)
  int window_left = -1, window_right = -1;

  // Dropout (kModScores instantiation only): element kept iff its Philox word (common/philox.h,
  // the forward's mapping) is below keep_threshold; kept values scaled by rp_dropout = 1/(1-p).
  bool dropout = false;
  uint32_t keep_threshold = 0xFFFFFFFFu;
  float rp_dropout = 1.f;
  const uint64_t* rng_state = nullptr;  // {seed, offset} in device memory, as the forward used

  float softmax_scale = 1.f;
  float softcap = 0.f;                  // 0: off
  const float* alibi_slopes = nullptr;  // nullptr: off
  int64_t alibi_batch_stride = 0;

  const float* lse_log2 = nullptr;  // workspace, see bwd_workspace.h
  const float* dpsum = nullptr;
  float* dq_accum = nullptr;
  int* dq_sem = nullptr;            // deterministic mode only

  Element* dk = nullptr;
  int64_t dk_batch_stride = 0, dk_row_stride = 0, dk_head_stride = 0;
  Element* dv = nullptr;
  int64_t dv_batch_stride = 0, dv_row_stride = 0, dv_head_stride = 0;
};

// Where sequence bidb lives: its rows in q/dout/out (q_offset) and k/v/dk/dv (k_offset), its
// lengths, and its rows in the workspace arrays. Every role derives it from the same params, so
// they agree on the work ranges. Fixed length: offsets 0 (the TMA maps carry the batch index).
struct BwdSeqInfo {
  int q_offset, k_offset;
  int seqlen_q, seqlen_k;
  int64_t ws_row0;         // workspace row of (bidb, head 0, row 0)
  int64_t ws_head_stride;  // + h * ws_head_stride for head h

  __device__ __forceinline__ int64_t ws_row(int bidh, int row) const {
    return ws_row0 + int64_t(bidh) * ws_head_stride + row;
  }
};

template <typename Traits>
__device__ __forceinline__ BwdSeqInfo bwd_seq_info(const BwdKernelParams<Traits>& p, int bidb) {
  if (p.cu_seqlens_q == nullptr)
    return BwdSeqInfo{0, 0, p.seqlen_q, p.seqlen_k, int64_t(bidb) * p.nheads * p.seqlen_q_rounded,
                      p.seqlen_q_rounded};
  // Clamped into the tensors and to the max lengths the launch was sized for: a corrupt
  // cu_seqlens gives wrong numbers for its sequence, never an access outside q/k/.../workspace.
  const PackedRange q = packed_range(p.cu_seqlens_q, bidb, p.total_q, p.seqlen_q);
  const PackedRange k = packed_range(p.cu_seqlens_k, bidb, p.total_k, p.seqlen_k);
  return BwdSeqInfo{int(q.start), int(k.start), q.len, k.len,
                    bwd_varlen_seq_row0(q.start, bidb, Traits::kBlockM), p.ws_head_stride};
}

// Step order (producer, consumers and dQ writer alike): q heads of the group outer, query blocks
// DESCENDING inner. With a window (causal included) m_end grows with the key block, so key block
// n+1 reaches query block m after block n: deterministic mode, which adds dQ tiles in ascending
// key-block order, then never waits in lock-step; without a window all blocks reach m together.
//
// Query blocks [m_begin, m_end) that see at least one key of key block n_block. The rows that see
// key j are j - shift - window_right .. j - shift + window_left (shift = sk - sq, a side of -1
// unbounded); over the block's keys that union is one interval.
struct QueryBlockRange {
  int m_begin, m_end;
};

template <int kBlockM, int kBlockN>
__host__ __device__ __forceinline__ QueryBlockRange query_block_range(const MaskRule& rule,
                                                                      int n_block) {
  const int key_lo = n_block * kBlockN;
  const int key_hi = min(key_lo + kBlockN, rule.seqlen_k) - 1;
  const int shift = rule.seqlen_k - rule.seqlen_q;
  int row_lo = rule.window_right >= 0 ? key_lo - shift - rule.window_right : 0;
  int row_hi = rule.window_left >= 0 ? key_hi - shift + rule.window_left : rule.seqlen_q - 1;
  row_lo = max(row_lo, 0);
  row_hi = min(row_hi, rule.seqlen_q - 1);
  QueryBlockRange r;
  if (key_hi < key_lo || row_hi < row_lo) {
    r.m_begin = r.m_end = 0;
  } else {
    r.m_begin = row_lo / kBlockM;
    r.m_end = row_hi / kBlockM + 1;
  }
  return r;
}

}  // namespace flash::sm90
