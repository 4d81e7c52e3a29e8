// CUDA backward of flash::norm_bwd. One block per row, grid-stride over rows with a grid of about
// one wave, so each block accumulates its rows' column sums (dweight, dbias) in registers and
// writes one partial row to the workspace; a second kernel adds the partials up. The rarer sums
// (dweight1 / dbias1 of a second output, dcolscale) go straight to the block's partial row in
// global memory (each column is owned by one thread, so a plain read-modify-write is race-free).
// The dropout mask is regenerated from Philox, not stored.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "flash/errors.h"
#include "ops/cuda/block_reduce.cuh"
#include "ops/cuda/norm_row.cuh"
#include "ops/cuda/vec_io.cuh"
#include "ops/ops_backend.h"

namespace flash::ops {
namespace {

constexpr int kSums = 5;  // dweight, dbias, dweight1, dbias1, dcolscale

template <int kVec>
__device__ __forceinline__ void add_partial(float* row_partial, int64_t j0, const float (&v)[kVec]) {
#pragma unroll
  for (int q = 0; q < kVec; ++q) row_partial[j0 + q] += v[q];
}

template <int kVec, int kChunks, int kBound>
__global__ void __launch_bounds__(kBound) norm_bwd_kernel(NormParams p, uint32_t threshold) {
  __shared__ float scratch[64];
  const int64_t H = p.hidden;
  const int64_t nchunks = (H + kVec - 1) / kVec;
  const bool rms = p.kind == NormKind::kRMSNorm;
  const float inv_keep = p.dropout_p > 0.f ? 1.f / (1.f - p.dropout_p) : 1.f;
  float* ws = static_cast<float*>(p.workspace);
  const int64_t seg = int64_t{gridDim.x} * H;  // one segment per sum: [grid][H]
  float* my_w1 = ws + 2 * seg + blockIdx.x * H;
  float* my_b1 = ws + 3 * seg + blockIdx.x * H;
  float* my_cs = ws + 4 * seg + blockIdx.x * H;

  float dw[kChunks][kVec], db[kChunks][kVec];
#pragma unroll
  for (int i = 0; i < kChunks; ++i)
#pragma unroll
    for (int q = 0; q < kVec; ++q) dw[i][q] = db[i][q] = 0.f;

  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const float mean = rms ? 0.f : p.mean[r];
    const float rstd = p.rstd[r];
    const int64_t ro = subset_row(p.out_subset, r);
    float xhat[kChunks][kVec], g[kChunks][kVec];
    float sum_g = 0.f, sum_gx = 0.f;
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int64_t c = threadIdx.x + int64_t{i} * blockDim.x;
#pragma unroll
      for (int q = 0; q < kVec; ++q) xhat[i][q] = g[i][q] = 0.f;
      if (c >= nchunks) continue;
      const int64_t j0 = c * kVec;
      load_vec<kVec>(p.residual_out, p.residual_dtype, r * p.residual_out_row_stride + j0, xhat[i]);
#pragma unroll
      for (int q = 0; q < kVec; ++q) xhat[i][q] = (xhat[i][q] - mean) * rstd;
      if (ro < 0) continue;
      float dy[kVec], w[kVec];
      load_vec<kVec>(p.dy, p.out_dtype, ro * p.dy_row_stride + j0, dy);
      load_vec<kVec>(p.weight, p.weight_dtype, j0, w);
#pragma unroll
      for (int q = 0; q < kVec; ++q) {
        g[i][q] = dy[q] * w[q];
        dw[i][q] += dy[q] * xhat[i][q];
        db[i][q] += dy[q];
      }
      if (p.weight1) {
        load_vec<kVec>(p.dy1, p.out_dtype, ro * p.dy1_row_stride + j0, dy);
        load_vec<kVec>(p.weight1, p.weight_dtype, j0, w);
        float t[kVec];
#pragma unroll
        for (int q = 0; q < kVec; ++q) {
          g[i][q] += dy[q] * w[q];
          t[q] = dy[q] * xhat[i][q];
        }
        add_partial<kVec>(my_w1, j0, t);
        if (p.bias1) add_partial<kVec>(my_b1, j0, dy);
      }
#pragma unroll
      for (int q = 0; q < kVec; ++q) {
        sum_g += g[i][q];
        sum_gx += g[i][q] * xhat[i][q];
      }
    }
    block_sum2(sum_g, sum_gx, scratch);
    const float mg = rms ? 0.f : sum_g / static_cast<float>(H);
    const float mgx = sum_gx / static_cast<float>(H);
    const int64_t r0 = subset_row(p.x0_subset, r);
    const float rs = (p.rowscale ? p.rowscale[r] : 1.f) * p.rowscale_const;
    // d (the gradient of the pre-norm sum) replaces g; then the incoming dresidual_out is loaded
    // for every chunk into xhat's registers (dead now) before any store, so those loads are not
    // serialised behind the stores (the compiler must assume the pointers may alias).
#pragma unroll
    for (int i = 0; i < kChunks; ++i)
#pragma unroll
      for (int q = 0; q < kVec; ++q) g[i][q] = rstd * (g[i][q] - mg - xhat[i][q] * mgx);
    if (p.dresidual_out) {
#pragma unroll
      for (int i = 0; i < kChunks; ++i) {
        const int64_t c = threadIdx.x + int64_t{i} * blockDim.x;
        if (c >= nchunks) continue;
        load_vec<kVec>(p.dresidual_out, p.residual_dtype, r * p.dresidual_out_row_stride + c * kVec, xhat[i]);
#pragma unroll
        for (int q = 0; q < kVec; ++q) g[i][q] += xhat[i][q];
      }
    }
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int64_t c = threadIdx.x + int64_t{i} * blockDim.x;
      if (c >= nchunks) continue;
      const int64_t j0 = c * kVec;
      float* d = g[i];
      if (p.dresidual) store_vec<kVec>(p.dresidual, p.residual_dtype, r * p.dresidual_row_stride + j0, g[i]);
      if (r0 >= 0) {
        bool keep[kVec];
        chunk_keep<kVec>(p, threshold, 0, r, j0, keep);
        float dk[kVec];
#pragma unroll
        for (int q = 0; q < kVec; ++q) dk[q] = keep[q] ? d[q] * inv_keep * rs : 0.f;
        if (p.colscale) {
          float cs[kVec], x0[kVec], t[kVec];
          load_vec<kVec>(p.colscale, p.weight_dtype, j0, cs);
          load_vec<kVec>(p.x0, p.in_dtype, r0 * p.x0_row_stride + j0, x0);
#pragma unroll
          for (int q = 0; q < kVec; ++q) {
            t[q] = dk[q] * x0[q];
            dk[q] *= cs[q];
          }
          add_partial<kVec>(my_cs, j0, t);
        }
        store_vec<kVec>(p.dx0, p.in_dtype, r0 * p.dx0_row_stride + j0, dk);
      }
      if (p.dx1) {
        bool keep[kVec];
        chunk_keep<kVec>(p, threshold, 1, r, j0, keep);
        float d1[kVec];
#pragma unroll
        for (int q = 0; q < kVec; ++q) d1[q] = keep[q] ? d[q] * inv_keep : 0.f;
        store_vec<kVec>(p.dx1, p.in_dtype, r * p.dx1_row_stride + j0, d1);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    const int64_t c = threadIdx.x + int64_t{i} * blockDim.x;
    if (c >= nchunks) continue;
#pragma unroll
    for (int q = 0; q < kVec; ++q) {
      ws[blockIdx.x * H + c * kVec + q] = dw[i][q];
      ws[seg + blockIdx.x * H + c * kVec + q] = db[i][q];
    }
  }
}

// The plain backward (no dropout, x1, second output, colscale or subsets; 16-bit dy; 16-byte
// aligned rows). As in norm_fwd_plain_kernel every load of a row (residual_out, dy,
// dresidual_out) is issued before any is converted, so a thread's share of the row is in flight at
// once; the weight is loaded once per block and stays in registers (raw) across its rows. Chunks
// past the row's end re-read its last chunk and contribute zero. Same arithmetic, in the same
// order, as norm_bwd_kernel. kAWords / kWWords: 4 = 16-bit residual dtype / weight, 8 = fp32.
template <int kChunks, int kBound, int kAWords, int kWWords>
__global__ void __launch_bounds__(kBound) norm_bwd_plain_kernel(NormParams p) {
  __shared__ float scratch[64];
  const int64_t H = p.hidden;
  const int64_t nchunks = H / 8;
  const bool rms = p.kind == NormKind::kRMSNorm;
  float* ws = static_cast<float*>(p.workspace);
  const int64_t seg = int64_t{gridDim.x} * H;
  int64_t col[kChunks];
  bool valid[kChunks];
  Raw8<kWWords> wr[kChunks];
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    const int64_t c = threadIdx.x + int64_t{i} * blockDim.x;
    valid[i] = c < nchunks;
    col[i] = (valid[i] ? c : nchunks - 1) * 8;
    load_raw8(p.weight, col[i], wr[i]);
  }
  float dw[kChunks][8], db[kChunks][8];
#pragma unroll
  for (int i = 0; i < kChunks; ++i)
#pragma unroll
    for (int q = 0; q < 8; ++q) dw[i][q] = db[i][q] = 0.f;

  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    // Phase 1: loads only.
    const float mean = rms ? 0.f : p.mean[r];
    const float rstd = p.rstd[r];
    const float rs = (p.rowscale ? p.rowscale[r] : 1.f) * p.rowscale_const;
    Raw8<kAWords> ar[kChunks], dror[kChunks];
    Raw8<4> dyr[kChunks];
#pragma unroll
    for (int i = 0; i < kChunks; ++i) load_raw8(p.residual_out, r * p.residual_out_row_stride + col[i], ar[i]);
#pragma unroll
    for (int i = 0; i < kChunks; ++i) load_raw8(p.dy, r * p.dy_row_stride + col[i], dyr[i]);
    if (p.dresidual_out) {
#pragma unroll
      for (int i = 0; i < kChunks; ++i)
        load_raw8(p.dresidual_out, r * p.dresidual_out_row_stride + col[i], dror[i]);
    }
    // Phase 2: xhat, g = dy * w, the column sums and the two row sums.
    float xhat[kChunks][8], g[kChunks][8];
    float sum_g = 0.f, sum_gx = 0.f;
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      float dy[8], w[8];
      raw8_to_float(p.residual_dtype, ar[i], xhat[i]);
      raw8_to_float(p.out_dtype, dyr[i], dy);
      raw8_to_float(p.weight_dtype, wr[i], w);
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        xhat[i][q] = (xhat[i][q] - mean) * rstd;
        dy[q] = valid[i] ? dy[q] : 0.f;
        g[i][q] = dy[q] * w[q];
        dw[i][q] += dy[q] * xhat[i][q];
        db[i][q] += dy[q];
      }
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        sum_g += g[i][q];
        sum_gx += g[i][q] * xhat[i][q];
      }
    }
    block_sum2(sum_g, sum_gx, scratch);
    const float mg = rms ? 0.f : sum_g / static_cast<float>(H);
    const float mgx = sum_gx / static_cast<float>(H);
    // Phase 3: d, then dresidual and dx0.
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
#pragma unroll
      for (int q = 0; q < 8; ++q) g[i][q] = rstd * (g[i][q] - mg - xhat[i][q] * mgx);
      if (p.dresidual_out) {
        float v[8];
        raw8_to_float(p.residual_dtype, dror[i], v);
#pragma unroll
        for (int q = 0; q < 8; ++q) g[i][q] += v[q];
      }
      if (!valid[i]) continue;
      if (p.dresidual) store_vec<8>(p.dresidual, p.residual_dtype, r * p.dresidual_row_stride + col[i], g[i]);
