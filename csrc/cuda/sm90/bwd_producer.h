// Producer role of the sm90 backward kernel: one elected thread of warp 0 issues every load.
// K and V of the CTA's key block once; then, for each step (q head of the GQA group, query block
// m) in the order the consumers use, Q + lse_log2 into stage s on full_q[s] and dO + D on
// full_do[s] (separate barriers: S^T = K Q^T can start while dO is still in flight). A stage is
// refilled only after every consumer thread released it (empty[s]).
#pragma once

#include <cutlass/arch/barrier.h>

#include "bwd_kernel_params.h"

namespace flash::sm90 {

template <typename Traits>
__device__ __forceinline__ void bwd_producer(const BwdKernelParams<Traits>& p,
                                             typename Traits::SharedStorage& ss, int n_block,
                                             int bidhk, int bidb, QueryBlockRange range) {
  using namespace cute;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN, kHeadDim = Traits::kHeadDim;
  const int m_count = range.m_end - range.m_begin;
  const int steps = m_count * p.head_ratio;
  if (steps <= 0) return;  // the consumers skip everything as well

  // Varlen: maps (total rows, d, heads, 1); the sequence is the row range at q/k_offset
  // (domain_offset below). Rows of the next sequence inside a tail box are loaded but contribute
  // nothing: tail keys are masked (P = 0, dS = 0, dK/dV rows not stored), tail queries have
  // lse_log2 = +inf and D = 0 in the per-sequence padded workspace (P = 0, dS = 0).
  const bool varlen = p.cu_seqlens_q != nullptr;
  const BwdSeqInfo si = bwd_seq_info(p, bidb);
  const int tb = varlen ? 0 : bidb;  // batch coordinate of the maps
  const int rows_q = varlen ? p.total_q : p.seqlen_q, rows_k = varlen ? p.total_k : p.seqlen_k;
  const int map_batch = varlen ? 1 : p.batch;
  Tensor mQ = p.tma_q.get_tma_tensor(make_shape(rows_q, kHeadDim, p.nheads, map_batch));
  Tensor mdO = p.tma_do.get_tma_tensor(make_shape(rows_q, kHeadDim, p.nheads, map_batch));
  Tensor mK = p.tma_k.get_tma_tensor(make_shape(rows_k, kHeadDim, p.nheads_k, map_batch));
  Tensor mV = p.tma_v.get_tma_tensor(make_shape(rows_k, kHeadDim, p.nheads_k, map_batch));
  Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQ{});
  Tensor sdO = make_tensor(make_smem_ptr(ss.dout), typename Traits::SmemLayoutdO{});
  Tensor sK = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutK{});
  Tensor sV = make_tensor(make_smem_ptr(ss.v), typename Traits::SmemLayoutV{});
  auto tma_q = p.tma_q.get_slice(_0{});
  auto tma_do = p.tma_do.get_slice(_0{});
  auto tma_k = p.tma_k.get_slice(_0{});
  auto tma_v = p.tma_v.get_slice(_0{});
  Tensor tQsQ = group_modes<0, 3>(tma_q.partition_D(sQ));     // (TMA, stages)
  Tensor tdOsdO = group_modes<0, 3>(tma_do.partition_D(sdO));  // (TMA, stages)

  {  // K and V of this key block, once.
    Tensor gK = local_tile(domain_offset(make_coord(si.k_offset, _0{}), mK(_, _, bidhk, tb)),
                           Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(n_block, _0{}));
    Tensor gV = local_tile(domain_offset(make_coord(si.k_offset, _0{}), mV(_, _, bidhk, tb)),
                           Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(n_block, _0{}));
    auto& full_kv = reinterpret_cast<Barrier&>(ss.full_kv);
    full_kv.arrive_and_expect_tx(2 * Traits::kBytesKV);
    copy(p.tma_k.with(ss.full_kv), tma_k.partition_S(gK), tma_k.partition_D(sK));
    copy(p.tma_v.with(ss.full_kv), tma_v.partition_S(gV), tma_v.partition_D(sV));
  }

  for (int step = 0; step < steps; ++step) {
    const int bidh = bidhk * p.head_ratio + step / m_count;
    const int m_block = range.m_end - 1 - step % m_count;  // descending, see step_order
    const int stage = step % Traits::kStages;
    const uint32_t phase = (step / Traits::kStages) & 1;
    const int64_t row_stats = si.ws_row(bidh, m_block * kBlockM);

    Tensor gQ = local_tile(domain_offset(make_coord(si.q_offset, _0{}), mQ(_, _, bidh, tb)),
                           Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, _0{}));
    Tensor gdO = local_tile(domain_offset(make_coord(si.q_offset, _0{}), mdO(_, _, bidh, tb)),
                            Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, _0{}));
    Tensor tQgQ = group_modes<0, 3>(tma_q.partition_S(gQ));
    Tensor tdOgdO = group_modes<0, 3>(tma_do.partition_S(gdO));

    // Empty barriers start in phase 0: waiting on parity 1 passes at once the first time round.
    reinterpret_cast<EmptyBarrier&>(ss.empty[stage]).wait(phase ^ 1);
    auto& full_q = reinterpret_cast<Barrier&>(ss.full_q[stage]);
    full_q.arrive_and_expect_tx(Traits::kBytesQ + Traits::kBytesRowStats);
    copy(p.tma_q.with(ss.full_q[stage]), tQgQ, tQsQ(_, stage));
    SM90_BULK_COPY_G2S::copy(p.lse_log2 + row_stats, &ss.full_q[stage], ss.lse_log2[stage],
                             Traits::kBytesRowStats);
    auto& full_do = reinterpret_cast<Barrier&>(ss.full_do[stage]);
    full_do.arrive_and_expect_tx(Traits::kBytesQ + Traits::kBytesRowStats);
    copy(p.tma_do.with(ss.full_do[stage]), tdOgdO, tdOsdO(_, stage));
    SM90_BULK_COPY_G2S::copy(p.dpsum + row_stats, &ss.full_do[stage], ss.dpsum[stage],
                             Traits::kBytesRowStats);
  }
}

}  // namespace flash::sm90
