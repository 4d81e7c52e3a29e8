// dQ of one step leaves the CTA through shared memory: the consumers store their fp32 wgmma
// fragments into ss.dq (column-swizzled, see bwd_workspace.h) and arrive on dq_full; the dQ
// writer (one thread of warp 1 of the producer warpgroup) then adds the whole kBlockM x d tile
// to dq_accum with a single bulk reduce-add (cp.reduce.async.bulk .add.f32: the addition happens
// in L2, one instruction instead of thousands of per-thread atomics) and, once the bulk op has
// read the tile, arrives on dq_empty so that the consumers may store the next one. The consumers
// never wait for the addition itself.
// Deterministic mode orders the key blocks' additions per (batch, head, query block) with a
// counter in global memory (see bwd_dq_writer below).
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "bwd_kernel_params.h"
#include "fwd_block_range.h"  // key_block_range

namespace flash::sm90 {

__device__ __forceinline__ void bulk_reduce_add_f32(float* gmem, const float* smem, uint32_t bytes) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n"
               :
               : "l"(gmem), "r"(s), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// The shared-memory source of every committed bulk op has been read (the buffer may be rewritten).
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
}
// Every committed bulk op is complete (its global writes performed).
__device__ __forceinline__ void bulk_wait_all() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }

// Named barrier among the consumer warpgroups only (the producer warpgroup never joins).
template <int kThreads>
__device__ __forceinline__ void consumer_sync(int id) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "n"(kThreads) : "memory");
}

__device__ __forceinline__ int load_acquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Deterministic mode, before the add: wait until `expected` key blocks have added to this tile.
// `<` rather than `!=`: the same for valid input (the count cannot pass `expected` before this
// block adds), and no hang if a corrupt device-held cu_seqlens makes two sequences share
// workspace rows (their extra increments then only let this block go early: wrong numbers for a
// wrong input, as everywhere else, but the kernel still finishes).
__device__ __forceinline__ void dq_wait_turn(const int* sem, int expected) {
  while (load_acquire(sem) < expected) __nanosleep(32);
  asm volatile("fence.proxy.async.global;\n" ::: "memory");  // the bulk op comes after the acquire
}

// Deterministic mode, after the add was issued and committed: publish it.
__device__ __forceinline__ void dq_signal_done(int* sem) {
  bulk_wait_all();
  asm volatile("fence.proxy.async.global;\n" ::: "memory");
  __threadfence();
  atomicAdd(sem, 1);
}

// The dQ writer role. Walks the same steps as the consumers (head-major, query blocks
// descending). Step t: wait dq_full (parity t & 1), [deterministic: wait for this CTA's turn on
// the tile], bulk add, wait until the tile was read, arrive dq_empty. Neither side can get more
// than one phase ahead of the other (each waits for the other's previous arrival), so the parities
// never alias.
template <typename Traits, bool kDeterministic>
__device__ __forceinline__ void bwd_dq_writer(const BwdKernelParams<Traits>& p,
                                              typename Traits::SharedStorage& ss,
                                              const MaskRule& rule, int n_block, int bidhk,
                                              int bidb, QueryBlockRange range) {
  using Barrier = cutlass::arch::ClusterBarrier;
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN, kHeadDim = Traits::kHeadDim;
  const int m_count = range.m_end - range.m_begin;
  const int steps = m_count * p.head_ratio;
  const BwdSeqInfo si = bwd_seq_info(p, bidb);
  for (int step = 0; step < steps; ++step) {
    const int bidh = bidhk * p.head_ratio + step / m_count;
    const int m_block = range.m_end - 1 - step % m_count;  // descending, see step_order
    reinterpret_cast<Barrier&>(ss.dq_full).wait(step & 1);
    // Workspace rows start on kBlockM boundaries (bwd_workspace.h): the tile's semaphore index.
    const int64_t ws_row = si.ws_row(bidh, m_block * kBlockM);
    int* sem = p.dq_sem + ws_row / kBlockM;
    if constexpr (kDeterministic) {
      // Key blocks add in ascending order, from n_first(m).
      dq_wait_turn(sem, n_block - key_block_range<kBlockM, kBlockN>(rule, m_block).n_min);
    }
    bulk_reduce_add_f32(p.dq_accum + ws_row * kHeadDim, ss.dq, kBlockM * kHeadDim * sizeof(float));
    bulk_commit();
    bulk_wait_read();
    reinterpret_cast<Barrier&>(ss.dq_empty).arrive();
    if constexpr (kDeterministic) dq_signal_done(sem);
  }
  bulk_wait_all();  // the adds complete before the CTA exits
}

}  // namespace flash::sm90
