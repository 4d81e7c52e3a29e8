// Tile configuration of the main backward kernel: block sizes, warp tilings of the five GEMMs and
// the shared-memory layout. Host-visible (the API checks the shared-memory need per device).
#pragma once

#include "cuda/sm80/bwd_workspace.cuh"

namespace flash::sm80::bwd {

// kAtomMSdP: warps along the query rows of S / dP (the rest along keys).
// kAtomNdKV: warps along the keys of dK / dV (the rest along the head dim).
// kAtomMdQ:  warps along the query rows of dQ (the rest along the head dim).
// kQStages:  2 = Q is double-buffered (the next block's Q streams in during the whole iteration).
// kDqChunk:  dQ columns per GEMM piece of a warp (0 = the warp's whole dQ tile at once).
// kKvUnroll: k-steps unrolled in the dK / dV GEMMs.
// kNWarps / kMinBlocks: warps per CTA and the CTAs per SM promised to ptxas (__launch_bounds__).
// kDoStages: 2 = dO double-buffered too (with kQStages 2): the next block's dO streams in from the top
//   of the iteration and the barrier that freed sdO for it disappears (2 barriers per query block).
template <typename Element_, int kHeadDim_, int kBlockM_, int kBlockN_, int kAtomMSdP, int kAtomNdKV, int kAtomMdQ,
          int kQStages_, int kDqChunk_ = 0, int kKvUnroll_ = kBlockM_ / 16, int kNWarps_ = 8, int kMinBlocks_ = 1,
          int kDoStages_ = 1>
struct BwdConfig {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_, kBlockM = kBlockM_, kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_, kThreads = kNWarps * 32, kMinBlocks = kMinBlocks_;
  static constexpr int kQStages = kQStages_, kKvUnroll = kKvUnroll_, kDoStages = kDoStages_;
  static constexpr int kPitchD = kHeadDim + 8, kPitchN = kBlockN + 8;  // see bwd_primitives.cuh

  // S / dP (kBlockM x kBlockN): kWarpsMS x kWarpsNS warps of kTileMS x kTileNS.
  static constexpr int kWarpsMS = kAtomMSdP, kWarpsNS = kNWarps / kAtomMSdP;
  static constexpr int kTileMS = kBlockM / kWarpsMS, kTileNS = kBlockN / kWarpsNS;
  static constexpr int kMtS = kTileMS / 16, kNtS = kTileNS / 8;
  // dK / dV (kBlockN x kHeadDim): kWarpsNKV x kWarpsDKV warps of kTileNKV x kTileDKV.
  static constexpr int kWarpsNKV = kAtomNdKV, kWarpsDKV = kNWarps / kAtomNdKV;
  static constexpr int kTileNKV = kBlockN / kWarpsNKV, kTileDKV = kHeadDim / kWarpsDKV;
  static constexpr int kMtKV = kTileNKV / 16, kNtKV = kTileDKV / 8;
  // dQ (kBlockM x kHeadDim): kWarpsMQ x kWarpsDQ warps of kTileMQ x kTileDQ, kDqChunk columns at a time.
  static constexpr int kWarpsMQ = kAtomMdQ, kWarpsDQ = kNWarps / kAtomMdQ;
  static constexpr int kTileMQ = kBlockM / kWarpsMQ, kTileDQ = kHeadDim / kWarpsDQ;
  static constexpr int kDqChunk = kDqChunk_ > 0 ? kDqChunk_ : kTileDQ;
  static constexpr int kMtQ = kTileMQ / 16, kNtQ = kDqChunk / 8;

  // Mask-free element-wise path for interior blocks (bwd_main_kernel.cuh, plain_block).
  static constexpr bool kPlainPath = true;
  // k-steps unrolled in the S / dP and dQ GEMMs (full; partial unrolling spilled more on sm_90).
  static constexpr int kSUnroll = kHeadDim / 16, kQUnroll = kBlockN / 16;

  static_assert(kWarpsMS * kWarpsNS == kNWarps && kTileMS % 16 == 0 && kTileNS % 16 == 0, "S tiling");
  static_assert(kWarpsNKV * kWarpsDKV == kNWarps && kTileNKV % 16 == 0 && kTileDKV % 16 == 0, "dKV tiling");
  static_assert(kWarpsMQ * kWarpsDQ == kNWarps && kTileMQ % 16 == 0 && kTileDQ % kDqChunk == 0 &&
                    kDqChunk % 16 == 0,
                "dQ tiling");
  static_assert(kQStages == 1 || kQStages == 2, "Q stages");
  static_assert(kDoStages == 1 || (kDoStages == 2 && kQStages == 2), "dO stages (2 only with 2 Q stages)");
  static_assert(kBlockM <= kThreads, "one lse / D row per thread");

