// Parameter structs of the three entry points (forward, backward, kvcache forward).
//
// Plain data over raw pointers: no ownership, no framework types. All strides are in ELEMENTS,
// the last (head-dim) dimension is contiguous (stride 1). Shapes follow flash-attn:
//   q    (batch, seqlen_q, nheads,   head_dim)      varlen: (total_q, nheads,   head_dim)
//   k, v (batch, seqlen_k, nheads_k, head_dim)      varlen: (total_k, nheads_k, head_dim)
//        paged (block_table set): (num_blocks, page_size, nheads_k, head_dim)
//   out  like q; softmax_lse fp32 natural-log, (batch, nheads, seqlen_q) or varlen (nheads, total_q)
//
// Semantics (identical in every backend; csrc/common/mask.h is the executable definition):
//   row i of a sequence sees key j iff  j - (i + sk - sq) in [-window_left, window_right]
//   (a side of -1 is unbounded; causal == window_right 0). Scores: s = scale * q.k, then
//   softcap c > 0: s = c * tanh(s / c); ALiBi: s -= slope * |i + sk - sq - j|. A row that sees no
//   key writes out = 0 and lse = +inf. GQA: q head h reads kv head h / (nheads / nheads_k).
#pragma once

#include <cstddef>
#include <cstdint>

#include "flash/types.h"

namespace flash {

struct FwdParams {
  // ---- placement -------------------------------------------------------------------------
  Device device = Device::kCPU;
  int device_index = 0;  // CUDA ordinal of every pointer below (ignored on CPU)
  DType dtype = DType::kFloat16;

  // ---- tensors ---------------------------------------------------------------------------
  const void* q = nullptr;
  int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;
  const void* k = nullptr;  // paged: batch stride is the stride between pages
  int64_t k_batch_stride = 0, k_row_stride = 0, k_head_stride = 0;
  const void* v = nullptr;
  int64_t v_batch_stride = 0, v_row_stride = 0, v_head_stride = 0;
  void* out = nullptr;
  int64_t out_batch_stride = 0, out_row_stride = 0, out_head_stride = 0;
  float* softmax_lse = nullptr;  // always written; row stride 1
  int64_t lse_batch_stride = 0, lse_head_stride = 0;  // varlen: batch stride unused

  // ---- shapes ----------------------------------------------------------------------------
  int batch = 0;
  int seqlen_q = 0;  // varlen: max_seqlen_q
  int seqlen_k = 0;  // varlen: max_seqlen_k; paged: largest key count of any sequence
  int nheads = 0;
  int nheads_k = 0;
  int head_dim = 0;  // the real head dim (any value 1..256 on CPU; multiple of 8 on CUDA)
  int total_q = 0;   // varlen: rows of q (cu_seqlens_q[batch])
  // varlen without block_table: rows of k/v. Required (>= 0) so that kernels can clamp device-held
  // cu_seqlens_k against the tensor (they cannot be checked on the host without a sync).
  int64_t total_k = -1;

  // ---- variable length (all nullptr for fixed-length batches) ----------------------------
  const int32_t* cu_seqlens_q = nullptr;  // (batch + 1), device memory of `device`
  const int32_t* cu_seqlens_k = nullptr;  // (batch + 1); with block_table only the lengths count
  const int32_t* seqused_k = nullptr;     // (batch): keys actually used per sequence (<= length)

  // ---- paged KV (block_table set): key t of sequence b is row t % page_size of page
  //      block_table[b * block_table_batch_stride + t / page_size] --------------------------
  const int32_t* block_table = nullptr;
  int64_t block_table_batch_stride = 0;
  int page_size = 0;
  int num_pages = 0;  // k/v dim 0; page indices outside [0, num_pages) are never dereferenced

