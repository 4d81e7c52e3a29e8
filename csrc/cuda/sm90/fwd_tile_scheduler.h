// Static persistent tile scheduler of the sm90 forward kernel.
//
// The grid has at most one CTA per SM; CTA c processes work units c, c + gridDim.x, ... and each
// unit is one or two query tiles (m_block, head, batch). The sequence is a pure function of
// (blockIdx.x, gridDim.x, params), so the producer and the consumers of a CTA walk exactly the
// same tiles without talking to each other (a mismatch would deadlock the mbarrier pipeline).
//
// Why units: a static round-robin assignment is only balanced when the units cost the same.
//  * No window: every tile sees the same keys; a unit is one tile, m fastest, then head, then
//    batch (the order the old one-CTA-per-tile grid had: the CTAs running at the same time share
//    the K/V of one head in L2).
//  * Causal / local: tile m sees about (m + 1) key blocks (causal), so tiles m and M-1-m are
//    paired into one unit of near-constant cost (M + 1 blocks). The heavier tile goes first. The
//    units of one (batch, head) are consecutive, so again concurrently running CTAs share K/V.
#pragma once

namespace flash::sm90 {

struct TileCoord {
  int m_block, bidh, bidb;
};

struct TileSchedule {
  int num_m_blocks;    // query tiles per (batch, head)
  int units_per_head;  // num_m_blocks, or ceil(num_m_blocks / 2) when paired
  int nheads;
  int num_units;       // units_per_head * nheads * batch
  bool paired;
  // Rotated assignment (FwdKernelParams / fwd_launch.h decide; off = plain round robin): in round
  // j (units [j G, j G + G), G = gridDim.x) CTA c takes unit j G + (c + j) mod n, n = the units of
  // that round. The same units run at the same time as before (same K/V in L2), but when
  // units_per_head divides G a CTA no longer gets the same position in its head every round --
  // with unequal units (a partial last tile, unequal causal pairs of 192-row tiles) the plain
  // order gives the light ones to the same CTAs each round and the max CTA load does not drop.
  bool rotate = false;

  // The unit CTA c processes in its round j (slot = j G + c < num_units).
  __host__ __device__ __forceinline__ int unit_at(int slot, int j, int c, int G) const {
    if (!rotate) return slot;
    const int base = slot - c;  // j * G
    const int n = num_units - base < G ? num_units - base : G;  // c < n since slot < num_units
    return base + (c + j) % n;
  }

  // Number of query tiles in unit u (1 or 2).
  __host__ __device__ __forceinline__ int tiles_in_unit(int u) const {
    if (!paired) return 1;
    const int k = u % units_per_head;
    return (k == num_m_blocks - 1 - k) ? 1 : 2;  // the middle tile of an odd count is alone
  }

  // Tile j (0 or 1) of unit u.
  __host__ __device__ __forceinline__ TileCoord tile(int u, int j) const {
    const int bh = u / units_per_head, k = u % units_per_head;
    TileCoord t;
    t.bidh = bh % nheads;
    t.bidb = bh / nheads;
    t.m_block = (j == 0) ? num_m_blocks - 1 - k : k;  // unpaired: j is always 0
    return t;
  }
};

inline TileSchedule make_tile_schedule(int seqlen_q, int block_m, int nheads, int batch,
                                       bool windowed) {
  TileSchedule s;
  s.num_m_blocks = (seqlen_q + block_m - 1) / block_m;
  s.paired = windowed;
  s.units_per_head = windowed ? (s.num_m_blocks + 1) / 2 : s.num_m_blocks;
  s.nheads = nheads;
  s.num_units = s.units_per_head * nheads * batch;
  return s;
}

}  // namespace flash::sm90
