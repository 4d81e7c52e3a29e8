// Warp-level building blocks of the sm80 backward: cp.async tile loads, ldmatrix fragment loads
// (plain and transposed) and a (16*MT) x (8*NT) warp GEMM on mma.m16n8k16 (CuTe MMA atoms).
//
// Fragment layouts (PTX ISA, mma.m16n8k16 with .row.col, 16-bit inputs); g = lane / 4, t = lane % 4:
//   A (16x16, row-major):  a0 = A[g][2t..2t+1]   a1 = A[g+8][2t..2t+1]
//                          a2 = A[g][2t+8..+9]   a3 = A[g+8][2t+8..+9]
//   B (16x8, "col"):       b0 = B[2t..2t+1][g]   b1 = B[2t+8..2t+9][g]
//   C (16x8 fp32):         c0,c1 = C[g][2t..2t+1]   c2,c3 = C[g+8][2t..2t+1]
// ldmatrix (non-trans) gives lane l the pair stored[l/4][2(l%4)..+1] of one 8x8 matrix; with .trans
// it gives stored[2(l%4)][l/4], stored[2(l%4)+1][l/4]. Lanes 8q..8q+7 supply the 8 row addresses of
// matrix q of an x4 load, and matrix q lands in destination register q.
//
// Shared-memory tiles are row-major with rows padded by 8 elements (16 bytes): the row pitch in
// 16-byte units is then odd for every bucket (d/8 + 1 with d a multiple of 16), so the 8 row
// addresses of one ldmatrix phase hit 8 distinct bank groups: conflict-free without a swizzle,
// and valid for head dims (96, 160, 224) whose row is not a power-of-two number of 16B chunks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>

namespace flash::sm80::bwd {

template <typename Element>
struct MmaAtom;
template <>
struct MmaAtom<__half> {
  using type = cute::SM80_16x8x16_F32F16F16F32_TN;
};
template <>
struct MmaAtom<__nv_bfloat16> {
  using type = cute::SM80_16x8x16_F32BF16BF16F32_TN;
};

// Two floats -> one 32-bit register of two 16-bit values (low half = first, as the fragments want).
template <typename Element>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

__device__ __forceinline__ void ldsm_x4(const void* smem, uint32_t (&r)[4]) {
  cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(smem), r[0], r[1], r[2], r[3]);
}
__device__ __forceinline__ void ldsm_x4_t(const void* smem, uint32_t (&r)[4]) {
  cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(smem), r[0], r[1], r[2], r[3]);
}

// 16-byte global -> shared copy; pred false writes zeros (src-size 0, src must still be a valid
// address, so callers pass the tensor base then).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool pred) {
  cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>::copy(
      *reinterpret_cast<const cute::uint128_t*>(gmem), *reinterpret_cast<cute::uint128_t*>(smem), pred);
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// 2^x as ex2.approx.ftz.f32: what exp2f compiles to under --use_fast_math (the build's flag).
__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Loads a rows x kCols tile (16-bit elements) into smem (pitch kPitch) with cp.async. Rows
// >= valid_rows and columns >= valid_cols (a multiple of 8) are zero-filled, so GEMMs over the
// padded bucket see exact zeros. gmem row r starts at base + r * row_stride.
// The trip count is a compile-time constant (a loop starting at tid is not unrolled by ptxas,
// which then emitted ~100 instructions per tile). When kThreads is a multiple of the chunks per
// row (d = 32, 64, 128, 256) each thread's chunk column is fixed and a chunk costs a pointer add,
// a compare and the cp.async.
template <int kRows, int kCols, int kPitch, int kThreads, typename Element>
__device__ __forceinline__ void load_tile_async(Element* smem, const Element* base, int64_t row_stride,
                                                int valid_rows, int valid_cols, int tid) {
  constexpr int kChunksPerRow = kCols / 8;
  constexpr int kChunks = kRows * kChunksPerRow;
  if constexpr (kThreads % kChunksPerRow == 0 && kChunks % kThreads == 0) {
    constexpr int kRowStep = kThreads / kChunksPerRow;
    const int r0 = tid / kChunksPerRow;
    const int col = (tid % kChunksPerRow) * 8;
    const bool col_ok = col < valid_cols;
    const Element* src = base + static_cast<int64_t>(r0) * row_stride + col;
    const int64_t src_step = static_cast<int64_t>(kRowStep) * row_stride;
    Element* dst = smem + r0 * kPitch + col;
    if (valid_rows >= kRows && valid_cols >= kCols) {
      // Whole tile present (all interior blocks): no per-chunk predicate or source select. The
      // branch is uniform over the CTA.
#pragma unroll
      for (int it = 0; it < kChunks / kThreads; ++it) {
        cp_async_16(dst + it * kRowStep * kPitch, src, true);
        src += src_step;
      }
      return;
    }
#pragma unroll
    for (int it = 0; it < kChunks / kThreads; ++it) {
      const bool ok = col_ok && r0 + it * kRowStep < valid_rows;
      // Out-of-range rows only form an address; the copy reads nothing (src-size 0) from base.
      cp_async_16(dst + it * kRowStep * kPitch, ok ? src : base, ok);
      src += src_step;
    }
  } else {
#pragma unroll
    for (int it = 0; it < (kChunks + kThreads - 1) / kThreads; ++it) {
      const int c = it * kThreads + tid;
      if (kChunks % kThreads != 0 && c >= kChunks) break;
      const int r = c / kChunksPerRow;  // division by a constant
      const int col = (c % kChunksPerRow) * 8;
      const bool ok = r < valid_rows && col < valid_cols;
      const Element* src = ok ? base + static_cast<int64_t>(r) * row_stride + col : base;
      cp_async_16(smem + r * kPitch + col, src, ok);
    }
  }
}

