// Compile-time configuration of the sm90 forward kernel: tile sizes, shared-memory layouts, wgmma
// atoms and the shared-storage struct. Everything a role (producer / consumer) needs to agree on.
#pragma once

// wgmma N sizes that are not powers of two (80, 176, ...) are only exposed by CuTe behind this
// switch; without it a 128x80 S tile would silently be split into five N=16 instructions.
#ifndef CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#define CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#endif

#include <type_traits>

#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cutlass/numeric_types.h>

namespace flash::sm90 {

using namespace cute;

// Per head dim: query rows per CTA, keys per pipeline stage, pipeline depth.
// kConsumerWGs consumer warpgroups of 64 query rows each (one wgmma M=64 each): kBlockM = 64 x that.
// kQStages: Q buffers. With 2, the next tile's Q loads while the current tile still runs its
// Q K^T (hides the Q load latency at every tile start; worth most where tiles are short).
// kPingPong: the consumer warpgroups take turns issuing their GEMMs (named barriers), so one
// warpgroup's softmax runs while another's GEMMs occupy the tensor cores (FA3's ping-pong).
// kTile != 0: other tiles of a head dim (fwd_api.cu picks one per call):
//  * d=128, calls without a window, kTile 1 (FLASH_SM90_FWD_D128_TILE=1 or FLASH_SM90_FWD_WIDE_N=1):
//    128 x 176 (FA3's). Wider key blocks spread the per-block costs over more keys. Measured 8-12 %
//    SLOWER than the 128 x 128 ping-pong tile on the H100 here (it spills ~150 B), hence opt-in.
//  * d=128, calls without a window, kTile 2 (FLASH_SM90_FWD_D128_TILE=2): 128 x 128, 3 K/V stages.
//  * d=256, kTile 1 (FLASH_SM90_FWD_D256_TILE=1): 128 x 48 with 2 Q buffers.
//  * d=64, kTile 1 (default without a window, and with one from seqlen_q 16384;
//    FLASH_SM90_FWD_D64_M192[_WINDOW]): 192 x 128 with three consumer warpgroups (FA3's; H100:
//    +2..+18 % over 128 x 128 where it is the default): a 64-deep
//    Q K^T is short next to the softmax of the same block, so with two warpgroups the tensor cores
//    wait for softmaxes; a third one keeps another softmax in flight and reuses each K/V load for
//    1.5x the rows.
template <int kHeadDim, int kTile = 0> struct FwdTileConfig;
// d=64: 2 Q x 16 KB + 3 x (K 16 KB + V 16 KB) = 128 KB; with 3 stages the producer runs a block
// further ahead, also into the next tile.
template <> struct FwdTileConfig<64, 0> {
  static constexpr int kBlockM = 128, kBlockN = 128, kStages = 3, kQStages = 2;
  static constexpr bool kPingPong = true;
  static constexpr int kConsumerWGs = 2;
};
// d=64, second tile: 192 x 128, three consumer warpgroups (512 threads; registers 32 / 160, see
// FwdTraits). 2 Q x 24 KB + 3 x (K 16 KB + V 16 KB) = 144 KB. The ping-pong token rotates
// WG1 -> WG2 -> WG3 (fwd_pingpong.h).
template <> struct FwdTileConfig<64, 1> {
  static constexpr int kBlockM = 192, kBlockN = 128, kStages = 3, kQStages = 2;
  static constexpr bool kPingPong = true;
  static constexpr int kConsumerWGs = 3;
};
// d=96: 2 Q x 24 KB + 3 x (K 24 KB + V 24 KB) = 192 KB (rows of 192 bytes: 64-byte swizzle).
template <> struct FwdTileConfig<96, 0> {
  static constexpr int kBlockM = 128, kBlockN = 128, kStages = 3, kQStages = 2;
  static constexpr bool kPingPong = true;
  static constexpr int kConsumerWGs = 2;
};
// d=128 (every call unless FLASH_SM90_FWD_WIDE_N=1): 2 Q x 32 KB + 2 x (32 + 32 KB) = 192 KB.
// A second Q buffer instead of a third K/V stage (both do not fit): at every tile start the Q load
// latency is otherwise exposed, since the single buffer frees only after the previous tile's last
// Q K^T; causal units are two tiles of 4.5 blocks on average at seqlen 1K.
template <> struct FwdTileConfig<128, 0> {
  static constexpr int kBlockM = 128, kBlockN = 128, kStages = 2, kQStages = 2;
  static constexpr bool kPingPong = true;
  static constexpr int kConsumerWGs = 2;
};
// d=128 without window: Q 32 KB + 2 x (K 44 KB + V 44 KB) = 208 KB.
template <> struct FwdTileConfig<128, 1> {
  static constexpr int kBlockM = 128, kBlockN = 176, kStages = 2, kQStages = 1;
  static constexpr bool kPingPong = true;
  static constexpr int kConsumerWGs = 2;
};
// d=128 without window, opt-in (FLASH_SM90_FWD_D128_TILE=2): the default tile with 3 K/V stages
// and one Q buffer, Q 32 KB + 3 x (32 + 32 KB) = 224 KB. With 2 stages the V of block i+2 can load
// only after the slower warpgroup's P V(i) retired, about one block period before it is needed;
// long non-causal rows gain from the slack, short tiles may lose the next tile's early Q load.
template <> struct FwdTileConfig<128, 2> {
  static constexpr int kBlockM = 128, kBlockN = 128, kStages = 3, kQStages = 1;
  static constexpr bool kPingPong = true;
  static constexpr int kConsumerWGs = 2;
};
// d=192: Q 48 KB + 2 x (K 42 KB + V 42 KB) = 216 KB (FA3's 128 x 112). O alone takes 96
// registers per thread, as at d=256: ping-pong off by default like there.
template <> struct FwdTileConfig<192, 0> {
  static constexpr int kBlockM = 128, kBlockN = 112, kStages = 2, kQStages = 1;
  static constexpr bool kPingPong = false;
  static constexpr int kConsumerWGs = 2;
};
// d=256, opt-in (FLASH_SM90_FWD_D256_TILE=1): 128 x 48 with two Q buffers, 2 x 64 KB + 2 x (24 +
// 24 KB) = 224 KB. The single Q buffer of the default tile exposes the 64 KB Q load at every tile
// start (causal 1K: two tiles of ~8 blocks per unit); narrower key blocks pay for the second one.
template <> struct FwdTileConfig<256, 1> {
  static constexpr int kBlockM = 128, kBlockN = 48, kStages = 2, kQStages = 2;
  static constexpr bool kPingPong = false;
  static constexpr int kConsumerWGs = 2;
};
// d=256: Q 64 KB + 2 x (K 40 KB + V 40 KB) = 224 KB of the 227 KB a CTA may have. No ping-pong:
// a d=256 GEMM pair is long enough next to the softmax that the intra-warpgroup overlap hides it.
template <> struct FwdTileConfig<256, 0> {
  static constexpr int kBlockM = 128, kBlockN = 80, kStages = 2, kQStages = 1;
  static constexpr bool kPingPong = false;
  static constexpr int kConsumerWGs = 2;
};

// kTile_: 0 = the head dim's default tile, 1, 2 = its opt-in alternatives (FwdTileConfig).
template <typename Element_, int kHeadDim_, int kTile_ = 0>
struct FwdTraits {
  using Element = Element_;  // cutlass::half_t or cutlass::bfloat16_t
  using Config = FwdTileConfig<kHeadDim_, kTile_>;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kTile = kTile_;
  static constexpr bool kAltTile = kTile_ != 0;
  static constexpr int kBlockM = Config::kBlockM;
  static constexpr int kBlockN = Config::kBlockN;
  static constexpr int kStages = Config::kStages;
  static constexpr int kQStages = Config::kQStages;

