// Element access for the CPU backend: typed row loads/stores through fp32, and KeySource, the
// "key accessor" that maps a sequence's logical key index to its K and V rows whatever the
// storage (contiguous, varlen-packed, paged, or a kv cache with a left pad).
#pragma once

#include <cstdint>

#include "common/numeric.h"
#include "flash/types.h"

namespace flash::cpu {

// Reads n consecutive elements at base + offset (elements) as fp32.
inline void load_row(const void* base, DType t, int64_t offset, int n, float* dst) {
  switch (t) {
    case DType::kFloat32: {
      const float* p = static_cast<const float*>(base) + offset;
      for (int i = 0; i < n; ++i) dst[i] = p[i];
      break;
    }
    case DType::kFloat16: {
      const uint16_t* p = static_cast<const uint16_t*>(base) + offset;
      for (int i = 0; i < n; ++i) dst[i] = numeric::half_to_float(p[i]);
      break;
    }
    case DType::kBFloat16: {
      const uint16_t* p = static_cast<const uint16_t*>(base) + offset;
      for (int i = 0; i < n; ++i) dst[i] = numeric::bf16_to_float(p[i]);
      break;
    }
  }
}

// Writes n fp32 values to base + offset (elements) in type t, rounding to nearest even.
inline void store_row(void* base, DType t, int64_t offset, int n, const float* src) {
  switch (t) {
    case DType::kFloat32: {
      float* p = static_cast<float*>(base) + offset;
      for (int i = 0; i < n; ++i) p[i] = src[i];
      break;
    }
    case DType::kFloat16: {
      uint16_t* p = static_cast<uint16_t*>(base) + offset;
      for (int i = 0; i < n; ++i) p[i] = numeric::float_to_half(src[i]);
      break;
    }
    case DType::kBFloat16: {
      uint16_t* p = static_cast<uint16_t*>(base) + offset;
      for (int i = 0; i < n; ++i) p[i] = numeric::float_to_bf16(src[i]);
      break;
    }
  }
}

// The value a 16-bit type would hold after storing x (identity for fp32).
inline float round_to_dtype(float x, DType t) {
  switch (t) {
    case DType::kFloat16: return numeric::round_to_half(x);
    case DType::kBFloat16: return numeric::round_to_bf16(x);
    default: return x;
  }
}

// a . b over n floats with 8 independent partial sums: a fixed summation order (so results are
// reproducible) that the compiler can keep in vector registers, unlike one serial accumulator.
inline float dot(const float* a, const float* b, int n) {
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int c = 0;
  for (; c + 8 <= n; c += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[c + l] * b[c + l];
  for (; c < n; ++c) acc[c & 7] += a[c] * b[c];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Where the keys of one (sequence, kv head) live. Logical key t (0-based, as the mask sees it)
// is physical index t + first_physical. Contiguous storage: row offset row0 + index * row_stride.
// Paged storage: page = pages[index / page_size] (must be in [0, num_pages), otherwise the key
// is invisible and never dereferenced), offset page * page_stride + (index % page_size) * row_stride.
// head_offset (the kv head's offset) is added in both cases. K and V share the index mapping
// but have their own strides.
struct KeySource {
  int64_t first_physical = 0;
  // contiguous
  int64_t k_row0 = 0, v_row0 = 0;
  // paged (pages != nullptr)
  const int32_t* pages = nullptr;
  int page_size = 1;
  int num_pages = 0;
  int64_t k_page_stride = 0, v_page_stride = 0;
  // both
  int64_t k_row_stride = 0, v_row_stride = 0;
  int64_t k_head_offset = 0, v_head_offset = 0;

  // Element offsets of key t's K and V rows; false when the key's page is out of range.
  bool locate(int t, int64_t* k_off, int64_t* v_off) const {
    const int64_t idx = t + first_physical;
    if (pages == nullptr) {
      *k_off = k_row0 + idx * k_row_stride + k_head_offset;
      *v_off = v_row0 + idx * v_row_stride + v_head_offset;
      return true;
    }
    const int32_t page = pages[idx / page_size];
    if (page < 0 || page >= num_pages) return false;
    const int64_t row = idx % page_size;
    *k_off = page * k_page_stride + row * k_row_stride + k_head_offset;
    *v_off = page * v_page_stride + row * v_row_stride + v_head_offset;
    return true;
  }
};

}  // namespace flash::cpu
