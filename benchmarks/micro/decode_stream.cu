// Load-method microbenchmark for the decode K/V access pattern (kvcache issue #6).
//
// Question: what read bandwidth does each way of moving K/V into an SM reach on exactly the
// pattern flash_attn_with_kvcache streams? Layout (batch, seqlen, 8 kv heads, 128) bf16, K and V
// separate tensors; one CTA per (split, kv head, sequence) reads the 256-byte rows of one
// (sequence, kv head), rows 2 KB apart. The "work" is an integer sum of every byte (so the
// consumer must really read the tile, as the attention kernel's ldmatrix does), written out only
// under an impossible condition (the loads cannot be elided, nothing is stored).
//
// Methods (each with stages / rows per tile / CTAs per SM as knobs):
//   flat     plain read-only grid-stride stream of the same byte count, no row structure: ceiling
//   cpasync  16-byte cp.async.cg, kStages stages, classic multistage loop (like the decode kernel)
//   ldg      ld.global.nc.L1::no_allocate.v4 into registers, U independent loads per tensor and
//            thread, next step's loads issued before the current step is summed (register double buffer)
//   bulk1d   cp.async.bulk (1-D TMA), one 256-byte row per copy, mbarrier complete_tx, issued by
//            a producer warp; 4 consumer warps release stages through "empty" mbarriers
//   tma2d    cp.async.bulk.tensor.3d boxes of (128 dims x 1 head x kRows keys) from a tensor map
//            over (dims, heads, batch*seqlen), same producer/consumer pipeline as bulk1d
// CTAs per SM are forced by padding dynamic shared memory (the occupancy API's answer is printed).
// Timing: each launch bracketed by its own cudaEvent pair after a spin kernel that lets the host
// queue ahead (GPU time only, as benchmarks/timing.py does), median over the iterations, input
// sets rotated so that the sets together exceed 3x L2 (cold L2 for every launch).
//
// Build (sm_90a): nvcc -std=c++17 -O3 -arch=sm_90a -o decode_stream decode_stream.cu
// Run: ./decode_stream [csv_path]   (prints one line per configuration and a best-per-method table)
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#define CHECK(x)                                                                          \
  do {                                                                                    \
    cudaError_t e_ = (x);                                                                 \
    if (e_ != cudaSuccess) {                                                              \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

constexpr int kHeads = 8;
constexpr int kDim = 128;
constexpr int kRowBytes = kDim * 2;  // 256 B per (key, head) row
constexpr int kChunksPerRow = kRowBytes / 16;

struct Job {
  const uint16_t* k;
  const uint16_t* v;
  int batch, seqlen, splits;
  unsigned* out;  // written only if a sum hits an impossible value
};

// ---------------------------------------------------------------- small PTX helpers
__device__ __forceinline__ uint32_t saddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ uint4 ldg_stream(const void* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}
// kHint: 0 none, 1 L2::128B, 2 L2::256B (L2 prefetch size of the sector request)
template <int kHint = 0>
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  if constexpr (kHint == 1) {
    asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16;" ::"r"(saddr(dst)), "l"(src) : "memory");
  } else if constexpr (kHint == 2) {
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;" ::"r"(saddr(dst)), "l"(src) : "memory");
  } else {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(saddr(dst)), "l"(src) : "memory");
  }
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(saddr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx_arrive(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(saddr(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(saddr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n .reg .pred p;\n WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      " @!p bra WAIT_%=;\n}\n" ::"r"(saddr(bar)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void bulk_row(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
          saddr(dst)),
      "l"(src), "r"(bytes), "r"(saddr(bar))
      : "memory");
}
__device__ __forceinline__ void tma_box3(void* dst, const CUtensorMap* map, int c0, int c1, int c2,
                                         uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, "
      "{%2, %3, %4}], [%5];" ::"r"(saddr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(saddr(bar))
      : "memory");
}

__device__ __forceinline__ unsigned sum4(uint4 x) { return x.x + x.y + x.z + x.w; }

// Every consumer thread sums its share of a (K tile, V tile) pair in shared memory.
template <int kRows>
__device__ __forceinline__ unsigned consume(const unsigned char* tile, int ctid, int nthreads) {
  unsigned acc = 0;
  const uint4* p = reinterpret_cast<const uint4*>(tile);
#pragma unroll 4
  for (int i = ctid; i < 2 * kRows * kChunksPerRow; i += nthreads) acc += sum4(p[i]);
  return acc;
}

__device__ __forceinline__ void sink(const Job& j, unsigned acc) {
  if (acc == 0x9e3779b9u) j.out[blockIdx.x] = acc;  // practically never: keeps the loads alive
}

// Element offset of key s of this CTA's (sequence, head).
__device__ __forceinline__ int64_t row_off(const Job& j, int s) {
  return ((static_cast<int64_t>(blockIdx.z) * j.seqlen + s) * kHeads + blockIdx.y) * kDim;
}

// ---------------------------------------------------------------- flat ceiling
__global__ void __launch_bounds__(256) flat_kernel(const uint4* a, const uint4* b, int64_t n_vec, unsigned* out) {
  unsigned acc = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + 7 * stride < n_vec; i += 8 * stride) {
    uint4 x[16];
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      x[u] = ldg_stream(a + i + u * stride);
      x[8 + u] = ldg_stream(b + i + u * stride);
    }
#pragma unroll
    for (int u = 0; u < 16; ++u) acc += sum4(x[u]);
  }
  for (; i < n_vec; i += stride) acc += sum4(ldg_stream(a + i)) + sum4(ldg_stream(b + i));
  if (acc == 0x9e3779b9u) out[blockIdx.x] = acc;
}

// ---------------------------------------------------------------- cp.async multistage
template <int kRows, int kStages, int kHint>
__global__ void __launch_bounds__(128) cpasync_kernel(Job j) {
  extern __shared__ __align__(1024) unsigned char smem[];
  constexpr int kTile = 2 * kRows * kRowBytes;
  const int keys = j.seqlen / j.splits, s0 = blockIdx.x * keys, n_tiles = keys / kRows;
  const int tid = threadIdx.x;
  auto issue = [&](int tile, int stage) {
    unsigned char* dst = smem + stage * kTile;
#pragma unroll
    for (int i = tid; i < kRows * kChunksPerRow; i += 128) {
      const int r = i / kChunksPerRow, c = i % kChunksPerRow;
      const int64_t off = row_off(j, s0 + tile * kRows + r) + c * 8;
      cp_async16<kHint>(dst + r * kRowBytes + c * 16, j.k + off);
      cp_async16<kHint>(dst + (kRows + r) * kRowBytes + c * 16, j.v + off);
    }
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n_tiles) issue(s, s);
    asm volatile("cp.async.commit_group;" ::: "memory");
  }
  unsigned acc = 0;
  for (int n = 0; n < n_tiles; ++n) {
    asm volatile("cp.async.wait_group %0;" ::"n"(kStages - 2) : "memory");
    __syncthreads();  // tile n landed for all; tile n-1's stage is free
    const int nn = n + kStages - 1;
    if (nn < n_tiles) issue(nn, nn % kStages);
    asm volatile("cp.async.commit_group;" ::: "memory");
    acc += consume<kRows>(smem + (n % kStages) * kTile, tid, 128);
  }
  sink(j, acc);
}

// ---------------------------------------------------------------- registers (ld.global.nc)
template <int kU>
__global__ void __launch_bounds__(128) ldg_kernel(Job j) {
  constexpr int kRowsPerStep = kU * 128 / kChunksPerRow;
  const int keys = j.seqlen / j.splits, s0 = blockIdx.x * keys, n_steps = keys / kRowsPerStep;
  const int tid = threadIdx.x;
  uint4 cur[2 * kU], nxt[2 * kU];
  auto load = [&](int step, uint4 (&r)[2 * kU]) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int i = tid + u * 128;
      const int64_t off = row_off(j, s0 + step * kRowsPerStep + i / kChunksPerRow) + (i % kChunksPerRow) * 8;
      r[u] = ldg_stream(j.k + off);
      r[kU + u] = ldg_stream(j.v + off);
    }
  };
  unsigned acc = 0;
  if (n_steps > 0) load(0, cur);
  for (int n = 0; n < n_steps; ++n) {
    if (n + 1 < n_steps) load(n + 1, nxt);
#pragma unroll
    for (int u = 0; u < 2 * kU; ++u) acc += sum4(cur[u]);
#pragma unroll
    for (int u = 0; u < 2 * kU; ++u) cur[u] = nxt[u];
  }
  sink(j, acc);
}

