// Pieces shared by the fused-norm kernels (norm_fwd.cu, norm_bwd.cu): the launch shape and the
// dropout mask of one chunk.
//
// Shape: one block per row (grid-stride over rows), each thread owns kChunks chunks of kVec
// columns, chunk c of thread t being c = t + i * blockDim.x. The whole row lives in registers, so
// the row is read once and the statistics take two block reductions.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "flash/errors.h"

#include "flash/ops.h"
#include "ops/norm_dropout.h"

namespace flash::ops {

constexpr int kNormMaxThreads = 1024;

struct NormLaunch {
  int vec;      // 8 (16-byte accesses) or 1
  int chunks;   // chunks per thread
  int threads;  // block size, a multiple of 32
  int bound;    // the kernel's __launch_bounds__ (512 lets it use 128 registers)
};

// Small blocks with several chunks per thread keep more loads in flight per SM and make the two
// block reductions per row cheap (hidden 4096 bf16: forward 128 threads x 4 chunks). The backward
// holds ~4 values per element (xhat, g, dweight, dbias), so it takes at most 2 chunks while the
// block size allows. Rows past 16K (vectorised) / 16K (scalar) columns run with 64 registers and
// spill; hidden sizes needing more than 1024 threads are refused.
inline NormLaunch norm_launch_shape(int64_t hidden, bool vectorised, bool backward) {
  NormLaunch s{vectorised ? 8 : 1, 1, 32, kNormMaxThreads};
  const int64_t nchunks = (hidden + s.vec - 1) / s.vec;
  if (!vectorised) {
    while (nchunks > int64_t{s.chunks} * kNormMaxThreads && s.chunks < 16) s.chunks *= 2;
  } else if (!backward) {
    while (nchunks > int64_t{s.chunks} * 128 && s.chunks < 4) s.chunks *= 2;
  } else {
    while (nchunks > int64_t{s.chunks} * 256 && s.chunks < 2) s.chunks *= 2;
    while (nchunks > int64_t{s.chunks} * kNormMaxThreads && s.chunks < 4) s.chunks *= 2;
  }
  const int64_t per = (nchunks + s.chunks - 1) / s.chunks;
  if (per > kNormMaxThreads)
    throw Error("x", "hidden size " + std::to_string(hidden) + " is too large for the CUDA norm kernels (max " +
                         std::to_string(int64_t{s.chunks} * s.vec * kNormMaxThreads) + " here)");
  s.threads = static_cast<int>(((per + 31) / 32) * 32);
  const int heavy_chunks = backward ? 2 : 4;  // the configurations that want 128 registers
  if (vectorised && s.chunks == heavy_chunks && s.threads <= 512) s.bound = 512;
  return s;
}

// keep[q] for the kVec columns j0.. of input `which` of row `row` (all kept when p == 0).
template <int kVec>
__device__ __forceinline__ void chunk_keep(const NormParams& p, uint32_t threshold, uint32_t which,
                                           int64_t row, int64_t j0, bool (&keep)[kVec]) {
  if (p.dropout_p <= 0.f) {
#pragma unroll
    for (int q = 0; q < kVec; ++q) keep[q] = true;
    return;
  }
  if constexpr (kVec % 4 == 0) {
    // j0 is a multiple of kVec, so each group of 4 columns is one Philox call.
#pragma unroll
    for (int g = 0; g < kVec / 4; ++g) {
      const Philox4 r = norm_dropout_bits(p.seed, p.offset, which, row, j0 + 4 * g);
      keep[4 * g + 0] = r.x < threshold;
      keep[4 * g + 1] = r.y < threshold;
      keep[4 * g + 2] = r.z < threshold;
      keep[4 * g + 3] = r.w < threshold;
    }
  } else {
#pragma unroll
    for (int q = 0; q < kVec; ++q) keep[q] = norm_dropout_keep(p.seed, p.offset, which, row, j0 + q, threshold);
  }
}

// True when every row the kernels touch allows 16-byte accesses (norm_fwd.cu).
bool norm_vectorised(const NormParams& p, bool backward);

__device__ __forceinline__ int64_t subset_row(const int32_t* subset, int64_t r) {
  return subset ? int64_t{subset[r]} - 1 : r;
}

}  // namespace flash::ops
