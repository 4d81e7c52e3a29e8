// The kernel-side view of one flash_attn_with_kvcache call (a POD passed by value to every
// kernel), the tile shape of the attention kernel, and the per-instantiation launcher
// declarations (defined in kvcache_attn_kernel.cuh, instantiated in inst/*.cu).
#pragma once

#include <cstdint>

#include "common/hostdevice.h"
#include "flash/params.h"

namespace flash::kvcache_cuda {

// Tile shape shared by host (workspace / split heuristic) and device code.
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRowsPerTile = 16;              // packed (query row, group head) rows per CTA
constexpr int kKeysPerWarp = 16;              // keys of a tile each warp owns
constexpr int kBlockN = kWarps * kKeysPerWarp;  // keys per pipeline stage (64)
constexpr int kMaxSplits = 128;                 // split-KV partials per output row, at most

struct AttnArgs {
  const void* q;
  int64_t q_bs, q_rs, q_hs;
  const void* k;
  int64_t k_bs, k_rs, k_hs;  // paged: k_bs is the page stride
  const void* v;
  int64_t v_bs, v_rs, v_hs;
  void* out;
  int64_t o_bs, o_rs, o_hs;
  float* lse;
  int64_t lse_bs, lse_hs;

  int batch, seqlen_q, seqlen_k, nheads, nheads_k, group, head_dim;
  int rows;     // seqlen_q * group: packed rows of one (sequence, kv head)
  int m_tiles;  // ceil(rows / kRowsPerTile)

  const int32_t* cache_seqlens;
  int cache_seqlen_const;
  int seqlen_new;  // 0 when no k_new
  const int32_t* cache_batch_idx;
  int batch_cache;
  const int32_t* cache_leftpad;
  const int32_t* block_table;
  int64_t bt_stride;
  int page_size, num_pages;
  int page_shift;  // log2(page_size) when it is a power of two (shift/mask lookups), else -1

  float scale, softcap;
  int window_left, window_right;  // window_right already includes causal
  const float* alibi;
  int64_t alibi_bs;

  const void* rot_cos;
  const void* rot_sin;
  int rotary_dim, seqlen_rotary;
  bool rot_interleaved;
  bool rot_query_per_row;  // causal or local: query row i uses position cached + i

