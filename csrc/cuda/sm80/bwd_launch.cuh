// Tile choice per head-dim bucket and the launch of the main backward kernel. Included by the
// instantiation files (inst/bwd_hdim<D>_<dtype>.cu), one (dtype, bucket) per translation unit.
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <type_traits>

#include "cuda/sm80/bwd_dispatch.cuh"
#include "cuda/sm80/bwd_main_kernel.cuh"
#include "flash/errors.h"

namespace flash::sm80::bwd {

// Launches the main kernel of one configuration (D, the zeroed dq_accum and the workspace layout
// are ready).
template <typename Cfg>
void launch_bwd_main_cfg(const BwdParams& p, const BwdWorkspace& ws, const BwdExtra& ex, cudaStream_t stream) {
  auto kernel = &bwd_main_kernel<Cfg>;
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

// Picks the configuration: the double-buffered-Q variant of d = 224 / 256 where the device's
// shared memory allows it (sm90), else BwdConfigFor. Both use the same kBlockN, so the workspace
// plan (deterministic slices) is the same.
template <typename Element, int kHeadDim>
void launch_bwd_main(const BwdParams& p, const BwdWorkspace& ws, const BwdExtra& ex, cudaStream_t stream) {
  using Big = typename BwdConfigBigSmem<Element, kHeadDim>::type;
  if constexpr (!std::is_void_v<Big>) {
    static_assert(Big::kBlockN == BwdConfigFor<Element, kHeadDim>::kBlockN, "same workspace plan");
    int optin = 0;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, p.device_index) == cudaSuccess &&
        optin >= Big::kSmemBytes)
      return launch_bwd_main_cfg<Big>(p, ws, ex, stream);
  }
  launch_bwd_main_cfg<BwdConfigFor<Element, kHeadDim>>(p, ws, ex, stream);
}

}  // namespace flash::sm80::bwd

// Explicit instantiation helper for the inst/ files.
#define FLASH_SM80_BWD_INSTANTIATE(Element, D)                                                             \
  template void flash::sm80::bwd::launch_bwd_main<Element, D>(const flash::BwdParams&,                    \
                                                              const flash::sm80::bwd::BwdWorkspace&,     \
                                                              const flash::sm80::bwd::BwdExtra&, cudaStream_t);
