// Tile sizes and the workspace layout of the sm90 backward; light (no CuTe), shared by the host
// API (bwd_api.cu: workspace size) and the launcher / kernels.
//
// Workspace (256-byte aligned sections), sq_r = seqlen_q rounded up to kBlockM:
//   lse_log2  fp32 [batch][nheads][sq_r]        lse * log2(e); +inf for rows >= seqlen_q
//   dpsum     fp32 [batch][nheads][sq_r]        D = rowsum(dO * O); 0 for rows >= seqlen_q
//   dq_accum  fp32 [batch][nheads][sq_r][d]     dQ / softmax_scale, column-swizzled (below)
//   dq_sem    int  [batch][nheads][sq_r/kBlockM] deterministic mode: key blocks added so far
// dq_accum and dq_sem are adjacent and zeroed by one memset per call.
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

constexpr int bwd_block_m(int head_dim) { return head_dim <= 64 ? 128 : 64; }
constexpr int bwd_block_n(int /*head_dim*/) { return 128; }

// Column swizzle of a dQ row (fp32) in shared memory and in dq_accum: the 8-float chunk index is
// XORed with (row % 8). The wgmma accumulator stores (rows g, g+8 of 8 lanes groups, float2 at
// column 8j + 2t) then hit 32 distinct banks per half-warp although a row is 128 floats long.
// Chunks stay contiguous, so the convert kernel reads 8 consecutive columns as 2 float4.
FLASH_HD int dq_swizzle_col(int row, int col) { return col ^ ((row & 7) << 3); }

struct BwdWorkspaceLayout {
  int64_t seqlen_q_rounded = 0;
  int num_m_blocks = 0;
  size_t lse_off = 0, dpsum_off = 0, dq_off = 0, sem_off = 0, zero_bytes = 0, total = 0;
};

inline size_t bwd_align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

inline BwdWorkspaceLayout plan_bwd_workspace(const BwdParams& p) {
  BwdWorkspaceLayout w;
  const int bm = bwd_block_m(p.head_dim);
  w.num_m_blocks = (p.seqlen_q + bm - 1) / bm;
  w.seqlen_q_rounded = int64_t(w.num_m_blocks) * bm;
  const size_t rows = size_t(p.batch) * p.nheads * w.seqlen_q_rounded;
  size_t off = 0;
  w.lse_off = off;
  off = bwd_align_up(off + sizeof(float) * rows, 256);
  w.dpsum_off = off;
  off = bwd_align_up(off + sizeof(float) * rows, 256);
  w.dq_off = off;
  off += sizeof(float) * rows * p.head_dim;  // a multiple of 256 bytes (d >= 64)
  w.sem_off = off;
  off += sizeof(int) * size_t(p.batch) * p.nheads * w.num_m_blocks;
  w.zero_bytes = off - w.dq_off;
  w.total = bwd_align_up(off, 256) + 256;  // + slack for a caller pointer not 256-aligned
  return w;
}

}  // namespace flash::sm90