  // Consumers issue Q K^T of block i+1 before the softmax of block i+1 and P V of block i
  // together, so the tensor cores work during the softmax (FA3's intra-warpgroup overlap).
  // false: the plain one-batch-at-a-time loop (simpler; kept to compare and to bisect bugs).
  static constexpr bool kIntraWgOverlap = true;
  // Ping-pong is built on the overlapped loop's issue points (fwd_consumer.h): compiled in with it,
  // on by default where the tile config says so (FLASH_SM90_FWD_PINGPONG=0/1 overrides, fwd_launch.h).
  static constexpr bool kPingPongAvailable = kIntraWgOverlap;
  static constexpr bool kPingPong = Config::kPingPong && kPingPongAvailable;

  static constexpr int kNumConsumerWarpgroups = Config::kConsumerWGs;
  // A warpgroup skips the key blocks its own rows cannot see (fwd_consumer.h, wg_sees): only with
  // three warpgroups -- on a 128-row tile both warpgroups see every block of the tile's range.
  static constexpr bool kWgBlockSkipAvailable = kNumConsumerWarpgroups == 3 && kIntraWgOverlap;
  static constexpr int kNumConsumerThreads = 128 * kNumConsumerWarpgroups;
  static constexpr int kNumThreads = 128 + kNumConsumerThreads;  // + 1 producer warpgroup
  // setmaxnreg budgets (the SM has 65536 registers; the launch starts every thread at
  // 65536 / kNumThreads): 2 consumer warpgroups 24*128 + 240*256 = 64512; 3: 32*128 + 160*384
  // = 65536 (FA3's split; the launch gives 128 each, so the producer's 96 freed per thread pay
  // exactly the consumers' 32 extra).
  static constexpr int kProducerRegs = kNumConsumerWarpgroups == 2 ? 24 : 32;
  static constexpr int kConsumerRegs = kNumConsumerWarpgroups == 2 ? 240 : 160;
  static_assert(kNumConsumerWarpgroups == 2 || kNumConsumerWarpgroups == 3);

