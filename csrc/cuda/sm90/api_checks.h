// Host-side checks shared by the sm90 forward and backward `supports_*` functions: what TMA can
// describe, the device generation sm_90a code runs on, and the "which argument blocks this path"
// convention of the dispatcher.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace flash::sm90::checks {

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// A stride TMA can take: a multiple of 16 bytes below 2^40 bytes (16-bit elements). Dimensions of
// extent 1 never use their stride (the launchers substitute a valid one), so any value passes there.
inline bool tma_stride_ok(int64_t stride_elems, int extent) {
  if (extent <= 1) return true;
  const int64_t bytes = stride_elems * 2;
  return bytes > 0 && bytes % 16 == 0 && bytes < (int64_t(1) << 40);
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
