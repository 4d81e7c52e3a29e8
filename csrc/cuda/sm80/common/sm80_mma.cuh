// Offers: warp-level tensor-core GEMMs on m16n8k16 fragments (mma.sync through CuTe's SM80 atoms,
// operands through CuTe's ldmatrix atoms) plus fp32 -> fp16/bf16 pair packing.
//
// Fragment layout (PTX ISA, mma.m16n8k16, 16-bit A/B, fp32 C/D), lane = 4 * g + t:
//   A (16x16, row major)  a0:(g, 2t..2t+1)  a1:(g+8, 2t..)  a2:(g, 2t+8..)  a3:(g+8, 2t+8..)
//   B (16x8,  k x n)      b0:(k 2t..2t+1, n g)              b1:(k 2t+8..2t+9, n g)
//   C (16x8)              c0,c1:(g, 2t..2t+1)               c2,c3:(g+8, 2t..2t+1)
// Accumulators are float[MT][NT][4]: m-tile mt covers rows row0 + 16 mt .. +15 of the warp,
// n-tile nt covers columns 8 nt .. 8 nt + 7.
//
// ldmatrix.x4 hands matrix i (row addresses from lanes 8i..8i+7) to register i; each thread gets
// row lane/4, columns 2(lane%4)..+1 of it (.trans: column lane/4, rows 2(lane%4)..+1).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/mma_sm80.hpp>
#include <cute/numeric/numeric_types.hpp>

namespace flash::sm80 {

template <typename Element>
struct MmaTraits;
template <>
struct MmaTraits<cutlass::half_t> {
  using Atom = cute::SM80_16x8x16_F32F16F16F32_TN;
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <>
struct MmaTraits<cutlass::bfloat16_t> {
  using Atom = cute::SM80_16x8x16_F32BF16BF16F32_TN;
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

template <int MT, int NT>
__device__ __forceinline__ void zero_acc(float (&acc)[MT][NT][4]) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.f;
}

// acc[MT][NT] += A * B^T where A = smem rows a_row0 .. a_row0 + 16 MT - 1 (row major, reduction
// dim contiguous) and B = smem rows 0 .. 8 NT - 1 (row major, reduction dim contiguous), over
// reduction columns [0, kDepth). Used for S = Q K^T (and dP = dO V^T, ...).
// kPipelined: the fragments of k-step kk + 1 are loaded (second register buffer) before the MMAs
// of k-step kk, so no k-step waits for its own ldmatrix latency (FA2's register double buffer).
// Costs 4 (MT + NT / 2) registers more; meant for MT = 1 (d >= 160 tiles).
// kUnrollReq > 0 overrides the k-loop unroll rule of the non-pipelined loop (experiments).
template <int MT, int NT, int kDepth, typename TileA, typename TileB, bool kPipelined = false, int kUnrollReq = 0,
          typename Element>
__device__ __forceinline__ void gemm_abt_smem(float (&acc)[MT][NT][4], const Element* sA, int a_row0,
                                              const Element* sB, int b_row0, int lane) {
  static_assert(NT % 2 == 0, "B is fetched as pairs of n-tiles");
  using Atom = typename MmaTraits<Element>::Atom;
  // A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
  const int a_row = a_row0 + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int a_col = (lane >> 4) * 8;
  // B pair p: matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
  //           = b0, b1 of n-tile 2p, then b0, b1 of n-tile 2p + 1.
  const int b_row = b_row0 + (lane & 7) + (lane >> 4) * 8;
  const int b_col = ((lane >> 3) & 1) * 8;
  if constexpr (TileA::kSwizzled) {
    // Swizzled tiles (SmemTileSwz): a_row0, b_row0 multiples of 8, so every row this lane addresses has
    // (row & 7) == (lane & 7); k-step kk = 4 i + j reads chunk 2 kk + h at offA/offB[j] + 64 i.
    static_assert(TileB::kSwizzled && kDepth % 64 == 0, "both operands swizzled, whole 64-column groups");
    // Element offset of chunk 2 kk + h of the lane's row: (row * D + 64 (kk / 4) + 16 (kk % 4) + 8 h) ^ 8 s,
    // s = lane & 7 (row * D is a multiple of 64, so the XOR only permutes chunks inside a 64-element group;
    // m-tile / n-pair steps of 16 rows add multiples of 64 and commute with it). One LOP3 per k-step and
    // operand instead of four live offsets (those spilled at d = 64 / 128).
    const int sx = (lane & 7) * 8;
    const int a_lin = a_row * TileA::kRowStride + (lane >> 4) * 8;
    const int b_lin = b_row * TileB::kRowStride + ((lane >> 3) & 1) * 8;
    auto offA = [&](int kk) { return (a_lin + kk * 16) ^ sx; };
    auto offB = [&](int kk) { return (b_lin + kk * 16) ^ sx; };
    auto ldsm_a = [&](const Element* pa, int mt, uint32_t (&r)[4]) {
      cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(pa + mt * 16 * TileA::kRowStride), r[0],
                                    r[1], r[2], r[3]);
    };
    auto ldsm_b = [&](const Element* pb, int p, uint32_t (&r)[4]) {
      cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(pb + p * 16 * TileB::kRowStride), r[0],
                                    r[1], r[2], r[3]);
    };
    if constexpr (kPipelined) {
      constexpr int kSteps = kDepth / 16;
      uint32_t fa[2][MT][4], fb[2][NT / 2][4];
      auto load = [&](int buf, int kk) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) ldsm_a(sA + offA(kk), mt, fa[buf][mt]);
#pragma unroll
        for (int p = 0; p < NT / 2; ++p) ldsm_b(sB + offB(kk), p, fb[buf][p]);
      };
      auto mma = [&](int buf) {
#pragma unroll
        for (int p = 0; p < NT / 2; ++p)
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              float* c = acc[mt][2 * p + h];
              Atom::fma(c[0], c[1], c[2], c[3], fa[buf][mt][0], fa[buf][mt][1], fa[buf][mt][2], fa[buf][mt][3],
                        fb[buf][p][2 * h], fb[buf][p][2 * h + 1], c[0], c[1], c[2], c[3]);
            }
      };
      load(0, 0);
