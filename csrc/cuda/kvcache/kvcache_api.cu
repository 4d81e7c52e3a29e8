// flash::kvcache_cuda entry points: what the kernels accept, the split-KV decision (shared by
// workspace_size and run so both always agree), and the launch sequence
//   append (if k_new)  ->  attention (direct, or partials)  ->  combine (if split).
// Everything here is host-only bookkeeping: no device reads, no syncs, no allocations, so run()
// is CUDA-graph capturable.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cuda/kvcache/kvcache.h"
#include "cuda/kvcache/kvcache_args.h"
#include "flash/errors.h"

namespace flash::kvcache_cuda {
namespace {

constexpr int kMaxDevices = 64;

// A device attribute, read once per device (cudaDeviceGetAttribute is cheap but not free, and
// run() should not make runtime queries on the hot path).
template <cudaDeviceAttr kAttr>
int device_attr(int device, int fallback) {
  static std::atomic<int> cache[kMaxDevices] = {};
  if (device < 0 || device >= kMaxDevices) device = 0;
  int n = cache[device].load(std::memory_order_relaxed);
  if (n > 0) return n;
  if (cudaDeviceGetAttribute(&n, kAttr, device) != cudaSuccess || n <= 0) {
    cudaGetLastError();  // clear the sticky-free error so the caller's check_launch is not confused
    n = fallback;
  }
  cache[device].store(n, std::memory_order_relaxed);
  return n;
}
int sm_count(int device) {
  return device_attr<cudaDevAttrMultiProcessorCount>(device, 132);
}
int smem_per_sm(int device) {
  return device_attr<cudaDevAttrMaxSharedMemoryPerMultiprocessor>(device, 228 * 1024);
}
int smem_optin_per_block(int device) {
  return device_attr<cudaDevAttrMaxSharedMemoryPerBlockOptin>(device, 227 * 1024);
}

int bucket_of(const KvcacheParams& p) { return std::max(32, (p.head_dim + 31) / 32 * 32); }

// Switches read on every call, so that A/B runs can interleave variants in one process
// (bench_decode.py --inproc). Unset: `dflt`; "1" on, anything else off.
bool env_on(const char* name, bool dflt) {
  const char* env = std::getenv(name);
  if (env == nullptr || env[0] == '\0') return dflt;
  return env[0] == '1';
}
int env_int(const char* name, int dflt) {
  const char* env = std::getenv(name);
  return env != nullptr && env[0] != '\0' ? std::atoi(env) : dflt;
}

// The kernel switches of one call (5 getenv, ~0.5 us).
//   FLASH_KVCACHE_LEAN=0      padded 3-stage layout instead of the lean one (kvcache_args.h)
//   FLASH_KVCACHE_LEAN_OCC=n  cap on resident lean CTAs per SM (default 2; 0 = none, 3 on an H100).
//                             H100 session 5 round 1: 3 per SM slower than 2 at (32, 8192) (368.9 us
//                             with 3 splits vs 361.8 with 256 CTAs) and (1, 8192) (25.5 vs 23.9 us);
//                             the microbenchmark streams 3.14 TB/s with 2 stages x 2 CTAs, 3.02 x 3.
//   FLASH_KVCACHE_DEEP_MIN=n  CTAs with > n key tiles run the deep pipeline schedule. Default: 8 for
//                             the padded layout (pass 2: +1 % for long CTAs), never for the lean
//                             one (H100 session 5 round 2: the classic schedule 349.0 / 356.8 /
//                             701.2 us vs deep 361.6 / 360.4 / 717.8 at (32, 8192) / (128, 2048) /
//                             (8, 65536))
//   FLASH_KVCACHE_FASTMASK=0  per-element mask tests on every tile
//   FLASH_KVCACHE_DIRECT=0    contiguous caches read row offsets from the smem table too (round 2,
//                             deep schedule: 0.3-0.7 % faster than direct; with the classic schedule
//                             only direct was measured, so direct stays the default)
struct Switches {
  bool lean, fastmask, direct;
  int lean_cap, deep_min;
};
Switches read_switches() {
  Switches sw;
  sw.lean = env_on("FLASH_KVCACHE_LEAN", true);
  sw.lean_cap = env_int("FLASH_KVCACHE_LEAN_OCC", 2);
  sw.deep_min = env_int("FLASH_KVCACHE_DEEP_MIN", -1);  // -1: the layout's default
  sw.fastmask = env_on("FLASH_KVCACHE_FASTMASK", true);
  sw.direct = env_on("FLASH_KVCACHE_DIRECT", true);
  return sw;
}

constexpr int kMaxTilesNeverDeep = 1 << 30;  // deep_min_tiles that keeps every CTA classic

// Shared-memory layout of a call and the cap on its resident CTAs per SM (0: none).
struct Layout {
  bool lean;
  int cap;
};
Layout layout_of(const KvcacheParams& p, const Switches& sw) {
  const bool lean = lean_supported(bucket_of(p)) && sw.lean;
  return {lean, lean ? sw.lean_cap : 0};
}

// Attention CTAs resident per SM for this call's head-dim bucket: limited by shared memory
// (1 KB per CTA is reserved by the driver) and by registers (<= 255 per thread, 64K per SM).
int ctas_per_sm_uncapped(const KvcacheParams& p, bool lean) {
  const int bucket = bucket_of(p);
  const int by_smem = smem_per_sm(p.device_index) / (attn_smem_bytes(bucket, lean) + 1024);
  // ptxas -v (sm_90), rounded up: d32 114, d64..d128 168 (the split merge's 16 loads in flight),
  // d160..d256 <= 255.
  const int regs = bucket <= 32 ? 128 : (bucket <= 128 ? 168 : 256);
  const int by_regs = 65536 / (regs * kThreads);
  return std::max(1, std::min(by_smem, by_regs));
}
int ctas_per_sm(const KvcacheParams& p, Layout l) {
  const int n = ctas_per_sm_uncapped(p, l.lean);
  return l.cap > 0 ? std::min(n, l.cap) : n;
}
// Dynamic shared memory that makes at most ctas_per_sm(p, l) CTAs fit an SM (0: no padding).
int padded_smem_bytes(const KvcacheParams& p, Layout l) {
  const int n = ctas_per_sm(p, l);
  if (n >= ctas_per_sm_uncapped(p, l.lean)) return 0;
  // (n + 1) CTAs of S + 1 KB (reserved per CTA) must not fit: S > smem_per_sm / (n + 1) - 1 KB.
  const int s = (smem_per_sm(p.device_index) / (n + 1) - 1024 + 128 + 127) / 128 * 128;
  return std::min(s, smem_optin_per_block(p.device_index));
}

int group_of(const KvcacheParams& p) { return p.nheads_k > 0 ? p.nheads / p.nheads_k : 1; }

int m_tiles_of(const KvcacheParams& p) {
  const int64_t rows = static_cast<int64_t>(p.seqlen_q) * group_of(p);
  return static_cast<int>((rows + kRowsPerTile - 1) / kRowsPerTile);
}

// Splits. The kernel is a stream over K/V, so what matters is that every resident CTA slot
// (SMs x CTAs per SM) is busy for the whole kernel: a partial second wave (e.g. 320 CTAs on 264
// slots) nearly doubles the time. So: no split when the (sequence, kv head, row tile) CTAs
// already fill >= 80% of the slots; otherwise the smallest split count whose wave efficiency
// (CTAs / (waves x slots), counting only splits that get key tiles) is within 5% of the best
// one, with at least 2 key tiles per split so each CTA has a pipeline to fill.
int choose_splits(const KvcacheParams& p, Layout l) {
  if (p.batch == 0 || p.seqlen_q == 0 || p.num_splits == 1) return 1;
  const int max_tiles = std::max(1, (p.seqlen_k + kBlockN - 1) / kBlockN);
  if (p.num_splits > 1) return std::min({p.num_splits, max_tiles, kMaxSplits});
  const int64_t ctas = static_cast<int64_t>(p.batch) * p.nheads_k * m_tiles_of(p);
  const int64_t slots = static_cast<int64_t>(sm_count(p.device_index)) * ctas_per_sm(p, l);
  if (ctas * 5 >= slots * 4) return 1;  // splitting only adds the combine
  const int max_splits = std::min(kMaxSplits, std::max(1, max_tiles / 2));
  auto efficiency = [&](int s) {
    const int per_split = (max_tiles + s - 1) / s;
    const int64_t used = ctas * ((max_tiles + per_split - 1) / per_split);
    const int64_t waves = (used + slots - 1) / slots;
    return static_cast<double>(used) / static_cast<double>(waves * slots);
  };
  double best = 0.0;
  for (int s = 1; s <= max_splits; ++s) best = std::max(best, efficiency(s));
  for (int s = 1; s <= max_splits; ++s) {
    if (efficiency(s) >= 0.95 * best) return s;
  }
  return 1;
}

int64_t output_rows(const KvcacheParams& p) {
  return static_cast<int64_t>(p.batch) * p.nheads * p.seqlen_q;
}

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

size_t part_o_bytes(const KvcacheParams& p, int splits) {
  return align_up(static_cast<size_t>(splits) * output_rows(p) * p.head_dim * sizeof(float), 256);
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

bool strides8(int64_t a, int64_t b, int64_t c) { return a % 8 == 0 && b % 8 == 0 && c % 8 == 0; }

using Launcher = void (*)(const AttnArgs&, void*);

template <ElemTag E>
Launcher bucket_launcher(int head_dim) {
  // Smallest built bucket that holds head_dim (dims past head_dim are predicated off).
#define FLASH_KV_TRY(D) \
  if (head_dim <= D) return &launch_attention<E, D>;
#if defined(FLASH_HDIM_32_ENABLED)
  FLASH_KV_TRY(32)
#endif
#if defined(FLASH_HDIM_64_ENABLED)
  FLASH_KV_TRY(64)
#endif
#if defined(FLASH_HDIM_96_ENABLED)
  FLASH_KV_TRY(96)
#endif
#if defined(FLASH_HDIM_128_ENABLED)
  FLASH_KV_TRY(128)
#endif
#if defined(FLASH_HDIM_160_ENABLED)
  FLASH_KV_TRY(160)
#endif
#if defined(FLASH_HDIM_192_ENABLED)
  FLASH_KV_TRY(192)
#endif
#if defined(FLASH_HDIM_224_ENABLED)
  FLASH_KV_TRY(224)
#endif
#if defined(FLASH_HDIM_256_ENABLED)
  FLASH_KV_TRY(256)
#endif
#undef FLASH_KV_TRY
  (void)head_dim;
  return nullptr;
}

// The attention launcher of this call, or a flash::Error naming what was not built. Resolved
// before anything is launched so an unbuilt configuration leaves the cache untouched.
Launcher select_launcher(const KvcacheParams& p) {
  Launcher l = nullptr;
  if (p.dtype == DType::kFloat16) {
#if defined(FLASH_FP16_ENABLED)
    l = bucket_launcher<ElemTag::kHalf>(p.head_dim);
#else
    throw Error("q", "fp16 kvcache kernels not built (FLASH_ATTN_DTYPES)");
#endif
  } else {
#if defined(FLASH_BF16_ENABLED)
    l = bucket_launcher<ElemTag::kBf16>(p.head_dim);
#else
    throw Error("q", "bf16 kvcache kernels not built (FLASH_ATTN_DTYPES)");
#endif
  }
  if (l == nullptr) {
    const char* dt = p.dtype == DType::kFloat16 ? "fp16" : "bf16";
    throw Error("head_dim", "kvcache kernel for head_dim " + std::to_string(p.head_dim) + " (" +
                                dt + ") not built (FLASH_ATTN_HDIMS)");
  }
  return l;
}

}  // namespace

bool supports(const KvcacheParams& p, std::string* why) {
  auto fail = [&](const char* arg) {
    if (why) *why = arg;
    return false;
  };
  if (p.device != Device::kCUDA) return fail("q");
  if (p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16) return fail("q");
  if (p.head_dim <= 0 || p.head_dim > 256 || p.head_dim % 8 != 0) return fail("head_dim");
  if (p.nheads_k <= 0 || p.nheads % p.nheads_k != 0) return fail("k");
  if (p.batch > 65535 || p.nheads_k > 65535) return fail("q");
  if (p.block_table && p.page_size < 1) return fail("block_table");
  // Large head dims need more shared memory than sm86/sm89 allow one block (99 KB): refuse clearly
  // here instead of failing at launch.
  const int bucket = std::max(32, (p.head_dim + 31) / 32 * 32);
  if (attn_smem_bytes(bucket) > smem_optin_per_block(p.device_index)) return fail("head_dim");
  // 16-byte vector accesses everywhere: 16-byte aligned bases, strides multiples of 8 elements.
  if (!aligned16(p.q) || !strides8(p.q_batch_stride, p.q_row_stride, p.q_head_stride))
    return fail("q");
  if (!aligned16(p.out) || !strides8(p.out_batch_stride, p.out_row_stride, p.out_head_stride))
    return fail("out");
  if (!aligned16(p.k) || !strides8(p.k_batch_stride, p.k_row_stride, p.k_head_stride))
    return fail("k_cache");
  if (!aligned16(p.v) || !strides8(p.v_batch_stride, p.v_row_stride, p.v_head_stride))
    return fail("v_cache");
  if (p.k_new) {
    if (!aligned16(p.k_new) ||
        !strides8(p.knew_batch_stride, p.knew_row_stride, p.knew_head_stride))
      return fail("k");
    if (!aligned16(p.v_new) ||
        !strides8(p.vnew_batch_stride, p.vnew_row_stride, p.vnew_head_stride))
      return fail("v");
  }
  return true;
}

namespace {
size_t workspace_bytes_for(const KvcacheParams& p, int splits) {
  if (splits <= 1) return 0;
  return part_o_bytes(p, splits) + static_cast<size_t>(splits) * output_rows(p) * sizeof(float);
}

}  // namespace

// Enough for either layout where the lean one exists: the Python plan cache sizes the workspace
// once per tensor metadata, while FLASH_KVCACHE_LEAN may change between calls (A/B runs).
size_t workspace_size(const KvcacheParams& p) {
  const Switches sw = read_switches();
  size_t bytes = workspace_bytes_for(p, choose_splits(p, Layout{false, 0}));
  if (lean_supported(bucket_of(p))) {  // the capped lean layout of these switches and uncapped
    bytes = std::max(bytes, workspace_bytes_for(p, choose_splits(p, Layout{true, sw.lean_cap})));
    bytes = std::max(bytes, workspace_bytes_for(p, choose_splits(p, Layout{true, 0})));
  }
  return bytes;
}

void run(const KvcacheParams& p, void* stream) {
  if (p.batch == 0) return;
  const Launcher launcher = select_launcher(p);
  if (p.k_new && p.seqlen_new > 0) launch_append(p, stream);
  if (p.seqlen_q == 0 || p.nheads == 0) return;

  AttnArgs a{};
  a.q = p.q;
  a.q_bs = p.q_batch_stride, a.q_rs = p.q_row_stride, a.q_hs = p.q_head_stride;
  a.k = p.k;
  a.k_bs = p.k_batch_stride, a.k_rs = p.k_row_stride, a.k_hs = p.k_head_stride;
  a.v = p.v;
  a.v_bs = p.v_batch_stride, a.v_rs = p.v_row_stride, a.v_hs = p.v_head_stride;
  a.out = p.out;
  a.o_bs = p.out_batch_stride, a.o_rs = p.out_row_stride, a.o_hs = p.out_head_stride;
  a.lse = p.softmax_lse;
  a.lse_bs = p.lse_batch_stride, a.lse_hs = p.lse_head_stride;
  a.batch = p.batch;
  a.seqlen_q = p.seqlen_q;
  a.seqlen_k = p.seqlen_k;
  a.nheads = p.nheads;
  a.nheads_k = p.nheads_k;
  a.group = group_of(p);
  a.head_dim = p.head_dim;
  a.rows = p.seqlen_q * a.group;
  a.m_tiles = m_tiles_of(p);
  a.cache_seqlens = p.cache_seqlens;
  a.cache_seqlen_const = p.cache_seqlen_const;
  a.seqlen_new = p.k_new ? p.seqlen_new : 0;
  a.cache_batch_idx = p.block_table ? nullptr : p.cache_batch_idx;
  a.batch_cache = p.batch_cache;
  a.cache_leftpad = p.cache_leftpad;
  a.block_table = p.block_table;
  a.bt_stride = p.block_table_batch_stride;
  a.page_size = p.page_size;
  a.num_pages = p.num_pages;
  a.page_shift = -1;
  if (p.block_table && (p.page_size & (p.page_size - 1)) == 0) {
    a.page_shift = 0;
    while ((1 << a.page_shift) < p.page_size) ++a.page_shift;
  }
  a.scale = p.softmax_scale;
  a.softcap = p.softcap;
  a.window_left = p.window_left;
  a.window_right = p.causal ? 0 : p.window_right;
  a.alibi = p.alibi_slopes;
  a.alibi_bs = p.alibi_batch_stride;
  a.rot_cos = p.rotary_cos;
  a.rot_sin = p.rotary_sin;
  a.rotary_dim = p.rotary_cos ? p.rotary_dim : 0;
  a.seqlen_rotary = p.seqlen_rotary;
  a.rot_interleaved = p.rotary_interleaved;
  a.rot_query_per_row = a.window_left >= 0 || a.window_right >= 0;
  const Switches sw = read_switches();
  const Layout layout = layout_of(p, sw);
  a.lean = layout.lean;
  a.deep_min_tiles = sw.deep_min >= 0 ? sw.deep_min : (layout.lean ? kMaxTilesNeverDeep : 8);
  a.fast_interior = sw.fastmask;
  a.direct_offsets = sw.direct;
  a.smem_bytes = padded_smem_bytes(p, layout);
  a.splits = choose_splits(p, layout);
  if (a.splits > 1) {
    const size_t need = workspace_bytes_for(p, a.splits);
    if (p.workspace == nullptr || p.workspace_bytes < need) {
      throw Error("workspace", "kvcache split-KV needs " + std::to_string(need) + " bytes");
    }
    a.part_o = static_cast<float*>(p.workspace);
    a.part_lse = reinterpret_cast<float*>(static_cast<char*>(p.workspace) +
                                          part_o_bytes(p, a.splits));
  }

  // Split: the last CTA of each (sequence, kv head, m-tile) merges the partials inside the
  // attention kernel (one launch) when arrival counters are available for this stream; else a
  // separate combine kernel does it.
  a.tickets = nullptr;
  if (a.splits > 1) {
    a.tickets = split_tickets(static_cast<int64_t>(p.batch) * p.nheads_k * a.m_tiles, stream);
  }
  launcher(a, stream);
  if (a.splits > 1 && a.tickets == nullptr) launch_combine(a, p.dtype, stream);
}

}  // namespace flash::kvcache_cuda
