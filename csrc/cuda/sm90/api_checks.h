// Host-side checks shared by the sm90 forward and backward `supports_*` functions: what TMA can
// describe, the device generation sm_90a code runs on, and the "which argument blocks this path"
// convention of the dispatcher.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "flash/types.h"

namespace flash::sm90::checks {

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// A stride TMA can take: a multiple of 16 bytes below 2^40 bytes (16-bit elements). Dimensions of
// extent 1 never use their stride (the launchers substitute a valid one), so any value passes there.
inline bool tma_stride_ok(int64_t stride_elems, int extent) {
  if (extent <= 1) return true;
  const int64_t bytes = stride_elems * 2;
  return bytes > 0 && bytes % 16 == 0 && bytes < (int64_t(1) << 40);
}

// Whether the build kept the (dtype, head_dim) instantiations (CMake's FLASH_HDIM_<D>_ENABLED /
// FLASH_<FP16|BF16>_ENABLED; a build that defines none of them has everything). Callers check
// first that head_dim is one their path supports.
inline bool instantiation_built(DType dtype, int head_dim) {
#if !defined(FLASH_FP16_ENABLED) && !defined(FLASH_BF16_ENABLED)
  (void)dtype;
  (void)head_dim;
  return true;
#else
  bool dtype_ok = false, hdim_ok = false;
#if defined(FLASH_FP16_ENABLED)
  dtype_ok |= dtype == DType::kFloat16;
#endif
#if defined(FLASH_BF16_ENABLED)
  dtype_ok |= dtype == DType::kBFloat16;
#endif
#if defined(FLASH_HDIM_64_ENABLED)
  hdim_ok |= head_dim == 64;
#endif
#if defined(FLASH_HDIM_96_ENABLED)
  hdim_ok |= head_dim == 96;
#endif
#if defined(FLASH_HDIM_128_ENABLED)
  hdim_ok |= head_dim == 128;
#endif
#if defined(FLASH_HDIM_192_ENABLED)
  hdim_ok |= head_dim == 192;
#endif
#if defined(FLASH_HDIM_256_ENABLED)
  hdim_ok |= head_dim == 256;
#endif
  return dtype_ok && hdim_ok;
#endif
}

// A (rows, heads, batch) tensor a TMA descriptor can describe: 16-byte aligned base, TMA strides.
inline bool tma_tensor_ok(const void* ptr, int64_t rs, int rows, int64_t hs, int heads, int64_t bs,
                          int batch) {
  return aligned16(ptr) && tma_stride_ok(rs, rows) && tma_stride_ok(hs, heads) &&
         tma_stride_ok(bs, batch);
}

// Plain 16-byte vector access (backward preprocess loads, dQ convert stores, dK/dV stores).
inline bool vec_tensor_ok(const void* ptr, int64_t bs, int64_t rs, int64_t hs) {
  return aligned16(ptr) && bs % 8 == 0 && rs % 8 == 0 && hs % 8 == 0;
}

// *why gets the name of the argument that blocks this path (the dispatcher reports it).
inline bool fail(std::string* why, const char* argument) {
  if (why) *why = argument;
  return false;
}

// sm_90a code runs on compute capability 9.0 only.
inline bool device_is_sm90(int device_index) {
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_index) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device_index) != cudaSuccess) {
    cudaGetLastError();  // clear the error so later calls are not confused
    return false;
  }
  return major == 9 && minor == 0;
}

}  // namespace flash::sm90::checks
