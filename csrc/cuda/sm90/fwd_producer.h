// Producer role of the sm90 forward kernel: one elected thread of warp 0 of warpgroup 0 issues
// every TMA load of the CTA. Q once (its own barrier), then for each key block, from the last to
// the first, K into stage s and V into stage s (separate barriers so that S = Q K^T can start
// while V is still in flight). A stage is refilled only after all consumer threads released it.
#pragma once

#include <cutlass/arch/barrier.h>

#include "fwd_block_range.h"
#include "fwd_kernel_params.h"

namespace flash::sm90 {

template <typename Traits>
__device__ __forceinline__ void fwd_producer(const FwdKernelParams<Traits>& p,
                                             typename Traits::SharedStorage& ss,
                                             const MaskRule& rule, int m_block, int bidh,
                                             int bidb) {
  using namespace cute;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN, kHeadDim = Traits::kHeadDim;

  const KeyBlockRange range = key_block_range<kBlockM, kBlockN>(rule, m_block);
  if (range.n_max <= range.n_min) return;  // consumers skip the whole mainloop as well
  const int bidh_k = bidh / p.head_ratio;

  // Coordinate tensors (TMA works on coordinates, the descriptor holds base and strides).
  Tensor mQ = p.tma_q.get_tma_tensor(make_shape(p.seqlen_q, kHeadDim, p.nheads, p.batch));
  Tensor mK = p.tma_k.get_tma_tensor(make_shape(p.seqlen_k, kHeadDim, p.nheads_k, p.batch));
  Tensor mV = p.tma_v.get_tma_tensor(make_shape(p.seqlen_k, kHeadDim, p.nheads_k, p.batch));
  Tensor gQ = local_tile(mQ(_, _, bidh, bidb), Shape<Int<kBlockM>, Int<kHeadDim>>{},
                         make_coord(m_block, _0{}));  // (kBlockM, d)
  Tensor gK = local_tile(mK(_, _, bidh_k, bidb), Shape<Int<kBlockN>, Int<kHeadDim>>{},
                         make_coord(_, _0{}));  // (kBlockN, d, n_blocks)
  Tensor gV = local_tile(mV(_, _, bidh_k, bidb), Shape<Int<kBlockN>, Int<kHeadDim>>{},
                         make_coord(_, _0{}));

  Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutK{});
  Tensor sV = make_tensor(make_smem_ptr(ss.v), typename Traits::SmemLayoutV{});

  auto tma_q = p.tma_q.get_slice(_0{});
  auto tma_k = p.tma_k.get_slice(_0{});
  auto tma_v = p.tma_v.get_slice(_0{});
  Tensor tQgQ = tma_q.partition_S(gQ);
  Tensor tQsQ = tma_q.partition_D(sQ);
  Tensor tKgK = group_modes<0, 3>(tma_k.partition_S(gK));  // (TMA, n_blocks)
  Tensor tKsK = group_modes<0, 3>(tma_k.partition_D(sK));  // (TMA, stages)
  Tensor tVgV = group_modes<0, 3>(tma_v.partition_S(gV));
  Tensor tVsV = group_modes<0, 3>(tma_v.partition_D(sV));

  // Out-of-bounds rows (tails of q/k/v) are zero-filled by TMA and still count the full box bytes.
  reinterpret_cast<Barrier&>(ss.full_q).arrive_and_expect_tx(Traits::kBytesQ);
  copy(p.tma_q.with(ss.full_q), tQgQ, tQsQ);

  int stage = 0;
  uint32_t phase = 0;
  for (int n_block = range.n_max - 1; n_block >= range.n_min; --n_block) {
    // Empty barriers start in phase 0; waiting on parity (phase ^ 1) = 1 passes at once the first
    // time round, i.e. every stage starts out free.
    reinterpret_cast<EmptyBarrier&>(ss.empty_k[stage]).wait(phase ^ 1);
    reinterpret_cast<Barrier&>(ss.full_k[stage]).arrive_and_expect_tx(Traits::kBytesKV);
    copy(p.tma_k.with(ss.full_k[stage]), tKgK(_, n_block), tKsK(_, stage));

    reinterpret_cast<EmptyBarrier&>(ss.empty_v[stage]).wait(phase ^ 1);
    reinterpret_cast<Barrier&>(ss.full_v[stage]).arrive_and_expect_tx(Traits::kBytesKV);
    copy(p.tma_v.with(ss.full_v[stage]), tVgV(_, n_block), tVsV(_, stage));

    if (++stage == Traits::kStages) { stage = 0; phase ^= 1; }
  }
}

}  // namespace flash::sm90