#pragma unroll
      for (int q = 0; q < 8; ++q) g[i][q] *= rs;
      store_vec<8>(p.dx0, p.in_dtype, r * p.dx0_row_stride + col[i], g[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    if (!valid[i]) continue;
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      ws[blockIdx.x * H + col[i] + q] = dw[i][q];
      ws[seg + blockIdx.x * H + col[i] + q] = db[i][q];
    }
  }
}

// out[s][j] = sum over blocks of ws[s][block][j] for each requested sum s (blockIdx.y). A block
// covers 32 columns with 8 rows of threads: each thread adds every 8th partial of its column, then
// the 8 are added in shared memory, so ~H/4 warps share the work instead of H/32 walking all the
// partials alone. Fixed order: deterministic.
constexpr int kReduceCols = 32, kReduceRows = 8;
__global__ void __launch_bounds__(kReduceCols * kReduceRows)
    norm_bwd_reduce_kernel(const float* ws, int grid, int64_t H, float* dw, float* db, float* dw1, float* db1,
                           float* dcs) {
  __shared__ float part[kReduceRows][kReduceCols + 1];
  const unsigned sum = blockIdx.y;  // selects without indexing a local array (that would spill to memory)
  float* out = sum == 0 ? dw : sum == 1 ? db : sum == 2 ? dw1 : sum == 3 ? db1 : dcs;
  if (out == nullptr) return;  // uniform over the block, before any barrier
  const int64_t j = blockIdx.x * int64_t{kReduceCols} + threadIdx.x;
  const float* src = ws + blockIdx.y * (int64_t{grid} * H) + j;
  float acc = 0.f;
  if (j < H)
    for (int b = threadIdx.y; b < grid; b += kReduceRows) acc += src[b * H];
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || j >= H) return;
  float t = 0.f;
