// Scalar reads and writes of fp32 / fp16 / bf16 buffers for the CPU backends of the fused ops.
// Stores round to nearest even, as the GPU's conversions do.
#pragma once

#include <cstdint>

#include "common/numeric.h"
#include "flash/types.h"

namespace flash::ops {

inline float load_elem(const void* base, DType t, int64_t i) {
  switch (t) {
    case DType::kFloat32: return static_cast<const float*>(base)[i];
    case DType::kFloat16: return numeric::half_to_float(static_cast<const uint16_t*>(base)[i]);
    default: return numeric::bf16_to_float(static_cast<const uint16_t*>(base)[i]);
  }
}

inline void store_elem(void* base, DType t, int64_t i, float v) {
  switch (t) {
    case DType::kFloat32: static_cast<float*>(base)[i] = v; break;
    case DType::kFloat16: static_cast<uint16_t*>(base)[i] = numeric::float_to_half(v); break;
    default: static_cast<uint16_t*>(base)[i] = numeric::float_to_bf16(v); break;
  }
}

}  // namespace flash::ops
