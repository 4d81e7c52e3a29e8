// Producer role of the sm90 forward kernel: one elected thread of warp 0 of warpgroup 0 issues
// every TMA load of the CTA. For each query tile of this CTA (fwd_tile_scheduler.h) and each key
// block, from the last to the first: K into stage s, (first block only) Q into its buffer, V into
// stage s (separate barriers so that S = Q K^T can start while V is still in flight). A buffer is
// refilled only after all consumer threads released it, so the next tile's Q and first K/V
// blocks load while the consumers finish the current tile.
#pragma once

#include <cutlass/arch/barrier.h>

#include "fwd_block_range.h"
#include "fwd_kernel_params.h"
#include "fwd_seqlen.h"

namespace flash::sm90 {

template <typename Traits>
__device__ __forceinline__ void fwd_producer(const FwdKernelParams<Traits>& p,
                                             typename Traits::SharedStorage& ss) {
  using namespace cute;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN, kHeadDim = Traits::kHeadDim;

  // Coordinate tensors (TMA works on coordinates, the descriptor holds base and strides).
  Tensor mQ = p.tma_q.get_tma_tensor(make_shape(p.rows_q, kHeadDim, p.nheads, p.tma_batch));
  Tensor mK = p.tma_k.get_tma_tensor(make_shape(p.rows_k, kHeadDim, p.nheads_k, p.tma_batch));
  Tensor mV = p.tma_v.get_tma_tensor(make_shape(p.rows_k, kHeadDim, p.nheads_k, p.tma_batch));
  Tensor sK = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutK{});
  Tensor sV = make_tensor(make_smem_ptr(ss.v), typename Traits::SmemLayoutV{});
  auto tma_q = p.tma_q.get_slice(_0{});
  auto tma_k = p.tma_k.get_slice(_0{});
  auto tma_v = p.tma_v.get_slice(_0{});
  Tensor tKsK = group_modes<0, 3>(tma_k.partition_D(sK));  // (TMA, stages)
  Tensor tVsV = group_modes<0, 3>(tma_v.partition_D(sV));

  // Pipeline state, carried across the tiles of this CTA (the consumers count the same way).
  // K/V ring: stage s, parity `phase`; empty barriers start in phase 0, so waiting on parity
  // (phase ^ 1) = 1 passes at once the first time round, i.e. every stage starts out free.
  // Q: p.q_stages (<= kQStages) buffers used round robin; the n-th Q load of this CTA
  // (n = q_loads) goes to buffer n % q_stages and first waits for the consumers to have finished
  // Q K^T of the tile that used the buffer before: empty_q[b] on parity ((n / q_stages) & 1) ^ 1
  // (passes at once for n < q_stages).
  int stage = 0;
  uint32_t phase = 0;
  uint32_t q_loads = 0;
  const TileSchedule& sched = p.sched;
  for (int slot = blockIdx.x, round = 0; slot < sched.num_units; slot += gridDim.x, ++round) {
    const int unit = sched.unit_at(slot, round, int(blockIdx.x), int(gridDim.x));
    const int tiles = sched.tiles_in_unit(unit);
    for (int j = 0; j < tiles; ++j) {
      const TileCoord tc = sched.tile(unit, j);
      const SeqInfo si = seq_info(p, tc.bidb);
      if (tc.m_block * kBlockM >= si.seqlen_q) continue;  // varlen: past this sequence's rows
      const KeyBlockRange range =
          key_block_range<kBlockM, kBlockN>(si.rule(p.window_left, p.window_right), tc.m_block);
      if (range.n_max <= range.n_min) continue;  // consumers skip this tile as well
      const int bidh_k = tc.bidh / p.head_ratio;
      const int tb = p.cu_seqlens_q != nullptr ? 0 : tc.bidb;  // batch coordinate of the maps

      // Varlen: the sequence is a row range of one tensor; its tiles start at its first row (a
      // box may run into the next sequence's rows: those queries are never stored, those keys
      // are masked to -inf, so P = 0 multiplies them).
      Tensor gQ = local_tile(domain_offset(make_coord(si.q_offset, _0{}), mQ(_, _, tc.bidh, tb)),
                             Shape<Int<kBlockM>, Int<kHeadDim>>{},
                             make_coord(tc.m_block, _0{}));  // (kBlockM, d)
      Tensor gK = local_tile(domain_offset(make_coord(si.k_offset, _0{}), mK(_, _, bidh_k, tb)),
                             Shape<Int<kBlockN>, Int<kHeadDim>>{},
                             make_coord(_, _0{}));  // (kBlockN, d, n_blocks)
      Tensor gV = local_tile(domain_offset(make_coord(si.k_offset, _0{}), mV(_, _, bidh_k, tb)),
                             Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, _0{}));
      Tensor tQgQ = tma_q.partition_S(gQ);
      Tensor tKgK = group_modes<0, 3>(tma_k.partition_S(gK));  // (TMA, n_blocks)
      Tensor tVgV = group_modes<0, 3>(tma_v.partition_S(gV));

      for (int n_block = range.n_max - 1; n_block >= range.n_min; --n_block) {
        reinterpret_cast<EmptyBarrier&>(ss.empty_k[stage]).wait(phase ^ 1);
        reinterpret_cast<Barrier&>(ss.full_k[stage]).arrive_and_expect_tx(Traits::kBytesKV);
        copy(p.tma_k.with(ss.full_k[stage]), tKgK(_, n_block), tKsK(_, stage));

        if (n_block == range.n_max - 1) {
          // Q after the first K: that K stage is usually free well before the consumers are
          // done with the previous tile's Q. Out-of-bounds rows (tails of q/k/v) are zero-filled
          // by TMA and still count the full box bytes.
          const int qb = int(q_loads % uint32_t(p.q_stages));
          const uint32_t q_phase = (q_loads / uint32_t(p.q_stages)) & 1;
          Tensor sQ = make_tensor(make_smem_ptr(ss.q[qb]), typename Traits::SmemLayoutQ{});
          reinterpret_cast<EmptyBarrier&>(ss.empty_q[qb]).wait(q_phase ^ 1);
          reinterpret_cast<Barrier&>(ss.full_q[qb]).arrive_and_expect_tx(Traits::kBytesQ);
          copy(p.tma_q.with(ss.full_q[qb]), tQgQ, tma_q.partition_D(sQ));
          ++q_loads;
        }

        reinterpret_cast<EmptyBarrier&>(ss.empty_v[stage]).wait(phase ^ 1);
        reinterpret_cast<Barrier&>(ss.full_v[stage]).arrive_and_expect_tx(Traits::kBytesKV);
        copy(p.tma_v.with(ss.full_v[stage]), tVgV(_, n_block), tVsV(_, stage));

        if (++stage == Traits::kStages) { stage = 0; phase ^= 1; }
      }
    }
  }
}

}  // namespace flash::sm90