#pragma unroll
      for (int kk = 0; kk < kSteps; kk += 2) {
        load(1, kk + 1);
        mma(0);
        if (kk + 2 < kSteps) load(0, kk + 2);
        mma(1);
      }
      return;
    }
    // Unrolled by 4 (as kVarSUnroll4 on the padded tiles; d = 64: fully).
#pragma unroll 4
    for (int kk = 0; kk < kDepth / 16; ++kk) {
      {
        const Element* pa = sA + offA(kk);
        const Element* pb = sB + offB(kk);
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) ldsm_a(pa, mt, a[mt]);
#pragma unroll
        for (int p = 0; p < NT / 2; ++p) {
          uint32_t b[4];
          ldsm_b(pb, p, b);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              float* c = acc[mt][2 * p + h];
              Atom::fma(c[0], c[1], c[2], c[3], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[2 * h], b[2 * h + 1], c[0],
                        c[1], c[2], c[3]);
            }
        }
      }
    }
    return;
  }
  if constexpr (kPipelined) {
    constexpr int kSteps = kDepth / 16;
    static_assert(kSteps % 2 == 0, "k-steps are taken in pairs (buffer 0, buffer 1)");
    uint32_t fa[2][MT][4], fb[2][NT / 2][4];
    auto load = [&](int buf, int kk) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
        cute::SM75_U32x4_LDSM_N::copy(
            *reinterpret_cast<const cute::uint128_t*>(sA + TileA::offset(a_row + mt * 16, kk * 16 + a_col)),
            fa[buf][mt][0], fa[buf][mt][1], fa[buf][mt][2], fa[buf][mt][3]);
#pragma unroll
      for (int p = 0; p < NT / 2; ++p)
        cute::SM75_U32x4_LDSM_N::copy(
            *reinterpret_cast<const cute::uint128_t*>(sB + TileB::offset(b_row + p * 16, kk * 16 + b_col)),
            fb[buf][p][0], fb[buf][p][1], fb[buf][p][2], fb[buf][p][3]);
    };
    auto mma = [&](int buf) {
#pragma unroll
      for (int p = 0; p < NT / 2; ++p)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            float* c = acc[mt][2 * p + h];
            Atom::fma(c[0], c[1], c[2], c[3], fa[buf][mt][0], fa[buf][mt][1], fa[buf][mt][2], fa[buf][mt][3],
                      fb[buf][p][2 * h], fb[buf][p][2 * h + 1], c[0], c[1], c[2], c[3]);
          }
    };
    load(0, 0);
