// Ping-pong between the consumer warpgroups of the sm90 forward kernel (the published FA3
// "warp scheduler barrier" technique): a token passes from one warpgroup to the next, and a
// warpgroup issues its wgmma batch only while it holds the token. Issues then rotate
// WG1, WG2[, WG3], WG1, ... so while one warpgroup's GEMMs occupy the tensor cores, the others
// run their softmax, instead of all doing softmax at the same time with the tensor cores idle.
//
// Token = named barrier b(w) of warpgroup w, 256 threads: w waits with bar.sync (128 threads),
// its predecessor w-1 (mod N) passes it with bar.arrive (128 threads). Bookkeeping (every count
// must match, a missing arrival hangs the CTA):
//   start:  WG N-1 arrives on b(0) once                   (WG1 = index 0 issues first)
//   issue:  each warpgroup does wait(own) -> wgmma issue -> pass(next), the same number of
//           times E in all (same tiles, same blocks)
//   end:    WG index 0 waits on b(0) once more, consuming the last warpgroup's last pass
//   => b(0): 1 + E arrivals, E + 1 waits; b(w > 0): E arrivals, E waits.
// The strict rotation means a barrier never has two pending generations: w passes b(w+1) again
// only after its own next turn, which needs every other warpgroup to have taken its turn since.
// A warpgroup never waits on an mbarrier while holding the token (data waits come before the
// token wait), so the token always comes back; pipeline_model.py checks this protocol.
#pragma once

#include <cstdint>

namespace flash::sm90 {

// Named barrier ids 8..10: past the ids CUTLASS reserves for its own kernels (1-7); 0 is
// __syncthreads. At most 16 exist.
constexpr uint32_t kPingPongBarrierBase = 8;

__device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(uint32_t id, uint32_t threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// wg: consumer warpgroup 0 .. kNumWG-1. kAvailable: compiled in (Traits::kPingPongAvailable);
// on: enabled for this launch (FwdKernelParams::pingpong, a tuning switch, uniform over the CTA).
// Every call is a no-op unless both are true.
template <bool kAvailable, int kNumWG = 2>
struct PingPong {
  uint32_t wg;
  bool on;

  __device__ __forceinline__ bool enabled() const { return kAvailable && on; }
  __device__ __forceinline__ void start() const {
    if (enabled() && wg == kNumWG - 1) named_barrier_arrive(kPingPongBarrierBase + 0, 256);
  }
  // Before a wgmma batch: wait for this warpgroup's turn.
  __device__ __forceinline__ void wait_turn() const {
    if (enabled()) named_barrier_sync(kPingPongBarrierBase + wg, 256);
  }
  // After issuing it: the next warpgroup may issue.
  __device__ __forceinline__ void pass_turn() const {
    if (enabled())
      named_barrier_arrive(kPingPongBarrierBase + (wg + 1 == kNumWG ? 0 : wg + 1), 256);
  }
  __device__ __forceinline__ void finish() const {
    if (enabled() && wg == 0) named_barrier_sync(kPingPongBarrierBase + 0, 256);
  }
};

}  // namespace flash::sm90