// ---------------------------------------------------------------- TMA pipelines (bulk1d / tma2d)
// Threads 0..127: consumers (4 warps); warp 4: producer. full[s]: 1 arrival (+ tx bytes);
// empty[s]: one arrival per consumer warp.
template <int kRows, int kStages, bool kTensor>
__global__ void __launch_bounds__(160) tma_kernel(Job j, const __grid_constant__ CUtensorMap kmap,
                                                  const __grid_constant__ CUtensorMap vmap) {
  extern __shared__ __align__(1024) unsigned char smem[];
  __shared__ __align__(8) uint64_t full[kStages], empty[kStages];
  constexpr int kTile = 2 * kRows * kRowBytes;
  const int keys = j.seqlen / j.splits, s0 = blockIdx.x * keys, n_tiles = keys / kRows;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], 4);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (warp == 4) {
    for (int n = 0; n < n_tiles; ++n) {
      const int stage = n % kStages;
      if (n >= kStages) mbar_wait(&empty[stage], ((n / kStages) - 1) & 1);
      unsigned char* dst = smem + stage * kTile;
      if constexpr (kTensor) {
        if (lane == 0) {
          mbar_expect_tx_arrive(&full[stage], kTile);
          const int row = blockIdx.z * j.seqlen + s0 + n * kRows;
          tma_box3(dst, &kmap, 0, blockIdx.y, row, &full[stage]);
          tma_box3(dst + kRows * kRowBytes, &vmap, 0, blockIdx.y, row, &full[stage]);
        }
      } else {
        if (lane == 0) mbar_expect_tx_arrive(&full[stage], kTile);
        __syncwarp();
        for (int i = lane; i < 2 * kRows; i += 32) {
          const int r = i < kRows ? i : i - kRows;
          const int64_t off = row_off(j, s0 + n * kRows + r);
          bulk_row(dst + i * kRowBytes, (i < kRows ? j.k : j.v) + off, kRowBytes, &full[stage]);
        }
      }
    }
    return;
  }
  unsigned acc = 0;
  for (int n = 0; n < n_tiles; ++n) {
    const int stage = n % kStages;
    mbar_wait(&full[stage], (n / kStages) & 1);
    acc += consume<kRows>(smem + stage * kTile, tid, 128);
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[stage]);
  }
  sink(j, acc);
}

