// Offers: padded shared-memory tile geometry (SmemTile) and predicated, row-gathering cp.async
// tile loads (load_tile_async) for Ampere-class kernels (forward and backward).
//
// Layout choice: a tile of kRows x kHeadDim elements stored row-major with a row stride of
// kHeadDim + 8 elements. Every bucket has kHeadDim / 8 even, so a row spans an ODD number of
// 16-byte chunks; the 8 row addresses an ldmatrix phase reads (same chunk column, 8 consecutive
// rows) then land in 8 different 16-byte bank groups: conflict free for ldmatrix (.trans or not)
// and for 16-byte cp.async / st.shared. Padding is used instead of an XOR swizzle because the
// buckets 32/96/160/224 are not multiples of 64 columns (a 3-bit chunk swizzle would not close).
#pragma once

#include <cstdint>

#include <cute/arch/copy_sm80.hpp>
#include <cute/numeric/numeric_types.hpp>

namespace flash::sm80 {

template <int kRows_, int kHeadDim_>
struct SmemTile {
  static constexpr int kRows = kRows_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kChunks = kHeadDim / 8;      // 16-byte chunks per row
  static constexpr int kRowStride = kHeadDim + 8;   // elements
  static constexpr int kElems = kRows * kRowStride;
  static constexpr bool kSwizzled = false;
  static_assert(kHeadDim % 16 == 0 && (kChunks % 2) == 0, "row must span an odd chunk count");
  __device__ __forceinline__ static int offset(int row, int col) { return row * kRowStride + col; }
};

// Unpadded alternative for head dims that are multiples of 64 (pass 5): rows of exactly kHeadDim
// elements (128-byte aligned), the 16-byte chunk c of row r stored at chunk (c ^ (r & 7)) of its 128-byte
// group. Why: with the padded layout a 128-byte global line lands across two 128-byte shared-memory
// segments for 7 of 8 rows, and the H100 then splits each cp.async warp instruction into ~10.5 L1
// wavefronts / L2 requests instead of 4 (ncu, d256: 355 M L2 requests and 797 M L2 sectors vs FA2's
// 130 M / 505 M for the same bytes). ldmatrix stays conflict free: the 8 rows of a phase (r & 7 all
// different) read 8 different chunks of their 128-byte groups.
template <int kRows_, int kHeadDim_>
struct SmemTileSwz {
  static constexpr int kRows = kRows_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kChunks = kHeadDim / 8;
  static constexpr int kRowStride = kHeadDim;
  static constexpr int kElems = kRows * kRowStride;
  static constexpr bool kSwizzled = true;
  static_assert(kHeadDim % 64 == 0, "whole 128-byte groups");
  __device__ __forceinline__ static int offset(int row, int col) {
    return row * kRowStride + ((((col >> 3) ^ row) & 7) | (col >> 3 & ~7)) * 8 + (col & 7);
  }
};

// Loads rows [0, kRows) of a tile. `rows.row(r)` returns the global address of row r's first
// element, or nullptr when that row must read as zeros (out of range / invalid page). Chunks at
// or beyond `dim_chunks` (the real head_dim / 8) are zero-filled, never read.
// Zero fill uses plain st.shared; the caller's __syncthreads after cp.async.wait covers both.
template <int kThreads, typename Tile, typename Element, typename RowSource>
__device__ __forceinline__ void load_tile_async(Element* smem, const RowSource& rows, int dim_chunks,
                                                int tid) {
  constexpr int kTotal = Tile::kRows * Tile::kChunks;
  constexpr int kIters = (kTotal + kThreads - 1) / kThreads;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int idx = it * kThreads + tid;
    if (kTotal % kThreads == 0 || idx < kTotal) {
      const int r = idx / Tile::kChunks;
      const int c = idx % Tile::kChunks;
      Element* dst = smem + Tile::offset(r, c * 8);
      const Element* src = c < dim_chunks ? rows.row(r) : nullptr;
      if (src != nullptr) {
        cute::SM80_CP_ASYNC_CACHEGLOBAL<cute::uint128_t>::copy(
            *reinterpret_cast<const cute::uint128_t*>(src + c * 8),
            *reinterpret_cast<cute::uint128_t*>(dst));
      } else {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
      }
    }
  }
}

