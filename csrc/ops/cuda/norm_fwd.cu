// CUDA forward of flash::norm_fwd: dropout + add + LayerNorm / RMSNorm, one block per row with the
// row in registers (norm_row.cuh). Reads x0 (x1, residual) once, writes residual_out and y (y1).
#include <cuda_runtime.h>

#include <cstdlib>
#include <string>

#include "flash/errors.h"
#include "ops/cuda/block_reduce.cuh"
#include "ops/cuda/norm_row.cuh"
#include "ops/cuda/vec_io.cuh"
#include "ops/ops_backend.h"

namespace flash::ops {
namespace {

// Loads are grouped before any store of the same phase: the pointers may alias as far as the
// compiler knows, so a load placed after a store cannot be moved above it, and per-chunk
// load/store interleaving would cost one memory round trip per chunk.
template <int kVec, int kChunks, int kBound>
__global__ void __launch_bounds__(kBound) norm_fwd_kernel(NormParams p, uint32_t threshold) {
  static_assert(kVec <= 8, "keep bits: x0 in bits 0..7, x1 in bits 8..15 of one word per chunk");
  __shared__ float scratch[32];
  const int64_t H = p.hidden;
  const int64_t nchunks = (H + kVec - 1) / kVec;
  const bool rms = p.kind == NormKind::kRMSNorm;
  const float inv_keep = p.dropout_p > 0.f ? 1.f / (1.f - p.dropout_p) : 1.f;

  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const int64_t r0 = subset_row(p.x0_subset, r);
    const float rs = (p.rowscale ? p.rowscale[r] : 1.f) * p.rowscale_const;
    float a[kChunks][kVec];
    uint32_t bits[kChunks];
    // Phase 1: every load of the row's inputs, no stores.
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int64_t c = threadIdx.x + int64_t{i} * blockDim.x;
      bits[i] = 0;
#pragma unroll
      for (int q = 0; q < kVec; ++q) a[i][q] = 0.f;
      if (c >= nchunks) continue;
      const int64_t j0 = c * kVec;
      float v[kVec];
      if (r0 >= 0) {
        bool keep[kVec];
        chunk_keep<kVec>(p, threshold, 0, r, j0, keep);
        load_vec<kVec>(p.x0, p.in_dtype, r0 * p.x0_row_stride + j0, v);
        float cs[kVec];
        if (p.colscale) load_vec<kVec>(p.colscale, p.weight_dtype, j0, cs);
#pragma unroll
        for (int q = 0; q < kVec; ++q) {
          float x = v[q] * rs;
          if (p.colscale) x *= cs[q];
          a[i][q] = keep[q] ? x * inv_keep : 0.f;
          bits[i] |= uint32_t{keep[q]} << q;
        }
      }
      if (p.x1) {
        bool keep[kVec];
        chunk_keep<kVec>(p, threshold, 1, r, j0, keep);
        load_vec<kVec>(p.x1, p.in_dtype, r * p.x1_row_stride + j0, v);
#pragma unroll
        for (int q = 0; q < kVec; ++q) {
          a[i][q] += keep[q] ? v[q] * inv_keep : 0.f;
          bits[i] |= uint32_t{keep[q]} << (8 + q);
        }
      }
      if (p.residual) {
        load_vec<kVec>(p.residual, p.residual_dtype, r * p.residual_row_stride + j0, v);
#pragma unroll
        for (int q = 0; q < kVec; ++q) a[i][q] += v[q];
      }
    }
    // Phase 2: residual_out and the masks. The statistics use the stored (rounded) value, which
    // is what the backward reloads.
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int64_t c = threadIdx.x + int64_t{i} * blockDim.x;
      if (c >= nchunks) continue;
      const int64_t j0 = c * kVec;
      if (p.residual_out) {
        store_vec<kVec>(p.residual_out, p.residual_dtype, r * p.residual_out_row_stride + j0, a[i]);
#pragma unroll
        for (int q = 0; q < kVec; ++q) a[i][q] = round_to(p.residual_dtype, a[i][q]);
      }
      if (p.dmask) {
#pragma unroll
        for (int q = 0; q < kVec; ++q) p.dmask[r * H + j0 + q] = (bits[i] >> q) & 1u;
      }
      if (p.dmask1) {
#pragma unroll
        for (int q = 0; q < kVec; ++q) p.dmask1[r * H + j0 + q] = (bits[i] >> (8 + q)) & 1u;
      }
#pragma unroll
      for (int q = 0; q < kVec; ++q) sum += a[i][q];
    }
    const float mean = rms ? 0.f : block_sum(sum, scratch) / static_cast<float>(H);
    float sq = 0.f;
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int64_t c = threadIdx.x + int64_t{i} * blockDim.x;
      if (c >= nchunks) continue;
#pragma unroll
      for (int q = 0; q < kVec; ++q) sq += (a[i][q] - mean) * (a[i][q] - mean);
    }
    const float rstd = rsqrtf(block_sum(sq, scratch) / static_cast<float>(H) + p.eps);
    if (threadIdx.x == 0) {
      if (p.mean) p.mean[r] = mean;
      p.rstd[r] = rstd;
    }
    const int64_t ro = subset_row(p.out_subset, r);
    if (ro < 0) continue;
    if (p.weight1 == nullptr) {
      // One output: weight for every chunk, then bias for every chunk (two batches of loads that
      // hit L2), then the stores.
#pragma unroll
      for (int i = 0; i < kChunks; ++i) {
        const int64_t c = threadIdx.x + int64_t{i} * blockDim.x;
        if (c >= nchunks) continue;
        float w[kVec];
        load_vec<kVec>(p.weight, p.weight_dtype, c * kVec, w);
#pragma unroll
        for (int q = 0; q < kVec; ++q) a[i][q] = (a[i][q] - mean) * rstd * w[q];
      }
      if (p.bias) {
#pragma unroll
        for (int i = 0; i < kChunks; ++i) {
          const int64_t c = threadIdx.x + int64_t{i} * blockDim.x;
          if (c >= nchunks) continue;
          float b[kVec];
          load_vec<kVec>(p.bias, p.weight_dtype, c * kVec, b);
#pragma unroll
          for (int q = 0; q < kVec; ++q) a[i][q] += b[q];
        }
      }
#pragma unroll
      for (int i = 0; i < kChunks; ++i) {
        const int64_t c = threadIdx.x + int64_t{i} * blockDim.x;
        if (c < nchunks) store_vec<kVec>(p.y, p.out_dtype, ro * p.y_row_stride + c * kVec, a[i]);
      }
      continue;
    }
    // Two outputs (parallel residual): xhat stays live for both.
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      const int64_t c = threadIdx.x + int64_t{i} * blockDim.x;
      if (c >= nchunks) continue;
      const int64_t j0 = c * kVec;
      float w[kVec], b[kVec], y[kVec];
      load_vec<kVec>(p.weight, p.weight_dtype, j0, w);
      if (p.bias) load_vec<kVec>(p.bias, p.weight_dtype, j0, b);
