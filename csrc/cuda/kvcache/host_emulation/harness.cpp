// Runs the kvcache CUDA kernels on the host (emulated warps, see run.sh) through the real
// entry points and compares with flash::cpu::fwd_kvcache.
#include "attn_emu.h"
#include "aux_emu.h"
#include "cpu/cpu_backend.h"
#include "common/numeric.h"
#include "cuda/kvcache/kvcache.h"
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <thread>
#include <vector>

thread_local Dim3E threadIdx;
Dim3E blockIdx;
unsigned char* g_smem;
std::unique_ptr<std::barrier<>> g_bar;
std::unique_ptr<std::barrier<>> g_warp_bar[8];
float g_xf[8][32];
const void* g_xp[8][32];
uint32_t g_xa[8][32][4];
uint32_t g_xb[8][32][2];

static void run_grid(unsigned gx, unsigned gy, unsigned gz, int threads, size_t smem,
                     const std::function<void()>& k) {
  std::vector<unsigned char> sm(smem + 16);
  for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
      for (unsigned x = 0; x < gx; ++x) {
        blockIdx = {x, y, z};
        std::memset(sm.data(), 0xFF, sm.size());  // garbage (NaN as fp16/bf16), like real smem
        g_smem = sm.data();
        g_bar = std::make_unique<std::barrier<>>(threads);
        for (int w = 0; w < threads / 32; ++w) g_warp_bar[w] = std::make_unique<std::barrier<>>(32);
        std::vector<std::thread> ts;
        for (int t = 0; t < threads; ++t)
          ts.emplace_back([t, &k] { threadIdx = {unsigned(t), 0, 0}; k(); });
        for (auto& t : ts) t.join();
      }
}

// Arrival counters of the single-launch combine (kvcache_tickets.cu on the GPU): one zeroed
// region that every call reuses, so a counter the kernel fails to reset shows up (checked after
// each call). g_use_tickets = false exercises the two-kernel fallback.
static bool g_use_tickets = true;
static std::vector<unsigned> g_tickets(8192, 0u);

namespace flash::kvcache_cuda {
unsigned* split_tickets(int64_t count, void*) {
  return g_use_tickets && count <= int64_t(g_tickets.size()) ? g_tickets.data() : nullptr;
}
template <ElemTag E, int D>
void launch_attention(const AttnArgs& a, void*) {
  using Elem = std::conditional_t<E == ElemTag::kHalf, __half, __nv_bfloat16>;
  if constexpr (lean_supported(D)) {
    if (a.lean) {
      run_grid(a.m_tiles * a.splits, a.nheads_k, a.batch, kThreads, AttnCfg<D, true>::kSmemBytes,
               [&] { kvcache_attn_kernel<Elem, D, true>(a); });
      return;
    }
  }
  run_grid(a.m_tiles * a.splits, a.nheads_k, a.batch, kThreads, AttnCfg<D>::kSmemBytes,
           [&] { kvcache_attn_kernel<Elem, D, false>(a); });
}
#define INST(D) template void launch_attention<ElemTag::kHalf, D>(const AttnArgs&, void*); \
                template void launch_attention<ElemTag::kBf16, D>(const AttnArgs&, void*);
INST(64) INST(128) INST(256)
void launch_append(const KvcacheParams& p, void*) {
  const int64_t total = int64_t(p.batch) * p.seqlen_new * p.nheads_k * (p.head_dim / 8);
  const unsigned blocks = unsigned((total + kAuxThreads - 1) / kAuxThreads);
  for (unsigned bx = 0; bx < blocks; ++bx) {
    blockIdx = {bx, 0, 0};
    for (unsigned t = 0; t < kAuxThreads; ++t) {
      threadIdx = {t, 0, 0};
      if (p.dtype == DType::kFloat16) append_kernel<__half>(p); else append_kernel<__nv_bfloat16>(p);
    }
  }
}
void launch_combine(const AttnArgs& a, DType dt, void*) {
  const int64_t rows = int64_t(a.batch) * a.nheads * a.seqlen_q;
  run_grid(unsigned(rows), 1, 1, kCombineThreads, sizeof(CombineSmem), [&] {
    if (dt == DType::kFloat16) combine_kernel<__half>(a); else combine_kernel<__nv_bfloat16>(a);
  });
}
}  // namespace flash::kvcache_cuda

