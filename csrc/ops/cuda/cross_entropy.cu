// CUDA kernels of flash::cross_entropy_fwd / _bwd: one block per row, one pass over the logits.
//
// Forward: every thread keeps an online (max, sum of exp2) pair over its chunks, in log2 units
// (z * log2(e)) so each element costs one ex2; a chunk of 8 rescales the running sum at most once.
// The block then merges the pairs, and thread 0 writes lse / target / sum_z / loss. Nothing of
// size rows x vocab is written. Backward: one more pass that writes the gradient (in place when
// dlogits == logits: every element is read and written by the same thread).
#include <cuda_runtime.h>

#include <cmath>
#include <string>

#include "flash/errors.h"
#include "ops/cuda/block_reduce.cuh"
#include "ops/cuda/vec_io.cuh"
#include "ops/ops_backend.h"

namespace flash::ops {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // chunks loaded before any is consumed: more bytes in flight per thread
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ void accumulate_chunk(const float* v, int n, float scale2, float& m, float& s,
                                                 float& sum_x) {
  float cm = -INFINITY;
  for (int q = 0; q < n; ++q) {
    cm = fmaxf(cm, v[q] * scale2);
    sum_x += v[q];
  }
  if (cm > m) {
    s *= exp2f(m - cm);
    m = cm;
  }
  if (m == -INFINITY) return;  // only -inf so far: nothing to add
  for (int q = 0; q < n; ++q) s += exp2f(v[q] * scale2 - m);
}

template <int kVec>
__global__ void __launch_bounds__(kThreads) cross_entropy_fwd_kernel(CrossEntropyParams p) {
  __shared__ float scratch[64];
  const int64_t row = blockIdx.x;
  const int64_t base = row * p.logits_row_stride;
  const float scale2 = p.logit_scale * kLog2e;
  float m = -INFINITY, s = 0.f, sum_x = 0.f;

  const int64_t nchunks = p.vocab / kVec;
  int64_t c = threadIdx.x;
  for (; c + (kUnroll - 1) * kThreads < nchunks; c += kUnroll * kThreads) {
    float v[kUnroll][kVec];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) load_vec<kVec>(p.logits, p.dtype, base + (c + u * kThreads) * kVec, v[u]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) accumulate_chunk(v[u], kVec, scale2, m, s, sum_x);
  }
  for (; c < nchunks; c += kThreads) {
    float v[kVec];
    load_vec<kVec>(p.logits, p.dtype, base + c * kVec, v);
    accumulate_chunk(v, kVec, scale2, m, s, sum_x);
  }
  // Columns past the last full chunk (vocab % kVec), one per thread.
  for (int64_t j = nchunks * kVec + threadIdx.x; j < p.vocab; j += kThreads) {
    float v[1];
    load_vec<1>(p.logits, p.dtype, base + j, v);
    accumulate_chunk(v, 1, scale2, m, s, sum_x);
  }

  block_max_sum(m, s, scratch);
  sum_x = block_sum(sum_x, scratch);
  if (threadIdx.x != 0) return;
  const float lse = (m + log2f(s)) * kLn2;
  const float sum_z = sum_x * p.logit_scale;
  const int64_t label = p.labels[row];
  const int64_t col = label - p.vocab_start;
  float target = 0.f;
  if (col >= 0 && col < p.vocab) {
    float v[1];
    load_vec<1>(p.logits, p.dtype, base + col, v);
    target = v[0] * p.logit_scale;
  }
  p.lse[row] = lse;
  if (p.target) p.target[row] = target;
  if (p.sum_z) p.sum_z[row] = sum_z;
  const bool ignored = label == p.ignore_index;
  const float zl = ignored ? 0.f : p.lse_square_scale * lse * lse;
  if (p.loss) {
    const float eps = p.label_smoothing;
    const float ce = lse - (1.f - eps) * target - eps / static_cast<float>(p.total_classes) * sum_z;
    p.loss[row] = ignored ? 0.f : ce + zl;
  }
  if (p.z_loss) p.z_loss[row] = zl;
}

template <int kVec>
__device__ __forceinline__ void grad_chunk(float (&v)[kVec], int64_t j0, int64_t col, float scale2, float lse2,
                                           float g_scaled, float smooth, float onehot) {
#pragma unroll
  for (int q = 0; q < kVec; ++q) {
    float d = exp2f(v[q] * scale2 - lse2) * g_scaled - smooth;
    if (j0 + q == col) d -= onehot;
    v[q] = d;
  }
}