  // Split-KV (splits > 1): partial outputs [split][batch][nheads][seqlen_q][head_dim] fp32 and
  // partial lse [split][batch][nheads][seqlen_q] (natural log, -inf for an empty partial).
  int splits;
  float* part_o;
  float* part_lse;
  // Single-launch combine (splits > 1): one arrival counter per (sequence, kv head, m-tile),
  // zero before the launch; the CTA that arrives last merges that group's partial rows and
  // resets the counter to zero for the next call. nullptr: a separate combine kernel merges.
  unsigned* tickets;
  // Lean shared-memory layout (see attn_smem_bytes); only honoured where lean_supported(bucket).
  bool lean;
  // CTAs with more key tiles than this use the deep pipeline schedule (kvcache_attn_kernel.cuh).
  int deep_min_tiles;
  // Tiles whose keys every row sees, without softcap / ALiBi, skip the per-element mask tests.
  bool fast_interior;
  // Contiguous caches: the copy loop computes key-row offsets itself (no smem offset table).
  bool direct_offsets;
  // Dynamic shared memory to launch with when larger than the layout needs (0: the layout's own):
  // padding that caps the resident CTAs per SM. Host-side only.
  int smem_bytes;
};

// Where one sequence's keys live and how many it attends (all values clamped so that no index
// derived from them leaves the tensors, whatever cache_seqlens / leftpad / batch_idx contain).
struct SeqKeys {
  int cached;     // raw cache_seqlens[b] (rotary positions use it unclamped, range-checked)
  int leftpad;    // first physical key attended
  int sk;         // attended keys: physical [leftpad, leftpad + sk)
  int cache_row;  // contiguous cache row, -1 when invalid (then sk == 0)
};

FLASH_HD SeqKeys seq_keys(const AttnArgs& a, int b) {
  SeqKeys s;
  s.cached = a.cache_seqlens ? a.cache_seqlens[b] : a.cache_seqlen_const;
  int64_t end = static_cast<int64_t>(s.cached) + a.seqlen_new;
  end = end < 0 ? 0 : (end > a.seqlen_k ? a.seqlen_k : end);
  int lp = a.cache_leftpad ? a.cache_leftpad[b] : 0;
  lp = lp < 0 ? 0 : (lp > end ? static_cast<int>(end) : lp);
  s.leftpad = lp;
  s.sk = static_cast<int>(end) - lp;
  s.cache_row = a.cache_batch_idx ? a.cache_batch_idx[b] : b;
  if (!a.block_table && (s.cache_row < 0 || s.cache_row >= a.batch_cache)) {
    s.cache_row = -1;
    s.sk = 0;
  }
  return s;
}

// Launchers, one per (element type, head-dim bucket); Elem is __half or __nv_bfloat16 on the
// device side, declared here through a tag so host files need no CUDA headers.
enum class ElemTag { kHalf, kBf16 };
template <ElemTag E, int kHeadDim>
void launch_attention(const AttnArgs& args, void* stream);

void launch_append(const KvcacheParams& p, void* stream);

// Zeroed arrival counters for the single-launch combine of one call on `stream` (at least `count`
// of them), or nullptr when unavailable (then the two-kernel path is used). Per device and per
// stream (kernels of one stream never overlap, so a stream can reuse its counters call after call;
// different streams get different counters). kvcache_tickets.cu.
unsigned* split_tickets(int64_t count, void* stream);
constexpr int64_t kMaxTicketsPerCall = 8192;
void launch_combine(const AttnArgs& args, DType dtype, void* stream);

// Dynamic shared memory of the attention kernel for a head-dim bucket.
// 3 stages up to 128 (H100: 3 CTAs/SM at d64, 2 at d128); 2 beyond (the tiles get large).
//
// Lean layout (d128 only, chosen per call, see kvcache_api.cu): 2 stages of UNPADDED K/V rows,
// the 16-byte chunks of row r stored at chunk c ^ (r & 7) so the 8 rows an ldmatrix reads still
// hit 8 different bank groups. 72,896 B instead of 112,896 B: 3 CTAs (12 warps) per H100 SM
// instead of 2, with the same bytes in flight per SM (3 x 2 tiles vs 2 x 3). The bet (pass 4):
// the kernel is limited by too few warps to overlap its per-tile math with the waits.
constexpr bool lean_supported(int head_dim) { return head_dim == 128; }
constexpr int stages_for(int head_dim, bool lean = false) {
  return lean ? 2 : (head_dim <= 128 ? 3 : 2);
}
constexpr int smem_row_elems(int head_dim) { return head_dim + 8; }  // +16 B: ldmatrix conflict-free
constexpr int kv_row_elems(int head_dim, bool lean) {
  return lean ? head_dim : smem_row_elems(head_dim);
}

// Dynamic shared memory of the attention kernel for a head-dim bucket (AttnCfg<D, lean>::kSmemBytes
// static_asserts that it matches): K/V stages, Q tile (always padded), merge statistics (m, l,
// weight per warp and row, lse per row), per-stage key-ok flags, per-stage key-row offsets (K and
// V, int64).
constexpr int attn_smem_bytes(int head_dim, bool lean = false) {
  return stages_for(head_dim, lean) * 2 * kBlockN * kv_row_elems(head_dim, lean) * 2 +
         kRowsPerTile * smem_row_elems(head_dim) * 2 + (3 * kWarps * kRowsPerTile + kRowsPerTile) * 4 +
         stages_for(head_dim, lean) * kBlockN + stages_for(head_dim, lean) * kBlockN * 2 * 8;
}

}  // namespace flash::kvcache_cuda
