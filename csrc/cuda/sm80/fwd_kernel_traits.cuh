// Tile configuration of the Ampere-class forward kernel per head-dim bucket, and the argument
// block the launcher hands to the kernel (the public FwdParams plus host-precomputed constants).
#pragma once

#include <cstdint>
#include <type_traits>

#include "flash/params.h"
#include "cuda/sm80/common/sm80_smem_tile.cuh"

namespace flash::sm80 {

// kBlockM query rows x kBlockN keys per step, 4 warps; a warp owns kBlockM / 4 consecutive rows
// (1 or 2 m-tiles of 16). Register budget per thread: O accumulator kBlockM * kHeadDim / 128
// floats + S accumulator kBlockM * kBlockN / 128 floats, kept <= ~192 to stay spill-free.
// kLean: the tile of the lean kernel (see FwdBlock::kFull). d = 64 takes kBlockN 128 there
// (FA2's 128 x 128: half the barriers and pipeline steps per key); the full kernel keeps 64
// because its dropout decisions of one thread must fit a 64-bit mask (MT * NT * 4 <= 64).
// kSwz: Q / K / V in SmemTileSwz (unpadded, XOR-swizzled; head dims that are multiples of 64, lean
// kernels only, since the full kernel keeps its per-key page flags in K's padding column).
template <int kHeadDim_, bool kLean = false, bool kSwz = false>
struct FwdTileConfig {
  static constexpr int kHeadDim = kHeadDim_;
  // d <= 128: 128 x 64 (lean d = 64: 128 x 128; lean d = 32 spilled 32 B with it); d >= 160: 64 x 64.
  static constexpr int kBlockM = kHeadDim <= 128 ? 128 : 64;
  static constexpr int kBlockN = kLean && kHeadDim == 64 ? 128 : 64;
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kWarpRows = kBlockM / kWarps;
  static constexpr int kMT = kWarpRows / 16;      // m-tiles per warp
  static constexpr int kNT = kBlockN / 8;         // n-tiles of S
  static constexpr int kDT = kHeadDim / 8;        // n-tiles of O
  static_assert(!kSwz || (kLean && kHeadDim % 64 == 0), "swizzled tiles: lean kernels, d % 64 == 0");
  using QTile = std::conditional_t<kSwz, SmemTileSwz<kBlockM, kHeadDim>, SmemTile<kBlockM, kHeadDim>>;
  using KVTile = std::conditional_t<kSwz, SmemTileSwz<kBlockN, kHeadDim>, SmemTile<kBlockN, kHeadDim>>;
  // Shared memory: Q (reused to stage O), one K and one V buffer (the per-key page flags sit in
  // K's padding column). K of the next block streams in while P V runs; V while Q K^T runs.
  // d = 256: exactly 99 KB, the per-block limit of sm86/sm89 too.
  static constexpr int kSmemQ = QTile::kElems * 2;
  static constexpr int kSmemKV = KVTile::kElems * 2;
  static constexpr int kSmemBytes = kSmemQ + 2 * kSmemKV;
};

struct FwdKernelArgs {
  FwdParams p;
  float scale_log2;        // softmax_scale * log2(e)
  float rp_dropout;        // 1 / (1 - dropout_p)
  uint32_t keep_threshold; // dropout_keep_threshold(dropout_p)
  int head_ratio;          // nheads / nheads_k
  int lazy_rescale;        // lean kernels: OnlineSoftmax::update_lazy (FLASH_SM80_FWD_LAZY=0 turns it off)
};

}  // namespace flash::sm80
