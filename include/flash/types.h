// Small vocabulary types shared by the public API and every backend.
#pragma once

#include <cstdint>

namespace flash {

// Element type of q, k, v, out and their gradients. The CPU backend takes all three;
// the CUDA backends take kFloat16 and kBFloat16.
enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Where the tensors live. Every pointer of one call lives on the same device.
enum class Device : int32_t { kCPU = 0, kCUDA = 1 };

// Which implementation ran (returned by the entry points; observable by tests and benchmarks).
enum class Impl : int32_t { kCpu = 0, kSm80 = 1, kSm90 = 2 };

// Which CUDA path the dispatcher may choose. kAuto picks the fastest supported one.
enum class CudaPath : int32_t { kAuto = 0, kSm80 = 1, kSm90 = 2 };

const char* to_string(DType);
const char* to_string(Impl);

inline int dtype_size(DType t) { return t == DType::kFloat32 ? 4 : 2; }

}  // namespace flash
