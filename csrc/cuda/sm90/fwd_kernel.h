// The sm90 forward kernel: persistent, at most one CTA per SM, each CTA walks the query tiles
// (128 rows, head, batch) that fwd_tile_scheduler.h assigns to it; three warpgroups.
//   warpgroup 0: producer (TMA loads; registers lowered to kProducerRegs by setmaxnreg)
//   warpgroups 1, 2: consumers (wgmma + softmax; registers raised to kConsumerRegs)
// setmaxnreg only takes effect with a register cap at entry (__launch_bounds__(threads, 1)) and
// with each role in one branch of a single if/else, as below.
#pragma once

#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "common/mask.h"
#include "fwd_consumer.h"
#include "fwd_kernel_params.h"
#include "fwd_producer.h"

namespace flash::sm90 {

// kVariant: opt-in code variants of the lean kernel (fwd_variant.h; ignored with kModScores).
template <typename Traits, bool kModScores, int kVariant = 0>
__global__ void __launch_bounds__(Traits::kNumThreads, 1)
    fwd_kernel(const __grid_constant__ FwdKernelParams<Traits> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using SharedStorage = typename Traits::SharedStorage;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  SharedStorage& ss = *reinterpret_cast<SharedStorage*>(smem_raw);

  const int warp_idx = cutlass::canonical_warp_idx_sync();
  const int warpgroup_idx = cutlass::canonical_warp_group_idx();

  if (warp_idx == 0 && cute::elect_one_sync()) {
    cute::prefetch_tma_descriptor(p.tma_q.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_k.get_tma_descriptor());
    cute::prefetch_tma_descriptor(p.tma_v.get_tma_descriptor());
    using Barrier = cutlass::arch::ClusterBarrier;
    // Full barriers: one arrival (the producer's arrive_and_expect_tx) plus the TMA bytes.
    // Empty barriers: every consumer thread arrives once per use of the stage.
    for (int b = 0; b < Traits::kQStages; ++b) {
      Barrier::init(&ss.full_q[b], 1);
      Barrier::init(&ss.empty_q[b], Traits::kNumConsumerThreads);
    }
    for (int s = 0; s < Traits::kStages; ++s) {
      Barrier::init(&ss.full_k[s], 1);
      Barrier::init(&ss.full_v[s], 1);
      Barrier::init(&ss.empty_k[s], Traits::kNumConsumerThreads);
      Barrier::init(&ss.empty_v[s], Traits::kNumConsumerThreads);
    }
    cutlass::arch::fence_barrier_init();  // make the inits visible to the async (TMA) proxy
  }
  __syncthreads();

  if (warpgroup_idx == 0) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegs>();
    if (warp_idx == 0 && cute::elect_one_sync())
      fwd_producer<Traits>(p, ss);
  } else {
    cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegs>();
    fwd_consumer<Traits, kModScores, kVariant>(p, ss, threadIdx.x - 128);
  }
#endif
}

}  // namespace flash::sm90
