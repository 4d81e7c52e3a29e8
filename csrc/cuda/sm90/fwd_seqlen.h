// Per-sequence extents of the sm90 forward: where a batch entry's rows start in q/k/v and how many
// there are. Fixed-length batches: offsets 0, lengths seqlen_q / seqlen_k. Varlen: from
// cu_seqlens_q / cu_seqlens_k (and seqused_k), read from device memory by the kernel. Producer
// and consumers call this with the same arguments, so they agree on every tile's key blocks.
#pragma once

#include "common/mask.h"
#include "common/varlen.h"

namespace flash::sm90 {

struct SeqInfo {
  int q_offset, k_offset;  // first row of the sequence in the (total, heads, d) tensors
  int seqlen_q, seqlen_k;  // rows of the sequence (seqlen_k: seqused_k where given)

  __device__ __forceinline__ MaskRule rule(int window_left, int window_right) const {
    return MaskRule{seqlen_q, seqlen_k, window_left, window_right};
  }
};

template <typename Params>
__device__ __forceinline__ SeqInfo seq_info(const Params& p, int bidb) {
  if (p.cu_seqlens_q == nullptr) return SeqInfo{0, 0, p.seqlen_q, p.seqlen_k};
  // common/varlen.h clamps device-held offsets into the tensors (rows_q = total_q, rows_k =
  // total_k) and the lengths to the max_seqlen the launch was sized for: a bad cu_seqlens gives
  // wrong numbers for its sequence but never an out-of-bounds store (loads are safe anyway: TMA
  // zero-fills outside the map).
  const PackedRange q = packed_range(p.cu_seqlens_q, bidb, p.rows_q, p.seqlen_q);
  const PackedRange k = packed_range(p.cu_seqlens_k, bidb, p.rows_k, p.seqlen_k);
  int sk = k.len;
  if (p.seqused_k != nullptr) sk = min(max(p.seqused_k[bidb], 0), k.len);
  return SeqInfo{int(q.start), int(k.start), q.len, sk};
}

}  // namespace flash::sm90