  // ---- score modifiers and masks ---------------------------------------------------------
  float softmax_scale = 1.0f;
  bool causal = false;       // canonicalised by validation into window_right = 0
  int window_left = -1;      // -1: unbounded
  int window_right = -1;     // -1: unbounded
  float softcap = 0.0f;      // 0: off
  const float* alibi_slopes = nullptr;  // (nheads) or (batch, nheads) fp32
  int64_t alibi_batch_stride = 0;       // 0 for a (nheads) vector

  // ---- dropout (keep with prob 1 - p, scale kept values by 1 / (1 - p)) -------------------
  float dropout_p = 0.0f;
  const uint64_t* rng_state = nullptr;  // 2 values {seed, offset} on `device`, read at run time
  // Optional S_dmask output (dtype of q): softmax probabilities, dropped entries negated,
  // invisible entries 0. Shape (batch, nheads, seqlen_q, seqlen_k), last stride 1.
  void* attn_probs = nullptr;
  int64_t probs_batch_stride = 0, probs_head_stride = 0, probs_row_stride = 0;

  // ---- scratch memory supplied by the caller (size from fwd_workspace_size) --------------
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

  // ---- CUDA path request (kAuto: fastest supported) --------------------------------------
  CudaPath cuda_path = CudaPath::kAuto;
};

struct BwdParams : FwdParams {
  // Inputs reused from FwdParams: q, k, v, out, softmax_lse (as the forward wrote them), shapes,
  // masks and rng_state (the same state the forward used, so dropout masks match).
  const void* dout = nullptr;
  int64_t dout_batch_stride = 0, dout_row_stride = 0, dout_head_stride = 0;
  void* dq = nullptr;
  int64_t dq_batch_stride = 0, dq_row_stride = 0, dq_head_stride = 0;
  void* dk = nullptr;  // (batch, seqlen_k, nheads_k, head_dim): reduced over the GQA group
  int64_t dk_batch_stride = 0, dk_row_stride = 0, dk_head_stride = 0;
  void* dv = nullptr;
  int64_t dv_batch_stride = 0, dv_row_stride = 0, dv_head_stride = 0;
  // Bitwise-reproducible backward (no dependence on the order of atomics).
  bool deterministic = false;
};

struct KvcacheParams : FwdParams {
  // k/v of FwdParams are the caches: (batch_cache, seqlen_cache, nheads_k, head_dim) or paged.
  // seqlen_k = seqlen_cache (contiguous) or max_blocks_per_seq * page_size (paged).
  // Keys [leftpad, cache_seqlens + seqlen_new) of the sequence are attended.
  int batch_cache = 0;                     // dim 0 of a contiguous cache
  const int32_t* cache_seqlens = nullptr;  // (batch): keys in the cache before this call
  int cache_seqlen_const = 0;              // used when cache_seqlens is nullptr
  const int32_t* cache_batch_idx = nullptr;  // (batch): cache row of each sequence (not paged)
  const int32_t* cache_leftpad = nullptr;    // (batch): first valid key of each sequence

  // New keys/values appended in place at cache index cache_seqlens[b] + i (nullptr: none).
  const void* k_new = nullptr;
  int64_t knew_batch_stride = 0, knew_row_stride = 0, knew_head_stride = 0;
  const void* v_new = nullptr;
  int64_t vnew_batch_stride = 0, vnew_row_stride = 0, vnew_head_stride = 0;
  int seqlen_new = 0;

  // Rotary embedding of q and k_new inside the kernel: cos/sin (seqlen_ro, rotary_dim / 2),
  // dtype of q, rows contiguous. New key i uses row cache_seqlens[b] + i; query row i uses
  // cache_seqlens[b] + i when causal or local, else cache_seqlens[b].
  const void* rotary_cos = nullptr;
  const void* rotary_sin = nullptr;
  int rotary_dim = 0;
  int seqlen_rotary = 0;
  bool rotary_interleaved = false;  // true: GPT-J pairs (2i, 2i+1); false: GPT-NeoX halves

  // Split-KV: 0 = heuristic, 1 = no split, n > 1 = n splits combined exactly through lse.
  int num_splits = 0;
};

}  // namespace flash