#pragma unroll
      for (int q = 0; q < kVec; ++q) {
        a[i][q] = (a[i][q] - mean) * rstd;  // xhat from here on
        y[q] = a[i][q] * w[q] + (p.bias ? b[q] : 0.f);
      }
      store_vec<kVec>(p.y, p.out_dtype, ro * p.y_row_stride + j0, y);
      load_vec<kVec>(p.weight1, p.weight_dtype, j0, w);
      if (p.bias1) load_vec<kVec>(p.bias1, p.weight_dtype, j0, b);
#pragma unroll
      for (int q = 0; q < kVec; ++q) y[q] = a[i][q] * w[q] + (p.bias1 ? b[q] : 0.f);
      store_vec<kVec>(p.y1, p.out_dtype, ro * p.y1_row_stride + j0, y);
    }
  }
}

// The plain forward (no dropout, x1, second output, colscale or subsets; 16-bit x0; 16-byte
// aligned rows): the common "add + norm" of a transformer block. Every load of the row (x0,
// residual, weight, bias) is issued before the first use of any of them, as raw bits, so a thread
// has its whole share of the row in flight at once; norm_fwd_kernel converts right after each load
// (runtime dtype switch) and so waits one memory latency per chunk and input. Chunks past the row's
// end re-read its last chunk (unconditional loads need no branch between them) and count as zero.
// kResWords / kWWords: 4 = 16-bit residual / weight, 8 = fp32. Same arithmetic, in the same order,
// as norm_fwd_kernel.
template <int kChunks, int kBound, int kResWords, int kWWords>
__global__ void __launch_bounds__(kBound) norm_fwd_plain_kernel(NormParams p) {
  __shared__ float scratch[32];
  const int64_t H = p.hidden;
  const int64_t nchunks = H / 8;
  const bool rms = p.kind == NormKind::kRMSNorm;
  int64_t col[kChunks];  // element index of each chunk, clamped into the row
  bool valid[kChunks];
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    const int64_t c = threadIdx.x + int64_t{i} * blockDim.x;
    valid[i] = c < nchunks;
    col[i] = (valid[i] ? c : nchunks - 1) * 8;
  }
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    Raw8<4> xr[kChunks];
    Raw8<kResWords> rr[kChunks];
    Raw8<kWWords> wr[kChunks], br[kChunks];
    // Phase 1: loads only.
    const float rs = (p.rowscale ? p.rowscale[r] : 1.f) * p.rowscale_const;