#pragma unroll
  for (int y = 0; y < kReduceRows; ++y) t += part[y][threadIdx.x];
  out[j] = t;
}

// About one wave: the blocks that fit on an SM at once. A kernel bounded to kBound threads uses at
// most 65536 / kBound registers per thread, so kBound / threads blocks fit by registers.
int norm_bwd_grid(const NormParams& p, const NormLaunch& s) {
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, p.device_index) != cudaSuccess || sms <= 0)
    sms = 132;
  const int per_sm = std::max(1, std::min(2048, s.bound) / s.threads);
  return static_cast<int>(std::min<int64_t>(p.rows, int64_t{sms} * per_sm));
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw DeviceError(std::string("norm_bwd: ") + what + ": " + cudaGetErrorString(e));
}

template <int kVec, int kChunks, int kBound>
void launch(const NormParams& p, int grid, int threads, cudaStream_t st) {
  norm_bwd_kernel<kVec, kChunks, kBound><<<grid, threads, 0, st>>>(p, dropout_keep_threshold(p.dropout_p));
}

void launch_general(const NormParams& p, const NormLaunch& s, int grid, cudaStream_t st) {
  if (s.vec == 8) {
    if (s.chunks == 1) launch<8, 1, 1024>(p, grid, s.threads, st);
    else if (s.chunks == 2 && s.bound == 512) launch<8, 2, 512>(p, grid, s.threads, st);
    else if (s.chunks == 2) launch<8, 2, 1024>(p, grid, s.threads, st);
    else launch<8, 4, 1024>(p, grid, s.threads, st);
    return;
  }
  switch (s.chunks) {
    case 1: launch<1, 1, 1024>(p, grid, s.threads, st); break;
    case 2: launch<1, 2, 1024>(p, grid, s.threads, st); break;
    case 4: launch<1, 4, 1024>(p, grid, s.threads, st); break;
    case 8: launch<1, 8, 1024>(p, grid, s.threads, st); break;
    default: launch<1, 16, 1024>(p, grid, s.threads, st); break;
  }
}

