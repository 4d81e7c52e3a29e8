// Block-wide fp32 reductions for the fused-op kernels (warp shuffles, then one warp over the warps'
// partials). Every thread of the block must call them; every thread gets the result.
#pragma once

#include <cuda_runtime.h>

namespace flash::ops {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Merges two (max, sum of exp2(x - max)) pairs; an empty pair has max = -inf, sum = 0.
__device__ __forceinline__ void merge_max_sum(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  if (mn == -INFINITY) return;  // both empty
  s = s * exp2f(m - mn) + s2 * exp2f(m2 - mn);
  m = mn;
}

__device__ __forceinline__ void warp_max_sum(float& m, float& s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
    merge_max_sum(m, s, m2, s2);
  }
}

// `scratch` holds >= 32 floats (>= 64 for block_max_sum); it is reused right away, so a barrier
// separates consecutive calls.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // the previous use of scratch is finished
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.f;
  return warp_sum(v);
}

// Two sums with one pair of barriers; `scratch` holds >= 64 floats.
__device__ __forceinline__ void block_sum2(float& a, float& b, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  a = warp_sum(a);
  b = warp_sum(b);
  __syncthreads();
  if (lane == 0) {
    scratch[warp] = a;
    scratch[32 + warp] = b;
  }
  __syncthreads();
  a = warp_sum(lane < nwarps ? scratch[lane] : 0.f);
  b = warp_sum(lane < nwarps ? scratch[32 + lane] : 0.f);
}

__device__ __forceinline__ void block_max_sum(float& m, float& s, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  warp_max_sum(m, s);
  __syncthreads();
  if (lane == 0) {
    scratch[warp] = m;
    scratch[32 + warp] = s;
  }
  __syncthreads();
  m = lane < nwarps ? scratch[lane] : -INFINITY;
  s = lane < nwarps ? scratch[32 + lane] : 0.f;
  warp_max_sum(m, s);
}

}  // namespace flash::ops
