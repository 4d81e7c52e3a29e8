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
      // One dtype branch per chunk, not one per pair.
      if (t == DType::kBFloat16) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[q]));
          v[2 * q] = f.x; v[2 * q + 1] = f.y;
        }
      } else {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w[q]));
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
      if (t == DType::kBFloat16) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * q], v[2 * q + 1]);
          w[q] = *reinterpret_cast<const uint32_t*>(&h);
        }
      } else {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
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

// Eight consecutive elements as raw bits: kWords = 4 for a 16-bit dtype, 8 for fp32, so the
// register count follows the element size at compile time. Kernels that issue the raw loads of a
// whole row first and convert afterwards keep every load of a thread in flight at once; load_vec
// converts right after each load, and its runtime dtype switch puts a branch between one chunk's
// load and the next, so a thread waits out a full memory latency per chunk.
template <int kWords>
struct Raw8 {
  uint32_t w[kWords];
};

// Elements i..i+7 of `base` (element index; 16-byte aligned).
template <int kWords>
__device__ __forceinline__ void load_raw8(const void* base, int64_t i, Raw8<kWords>& r) {
  static_assert(kWords == 4 || kWords == 8, "16-bit (4 words) or fp32 (8 words)");
  const uint4* p = reinterpret_cast<const uint4*>(static_cast<const char*>(base) + i * (kWords / 2));
  const uint4 a = p[0];
  r.w[0] = a.x; r.w[1] = a.y; r.w[2] = a.z; r.w[3] = a.w;
  if constexpr (kWords == 8) {
    const uint4 b = p[1];
    r.w[4] = b.x; r.w[5] = b.y; r.w[6] = b.z; r.w[7] = b.w;
  }
}

// The floats of a Raw8 holding dtype t (t is fp32 iff kWords == 8).
template <int kWords>
__device__ __forceinline__ void raw8_to_float(DType t, const Raw8<kWords>& r, float (&v)[8]) {
  if constexpr (kWords == 8) {
#pragma unroll
    for (int q = 0; q < 8; ++q) v[q] = __uint_as_float(r.w[q]);
  } else if (t == DType::kBFloat16) {
    // bf16 is the top half of an fp32: the widening is exact bit placement.
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      v[2 * q] = __uint_as_float(r.w[q] << 16);
      v[2 * q + 1] = __uint_as_float(r.w[q] & 0xffff0000u);
    }
  } else {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&r.w[q]));
      v[2 * q] = f.x; v[2 * q + 1] = f.y;
    }
  }
}

// v rounded to dtype t and back (what a store then a load would give), without the memory trip.
__device__ __forceinline__ float round_to(DType t, float v) {
  if (t == DType::kBFloat16) return __bfloat162float(__float2bfloat16_rn(v));
  if (t == DType::kFloat16) return __half2float(__float2half_rn(v));
  return v;
}

// round_to over a chunk, with one dtype branch for the chunk.
template <int kVec>
__device__ __forceinline__ void round_vec(DType t, float (&v)[kVec]) {
  if (t == DType::kBFloat16) {
#pragma unroll
    for (int q = 0; q < kVec; ++q) v[q] = __bfloat162float(__float2bfloat16_rn(v[q]));
  } else if (t == DType::kFloat16) {
#pragma unroll
    for (int q = 0; q < kVec; ++q) v[q] = __half2float(__float2half_rn(v[q]));
  }
}

// True when a kVec = 8 access at every row start is 16-byte aligned.
inline bool rows_aligned16(const void* base, int64_t row_stride, DType t) {
  if (base == nullptr) return true;
  const int64_t esz = dtype_size(t);
  return reinterpret_cast<uintptr_t>(base) % 16 == 0 && (row_stride * esz) % 16 == 0;
}

}  // namespace flash::ops
