// Tile choice per head-dim bucket and the launch of the main backward kernel. Included by the
// instantiation files (inst/bwd_hdim<D>_<dtype>.cu), one (dtype, bucket) per translation unit.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <string>
#include <type_traits>

#include "cuda/sm80/bwd_dispatch.cuh"
#include "cuda/sm80/bwd_main_kernel.cuh"
#include "flash/errors.h"

namespace flash::sm80::bwd {

// Launches the main kernel of one configuration (D, the zeroed dq_accum and the workspace layout
// are ready).
template <typename Cfg, bool kLean, int kVariant = 0>
void launch_bwd_main_cfg(const BwdParams& p, const BwdWorkspace& ws, const BwdExtra& ex, cudaStream_t stream) {
  auto kernel = &bwd_main_kernel<Cfg, kLean, kVariant>;
  // The attribute is per device and per function: set it every call (cheap) so a
  // multi-GPU process is covered without bookkeeping.
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) throw DeviceError(std::string("sm80 bwd: cudaFuncSetAttribute: ") + cudaGetErrorString(err));
  const int n_blocks = (p.seqlen_k + Cfg::kBlockN - 1) / Cfg::kBlockN;
  const dim3 grid(p.deterministic ? ws.dq_slices : n_blocks, p.nheads, p.batch);
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p, ws, ex);
  err = cudaGetLastError();
  if (err != cudaSuccess) throw DeviceError(std::string("sm80 bwd main kernel: ") + cudaGetErrorString(err));
}

// The A/B switches below are read on every call (cheap next to a launch), so that one process can
// interleave variants.
// FLASH_SM80_BWD_LEAN=0 routes every call to the full kernel (the A/B switch of the lean kernel).
inline bool bwd_lean_enabled() {
  const char* s = std::getenv("FLASH_SM80_BWD_LEAN");
  return s == nullptr || *s == '\0' || std::atoi(s) != 0;
}

// The dO-double-buffered lean kernel (BwdConfigDo2) where the device's shared memory holds it (sm90):
// on by default since pass 4 (H100 round 1, bf16, 2K / 8K, non-causal / causal: d64 +4.4 / +1.7 /
// +1.4 / +1.3 %, d128 +4.4 / +4.4 / +3.9 / +4.6 %, d256 +6.0 / +5.6 / +5.5 / +6.7 %).
// FLASH_SM80_BWD_DO2=0 turns it off (A/B switch).
inline bool bwd_do2_enabled() {
  const char* s = std::getenv("FLASH_SM80_BWD_DO2");
  return s == nullptr || *s == '\0' || std::atoi(s) != 0;
}

// Flags of the lean main kernel (bwd_main_kernel.cuh: kBwdPlainRange = 1, kBwdRedFast = 2,
// kBwdFusedSdP = 4), compiled as 0, 2 and 7 for the dO-double-buffered configuration only (the one the
// H100 runs; the others run 0). Round 2 on top of DO2 (bf16, 2K / 8K non-causal, then causal):
//   2: d64 +0.4 / +0.2 / -0.5 / +0.3 %, d128 +1.6 / +1.7 / +1.1 / +1.5 %, d256 +1.5 / +1.6 / +1.4 / +2.3 %
//   7: d64 +0.8 / +0.3 / -0.1 / +1.1 %, d128 +0.1 / +0.2 / -0.1 / 0 %,    d256 +1.9 / +2.1 / +2.4 / +2.7 %
//   (1 alone: d64 -1.2..-1.9 %, d128 +0.4..+0.8 %, d256 -0.3..-0.7 %; 3: between.)
// Defaults: d128 2, d256 7, d64 0 (no flag set measured beyond noise there).
// FLASH_SM80_BWD_VARIANT=<flags> overrides the default (read on every call; A/B switch).
template <int kHeadDim>
inline int bwd_variant() {
  const char* s = std::getenv("FLASH_SM80_BWD_VARIANT");
  if (s != nullptr && *s != '\0') return std::atoi(s);
  return kHeadDim == 128 ? kBwdRedFast : kHeadDim == 256 ? (kBwdPlainRange | kBwdRedFast | kBwdFusedSdP) : 0;
}

// The lean kernel of configuration Cfg with the experiment flags of FLASH_SM80_BWD_VARIANT.
template <typename Cfg>
void launch_bwd_main_lean_variant(const BwdParams& p, const BwdWorkspace& ws, const BwdExtra& ex,
                                  cudaStream_t stream) {
  switch (bwd_variant<Cfg::kHeadDim>()) {
    case 2: return launch_bwd_main_cfg<Cfg, true, 2>(p, ws, ex, stream);
    case 7: return launch_bwd_main_cfg<Cfg, true, 7>(p, ws, ex, stream);
    default: return launch_bwd_main_cfg<Cfg, true>(p, ws, ex, stream);
  }
}

// The lean kernel when the call has no softcap, ALiBi or dropout (and lean is enabled), else the full one.
template <typename Cfg>
void launch_bwd_main_lean_or_full(const BwdParams& p, const BwdWorkspace& ws, const BwdExtra& ex,
                                  cudaStream_t stream) {
  const bool lean = !ex.dropout && !(p.softcap > 0.f) && p.alibi_slopes == nullptr && bwd_lean_enabled();
  if (lean) return launch_bwd_main_cfg<Cfg, true>(p, ws, ex, stream);
  launch_bwd_main_cfg<Cfg, false>(p, ws, ex, stream);
}

// Picks the configuration: the double-buffered-Q variant of d = 224 / 256 where the device's
// shared memory allows it (sm90), else BwdConfigFor. Both use the same kBlockN, so the workspace
// plan (deterministic slices) is the same.
template <typename Element, int kHeadDim>
void launch_bwd_main(const BwdParams& p, const BwdWorkspace& ws, const BwdExtra& ex, cudaStream_t stream) {
  using Do2 = typename BwdConfigDo2<Element, kHeadDim>::type;
  if constexpr (!std::is_void_v<Do2>) {
    static_assert(Do2::kBlockN == BwdConfigFor<Element, kHeadDim>::kBlockN, "same workspace plan");
    const bool lean = !ex.dropout && !(p.softcap > 0.f) && p.alibi_slopes == nullptr && bwd_lean_enabled();
    int optin = 0;
    if (lean && bwd_do2_enabled() &&
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, p.device_index) == cudaSuccess &&
        optin >= Do2::kSmemBytes)
      return launch_bwd_main_lean_variant<Do2>(p, ws, ex, stream);
  }
  using Big = typename BwdConfigBigSmem<Element, kHeadDim>::type;
  if constexpr (!std::is_void_v<Big>) {
    static_assert(Big::kBlockN == BwdConfigFor<Element, kHeadDim>::kBlockN, "same workspace plan");
    int optin = 0;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, p.device_index) == cudaSuccess &&
        optin >= Big::kSmemBytes)
      return launch_bwd_main_lean_or_full<Big>(p, ws, ex, stream);
  }
  launch_bwd_main_lean_or_full<BwdConfigFor<Element, kHeadDim>>(p, ws, ex, stream);
}

}  // namespace flash::sm80::bwd

// Explicit instantiation helper for the inst/ files.
#define FLASH_SM80_BWD_INSTANTIATE(Element, D)                                                             \
  template void flash::sm80::bwd::launch_bwd_main<Element, D>(const flash::BwdParams&,                    \
                                                              const flash::sm80::bwd::BwdWorkspace&,     \
                                                              const flash::sm80::bwd::BwdExtra&, cudaStream_t);