using namespace flash;
struct Case {
  const char* name; DType dt; int batch, sq, nh, nhk, d, cache_len, snew;
  bool paged; int page_size; bool causal; int wl, wr; float softcap; bool alibi; bool leftpad;
  bool batch_idx; int rotary_dim; bool interleaved; int splits; bool bad_page;
};

static float tof(uint16_t u, DType dt) { return dt == DType::kFloat16 ? numeric::half_to_float(u) : numeric::bf16_to_float(u); }
static uint16_t fromf(float f, DType dt) { return dt == DType::kFloat16 ? numeric::float_to_half(f) : numeric::float_to_bf16(f); }

static bool run_case(const Case& c) {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  auto fill = [&](std::vector<uint16_t>& v) { for (auto& x : v) x = fromf(U(rng), c.dt); };
  const int d = c.d;
  KvcacheParams p;
  p.device = Device::kCPU; p.dtype = c.dt;
  p.batch = c.batch; p.seqlen_q = c.sq; p.nheads = c.nh; p.nheads_k = c.nhk; p.head_dim = d;
  std::vector<uint16_t> q(size_t(c.batch) * c.sq * c.nh * d); fill(q);
  p.q = q.data(); p.q_batch_stride = int64_t(c.sq) * c.nh * d; p.q_row_stride = c.nh * d; p.q_head_stride = d;
  int rows_cache, seqlen_k;
  std::vector<int32_t> bt; int max_blocks = 0;
  if (c.paged) {
    max_blocks = (c.cache_len + c.page_size - 1) / c.page_size;
    seqlen_k = max_blocks * c.page_size;
    int num_pages = c.batch * max_blocks + 3;
    std::vector<int32_t> perm(num_pages); for (int i = 0; i < num_pages; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    bt.resize(size_t(c.batch) * max_blocks);
    for (size_t i = 0; i < bt.size(); ++i) bt[i] = perm[i];
    if (c.bad_page) bt[1] = num_pages + 5, bt[max_blocks + 2] = -1;
    p.block_table = bt.data(); p.block_table_batch_stride = max_blocks; p.page_size = c.page_size; p.num_pages = num_pages;
    rows_cache = num_pages * c.page_size;
    p.k_batch_stride = int64_t(c.page_size) * c.nhk * d;
  } else {
    seqlen_k = c.cache_len;
    p.batch_cache = c.batch + (c.batch_idx ? 2 : 0);
    rows_cache = p.batch_cache * seqlen_k;
    p.k_batch_stride = int64_t(seqlen_k) * c.nhk * d;
  }
  p.seqlen_k = seqlen_k;
  p.k_row_stride = c.nhk * d; p.k_head_stride = d;
  p.v_batch_stride = p.k_batch_stride; p.v_row_stride = p.k_row_stride; p.v_head_stride = d;
  std::vector<uint16_t> kc(size_t(rows_cache) * c.nhk * d), vc(kc.size()); fill(kc); fill(vc);
  std::vector<int32_t> seqlens(c.batch), leftpad(c.batch), bidx(c.batch);
  for (int b = 0; b < c.batch; ++b) {
    seqlens[b] = std::uniform_int_distribution<int>(0, seqlen_k - c.snew)(rng);
    if (b == 0) seqlens[b] = seqlen_k - c.snew;  // full
    if (b == 2) seqlens[b] = 0;  // empty cache
    leftpad[b] = c.leftpad ? std::uniform_int_distribution<int>(0, seqlens[b])(rng) : 0;
    bidx[b] = c.batch_idx ? (c.batch + 1 - b) : b;
  }
  p.cache_seqlens = seqlens.data();
  if (c.leftpad) p.cache_leftpad = leftpad.data();
  if (c.batch_idx) p.cache_batch_idx = bidx.data();
  std::vector<uint16_t> kn(size_t(c.batch) * c.snew * c.nhk * d), vn(kn.size()); fill(kn); fill(vn);
  if (c.snew > 0) {
    p.k_new = kn.data(); p.v_new = vn.data(); p.seqlen_new = c.snew;
    p.knew_batch_stride = p.vnew_batch_stride = int64_t(c.snew) * c.nhk * d;
    p.knew_row_stride = p.vnew_row_stride = c.nhk * d; p.knew_head_stride = p.vnew_head_stride = d;
  }
  std::vector<uint16_t> cosv, sinv;
  if (c.rotary_dim) {
    int ro = seqlen_k + 4; cosv.resize(size_t(ro) * c.rotary_dim / 2); sinv.resize(cosv.size());
    for (size_t i = 0; i < cosv.size(); ++i) { float a = U(rng) * 3.f; cosv[i] = fromf(std::cos(a), c.dt); sinv[i] = fromf(std::sin(a), c.dt); }
    p.rotary_cos = cosv.data(); p.rotary_sin = sinv.data(); p.rotary_dim = c.rotary_dim; p.seqlen_rotary = ro;
    p.rotary_interleaved = c.interleaved;
  }
  p.softmax_scale = 1.f / std::sqrt(float(d));
  p.causal = c.causal; p.window_left = c.wl; p.window_right = c.causal ? 0 : c.wr;
  p.softcap = c.softcap;
  std::vector<float> slopes(c.nh); for (int h = 0; h < c.nh; ++h) slopes[h] = 0.1f * (h + 1);
  if (c.alibi) p.alibi_slopes = slopes.data();
  p.num_splits = c.splits;
  std::vector<uint16_t> out_cpu(q.size()), out_gpu(q.size(), 0xFFFF);
  std::vector<float> lse_cpu(size_t(c.batch) * c.nh * c.sq), lse_gpu(lse_cpu.size(), -7.f);
  p.out_batch_stride = p.q_batch_stride; p.out_row_stride = p.q_row_stride; p.out_head_stride = d;
  p.lse_batch_stride = int64_t(c.nh) * c.sq; p.lse_head_stride = c.sq;

  // CPU reference on copies of the cache.
  KvcacheParams pc = p;
  std::vector<uint16_t> kc_cpu = kc, vc_cpu = vc;
  pc.k = kc_cpu.data(); pc.v = vc_cpu.data(); pc.out = out_cpu.data(); pc.softmax_lse = lse_cpu.data();
  if (pc.num_splits == 0) pc.num_splits = 1;
  cpu::fwd_kvcache(pc);

  KvcacheParams pg = p;
  pg.device = Device::kCUDA;
  pg.k = kc.data(); pg.v = vc.data(); pg.out = out_gpu.data(); pg.softmax_lse = lse_gpu.data();
  std::string why;
  if (!kvcache_cuda::supports(pg, &why)) { printf("%s: unsupported (%s)\n", c.name, why.c_str()); return false; }
  size_t ws = kvcache_cuda::workspace_size(pg);
  std::vector<unsigned char> wsb(ws + 256, 0xAB);
  pg.workspace = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(wsb.data()) + 255) & ~uintptr_t(255));
  pg.workspace_bytes = ws;
  kvcache_cuda::run(pg, nullptr);

  bool ok = true;
  size_t dirty = 0;
  for (unsigned t : g_tickets) dirty += t != 0;
  if (dirty) { ok = false; printf("  %zu arrival counters not reset\n", dirty); std::fill(g_tickets.begin(), g_tickets.end(), 0u); }
  size_t cache_diff = 0;
  for (size_t i = 0; i < kc.size(); ++i) cache_diff += (kc[i] != kc_cpu[i]) + (vc[i] != vc_cpu[i]);
  if (cache_diff) { ok = false; printf("  cache differs in %zu elements\n", cache_diff); }
  double max_out = 0, max_lse = 0; int inf_mismatch = 0;
  int n_nan = 0;  // std::max drops NaN, so count them separately
  for (size_t i = 0; i < q.size(); ++i) {
    const double d = std::fabs(tof(out_cpu[i], c.dt) - tof(out_gpu[i], c.dt));
    n_nan += std::isnan(d);
    max_out = std::max(max_out, d);
  }
  for (size_t i = 0; i < lse_cpu.size(); ++i) {
    if (std::isinf(lse_cpu[i]) || std::isinf(lse_gpu[i])) { inf_mismatch += lse_cpu[i] != lse_gpu[i]; continue; }
    max_lse = std::max(max_lse, double(std::fabs(lse_cpu[i] - lse_gpu[i])));
  }
  int n_inf = 0; for (float l : lse_cpu) n_inf += std::isinf(l);
  const double tol = c.dt == DType::kFloat16 ? 4e-3 : 2e-2;
  if (max_out > tol || max_lse > 2e-3 || inf_mismatch || n_nan) ok = false;
  const char* lean = std::getenv("FLASH_KVCACHE_LEAN");
  printf("%-32s %s%s %s ws=%zu max|dout|=%.2e nan=%d max|dlse|=%.2e inf_rows=%d inf_mismatch=%d\n", c.name,
         g_use_tickets ? "fused" : "2-krn", lean && lean[0] == '1' ? "+lean" : "", ok ? "OK  " : "FAIL", ws, max_out, n_nan,
         max_lse, n_inf, inf_mismatch);
  return ok;
}

