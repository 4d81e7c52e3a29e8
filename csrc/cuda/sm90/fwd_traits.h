// Compile-time configuration of the sm90 forward kernel: tile sizes, shared-memory layouts, wgmma
// atoms and the shared-storage struct. Everything a role (producer / consumer) needs to agree on.
#pragma once

// wgmma N sizes that are not powers of two (80, 176, ...) are only exposed by CuTe behind this
// switch; without it a 128x80 S tile would silently be split into five N=16 instructions.
#ifndef CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#define CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#endif

#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cutlass/numeric_types.h>

namespace flash::sm90 {

using namespace cute;

// Per head dim: query rows per CTA, keys per pipeline stage, pipeline depth.
// 128 rows = 2 consumer warpgroups x 64 rows (one wgmma M=64 each).
template <int kHeadDim> struct FwdTileConfig;
// 3 K/V stages where they fit (d=64: 16 + 3 x 32 KB; d=128: 32 + 3 x 64 KB = 224 KB): with the
// persistent schedule the producer then runs a block further ahead, also into the next tile.
template <> struct FwdTileConfig<64>  { static constexpr int kBlockM = 128, kBlockN = 128, kStages = 3; };
template <> struct FwdTileConfig<128> { static constexpr int kBlockM = 128, kBlockN = 128, kStages = 3; };
// d=256: Q 64 KB + 2 x (K 40 KB + V 40 KB) = 224 KB of the 227 KB a CTA may have.
template <> struct FwdTileConfig<256> { static constexpr int kBlockM = 128, kBlockN = 80, kStages = 2; };

template <typename Element_, int kHeadDim_>
struct FwdTraits {
  using Element = Element_;  // cutlass::half_t or cutlass::bfloat16_t
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = FwdTileConfig<kHeadDim>::kBlockM;
  static constexpr int kBlockN = FwdTileConfig<kHeadDim>::kBlockN;
  static constexpr int kStages = FwdTileConfig<kHeadDim>::kStages;

  // Consumers issue Q K^T of block i+1 before the softmax of block i+1 and P V of block i
  // together, so the tensor cores work during the softmax (FA3's intra-warpgroup overlap).
  // false: the plain one-batch-at-a-time loop (simpler; kept to compare and to bisect bugs).
  static constexpr bool kIntraWgOverlap = true;

  static constexpr int kNumConsumerWarpgroups = 2;
  static constexpr int kNumConsumerThreads = 128 * kNumConsumerWarpgroups;
  static constexpr int kNumThreads = 128 + kNumConsumerThreads;  // + 1 producer warpgroup
  // setmaxnreg budgets: 24*128 + 240*256 = 64512 <= 65536 registers of the SM.
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;

  static_assert(kHeadDim % 64 == 0, "128-byte swizzle needs rows of a multiple of 64 halves");
  static_assert(kBlockN % 16 == 0, "P as the A operand of P*V needs k-blocks of 16 keys");
  static_assert(kBlockM == 64 * kNumConsumerWarpgroups, "each consumer warpgroup owns 64 rows");

  // ---- shared-memory layouts (all K-major with the 128-byte swizzle, which TMA writes) --------
  using SmemAtom = GMMA::Layout_K_SW128_Atom<Element>;  // 8 rows x 64 elements
  using SmemLayoutQ = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  using SmemLayoutK =
      decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockN>, Int<kHeadDim>, Int<kStages>>{}));
  using SmemLayoutV = SmemLayoutK;
  // V^T view (head_dim, keys, stage) of the same bytes: the B operand of O += P V is then
  // "MN-major" (contiguous along head_dim = the MMA's N), which wgmma supports for 16-bit types.
  using SmemLayoutVt = decltype(composition(
      SmemLayoutV{}, make_ordered_layout(Shape<Int<kHeadDim>, Int<kBlockN>, Int<kStages>>{},
                                         Step<_2, _1, _3>{})));

  // ---- wgmma: 2 warpgroups stacked along M, each 64 x N --------------------------------------
  using TiledMmaQK = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<_64, Int<kBlockN>, Int<kHeadDim>>>(),
      Layout<Shape<Int<kNumConsumerWarpgroups>, _1, _1>>{}));
  using TiledMmaPV = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, Shape<_64, Int<kHeadDim>, Int<kBlockN>>,
                           GMMA::Major::K, GMMA::Major::MN>(),
      Layout<Shape<Int<kNumConsumerWarpgroups>, _1, _1>>{}));

  static constexpr uint32_t kBytesQ = kBlockM * kHeadDim * sizeof(Element);
  static constexpr uint32_t kBytesKV = kBlockN * kHeadDim * sizeof(Element);  // one stage of K or V

  struct SharedStorage {
    // 1024-byte alignment: the 128B swizzle pattern repeats every 8 rows x 128 B, and both TMA and
    // the wgmma descriptors assume each tile starts on that boundary.
    alignas(1024) Element q[cosize_v<SmemLayoutQ>];
    alignas(1024) Element k[cosize_v<SmemLayoutK>];
    alignas(1024) Element v[cosize_v<SmemLayoutV>];
    alignas(8) uint64_t full_q;           // Q tile landed (TMA transaction count)
    alignas(8) uint64_t empty_q;          // all consumer threads done with Q K^T of the tile
    alignas(8) uint64_t full_k[kStages];  // K stage landed
    alignas(8) uint64_t full_v[kStages];  // V stage landed
    alignas(8) uint64_t empty_k[kStages]; // all consumer threads done reading the K stage
    alignas(8) uint64_t empty_v[kStages]; // all consumer threads done reading the V stage
  };
  static constexpr int kSmemBytes = sizeof(SharedStorage);
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per CTA exceeds the sm90 limit");
};

}  // namespace flash::sm90
