// The wide-head-dim sm90 backward kernel: one CTA per (key block of 64 keys, kv head, batch),
// three warpgroups, one CTA per SM (smem ~225 KB).
//   warpgroup 0: warp 0 producer (bwd_producer.h), warp 1 dQ writer (bwd_dq_writer.h); registers
//                lowered by setmaxnreg
//   warpgroups 1, 2: consumers (bwd256_consumer.h; registers raised)
// The producer and dQ writer of the d64 / d128 kernel are reused as they are: they only read the
// traits' tile sizes, stage count and SharedStorage members, which Bwd256Traits provides.
#pragma once

#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "bwd256_consumer.h"
#include "bwd_dq_writer.h"
#include "bwd_kernel_params.h"
#include "bwd_producer.h"
#include "common/mask.h"

namespace flash::sm90 {

// kDropout (implies kModScores): its own instantiation, as in bwd_kernel.h.
template <typename Traits, bool kModScores, bool kDeterministic, bool kDropout = false>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    bwd256_kernel(const __grid_constant__ BwdKernelParams<Traits> p, int head_dim) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using SharedStorage = typename Traits::SharedStorage;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  SharedStorage& ss = *reinterpret_cast<SharedStorage*>(smem_raw);

  const int warp_idx = cutlass::canonical_warp_idx_sync();
  const int warpgroup_idx = cutlass::canonical_warp_group_idx();
  const int n_block = blockIdx.x;
  const int bidhk = blockIdx.y, bidb = blockIdx.z;
  // Varlen: this sequence's lengths (the grid is sized for the longest one; key blocks past this
  // sequence's keys get an empty range and store nothing).
  const BwdSeqInfo si = bwd_seq_info(p, bidb);
  const MaskRule rule{si.seqlen_q, si.seqlen_k, p.window_left, p.window_right};
  const QueryBlockRange range = query_block_range<Traits::kBlockM, Traits::kBlockN>(rule, n_block);

  if (warp_idx == 0 && cute::elect_one_sync()) {
    cute::prefetch_tma_descriptor(p.tma_q.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_do.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_k.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_v.get_tma_descriptor());
    using Barrier = cutlass::arch::ClusterBarrier;
    constexpr int kConsumers = Traits::kNumConsumerThreads;
    Barrier::init(&ss.full_kv, 1);
    for (int s = 0; s < Traits::kStages; ++s) {
      Barrier::init(&ss.full_q[s], 1);
      Barrier::init(&ss.full_do[s], 1);
      Barrier::init(&ss.empty[s], kConsumers);
    }
    Barrier::init(&ss.dq_full, kConsumers);
    Barrier::init(&ss.dq_empty, 1);
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  if (warpgroup_idx == 0) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (warp_idx == 0 && cute::elect_one_sync())
      bwd_producer<Traits>(p, ss, n_block, bidhk, bidb, range);
    else if (warp_idx == 1 && cute::elect_one_sync())
      bwd_dq_writer<Traits, kDeterministic>(p, ss, rule, n_block, bidhk, bidb, range);
  } else {
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    bwd256_consumer<Traits, kModScores, kDropout>(p, ss, rule, head_dim, threadIdx.x - 128,
                                                  n_block, bidhk, bidb, range);
  }
#endif
}

}  // namespace flash::sm90