template <int kChunks, int kAWords, int kWWords>
void launch_plain_kernel(const NormParams& p, int grid, int threads, cudaStream_t st) {
  constexpr int kBound = kChunks == 1 ? 1024 : 512;
  norm_bwd_plain_kernel<kChunks, kBound, kAWords, kWWords><<<grid, threads, 0, st>>>(p);
}

template <int kChunks>
void launch_plain(const NormParams& p, int grid, int threads, cudaStream_t st) {
  const bool a32 = p.residual_dtype == DType::kFloat32, w32 = p.weight_dtype == DType::kFloat32;
  if (a32 && w32) launch_plain_kernel<kChunks, 8, 8>(p, grid, threads, st);
  else if (a32) launch_plain_kernel<kChunks, 8, 4>(p, grid, threads, st);
  else if (w32) launch_plain_kernel<kChunks, 4, 8>(p, grid, threads, st);
  else launch_plain_kernel<kChunks, 4, 4>(p, grid, threads, st);
}

// The plain kernel when p qualifies (see norm_bwd_plain_kernel), on the general kernel's launch
// shape and grid (the workspace is sized for that grid); FLASH_ATTN_NORM_BWD_PLAIN=0 turns it off.
bool try_plain(const NormParams& p, const NormLaunch& s, int grid, cudaStream_t st) {
  const bool plain = p.dropout_p <= 0.f && p.x1 == nullptr && p.dx1 == nullptr && p.weight1 == nullptr &&
                     p.colscale == nullptr && p.x0_subset == nullptr && p.out_subset == nullptr &&
                     p.out_dtype != DType::kFloat32 && s.vec == 8 &&
                     (s.chunks == 1 || (s.chunks == 2 && s.bound == 512));
  const char* env = std::getenv("FLASH_ATTN_NORM_BWD_PLAIN");
  if (!plain || (env != nullptr && env[0] == '0')) return false;
  if (s.chunks == 1) launch_plain<1>(p, grid, s.threads, st);
  else launch_plain<2>(p, grid, s.threads, st);
  return true;
}

}  // namespace