__global__ void spin_kernel(long long cycles) {
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
}

// ---------------------------------------------------------------- host side
struct Shape {
  int batch, seqlen;
};
struct Sets {
  std::vector<uint16_t*> k, v;
  std::vector<CUtensorMap> kmap, vmap;
  size_t bytes_one = 0;  // K + V of one set
};

static PFN_cuTensorMapEncodeTiled_v12000 g_encode = nullptr;
static bool g_maps_ok = true;

static CUtensorMap make_map(const uint16_t* base, const Shape& sh, int box_rows) {
  CUtensorMap m;
  cuuint64_t dims[3] = {kDim, kHeads, static_cast<cuuint64_t>(sh.batch) * sh.seqlen};
  cuuint64_t strides[2] = {kRowBytes, static_cast<cuuint64_t>(kHeads) * kRowBytes};  // dims 1, 2
  cuuint32_t box[3] = {kDim, 1, static_cast<cuuint32_t>(box_rows)};
  cuuint32_t estr[3] = {1, 1, 1};
  CUresult r = g_encode(&m, CU_TENSOR_MAP_DATA_TYPE_UINT16, 3, const_cast<uint16_t*>(base), dims,
                        strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    std::fprintf(stderr, "cuTensorMapEncodeTiled failed: %d (tma2d rows skipped)\n", static_cast<int>(r));
    g_maps_ok = false;
  }
  return m;
}