#pragma unroll
    for (int kk = 0; kk < kSteps; kk += 2) {
      load(1, kk + 1);
      mma(0);
      if (kk + 2 < kSteps) load(0, kk + 2);
      mma(1);
    }
    return;
  }
  // kk indexes no register array (only smem addresses), so the loop need not be fully unrolled;
  // a partial unroll stops ptxas from hoisting many k-steps of ldmatrix results (register
  // pressure / spills next to a 128-float O accumulator) while still overlapping loads and MMAs.
  // Measured (ptxas sm_90, lean kernel): depth 256 104 -> 8 bytes of stack, depth 128 (kBlockN 64)
  // 80 -> 8 bytes.
  constexpr int kUnroll = kUnrollReq > 0 ? kUnrollReq : kDepth * NT < 1024 ? kDepth / 16 : 2;
#pragma unroll kUnroll
  for (int kk = 0; kk < kDepth / 16; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      cute::SM75_U32x4_LDSM_N::copy(
          *reinterpret_cast<const cute::uint128_t*>(sA + TileA::offset(a_row + mt * 16, kk * 16 + a_col)),
          a[mt][0], a[mt][1], a[mt][2], a[mt][3]);
    }
#pragma unroll
    for (int p = 0; p < NT / 2; ++p) {
      uint32_t b[4];
      cute::SM75_U32x4_LDSM_N::copy(
          *reinterpret_cast<const cute::uint128_t*>(sB + TileB::offset(b_row + p * 16, kk * 16 + b_col)),
          b[0], b[1], b[2], b[3]);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float* c = acc[mt][2 * p + h];
          Atom::fma(c[0], c[1], c[2], c[3], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[2 * h],
                    b[2 * h + 1], c[0], c[1], c[2], c[3]);
        }
      }
    }
  }
}

// The A operand of a 16 x 16 k-slice taken from a C-layout accumulator: k-slice kk spans n-tiles
// 2 kk and 2 kk + 1 of `src` (this is how P = softmax(S) feeds O += P V without shared memory).
template <typename Element, int NT>
__device__ __forceinline__ void acc_to_a_frag(const float (&src)[NT][4], int kk, uint32_t (&a)[4]) {
  using T = MmaTraits<Element>;
  a[0] = T::pack(src[2 * kk][0], src[2 * kk][1]);
  a[1] = T::pack(src[2 * kk][2], src[2 * kk][3]);
  a[2] = T::pack(src[2 * kk + 1][0], src[2 * kk + 1][1]);
  a[3] = T::pack(src[2 * kk + 1][2], src[2 * kk + 1][3]);
}

// acc[MT][DT] += P * V where P = probabilities in registers (C layout, [MT][KT][4], KT n-tiles of
// 8 keys) and V = smem rows 0 .. 8 KT - 1 (key major, dim contiguous), dims [0, 8 DT).
template <int MT, int DT, int KT, typename TileB, typename Element>
__device__ __forceinline__ void gemm_rs_v(float (&acc)[MT][DT][4], const float (&p)[MT][KT][4],
                                          const Element* sV, int lane) {
  static_assert(DT % 2 == 0 && KT % 2 == 0, "pairs of tiles");
  using Atom = typename MmaTraits<Element>::Atom;
  // .trans matrices for d-pair q: (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15),
  // (keys 8-15, d 8-15) = b0, b1 of d-tile 2q, then b0, b1 of d-tile 2q + 1.
  const int v_row = (lane & 7) + ((lane >> 3) & 1) * 8;
  const int v_col = (lane >> 4) * 8;
  // Swizzled V (SmemTileSwz): every row this lane addresses has (row & 7) == (lane & 7); d-pair q reads
  // chunk 2 q + (lane >> 4), at offV[q & 3] + 64 (q >> 2) (q and kk are compile-time here).
  // (XOR form as in gemm_abt_smem: kk * 16 rows add a multiple of 64 elements.)
  const int v_lin = v_row * TileB::kRowStride + (lane >> 4) * 8, sx = (lane & 7) * 8;
  auto v_ptr = [&](int kk, int q) -> const Element* {
    if constexpr (TileB::kSwizzled)
      return sV + ((v_lin + q * 16) ^ sx) + kk * 16 * TileB::kRowStride;
    else
      return sV + TileB::offset(kk * 16 + v_row, q * 16 + v_col);
  };
  // P is packed to 16-bit pairs up front: half the registers of the fp32 scores.
  uint32_t pa[KT / 2][MT][4];
#pragma unroll
  for (int kk = 0; kk < KT / 2; ++kk)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) acc_to_a_frag<Element>(p[mt], kk, pa[kk][mt]);
