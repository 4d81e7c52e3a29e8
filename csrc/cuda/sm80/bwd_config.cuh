// Tile configuration of the main backward kernel: block sizes, warp tilings of the five GEMMs and
// the shared-memory layout. Host-visible (the API checks the shared-memory need per device).
#pragma once

#include "cuda/sm80/bwd_workspace.cuh"

namespace flash::sm80::bwd {

template <typename Element_, int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_>
struct BwdConfig {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_, kBlockM = kBlockM_, kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_, kThreads = kNWarps * 32;
  static constexpr int kPitchD = kHeadDim + 8, kPitchN = kBlockN + 8;  // see bwd_primitives.cuh

  // S / dP (kBlockM x kBlockN): warps in a kWarpsM x kWarpsNS grid of 16 x kTileNS tiles.
  static constexpr int kWarpsM = kBlockM / 16;
  static constexpr int kWarpsNS = kNWarps / kWarpsM;
  static constexpr int kTileNS = kBlockN / kWarpsNS;
  // dK / dV (kBlockN x kHeadDim): 16 x kTileDKV tiles.
  static constexpr int kWarpsNKV = kNWarps < kBlockN / 16 ? kNWarps : kBlockN / 16;
  static constexpr int kWarpsDKV = kNWarps / kWarpsNKV;
  static constexpr int kTileDKV = kHeadDim / kWarpsDKV;
  // dQ (kBlockM x kHeadDim): 16 x kTileDQ tiles (same warp grid as S), kDqChunk columns at a time.
  static constexpr int kWarpsDQ = kNWarps / kWarpsM;
  static constexpr int kTileDQ = kHeadDim / kWarpsDQ;
  static constexpr int kDqChunk = kTileDQ % 32 == 0 ? 32 : 16;
  // When dK + dV hold more than 64 registers per thread, S / dP are produced in two column passes
  // of kTileNS / 2 so that both fit in 255 registers without spilling.
  static constexpr int kSPasses = 2 * kBlockN * kHeadDim / kThreads > 64 ? 2 : 1;
  static constexpr int kPassNS = kTileNS / kSPasses;

  // Mask-free element-wise path for interior blocks (bwd_main_kernel.cuh, plain_block). Off for
  // d = 96 and 192: the second copy of the element-wise code made them spill 16 / 12 bytes on
  // sm_90a (ptxas -v); every other bucket is spill-free with it on sm_80 and sm_90a.
  static constexpr bool kPlainPath = kHeadDim != 96 && kHeadDim != 192;

  static_assert(kWarpsM * kWarpsNS == kNWarps && kPassNS % 16 == 0, "S tiling");
  static_assert(kWarpsNKV * kWarpsDKV == kNWarps && kTileDKV % 16 == 0, "dKV tiling");
  static_assert(kWarpsM * kWarpsDQ == kNWarps && kTileDQ % 16 == 0, "dQ tiling");

  // Shared memory (16-bit elements, then two fp32 vectors of kBlockM).
  static constexpr int kOffK = 0;
  static constexpr int kOffV = kOffK + kBlockN * kPitchD;
  static constexpr int kOffQ = kOffV + kBlockN * kPitchD;
  static constexpr int kOffDO = kOffQ + kBlockM * kPitchD;
  static constexpr int kOffP = kOffDO + kBlockM * kPitchD;
  static constexpr int kOffDS = kOffP + kBlockM * kPitchN;
  static constexpr int kElems = kOffDS + kBlockM * kPitchN;
  static constexpr int kSmemBytes = kElems * 2 + 2 * kBlockM * 4;
};

// kBlockM 64 always (4 row groups of 16), 8 warps, kBlockN from block_n_for (bwd_workspace.cuh).
template <typename Element, int kHeadDim>
using BwdConfigFor = BwdConfig<Element, kHeadDim, 64, block_n_for(kHeadDim), 8>;

}  // namespace flash::sm80::bwd