static int g_sms = 0;
static FILE* g_csv = nullptr;

struct Result {
  std::string method;
  double us, tbps;
};
static std::vector<std::pair<std::string, Result>> g_best;  // key: shape|method

// Times `launch(set)`; returns the median microseconds of one launch.
static double time_launches(const std::function<void(int)>& launch, int nsets, int iters, double* min_us) {
  for (int w = 0; w < 3; ++w) launch(w % nsets);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  std::vector<cudaEvent_t> e0(iters), e1(iters);
  for (int i = 0; i < iters; ++i) {
    CHECK(cudaEventCreate(&e0[i]));
    CHECK(cudaEventCreate(&e1[i]));
  }
  spin_kernel<<<1, 1>>>(4'000'000);  // ~2 ms: the host queues every launch before the GPU starts them
  for (int i = 0; i < iters; ++i) {
    CHECK(cudaEventRecord(e0[i]));
    launch((i + 3) % nsets);
    CHECK(cudaEventRecord(e1[i]));
  }
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  std::vector<double> t(iters);
  for (int i = 0; i < iters; ++i) {
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, e0[i], e1[i]));
    t[i] = ms * 1e3;
    CHECK(cudaEventDestroy(e0[i]));
    CHECK(cudaEventDestroy(e1[i]));
  }
  std::sort(t.begin(), t.end());
  *min_us = t[0];
  return t[iters / 2];
}

// Dynamic smem that lets exactly `ctas` CTAs per SM co-reside (>= what the kernel needs).
static int smem_for(int need, int ctas) {
  int smem_sm = 0;
  CHECK(cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0));
  const int reserved = 1024;
  const int lower = smem_sm / (ctas + 1) - reserved + 128;  // ctas + 1 do not fit
  return std::max(need, lower);
}

static void report(const Shape& sh, int splits, const std::string& method, const std::string& cfg,
                   int occ, double us, double min_us, size_t bytes) {
  const double tbps = bytes / (us * 1e-6) / 1e12;
  std::printf("b=%-3d s=%-6d splits=%-3d %-8s %-24s occ=%d  %9.2f us (min %9.2f)  %.3f TB/s\n", sh.batch,
              sh.seqlen, splits, method.c_str(), cfg.c_str(), occ, us, min_us, tbps);
  std::fflush(stdout);
  if (g_csv) {
    std::fprintf(g_csv, "%d,%d,%d,%s,%s,%d,%.3f,%.3f,%.4f\n", sh.batch, sh.seqlen, splits, method.c_str(),
                 cfg.c_str(), occ, us, min_us, tbps);
    std::fflush(g_csv);
  }
  const std::string key = std::to_string(sh.batch) + "x" + std::to_string(sh.seqlen) + "|" + method;
  for (auto& kv : g_best) {
    if (kv.first == key) {
      if (us < kv.second.us) kv.second = {method + " " + cfg + " splits=" + std::to_string(splits), us, tbps};
      return;
    }
  }
  g_best.push_back({key, {method + " " + cfg + " splits=" + std::to_string(splits), us, tbps}});
}