#pragma unroll
    for (int i = 0; i < kChunks; ++i) load_raw8(p.x0, r * p.x0_row_stride + col[i], xr[i]);
    if (p.residual) {
#pragma unroll
      for (int i = 0; i < kChunks; ++i) load_raw8(p.residual, r * p.residual_row_stride + col[i], rr[i]);
    }
#pragma unroll
    for (int i = 0; i < kChunks; ++i) load_raw8(p.weight, col[i], wr[i]);
    if (p.bias) {
#pragma unroll
      for (int i = 0; i < kChunks; ++i) load_raw8(p.bias, col[i], br[i]);
    }
    // Phase 2: the pre-norm sum, residual_out, the statistics of the stored (rounded) values.
    float a[kChunks][8];
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      raw8_to_float(p.in_dtype, xr[i], a[i]);
#pragma unroll
      for (int q = 0; q < 8; ++q) a[i][q] *= rs;
      if (p.residual) {
        float v[8];
        raw8_to_float(p.residual_dtype, rr[i], v);
#pragma unroll
        for (int q = 0; q < 8; ++q) a[i][q] += v[q];
      }
#pragma unroll
      for (int q = 0; q < 8; ++q) a[i][q] = valid[i] ? a[i][q] : 0.f;
      if (p.residual_out) {
        if (valid[i]) store_vec<8>(p.residual_out, p.residual_dtype, r * p.residual_out_row_stride + col[i], a[i]);
        round_vec<8>(p.residual_dtype, a[i]);
      }
#pragma unroll
      for (int q = 0; q < 8; ++q) sum += a[i][q];
    }
    const float mean = rms ? 0.f : block_sum(sum, scratch) / static_cast<float>(H);
    float sq = 0.f;
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      if (!valid[i]) continue;
#pragma unroll
      for (int q = 0; q < 8; ++q) sq += (a[i][q] - mean) * (a[i][q] - mean);
    }
    const float rstd = rsqrtf(block_sum(sq, scratch) / static_cast<float>(H) + p.eps);
    if (threadIdx.x == 0) {
      if (p.mean) p.mean[r] = mean;
      p.rstd[r] = rstd;
    }
    // Phase 3: y.
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      float w[8];
      raw8_to_float(p.weight_dtype, wr[i], w);
#pragma unroll
      for (int q = 0; q < 8; ++q) a[i][q] = (a[i][q] - mean) * rstd * w[q];
      if (p.bias) {
        float b[8];
        raw8_to_float(p.weight_dtype, br[i], b);
#pragma unroll
        for (int q = 0; q < 8; ++q) a[i][q] += b[q];
      }
      if (valid[i]) store_vec<8>(p.y, p.out_dtype, r * p.y_row_stride + col[i], a[i]);
    }
  }
}

template <int kVec, int kChunks, int kBound>
void launch(const NormParams& p, int threads, cudaStream_t st) {
  const int64_t grid = p.rows < (int64_t{1} << 30) ? p.rows : (int64_t{1} << 30);
  norm_fwd_kernel<kVec, kChunks, kBound><<<static_cast<unsigned>(grid), threads, 0, st>>>(
      p, dropout_keep_threshold(p.dropout_p));
}

// Registers: the raw row, weight and bias stay live until y, ~116 per thread for 4 chunks with
// 16-bit residual and weight, more with fp32 ones. The bound gives each configuration the
// registers it needs without spilling (4 chunks: 512 threads at most, 256 when wide).
constexpr int plain_bound(int chunks, bool wide) {
  return chunks == 4 ? (wide ? 256 : 512) : chunks == 2 ? (wide ? 512 : 1024) : 1024;
}

template <int kChunks, int kResWords, int kWWords>
void launch_plain_kernel(const NormParams& p, int threads, cudaStream_t st) {
  constexpr int kBound = plain_bound(kChunks, kResWords == 8 || kWWords == 8);
  const int64_t grid = p.rows < (int64_t{1} << 30) ? p.rows : (int64_t{1} << 30);
  norm_fwd_plain_kernel<kChunks, kBound, kResWords, kWWords><<<static_cast<unsigned>(grid), threads, 0, st>>>(p);
}

template <int kChunks>
void launch_plain(const NormParams& p, int threads, cudaStream_t st) {
  const bool res32 = p.residual_dtype == DType::kFloat32, w32 = p.weight_dtype == DType::kFloat32;
  if (res32 && w32) launch_plain_kernel<kChunks, 8, 8>(p, threads, st);
  else if (res32) launch_plain_kernel<kChunks, 8, 4>(p, threads, st);
  else if (w32) launch_plain_kernel<kChunks, 4, 8>(p, threads, st);
  else launch_plain_kernel<kChunks, 4, 4>(p, threads, st);
}

// Integer value of environment variable `name`, or `fallback` when unset / empty. Read on every
// call so a benchmark can compare settings in one process.
int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return (v == nullptr || *v == '\0') ? fallback : std::atoi(v);
}

