// Vector loads/stores of fp32 / fp16 / bf16 rows into fp32 registers for the fused-op kernels.
// The dtype is a runtime argument (uniform across the grid, so the switch costs a predictable branch
// per chunk, not a template instantiation per dtype combination). kVec = 8 moves 16 bytes per
// access for 16-bit types (two for fp32) and needs 16-byte aligned chunks; kVec = 1 is the fallback
// for unaligned or odd-sized rows.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "flash/types.h"

namespace flash::ops {

template <int kVec>
__device__ __forceinline__ void load_vec(const void* base, DType t, int64_t i, float (&v)[kVec]) {
  if constexpr (kVec == 8) {
    if (t == DType::kFloat32) {
      const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(base) + i);
      const float4 a = p[0], b = p[1];
      v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
      v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    } else {
      const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(base) + i);
      const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        if (t == DType::kBFloat16) {
          const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(&w[q]);
          const float2 f = __bfloat1622float2(h);
          v[2 * q] = f.x; v[2 * q + 1] = f.y;
        } else {
          const __half2 h = *reinterpret_cast<const __half2*>(&w[q]);
          const float2 f = __half22float2(h);
          v[2 * q] = f.x; v[2 * q + 1] = f.y;
        }
      }
    }
  } else {
#pragma unroll
    for (int q = 0; q < kVec; ++q) {
      if (t == DType::kFloat32) v[q] = static_cast<const float*>(base)[i + q];
      else if (t == DType::kBFloat16) v[q] = __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i + q]);
      else v[q] = __half2float(static_cast<const __half*>(base)[i + q]);
    }
  }
}

template <int kVec>
__device__ __forceinline__ void store_vec(void* base, DType t, int64_t i, const float (&v)[kVec]) {
  if constexpr (kVec == 8) {
    if (t == DType::kFloat32) {
      float4* p = reinterpret_cast<float4*>(static_cast<float*>(base) + i);
      p[0] = make_float4(v[0], v[1], v[2], v[3]);
      p[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
      uint32_t w[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        if (t == DType::kBFloat16) {
          const __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * q], v[2 * q + 1]);
          w[q] = *reinterpret_cast<const uint32_t*>(&h);
        } else {
          const __half2 h = __floats2half2_rn(v[2 * q], v[2 * q + 1]);
          w[q] = *reinterpret_cast<const uint32_t*>(&h);
        }
      }
      *reinterpret_cast<uint4*>(static_cast<uint16_t*>(base) + i) = make_uint4(w[0], w[1], w[2], w[3]);
    }
  } else {
#pragma unroll
    for (int q = 0; q < kVec; ++q) {
      if (t == DType::kFloat32) static_cast<float*>(base)[i + q] = v[q];
      else if (t == DType::kBFloat16) static_cast<__nv_bfloat16*>(base)[i + q] = __float2bfloat16_rn(v[q]);
      else static_cast<__half*>(base)[i + q] = __float2half_rn(v[q]);
    }
  }
}

// v rounded to dtype t and back (what a store then a load would give), without the memory trip.
__device__ __forceinline__ float round_to(DType t, float v) {
  if (t == DType::kBFloat16) return __bfloat162float(__float2bfloat16_rn(v));
  if (t == DType::kFloat16) return __half2float(__float2half_rn(v));
  return v;
}

// True when a kVec = 8 access at every row start is 16-byte aligned.
inline bool rows_aligned16(const void* base, int64_t row_stride, DType t) {
  if (base == nullptr) return true;
  const int64_t esz = dtype_size(t);
  return reinterpret_cast<uintptr_t>(base) % 16 == 0 && (row_stride * esz) % 16 == 0;
}

}  // namespace flash::ops