template <int kVec>
__global__ void __launch_bounds__(kThreads) cross_entropy_bwd_kernel(CrossEntropyParams p) {
  const int64_t row = blockIdx.x;
  const int64_t in = row * p.logits_row_stride, out = row * p.dlogits_row_stride;
  const int64_t label = p.labels[row];
  const int64_t nchunks = p.vocab / kVec;
  if (label == p.ignore_index) {
    float z[kVec];
#pragma unroll
    for (int q = 0; q < kVec; ++q) z[q] = 0.f;
    for (int64_t c = threadIdx.x; c < nchunks; c += kThreads) store_vec<kVec>(p.dlogits, p.dtype, out + c * kVec, z);
    const float z1[1] = {0.f};
    for (int64_t j = nchunks * kVec + threadIdx.x; j < p.vocab; j += kThreads) store_vec<1>(p.dlogits, p.dtype, out + j, z1);
    return;
  }
  const float lse = p.lse[row];
  const float g = p.dloss[row * p.dloss_stride] * p.logit_scale;
  // d = g * (softmax * (1 + 2 c lse) - eps / V - (1 - eps) [j == label])
  const float g_scaled = g * (1.f + 2.f * p.lse_square_scale * lse);
  const float smooth = g * p.label_smoothing / static_cast<float>(p.total_classes);
  const float onehot = g * (1.f - p.label_smoothing);
  const float scale2 = p.logit_scale * kLog2e, lse2 = lse * kLog2e;
  const int64_t col = label - p.vocab_start;

  int64_t c = threadIdx.x;
  for (; c + (kUnroll - 1) * kThreads < nchunks; c += kUnroll * kThreads) {
    float v[kUnroll][kVec];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) load_vec<kVec>(p.logits, p.dtype, in + (c + u * kThreads) * kVec, v[u]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j0 = (c + u * kThreads) * kVec;
      grad_chunk<kVec>(v[u], j0, col, scale2, lse2, g_scaled, smooth, onehot);
      store_vec<kVec>(p.dlogits, p.dtype, out + j0, v[u]);
    }
  }
  for (; c < nchunks; c += kThreads) {
    float v[kVec];
    load_vec<kVec>(p.logits, p.dtype, in + c * kVec, v);
    grad_chunk<kVec>(v, c * kVec, col, scale2, lse2, g_scaled, smooth, onehot);
    store_vec<kVec>(p.dlogits, p.dtype, out + c * kVec, v);
  }
  for (int64_t j = nchunks * kVec + threadIdx.x; j < p.vocab; j += kThreads) {
    float v[1];
    load_vec<1>(p.logits, p.dtype, in + j, v);
    grad_chunk<1>(v, j, col, scale2, lse2, g_scaled, smooth, onehot);
    store_vec<1>(p.dlogits, p.dtype, out + j, v);
  }
}

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw DeviceError(std::string(what) + ": " + cudaGetErrorString(e));
}

void set_device(int index) {
  const cudaError_t e = cudaSetDevice(index);
  if (e != cudaSuccess) throw DeviceError(std::string("cudaSetDevice: ") + cudaGetErrorString(e));
}

}  // namespace

void cross_entropy_fwd_cuda(const CrossEntropyParams& p, void* stream) {
  set_device(p.device_index);
  const auto st = static_cast<cudaStream_t>(stream);
  if (rows_aligned16(p.logits, p.logits_row_stride, p.dtype))
    cross_entropy_fwd_kernel<8><<<static_cast<unsigned>(p.rows), kThreads, 0, st>>>(p);
  else
    cross_entropy_fwd_kernel<1><<<static_cast<unsigned>(p.rows), kThreads, 0, st>>>(p);
  check_launch("cross_entropy_fwd");
}

void cross_entropy_bwd_cuda(const CrossEntropyParams& p, void* stream) {
  set_device(p.device_index);
  const auto st = static_cast<cudaStream_t>(stream);
  if (rows_aligned16(p.logits, p.logits_row_stride, p.dtype) &&
      rows_aligned16(p.dlogits, p.dlogits_row_stride, p.dtype))
    cross_entropy_bwd_kernel<8><<<static_cast<unsigned>(p.rows), kThreads, 0, st>>>(p);
  else
    cross_entropy_bwd_kernel<1><<<static_cast<unsigned>(p.rows), kThreads, 0, st>>>(p);
  check_launch("cross_entropy_bwd");
}

}  // namespace flash::ops
