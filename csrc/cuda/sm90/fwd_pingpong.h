// Ping-pong between the two consumer warpgroups of the sm90 forward kernel (the published FA3
// "warp scheduler barrier" technique): a token passes from one warpgroup to the other, and a
// warpgroup issues its wgmma batch only while it holds the token. Issues then alternate
// WG1, WG2, WG1, ... so while one warpgroup's GEMMs occupy the tensor cores, the other runs its
// softmax, instead of both doing softmax at the same time with the tensor cores idle.
//
// Token = named barrier b(w) of warpgroup w, 256 threads: w waits with bar.sync (128 threads),
// the other warpgroup passes it with bar.arrive (128 threads). Bookkeeping (every count must
// match, a missing arrival hangs the CTA):
//   start:  WG2 arrives on b(WG1) once                    (WG1 issues first)
//   issue:  each warpgroup does wait(own) -> wgmma issue -> pass(other), the same number of
//           times E in both (same tiles, same blocks)
//   end:    WG1 waits on b(WG1) once more, consuming WG2's last pass
//   => b(WG1): 1 + E arrivals, E + 1 waits; b(WG2): E arrivals, E waits.
// A warpgroup never waits on an mbarrier while holding the token (data waits come before the
// token wait), so the token always comes back; pipeline_model.py checks this protocol.
#pragma once

#include <cstdint>

namespace flash::sm90 {

// Named barrier ids 8 and 9: past the ids CUTLASS reserves for its own kernels (1-7); 0 is
// __syncthreads.
constexpr uint32_t kPingPongBarrierBase = 8;

__device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(uint32_t id, uint32_t threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// wg: consumer warpgroup 0 or 1. kAvailable: compiled in (Traits::kPingPongAvailable);
// on: enabled for this launch (FwdKernelParams::pingpong, a tuning switch, uniform over the CTA).
// Every call is a no-op unless both are true.
template <bool kAvailable>
struct PingPong {
  uint32_t wg;
  bool on;

  __device__ __forceinline__ bool enabled() const { return kAvailable && on; }
  __device__ __forceinline__ void start() const {
    if (enabled() && wg == 1) named_barrier_arrive(kPingPongBarrierBase + 0, 256);
  }
  // Before a wgmma batch: wait for this warpgroup's turn.
  __device__ __forceinline__ void wait_turn() const {
    if (enabled()) named_barrier_sync(kPingPongBarrierBase + wg, 256);
  }
  // After issuing it: the other warpgroup may issue.
  __device__ __forceinline__ void pass_turn() const {
    if (enabled()) named_barrier_arrive(kPingPongBarrierBase + (wg ^ 1), 256);
  }
  __device__ __forceinline__ void finish() const {
    if (enabled() && wg == 0) named_barrier_sync(kPingPongBarrierBase + 0, 256);
  }
};

}  // namespace flash::sm90