template <typename Kernel>
static void run_cfg(const Shape& sh, const Sets& S, int splits, const std::string& method,
                    const std::string& cfg, Kernel kernel, int threads, int need_smem, int ctas,
                    int keys_granule, int iters, bool tma) {
  if (sh.seqlen % splits || (sh.seqlen / splits) % keys_granule) return;
  const int smem = smem_for(need_smem, ctas);
  if (smem > 227 * 1024) return;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int occ = 0;
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, threads, smem));
  if (occ != ctas) return;  // this (stages, rows) cannot run `ctas` per SM
  const dim3 grid(splits, kHeads, sh.batch);
  unsigned* out = nullptr;
  CHECK(cudaMalloc(&out, sizeof(unsigned) * 1024));
  const int nsets = static_cast<int>(S.k.size());
  auto launch = [&](int s) {
    Job j{S.k[s], S.v[s], sh.batch, sh.seqlen, splits, out};
    if constexpr (std::is_invocable_v<Kernel, Job, CUtensorMap, CUtensorMap>) {
      kernel<<<grid, threads, smem>>>(j, S.kmap[s], S.vmap[s]);
    } else {
      kernel<<<grid, threads, smem>>>(j);
    }
  };
  (void)tma;
  double min_us = 0;
  const double us = time_launches(launch, nsets, iters, &min_us);
  report(sh, splits, method, cfg + " ctas=" + std::to_string(ctas), occ, us, min_us, S.bytes_one);
  CHECK(cudaFree(out));
}

template <int kRows, int kStages>
static void sweep_smem_methods(const Shape& sh, const Sets& S, int splits, int iters) {
  constexpr int kTile = 2 * kRows * kRowBytes;
  const std::string cfg = "rows=" + std::to_string(kRows) + " st=" + std::to_string(kStages);
  for (int ctas : {1, 2, 3, 4}) {
    run_cfg(sh, S, splits, "cpasync", cfg, cpasync_kernel<kRows, kStages, 0>, 128, kStages * kTile, ctas, kRows,
            iters, false);
    if (kRows == 64) {
      run_cfg(sh, S, splits, "cpasyncL2", cfg + " L2::128B", cpasync_kernel<kRows, kStages, 1>, 128,
              kStages * kTile, ctas, kRows, iters, false);
      run_cfg(sh, S, splits, "cpasyncL2", cfg + " L2::256B", cpasync_kernel<kRows, kStages, 2>, 128,
              kStages * kTile, ctas, kRows, iters, false);
    }
    run_cfg(sh, S, splits, "bulk1d", cfg, tma_kernel<kRows, kStages, false>, 160, kStages * kTile, ctas,
            kRows, iters, true);
    if (g_maps_ok) run_cfg(sh, S, splits, "tma2d", cfg, tma_kernel<kRows, kStages, true>, 160, kStages * kTile, ctas, kRows,
            iters, true);
  }
}

template <int kU>
static void sweep_ldg(const Shape& sh, const Sets& S, int splits, int iters) {
  for (int ctas : {1, 2, 4, 8}) {
    run_cfg(sh, S, splits, "ldg", "U=" + std::to_string(kU), ldg_kernel<kU>, 128, 0, ctas, kU * 128 / kChunksPerRow,
            iters, false);
  }
}

static Sets make_sets(const Shape& sh, int box_rows_unused) {
  (void)box_rows_unused;
  Sets S;
  const size_t elems = static_cast<size_t>(sh.batch) * sh.seqlen * kHeads * kDim;
  S.bytes_one = 2 * elems * 2;
  int l2 = 0;
  CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
  int nsets = static_cast<int>((3.0 * l2 + S.bytes_one - 1) / S.bytes_one);
  nsets = std::max(2, std::min(nsets, 12));
  for (int i = 0; i < nsets; ++i) {
    uint16_t *k = nullptr, *v = nullptr;
    CHECK(cudaMalloc(&k, elems * 2));
    CHECK(cudaMalloc(&v, elems * 2));
    CHECK(cudaMemset(k, 0x11 + i, elems * 2));
    CHECK(cudaMemset(v, 0x22 + i, elems * 2));
    S.k.push_back(k);
    S.v.push_back(v);
  }
  return S;
}