int main() {
  const DType H = DType::kFloat16, B = DType::kBFloat16;
  Case cases[] = {
    // name dt batch sq nh nhk d cache snew paged ps causal wl wr cap alibi lp bidx rot inter splits bad
    {"decode_gqa_d128_split0", H, 3, 1, 8, 2, 128, 200, 1, false, 0, true, -1, -1, 0, false, false, false, 64, false, 0, false},
    {"decode_gqa_d128_nosplit", B, 3, 1, 8, 2, 128, 200, 1, false, 0, true, -1, -1, 0, false, false, false, 64, false, 1, false},
    {"paged_ps3_d40_win", H, 2, 3, 8, 2, 40, 150, 2, true, 3, false, 5, 0, 0, true, true, false, 16, true, 3, true},
    {"paged_ps1_d64_softcap", B, 2, 2, 4, 4, 64, 70, 0, true, 1, true, -1, -1, 30.f, false, true, false, 0, false, 2, false},
    {"contig_bidx_d256_rows25", H, 2, 5, 10, 2, 256, 90, 3, false, 0, false, -1, -1, 0, true, false, true, 32, true, 1, false},
    {"contig_d200_local_split", B, 2, 4, 6, 3, 200, 300, 4, false, 0, false, 20, 3, 0, false, true, true, 200, false, 4, false},
    {"empty_rows_causal_sq6", H, 3, 6, 4, 2, 64, 3, 0, false, 0, true, -1, -1, 0, false, false, false, 0, false, 0, false},
    {"empty_rows_paged_split", B, 3, 6, 4, 1, 128, 5, 0, true, 2, true, -1, -1, 0, true, false, false, 0, false, 3, true},
    {"mha_decode_bad_page_ps256", B, 2, 1, 4, 4, 128, 700, 1, true, 256, true, -1, -1, 0, false, false, false, 128, true, 0, true},
    {"mha_decode_contig_d64_noncausal", H, 4, 1, 3, 3, 64, 1000, 2, false, 0, false, -1, -1, 0, true, true, false, 32, false, 0, false},
    {"gqa16_sq2_d128_wl0", H, 1, 2, 16, 1, 128, 130, 2, false, 0, false, 0, -1, 0, false, false, false, 0, false, 0, false},
    {"empty_rows_split_causal", H, 3, 6, 4, 2, 128, 300, 0, true, 7, true, -1, -1, 0, false, true, false, 0, false, 4, true},
    {"paged_ps16_d128_causal_sq7", H, 2, 7, 16, 2, 128, 260, 7, true, 16, true, -1, -1, 0, true, true, false, 128, true, 0, false},
    // Long per-CTA key ranges (many tiles per split): the one-tile-ahead offset table and the
    // page prefetch go through many pipeline rounds (pow2 pages: shift path; 5: division path).
    {"long_paged_ps16_d128_nosplit", B, 2, 1, 8, 2, 128, 1500, 1, true, 16, true, -1, -1, 0, false, true, false, 0, false, 1, true},
    {"long_paged_ps5_d64_split2", H, 2, 2, 4, 1, 64, 1700, 2, true, 5, true, -1, -1, 0, false, false, false, 64, true, 2, true},
    {"long_contig_bidx_d128_split0", H, 1, 1, 4, 1, 128, 2100, 1, false, 0, true, -1, -1, 0, false, true, true, 0, false, 0, false},
    // Many splits (40 > 8 per merge thread group; uneven tiles per split), 2 m-tiles per group.
    {"many_splits40_paged_ps16_sq5", B, 2, 5, 8, 2, 128, 2600, 1, true, 16, true, -1, -1, 0, false, true, false, 0, false, 40, false},
    // Contiguous, ragged cache_seqlens (one empty) with splits; d64 non-causal with ALiBi; a long
    // right-window case (many tiles per CTA: the deep schedule).
    {"contig_ragged_split16_rot", H, 4, 1, 8, 2, 128, 2000, 1, false, 0, true, -1, -1, 0, false, false, false, 64, true, 16, false},
    {"contig_noncausal_sq3_split5", B, 3, 3, 4, 1, 64, 700, 3, false, 0, false, -1, -1, 0, true, false, false, 0, false, 5, false},
    {"contig_wr2_long_nosplit", H, 3, 2, 4, 2, 128, 1300, 0, false, 0, false, -1, 2, 0, false, false, false, 0, false, 1, false},
    // Row ranges that end / start on a 64-key tile boundary (sequence 0 is full): a tile every
    // row of the CTA sees must be told apart from one only the last (causal) or first (local)
    // rows see -- FLASH_KVCACHE_FASTMASK's interior test.
    {"causal_sq4_tile_aligned", B, 2, 4, 8, 2, 128, 256, 0, false, 0, true, -1, -1, 0, false, false, false, 0, false, 1, false},
    {"local_sq4_tile_aligned_split2", H, 2, 4, 8, 2, 128, 320, 0, false, 0, false, 70, 0, 0, false, false, false, 0, false, 2, false},
    {"paged_causal_sq3_aligned_bad", B, 2, 3, 4, 1, 128, 384, 0, true, 64, true, -1, -1, 0, false, false, false, 0, false, 1, true},
  };
  int fails = 0;
  // Default layout (fused merge and two-kernel fallback), then the lean d128 layout
  // (FLASH_KVCACHE_LEAN=1, only d97..d128 cases differ) with both merges.
  for (bool lean : {false, true}) {
    setenv("FLASH_KVCACHE_LEAN", lean ? "1" : "0", 1);
    for (bool fused : {true, false}) {
      g_use_tickets = fused;
      for (const Case& c : cases) {
        if (lean && (c.d <= 96 || c.d > 128)) continue;
        fails += !run_case(c);
      }
    }
  }
  printf("%d failures\n", fails);
  return fails != 0;
}
