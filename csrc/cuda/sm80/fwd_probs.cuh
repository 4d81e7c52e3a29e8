// S_dmask (attn_probs) output of the Ampere-class forward: a second pass over EVERY key block of
// the padded (seqlen_q, seqlen_k) slab, recomputing S with the final row max / sum, so the slab
// holds normalised probabilities (dropped entries negated, invisible or padding entries 0).
// Debug output: correctness over speed (synchronous K loads, 2-byte stores).
#pragma once

#include "cuda/sm80/fwd_block.cuh"

namespace flash::sm80 {

template <typename Blk>
__device__ __forceinline__ void fwd_write_probs(const Blk& blk, const FwdParams& p,
                                                const OnlineSoftmax<Blk::MT>& sm) {
  using Element = typename Blk::ElementT;
  constexpr int MT = Blk::MT, NT = Blk::NT, kBlockN = Blk::kBlockN;
  Element* probs = static_cast<Element*>(p.attn_probs) + static_cast<int64_t>(blk.b()) * p.probs_batch_stride +
                   static_cast<int64_t>(blk.h()) * p.probs_head_stride;
  float off[MT][2], inv[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      off[mt][hh] = OnlineSoftmax<MT>::offset_of(sm.row_max[mt][hh], blk.x_scale_log2());
      const float l = sm.row_sum[mt][hh];
      inv[mt][hh] = l > 0.f ? 1.f / l : 0.f;
    }
  const FragCoord fc(blk.lane());
  const int num_blocks = (p.seqlen_k + kBlockN - 1) / kBlockN;
  for (int n = 0; n < num_blocks; ++n) {
    if (n > 0) __syncthreads();  // every warp is done reading sK / key_ok of the previous block
    blk.load_k_async(n);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();
    float s[MT][NT][4];
    blk.scores(s, n, /*force_mask=*/true);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          s[mt][nt][e] = exp2f(fmaf(s[mt][nt][e], blk.x_scale_log2(), -off[mt][e >> 1])) * inv[mt][e >> 1];
    if (blk.has_dropout()) apply_dropout<true>(s, blk.dropout(), blk.warp_row0(), n * kBlockN, blk.lane());
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = fc.row(blk.warp_row0(), mt, e);
          const int j = fc.col(n * kBlockN, nt, e);
          if (i < p.seqlen_q && j < p.seqlen_k) {
            const float v = i < blk.sq ? s[mt][nt][e] : 0.f;
            probs[static_cast<int64_t>(i) * p.probs_row_stride + j] = Element(v);
          }
        }
  }
  __syncthreads();
}

}  // namespace flash::sm80