static void set_maps(Sets& S, const Shape& sh, int box_rows) {
  g_maps_ok = true;
  S.kmap.clear();
  S.vmap.clear();
  for (size_t i = 0; i < S.k.size(); ++i) {
    S.kmap.push_back(make_map(S.k[i], sh, box_rows));
    S.vmap.push_back(make_map(S.v[i], sh, box_rows));
  }
}

static void free_sets(Sets& S) {
  for (auto p : S.k) CHECK(cudaFree(p));
  for (auto p : S.v) CHECK(cudaFree(p));
}

int main(int argc, char** argv) {
  if (argc > 1) g_csv = std::fopen(argv[1], "w");
  if (g_csv) std::fprintf(g_csv, "batch,seqlen,splits,method,config,occ,us,min_us,tbps\n");
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  g_sms = prop.multiProcessorCount;
  std::printf("%s, %d SMs, L2 %d MB\n", prop.name, g_sms, prop.l2CacheSize >> 20);
  cudaDriverEntryPointQueryResult q;
  CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", reinterpret_cast<void**>(&g_encode), 12000,
                                         cudaEnableDefault, &q));
  if (!g_encode) {
    std::fprintf(stderr, "no cuTensorMapEncodeTiled\n");
    return 1;
  }
  const Shape shapes[] = {{32, 8192}, {1, 8192}};
  for (const Shape& sh : shapes) {
    Sets S = make_sets(sh, 64);
    const int iters = sh.batch >= 32 ? 25 : 60;
    std::printf("== shape (%d, %d): %.1f MB of K+V per set, %zu sets ==\n", sh.batch, sh.seqlen,
                S.bytes_one / 1e6, S.k.size());
    // Ceiling: the same bytes, flat, 4 x 256-thread CTAs per SM.
    for (int per_sm : {2, 4, 8}) {
      unsigned* out = nullptr;
      CHECK(cudaMalloc(&out, sizeof(unsigned) * 8192));
      const int64_t n_vec = static_cast<int64_t>(S.bytes_one / 2 / 16);
      auto launch = [&](int s) {
        flat_kernel<<<g_sms * per_sm, 256>>>(reinterpret_cast<const uint4*>(S.k[s]),
                                              reinterpret_cast<const uint4*>(S.v[s]), n_vec, out);
      };
      double min_us = 0;
      const double us = time_launches(launch, static_cast<int>(S.k.size()), iters, &min_us);
      report(sh, 0, "flat", "ctas=" + std::to_string(per_sm) + "x256thr", per_sm, us, min_us, S.bytes_one);
      CHECK(cudaFree(out));
    }
    const std::vector<int> split_list = sh.batch >= 32 ? std::vector<int>{1, 2} : std::vector<int>{16, 32, 64};
    for (int splits : split_list) {
      sweep_ldg<4>(sh, S, splits, iters);
      sweep_ldg<8>(sh, S, splits, iters);
      sweep_ldg<16>(sh, S, splits, iters);
      set_maps(S, sh, 32);
      sweep_smem_methods<32, 2>(sh, S, splits, iters);
      sweep_smem_methods<32, 3>(sh, S, splits, iters);
      sweep_smem_methods<32, 4>(sh, S, splits, iters);
      sweep_smem_methods<32, 6>(sh, S, splits, iters);
      set_maps(S, sh, 64);
      sweep_smem_methods<64, 2>(sh, S, splits, iters);
      sweep_smem_methods<64, 3>(sh, S, splits, iters);
      sweep_smem_methods<64, 4>(sh, S, splits, iters);
      sweep_smem_methods<64, 6>(sh, S, splits, iters);
    }
    free_sets(S);
  }
  std::printf("\n== best configuration per (shape, method) ==\n");
  for (auto& kv : g_best) {
    std::printf("%-18s %9.2f us  %.3f TB/s  (%s)\n", kv.first.c_str(), kv.second.us, kv.second.tbps,
                kv.second.method.c_str());
  }
  if (g_csv) std::fclose(g_csv);
  return 0;
}