#pragma unroll
  for (int kk = 0; kk < KT / 2; ++kk) {
    const uint32_t (&a)[MT][4] = pa[kk];
#pragma unroll
    for (int q = 0; q < DT / 2; ++q) {
      uint32_t b[4];
      cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(v_ptr(kk, q)), b[0], b[1], b[2],
                                    b[3]);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float* c = acc[mt][2 * q + h];
          Atom::fma(c[0], c[1], c[2], c[3], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[2 * h],
                    b[2 * h + 1], c[0], c[1], c[2], c[3]);
        }
      }
    }
  }
}

// acc[MT][DT][4] += P * V[:, d0 .. d0 + 8 DT) with P read from shared memory (row major [query][key],
// rows 0 .. 16 MT - 1 of tile TileP, the KT n-tiles of 8 keys) instead of registers; B as in
// gemm_rs_v. The A fragments equal what acc_to_a_frag builds from the C-layout P when sP holds P
// packed the same way (ldmatrix hands lane 4g + t the pair (g, 2t..2t+1) of each 8 x 8 matrix), and
// each accumulator gets the same mma sequence (kk ascending), so the result is the same.
template <int MT, int DT, int KT, typename TileP, typename TileB, typename Element>
__device__ __forceinline__ void gemm_ss_pv(float (&acc)[MT][DT][4], const Element* sP, const Element* sV, int d0,
                                           int lane) {
  static_assert(DT % 2 == 0 && KT % 2 == 0, "pairs of tiles");
  using Atom = typename MmaTraits<Element>::Atom;
  // A matrices: (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
  const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8;
  const int a_col = (lane >> 4) * 8;
  const int v_row = (lane & 7) + ((lane >> 3) & 1) * 8;
  const int v_col = (lane >> 4) * 8;
  // Swizzled V: as in gemm_rs_v; d0 is a multiple of 64 there (whole 128-byte groups).
  const int v_lin = v_row * TileB::kRowStride + (lane >> 4) * 8, sx = (lane & 7) * 8;
  auto v_ptr = [&](int kk, int q) -> const Element* {
    if constexpr (TileB::kSwizzled)
      return sV + d0 + ((v_lin + q * 16) ^ sx) + kk * 16 * TileB::kRowStride;
    else
      return sV + TileB::offset(kk * 16 + v_row, d0 + q * 16 + v_col);
  };
#pragma unroll
  for (int kk = 0; kk < KT / 2; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      cute::SM75_U32x4_LDSM_N::copy(
          *reinterpret_cast<const cute::uint128_t*>(sP + TileP::offset(mt * 16 + a_row, kk * 16 + a_col)), a[mt][0],
          a[mt][1], a[mt][2], a[mt][3]);
#pragma unroll
    for (int q = 0; q < DT / 2; ++q) {
      uint32_t b[4];
      cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(v_ptr(kk, q)), b[0], b[1], b[2],
                                    b[3]);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float* c = acc[mt][2 * q + h];
          Atom::fma(c[0], c[1], c[2], c[3], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[2 * h],
                    b[2 * h + 1], c[0], c[1], c[2], c[3]);
        }
      }
    }
  }
}

}  // namespace flash::sm80
