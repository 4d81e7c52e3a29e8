// Consumer-side helpers of the sm90 backward that keep the per-step hot path short (session 5; the
// branch-free visibility test they go with, BranchFreeMask, is in common/mask.h):
//   * 32-bit shared-memory addresses of this thread's dS and dQ stores in closed form.
//     Through CuTe's swizzled smem tensors ptxas emitted generic 64-bit stores (ST.E, not STS)
//     for dS with ~6 address instructions each, and precomputed 16 dQ addresses (3 spilled,
//     reloaded every step). Both tiles are XOR-swizzled by (row % 8) on a 16- / 32-byte chunk
//     index, and a thread's values sit on one row residue g = lane / 4, so every address is
//     (B ^ (n << s)) + imm with one per-thread base B: one LOP3 per store, offsets as immediates.
// The formulas are the wgmma accumulator layout (PTX ISA, "wgmma .m64nNk16 register fragment
// D": value i of thread (warp w, lane l) is row 16w + l/4 + 8((i/2)%2), column 8(i/4) + 2(l%4) +
// i%2) composed with the tile layouts of bwd_traits.h / bwd_workspace.h (host-callable: checked
// against CuTe's own partitioning for every thread and value by a host program, README_bwd.md).
#pragma once

#include <climits>
#include <cstdint>

#include "common/hostdevice.h"
#include "common/mask.h"

namespace flash::sm90 {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// An opaque copy: keeps ptxas from hoisting the (B ^ const) addresses out of the step loop as
// loop invariants (16 of them would not fit in registers next to dK / dV: that was the spill).
__device__ __forceinline__ uint32_t opaque_u32(uint32_t x) {
  asm volatile("" : "+r"(x));
  return x;
}
__device__ __forceinline__ void st_shared_b32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ void st_shared_v2_f32(uint32_t addr, float x, float y) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(x), "f"(y) : "memory");
}

// dS tile (bwd_traits.h SmemLayoutdS: kBlockM queries x kBlockN keys, queries contiguous,
// 128-byte-swizzled MN-major atoms of 64 queries x 8 keys; atoms tiled queries first). Byte offset
// of (query q, key k): (q/64 + (k/8) kBlockM/64) 1024 + (k%8) 128 + (((q%64)/8) ^ (k%8)) 16 + (q%8) 2.
// The consumer thread (tid in 0..255, warpgroup w = tid / 128 owns keys 64w..) holds S^T values
// i (key = 64w + 16 warp + g + 8 ((i/2)%2), query = 8 (i/4) + 2 t + i%2) with g = lane/4, t = lane%4;
// the pair (i, i+1), i even, is one 32-bit store at ds_store_offset(base, i).
template <int kBlockM>
struct DsStoreMap {
  static constexpr int kAtomsM = kBlockM / 64;
  // Per-thread part (value i = 0): bits 4..6 hold g, which the XOR with (n % 8) << 4 turns into
  // the swizzled chunk index.
  FLASH_HD static uint32_t thread_offset(int tid) {
    const int w = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int key_atom = (64 * w + 16 * warp) / 8;
    return uint32_t(key_atom * kAtomsM * 1024 + g * 128 + g * 16 + 4 * t);
  }
  // i: compile-time after unrolling.
  FLASH_HD static uint32_t offset(uint32_t thread_base, int i) {
    const int n = i / 4, j = (i / 2) % 2;
    return (thread_base ^ uint32_t((n % 8) << 4)) + uint32_t((n / 8) * 1024 + j * kAtomsM * 1024);
  }
};

// dQ tile (ss.dq: fp32 row-major kBlockM x kHeadDim, 8-float chunk index XORed with row % 8;
// kHeadDim % 64 == 0 only). TiledMmadQ: kDqSplitD (kBlockM = 64): warpgroup w has columns
// w kHeadDim/2 .., rows 0..63; else (kBlockM = 128) rows 64w .., all kHeadDim (= 64) columns.
// Value i: row r0 + 8 ((i/2)%2), column c0 + 8 (i/4) + 2t + i%2, and (i, i+1) is one float2 store.
template <int kBlockM, int kHeadDim>
struct DqStoreMap {
  static_assert(kHeadDim % 64 == 0, "chunk base must be a multiple of 8 chunks");
  static constexpr bool kSplitD = kBlockM == 64;
  static constexpr int kCols = kSplitD ? kHeadDim / 2 : kHeadDim;  // per warpgroup
  static_assert(kCols == 64, "n = i / 4 must stay below 8 (one XOR-closed group of chunks)");
  FLASH_HD static uint32_t thread_offset(int tid) {
    const int w = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int row = (kSplitD ? 0 : 64 * w) + 16 * warp + g;
    const int chunk0 = kSplitD ? w * (kHeadDim / 2) / 8 : 0;  // a multiple of 8
    return uint32_t(row * kHeadDim * 4 + (chunk0 + g) * 32 + 8 * t);
  }
  FLASH_HD static uint32_t offset(uint32_t thread_base, int i) {
    const int n = i / 4, h = (i / 2) % 2;
    return (thread_base ^ uint32_t(n << 5)) + uint32_t(h * 8 * kHeadDim * 4);
  }
};

}  // namespace flash::sm90