// The plain kernel when p qualifies (see norm_fwd_plain_kernel); false: the caller runs the
// general one. FLASH_ATTN_NORM_FWD_PLAIN=0 turns the plain kernel off; FLASH_ATTN_NORM_FWD_CHUNKS
// = 1 | 2 | 4 forces its chunks per thread (tuning experiments; the block grows to match).
bool try_plain(const NormParams& p, cudaStream_t st) {
  const bool plain = p.dropout_p <= 0.f && p.x1 == nullptr && p.weight1 == nullptr && p.colscale == nullptr &&
                     p.x0_subset == nullptr && p.out_subset == nullptr && p.dmask == nullptr &&
                     p.dmask1 == nullptr && p.in_dtype != DType::kFloat32 && norm_vectorised(p, false);
  if (!plain || env_int("FLASH_ATTN_NORM_FWD_PLAIN", 1) == 0) return false;
  const int64_t nchunks = p.hidden / 8;
  int chunks = norm_launch_shape(p.hidden, true, false).chunks;
  const int forced = env_int("FLASH_ATTN_NORM_FWD_CHUNKS", 0);
  if (forced == 1 || forced == 2 || forced == 4) chunks = forced;
  const int64_t per = (nchunks + chunks - 1) / chunks;
  const int threads = static_cast<int>(((per + 31) / 32) * 32);
  const bool wide = p.residual_dtype == DType::kFloat32 || p.weight_dtype == DType::kFloat32;
  if (threads > plain_bound(chunks, wide)) return false;
  if (chunks == 1) launch_plain<1>(p, threads, st);
  else if (chunks == 2) launch_plain<2>(p, threads, st);
  else launch_plain<4>(p, threads, st);
  return true;
}

}  // namespace

bool norm_vectorised(const NormParams& p, bool backward) {
  if (p.hidden % 8 != 0) return false;
  bool ok = rows_aligned16(p.x0, p.x0_row_stride, p.in_dtype) && rows_aligned16(p.x1, p.x1_row_stride, p.in_dtype) &&
            rows_aligned16(p.residual, p.residual_row_stride, p.residual_dtype) &&
            rows_aligned16(p.residual_out, p.residual_out_row_stride, p.residual_dtype) &&
            rows_aligned16(p.weight, 0, p.weight_dtype) && rows_aligned16(p.bias, 0, p.weight_dtype) &&
            rows_aligned16(p.weight1, 0, p.weight_dtype) && rows_aligned16(p.bias1, 0, p.weight_dtype) &&
            rows_aligned16(p.colscale, 0, p.weight_dtype);
  if (!backward)
    return ok && rows_aligned16(p.y, p.y_row_stride, p.out_dtype) && rows_aligned16(p.y1, p.y1_row_stride, p.out_dtype);
  return ok && rows_aligned16(p.dy, p.dy_row_stride, p.out_dtype) &&
         rows_aligned16(p.dy1, p.dy1_row_stride, p.out_dtype) &&
         rows_aligned16(p.dresidual_out, p.dresidual_out_row_stride, p.residual_dtype) &&
         rows_aligned16(p.dx0, p.dx0_row_stride, p.in_dtype) && rows_aligned16(p.dx1, p.dx1_row_stride, p.in_dtype) &&
         rows_aligned16(p.dresidual, p.dresidual_row_stride, p.residual_dtype);
}

void norm_fwd_cuda(const NormParams& p, void* stream) {
  if (cudaSetDevice(p.device_index) != cudaSuccess) throw DeviceError("norm_fwd: cudaSetDevice failed");
  const auto st = static_cast<cudaStream_t>(stream);
  if (p.rows > 0 && try_plain(p, st)) {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) throw DeviceError(std::string("norm_fwd: ") + cudaGetErrorString(e));
    return;
  }
  const NormLaunch s = norm_launch_shape(p.hidden, norm_vectorised(p, false), false);
  if (s.vec == 8) {
    if (s.chunks == 1) launch<8, 1, 1024>(p, s.threads, st);
    else if (s.chunks == 2) launch<8, 2, 1024>(p, s.threads, st);
    else if (s.bound == 512) launch<8, 4, 512>(p, s.threads, st);
    else launch<8, 4, 1024>(p, s.threads, st);
  } else {
    switch (s.chunks) {
      case 1: launch<1, 1, 1024>(p, s.threads, st); break;
      case 2: launch<1, 2, 1024>(p, s.threads, st); break;
      case 4: launch<1, 4, 1024>(p, s.threads, st); break;
      case 8: launch<1, 8, 1024>(p, s.threads, st); break;
      default: launch<1, 16, 1024>(p, s.threads, st); break;
    }
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw DeviceError(std::string("norm_fwd: ") + cudaGetErrorString(e));
}

}  // namespace flash::ops
