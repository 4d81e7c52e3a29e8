// Per-sequence geometry of fwd/bwd params: where sequence b's rows start in q-like tensors,
// how many queries/keys it has, where its lse lives, and a KeySource for its keys.
#pragma once

#include <cstdint>

#include "cpu/tensor_access.h"
#include "flash/params.h"

namespace flash::cpu {

struct SequenceLayout {
  int b = 0;
  int seqlen_q = 0;    // queries of this sequence
  int seqlen_k = 0;    // keys it attends (seqused_k applied); the mask's key count
  int64_t q_start = -1;  // varlen: first packed row of the sequence; -1 for fixed length
  int64_t k_start = -1;  // varlen (unpaged) keys: first packed key row; -1 otherwise

  // Element offset of the sequence's row 0 in a q-shaped tensor (q, out, dout, dq).
  int64_t q_offset(int64_t batch_stride, int64_t row_stride) const {
    return q_start >= 0 ? q_start * row_stride : b * batch_stride;
  }
  // Element offset of the sequence's key 0 in a contiguous k-shaped tensor (k, v, dk, dv).
  int64_t k_offset(int64_t batch_stride, int64_t row_stride) const {
    return k_start >= 0 ? k_start * row_stride : b * batch_stride;
  }
};

inline SequenceLayout sequence_layout(const FwdParams& p, int b) {
  SequenceLayout s;
  s.b = b;
  if (p.cu_seqlens_q) {
    s.q_start = p.cu_seqlens_q[b];
    s.seqlen_q = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b];
  } else {
    s.seqlen_q = p.seqlen_q;
  }
  if (p.cu_seqlens_k) {
    s.seqlen_k = p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b];
    if (!p.block_table) s.k_start = p.cu_seqlens_k[b];
  } else {
    s.seqlen_k = p.seqlen_k;
  }
  if (p.seqused_k) s.seqlen_k = p.seqused_k[b];
  return s;
}

// Element offset of lse for (sequence, head h, row 0); rows are contiguous.
inline int64_t lse_offset(const FwdParams& p, const SequenceLayout& s, int h) {
  return s.q_start >= 0 ? h * p.lse_head_stride + s.q_start
                        : s.b * p.lse_batch_stride + h * p.lse_head_stride;
}

// Keys of (sequence, kv head hk) in the fwd/bwd tensors k, v (paged or not).
inline KeySource key_source(const FwdParams& p, const SequenceLayout& s, int hk) {
  KeySource ks;
  ks.k_row_stride = p.k_row_stride;
  ks.v_row_stride = p.v_row_stride;
  ks.k_head_offset = hk * p.k_head_stride;
  ks.v_head_offset = hk * p.v_head_stride;
  if (p.block_table) {
    ks.pages = p.block_table + s.b * p.block_table_batch_stride;
    ks.page_size = p.page_size;
    ks.num_pages = p.num_pages;
    ks.k_page_stride = p.k_batch_stride;
    ks.v_page_stride = p.v_batch_stride;
  } else {
    ks.k_row0 = s.k_offset(p.k_batch_stride, p.k_row_stride);
    ks.v_row0 = s.k_offset(p.v_batch_stride, p.v_row_stride);
  }
  return ks;
}

// Causal is folded into window_right == 0 by validation; folding again here keeps a direct
// caller of flash::cpu (tests) with causal = true correct.
inline int effective_window_right(const FwdParams& p) {
  return p.causal ? 0 : p.window_right;
}

}  // namespace flash::cpu