// Dense fast path of load_tile_async: rows r of the tile are src_row0 + r * row_stride, valid iff
// r < valid_rows (same zero-fill rules). When each thread's chunk column is fixed (kThreads a
// multiple of the chunks per row) the per-chunk work is one pointer add and one predicate instead
// of a division, a 64-bit multiply and the paged-table test per chunk. Out-of-range rows only form
// addresses, never dereference them.
// kFastPath: whole tiles take an unpredicated loop (below); false keeps one code path (less
// register pressure where the load is issued next to live score registers).
template <int kThreads, typename Tile, bool kFastPath = true, typename Element>
__device__ __forceinline__ void load_tile_dense_async(Element* smem, const Element* src_row0, int64_t row_stride,
                                                      int valid_rows, int dim_chunks, int tid) {
  constexpr int kTotal = Tile::kRows * Tile::kChunks;
  if constexpr (kThreads % Tile::kChunks == 0 && kTotal % kThreads == 0) {
    constexpr int kRowsPerIter = kThreads / Tile::kChunks;
    const int c = tid % Tile::kChunks;
    const int r0 = tid / Tile::kChunks;
    const bool c_ok = c < dim_chunks;
    const Element* src = src_row0 + r0 * row_stride + c * 8;
    const int64_t src_step = kRowsPerIter * row_stride;
    Element* dst = smem + Tile::offset(r0, c * 8);
    // Swizzled tiles whose row step is not a multiple of 8 (d = 256: 4 rows) alternate between two
    // chunk permutations: odd iterations use dst_odd (equal to dst for every other case).
    constexpr bool kAlt = Tile::kSwizzled && kRowsPerIter % 8 != 0;
    static_assert(!kAlt || (2 * kRowsPerIter) % 8 == 0, "two alternating permutations");
    Element* dst_odd = dst;
    if constexpr (kAlt) dst_odd = smem + Tile::offset(r0 + kRowsPerIter, c * 8) - kRowsPerIter * Tile::kRowStride;
    if (kFastPath && valid_rows >= Tile::kRows && dim_chunks >= Tile::kChunks) {
      // Whole tile present (every interior block): no per-chunk predicate, zero-fill store or
      // predicated address, ~4 instructions less per 16-byte chunk (32 chunks per key block and
      // thread at d = 256). The branch is uniform over the CTA.
#pragma unroll
      for (int it = 0; it < kTotal / kThreads; ++it) {
        cute::SM80_CP_ASYNC_CACHEGLOBAL<cute::uint128_t>::copy(
            *reinterpret_cast<const cute::uint128_t*>(src),
            *reinterpret_cast<cute::uint128_t*>((it % 2 == 1 ? dst_odd : dst) + it * kRowsPerIter * Tile::kRowStride));
        src += src_step;
      }
      return;
    }
    // (Tried: the predicate as cp.async's source size with the tile base as the address for
    // absent rows: fewer instructions but the pointer select made ptxas spill 20-40 B at d128 / d256.)
#pragma unroll
    for (int it = 0; it < kTotal / kThreads; ++it) {
      Element* d = (it % 2 == 1 ? dst_odd : dst) + it * kRowsPerIter * Tile::kRowStride;
      if (c_ok && r0 + it * kRowsPerIter < valid_rows) {
        cute::SM80_CP_ASYNC_CACHEGLOBAL<cute::uint128_t>::copy(
            *reinterpret_cast<const cute::uint128_t*>(src), *reinterpret_cast<cute::uint128_t*>(d));
      } else {
        *reinterpret_cast<uint4*>(d) = make_uint4(0u, 0u, 0u, 0u);
      }
      src += src_step;
    }
  } else {
    struct Rows {
      const Element* base;
      int64_t stride;
      int valid;
      __device__ __forceinline__ const Element* row(int r) const {
        return r < valid ? base + static_cast<int64_t>(r) * stride : nullptr;
      }
    };
    load_tile_async<kThreads, Tile>(smem, Rows{src_row0, row_stride, valid_rows}, dim_chunks, tid);
  }
}

__device__ __forceinline__ void cp_async_commit() { cute::cp_async_fence(); }
__device__ __forceinline__ void cp_async_wait_all() { cute::cp_async_wait<0>(); }

// Rows of a dense (batch, seq, head, dim) tensor slice: row r is position first_row + r.
template <typename Element>
struct DenseRows {
  const Element* base;   // element (row 0, head h, dim 0) of this sequence
  int64_t row_stride;
  int first_row;         // tile's first position inside the sequence
  int num_rows;          // positions [0, num_rows) exist
  __device__ __forceinline__ const Element* row(int r) const {
    const int pos = first_row + r;
    return pos < num_rows ? base + static_cast<int64_t>(pos) * row_stride : nullptr;
  }
};

// Key/value rows of one sequence, dense or paged (block_table != nullptr). A page index outside
// [0, num_pages) is never dereferenced: its rows read as zeros (and the kernel masks them).
template <typename Element>
struct KvRows {
  const Element* base;   // dense: element (key 0, kv head, dim 0); paged: (page 0, row 0, kv head)
  int64_t row_stride;
  int64_t page_stride;   // paged only: stride between pages
  const int32_t* table;  // paged only: this sequence's row of block_table
  int page_size;
  int num_pages;
  int first_key;         // tile's first key
  int num_keys;          // keys [0, num_keys) exist
  __device__ __forceinline__ const Element* row(int r) const {
    const int t = first_key + r;
    if (t >= num_keys) return nullptr;
    if (table == nullptr) return base + static_cast<int64_t>(t) * row_stride;
    const int page = table[t / page_size];
    if (page < 0 || page >= num_pages) return nullptr;
    return base + static_cast<int64_t>(page) * page_stride +
           static_cast<int64_t>(t % page_size) * row_stride;
  }
};

}  // namespace flash::sm80