  // Shared memory (16-bit elements, then two fp32 vectors of kBlockM).
  static constexpr int kOffK = 0;
  static constexpr int kOffV = kOffK + kBlockN * kPitchD;
  static constexpr int kOffQ = kOffV + kBlockN * kPitchD;  // kQStages buffers of kBlockM rows
  static constexpr int kOffDO = kOffQ + kQStages * kBlockM * kPitchD;
  static constexpr int kOffP = kOffDO + kDoStages * kBlockM * kPitchD;  // kDoStages buffers of kBlockM rows
  static constexpr int kOffDS = kOffP + kBlockM * kPitchN;
  static constexpr int kElems = kOffDS + kBlockM * kPitchN;
  static constexpr int kSmemBytes = kElems * 2 + 2 * kBlockM * 4;
};

// Per bucket (kBlockN from block_n_for, bwd_workspace.cuh): see the tile table in README_bwd.md. Q is
// double-buffered where the smem stays within sm80's 163 KB (166,912 B opt-in): all but 224 / 256.
// d = 64 takes FA2's 128 x 128 tile (half the barriers and element-wise passes per flop of 64 x 128).
template <typename Element, int D>
struct BwdConfigSelect;
template <typename Element>
struct BwdConfigSelect<Element, 32> {
  using type = BwdConfig<Element, 32, 64, 128, 2, 4, 4, 2>;
};
template <typename Element>
struct BwdConfigSelect<Element, 64> {
  using type = BwdConfig<Element, 64, 128, 128, 4, 4, 4, 2>;
};
template <typename Element>
struct BwdConfigSelect<Element, 96> {
  using type = BwdConfig<Element, 96, 64, 128, 2, 4, 4, 2>;
};
template <typename Element>
struct BwdConfigSelect<Element, 128> {
  using type = BwdConfig<Element, 128, 64, 128, 2, 4, 2, 2>;
};
template <typename Element>
struct BwdConfigSelect<Element, 160> {
  using type = BwdConfig<Element, 160, 64, 64, 4, 4, 4, 2, 16>;
};
template <typename Element>
struct BwdConfigSelect<Element, 192> {
  using type = BwdConfig<Element, 192, 64, 64, 4, 2, 2, 2>;
};
template <typename Element>
struct BwdConfigSelect<Element, 224> {
  using type = BwdConfig<Element, 224, 64, 64, 4, 4, 4, 1, 16, 1>;
};
template <typename Element>
struct BwdConfigSelect<Element, 256> {
  using type = BwdConfig<Element, 256, 64, 64, 4, 2, 2, 1, 32, 4>;
};

template <typename Element, int kHeadDim>
using BwdConfigFor = typename BwdConfigSelect<Element, kHeadDim>::type;

// d = 224 / 256 with Q double-buffered: 167,424 / 187,904 bytes, beyond sm80's 166,912-byte opt-in
// but within sm90's 232,448. The launcher takes it where the device allows (bwd_launch.cuh); the
// API's shared-memory check uses BwdConfigFor (the smaller one). `type` = void: no such variant.
template <typename Element, int D>
struct BwdConfigBigSmem {
  using type = void;
};
template <typename Element>
struct BwdConfigBigSmem<Element, 224> {
  using type = BwdConfig<Element, 224, 64, 64, 4, 4, 4, 2, 16, 1>;
};
template <typename Element>
struct BwdConfigBigSmem<Element, 256> {
  using type = BwdConfig<Element, 256, 64, 64, 4, 2, 2, 2, 32, 2>;
};

// dO double-buffered as well (2 barriers per query block instead of 3). Needs more than sm80's 163 KB:
// d64 181,248 B, d128 174,592 B, d256 221,696 B (sm90: 232,448). An experiment, off by default
// (FLASH_SM80_BWD_DO2=1, lean kernel only; bwd_launch.cuh). `type` = void: no such variant.
template <typename Element, int D>
struct BwdConfigDo2 {
  using type = void;
};
template <typename Element>
struct BwdConfigDo2<Element, 64> {
  using type = BwdConfig<Element, 64, 128, 128, 4, 4, 4, 2, 0, 8, 8, 1, 2>;
};
template <typename Element>
struct BwdConfigDo2<Element, 128> {
  using type = BwdConfig<Element, 128, 64, 128, 2, 4, 2, 2, 0, 4, 8, 1, 2>;
};
template <typename Element>
struct BwdConfigDo2<Element, 256> {
  using type = BwdConfig<Element, 256, 64, 64, 4, 2, 2, 2, 32, 2, 8, 1, 2>;
};

}  // namespace flash::sm80::bwd
