// Tile sizes and the workspace layout of the sm90 backward; light (no CuTe), shared by the host
// API (bwd_api.cu: workspace size) and the launcher / kernels.
//
// Workspace (256-byte aligned sections), sq_r = seqlen_q rounded up to kBlockM:
//   lse_log2  fp32 [batch][nheads][sq_r]        lse * log2(e); +inf for rows >= seqlen_q
//   dpsum     fp32 [batch][nheads][sq_r]        D = rowsum(dO * O); 0 for rows >= seqlen_q
//   dq_accum  fp32 [batch][nheads][sq_r][d]     dQ / softmax_scale, column-swizzled (below)
//   dq_sem    int  [batch][nheads][sq_r/kBlockM] deterministic mode: key blocks added so far
// dq_accum and dq_sem are adjacent and zeroed by one memset per call.
//
// Varlen (cu_seqlens_q set): [nheads][rows_pad] instead of [batch][nheads][sq_r], with
// rows_pad = total_q + batch * kBlockM rounded up to kBlockM, and sequence b's rows starting at
// row (cu_seqlens_q[b] + b * kBlockM) / kBlockM * kBlockM of a head (FA3's published trick): every
// sequence starts on a kBlockM boundary, so each of its query blocks is still one aligned bulk
// copy, and it has room for its padded last block (the next sequence starts at least
// ceil(len_b / kBlockM) blocks later). In both cases the element of (b, h, row) is
//   ws_row = b * batch_stride + h * head_stride + seq_row0(b) + row   (seq_row0: 0 or below)
// and the semaphore of its query block is dq_sem[ws_row / kBlockM].
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/hostdevice.h"
#include "flash/params.h"

namespace flash::sm90 {

template <int kHeadDim> struct BwdTileConfig;
// d64: 128 queries per step (S^T / dP^T 64 registers each, dK + dV 64): twice the work per step
// for the same per-step fixed costs (barrier, dQ hand-off). d128: 64 (dK + dV take 128).
template <> struct BwdTileConfig<64>  { static constexpr int kBlockM = 128, kBlockN = 128; };
template <> struct BwdTileConfig<128> { static constexpr int kBlockM = 64, kBlockN = 128; };
// d96: as d128 (dK + dV 96 registers; 128-row steps would need 64 + 64 more for S^T / dP^T).
template <> struct BwdTileConfig<96>  { static constexpr int kBlockM = 64, kBlockN = 128; };

constexpr int bwd_block_m(int head_dim) { return head_dim <= 64 ? 128 : 64; }
constexpr int bwd_block_n(int /*head_dim*/) { return 128; }

// Column swizzle of a dQ row (fp32) in shared memory and in dq_accum: the 8-float chunk index is
// XORed with (row % 8). The wgmma accumulator stores (rows g, g+8 of 8 lanes groups, float2 at
// column 8j + 2t) then hit 32 distinct banks per half-warp although a row is 128 floats long.
// Chunks stay contiguous, so the convert kernel reads 8 consecutive columns as 2 float4.
FLASH_HD int dq_swizzle_col(int row, int col) { return col ^ ((row & 7) << 3); }
// Any head dim that is a multiple of 32: d % 64 == 0 as above; otherwise (d96: 12 chunks) the
// chunk index is XORed with row % 4 only, which keeps it inside its group of 4 chunks. Rows of
// 96 floats all start on bank 0 as rows of 128 do, and rows g, g + 4 sharing a chunk position
// gives 2 addresses per bank per warp-wide float2 store: the 2 wavefronts 256 bytes need anyway.
template <int kHeadDim>
FLASH_HD int dq_swizzle_col_d(int row, int col) {
  static_assert(kHeadDim % 32 == 0, "rows of whole groups of 4 chunks");
  return kHeadDim % 64 == 0 ? dq_swizzle_col(row, col) : col ^ ((row & 3) << 3);
}

struct BwdWorkspaceLayout {
  int64_t seqlen_q_rounded = 0;  // fixed length: rows per (batch, head); varlen: per sequence at most
  int num_m_blocks = 0;
  // Row pitches of lse_log2 / dpsum (times head_dim: dq_accum); see the layout comment above.
  int64_t batch_stride = 0, head_stride = 0;
  size_t lse_off = 0, dpsum_off = 0, dq_off = 0, sem_off = 0, zero_bytes = 0, total = 0;
};

// First workspace row of sequence b (relative to its head's rows). Fixed length: 0. Varlen: the
// sequence's first packed row `q_start` (clamped, common/varlen.h) moved up to a kBlockM boundary
// with b blocks of room below it. For q_start <= total_q it stays < rows_pad - padded length.
FLASH_HD int64_t bwd_varlen_seq_row0(int64_t q_start, int b, int block_m) {
  return (q_start + int64_t(b) * block_m) / block_m * block_m;
}

inline size_t bwd_align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

inline BwdWorkspaceLayout plan_bwd_workspace(const BwdParams& p) {
  BwdWorkspaceLayout w;
  const int bm = bwd_block_m(p.head_dim);
  w.num_m_blocks = (p.seqlen_q + bm - 1) / bm;
  w.seqlen_q_rounded = int64_t(w.num_m_blocks) * bm;
  if (p.cu_seqlens_q != nullptr) {
    w.head_stride = (int64_t(p.total_q) + int64_t(p.batch) * bm + bm - 1) / bm * bm;
    w.batch_stride = 0;
  } else {
    w.head_stride = w.seqlen_q_rounded;
    w.batch_stride = w.seqlen_q_rounded * p.nheads;
  }
  const size_t rows = p.cu_seqlens_q != nullptr ? size_t(p.nheads) * w.head_stride
                                                : size_t(p.batch) * p.nheads * w.seqlen_q_rounded;
  size_t off = 0;
  w.lse_off = off;
  off = bwd_align_up(off + sizeof(float) * rows, 256);
  w.dpsum_off = off;
  off = bwd_align_up(off + sizeof(float) * rows, 256);
  w.dq_off = off;
  off += sizeof(float) * rows * p.head_dim;  // a multiple of 256 bytes (d >= 64)
  w.sem_off = off;
  off += sizeof(int) * (rows / bm);  // one per query block
  w.zero_bytes = off - w.dq_off;
  w.total = bwd_align_up(off, 256) + 256;  // + slack for a caller pointer not 256-aligned
  return w;
}

}  // namespace flash::sm90