// One k-step (16) of the warp GEMM below: the A fragments of all MT m-tiles are loaded once and
// reused across the NT n-tiles, the B fragments (two n-tiles per ldmatrix.x4) across the MT m-tiles,
// so a 32 x 32 warp tile costs 4 ldmatrix.x4 per 8 mma (16 x 64: 5, 16 x 32: 6).
template <typename Element, int MT, int NT, bool kATrans, bool kBTrans>
__device__ __forceinline__ void warp_gemm_kstep(float (&acc)[MT][NT][4], const Element* a, int lda, const Element* b,
                                                int ldb, int lane, int k0) {
  static_assert(NT % 2 == 0, "NT must be even");
  using Mma = typename MmaAtom<Element>::type;
  const int lr = lane % 8;          // row inside the 8x8 matrix this lane addresses
  const int q_lo = (lane / 8) % 2;  // bit 0 of the matrix index
  const int q_hi = lane / 16;       // bit 1 of the matrix index
  uint32_t af[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    if constexpr (!kATrans) {
      // matrices: (m 0-7,k 0-7) (m 8-15,k 0-7) (m 0-7,k 8-15) (m 8-15,k 8-15)
      ldsm_x4(a + (mt * 16 + lr + q_lo * 8) * lda + k0 + q_hi * 8, af[mt]);
    } else {
      // same four A sub-matrices, read from [k][m] storage: matrix q has k_off = 8*q_hi, m_off = 8*q_lo
      ldsm_x4_t(a + (k0 + lr + q_hi * 8) * lda + mt * 16 + q_lo * 8, af[mt]);
    }
  }
#pragma unroll
  for (int p = 0; p < NT / 2; ++p) {
    uint32_t bf[4];
    if constexpr (!kBTrans) {
      // matrices: b0(tile 2p) = (n 0-7,k 0-7), b1(tile 2p) = (n 0-7,k 8-15), then tile 2p+1
      ldsm_x4(b + (p * 16 + lr + q_hi * 8) * ldb + k0 + q_lo * 8, bf);
    } else {
      ldsm_x4_t(b + (k0 + lr + q_lo * 8) * ldb + p * 16 + q_hi * 8, bf);
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float(&c0)[4] = acc[mt][2 * p];
      float(&c1)[4] = acc[mt][2 * p + 1];
      const uint32_t(&x)[4] = af[mt];
      Mma::fma(c0[0], c0[1], c0[2], c0[3], x[0], x[1], x[2], x[3], bf[0], bf[1], c0[0], c0[1], c0[2], c0[3]);
      Mma::fma(c1[0], c1[1], c1[2], c1[3], x[0], x[1], x[2], x[3], bf[2], bf[3], c1[0], c1[1], c1[2], c1[3]);
    }
  }
}

// Warp GEMM  acc[16*MT x 8*NT] += A[16*MT x 16*KSTEPS] * B[16*KSTEPS x 8*NT], operands in shared memory.
//   kATrans false: A stored [m][k] at a + m*lda + k;   true: stored [k][m] at a + k*lda + m.
//   kBTrans false: B stored [n][k] at b + n*ldb + k;   true: stored [k][n] at b + k*ldb + n.
// acc[mt][nt] is the 16 x 8 C fragment of rows 16 mt.., columns 8 nt.. of the warp tile.
// NT must be even: B is read two n8 tiles per ldmatrix.x4.
// kUnroll: k-steps unrolled (KSTEPS = full). Less than full keeps ptxas from hoisting the fragment
// loads of later k-steps (wide B tiles next to large accumulators would otherwise spill).
template <typename Element, int MT, int NT, int KSTEPS, bool kATrans, bool kBTrans, int kUnroll = KSTEPS>
__device__ __forceinline__ void warp_gemm(float (&acc)[MT][NT][4], const Element* a, int lda, const Element* b,
                                          int ldb, int lane) {
  static_assert(KSTEPS % kUnroll == 0, "unroll must divide the k-steps");
#pragma unroll kUnroll
  for (int ks = 0; ks < KSTEPS; ++ks)
    warp_gemm_kstep<Element, MT, NT, kATrans, kBTrans>(acc, a, lda, b, ldb, lane, ks * 16);
}

template <int MT, int NT>
__device__ __forceinline__ void zero_acc(float (&acc)[MT][NT][4]) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int i = 0; i < NT; ++i) acc[m][i][0] = acc[m][i][1] = acc[m][i][2] = acc[m][i][3] = 0.f;
}

}  // namespace flash::sm80::bwd