int64_t norm_bwd_workspace_size_cuda(const NormParams& p) {
  const NormLaunch s = norm_launch_shape(p.hidden, norm_vectorised(p, true), true);
  return int64_t{kSums} * norm_bwd_grid(p, s) * p.hidden * static_cast<int64_t>(sizeof(float));
}

void norm_bwd_cuda(const NormParams& p, void* stream) {
  check(cudaSetDevice(p.device_index), "cudaSetDevice");
  const auto st = static_cast<cudaStream_t>(stream);
  const int64_t H = p.hidden;
  float* outs[kSums] = {p.dweight, p.dbias, p.dweight1, p.dbias1, p.dcolscale};
  if (p.rows == 0) {
    for (float* o : outs)
      if (o) check(cudaMemsetAsync(o, 0, H * sizeof(float), st), "memset");
    return;
  }
  const NormLaunch s = norm_launch_shape(H, norm_vectorised(p, true), true);
  const int grid = norm_bwd_grid(p, s);
  float* ws = static_cast<float*>(p.workspace);
  const int64_t seg = int64_t{grid} * H;
  // Segments updated in place by the kernel start at zero (dweight / dbias are plain stores).
  for (int q = 2; q < kSums; ++q)
    if (outs[q]) check(cudaMemsetAsync(ws + q * seg, 0, seg * sizeof(float), st), "memset");
  if (!try_plain(p, s, grid, st)) launch_general(p, s, grid, st);
  check(cudaGetLastError(), "launch");
  const dim3 rgrid(static_cast<unsigned>((H + kReduceCols - 1) / kReduceCols), kSums);
  norm_bwd_reduce_kernel<<<rgrid, dim3(kReduceCols, kReduceRows), 0, st>>>(ws, grid, H, p.dweight, p.dbias,
                                                                          p.dweight1, p.dbias1, p.dcolscale);
  check(cudaGetLastError(), "reduce launch");
}

}  // namespace flash::ops
