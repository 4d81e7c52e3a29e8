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
template <typename Cfg, bool kLean>
void launch_bwd_main_cfg(const BwdParams& p, const BwdWorkspace& ws, const BwdExtra& ex, cudaStream_t stream) {
  auto kernel = &bwd_main_kernel<Cfg, kLean>;
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

// FLASH_SM80_BWD_LEAN=0 routes every call to the full kernel (the A/B switch of the lean kernel).
inline bool bwd_lean_enabled() {
  static const bool on = [] {
    const char* s = std::getenv("FLASH_SM80_BWD_LEAN");
    return s == nullptr || std::atoi(s) != 0;
  }();
  return on;
}

// FLASH_SM80_BWD_DO2=1 (read once per process): the dO-double-buffered lean kernel (BwdConfigDo2)
// where the device's shared memory holds it. An experiment switch, off by default.
inline bool bwd_do2_enabled() {
  static const bool on = [] {
    const char* s = std::getenv("FLASH_SM80_BWD_DO2");
    return s != nullptr && std::atoi(s) != 0;
  }();
  return on;
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
      return launch_bwd_main_cfg<Do2, true>(p, ws, ex, stream);
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