  static_assert(kHeadDim % 32 == 0, "rows must be a multiple of the 64-byte swizzle (32 halves)");
  static_assert(kBlockN % 16 == 0, "P as the A operand of P*V needs k-blocks of 16 keys");
  static_assert(kBlockM == 64 * kNumConsumerWarpgroups, "each consumer warpgroup owns 64 rows");

  // ---- shared-memory layouts (all K-major, swizzled as TMA writes them) ----------------------
  // The 128-byte swizzle (8 rows x 64 elements) where the row length allows it, else the 64-byte
  // one (8 rows x 32 elements; d=96). TMA then issues one box per 64 (32) columns.
  using SmemAtom = std::conditional_t<kHeadDim % 64 == 0, GMMA::Layout_K_SW128_Atom<Element>,
                                      GMMA::Layout_K_SW64_Atom<Element>>;
  using SmemLayoutQ = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  using SmemLayoutK =
      decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockN>, Int<kHeadDim>, Int<kStages>>{}));
  using SmemLayoutV = SmemLayoutK;
  // V^T view (head_dim, keys, stage) of the same bytes: the B operand of O += P V is then
  // "MN-major" (contiguous along head_dim = the MMA's N), which wgmma supports for 16-bit types.
  using SmemLayoutVt = decltype(composition(
      SmemLayoutV{}, make_ordered_layout(Shape<Int<kHeadDim>, Int<kBlockN>, Int<kStages>>{},
                                         Step<_2, _1, _3>{})));

  // ---- wgmma: the consumer warpgroups stacked along M, each 64 x N --------------------------------------
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
    alignas(1024) Element q[kQStages][cosize_v<SmemLayoutQ>];  // 16 KB multiples: stays 1024-aligned
    alignas(1024) Element k[cosize_v<SmemLayoutK>];
    alignas(1024) Element v[cosize_v<SmemLayoutV>];
    alignas(8) uint64_t full_q[kQStages];  // Q tile landed (TMA transaction count)
    alignas(8) uint64_t empty_q[kQStages]; // all consumer threads done with Q K^T of the tile
    alignas(8) uint64_t full_k[kStages];  // K stage landed
    alignas(8) uint64_t full_v[kStages];  // V stage landed
    alignas(8) uint64_t empty_k[kStages]; // all consumer threads done reading the K stage
    alignas(8) uint64_t empty_v[kStages]; // all consumer threads done reading the V stage
  };
  static constexpr int kSmemBytes = sizeof(SharedStorage);
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per CTA exceeds the sm90 limit");
};

}  // namespace flash::sm90
