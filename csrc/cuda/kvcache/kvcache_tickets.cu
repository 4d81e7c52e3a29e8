// Arrival counters for the single-launch split-KV combine (see kvcache_split_merge.cuh).
//
// The caller's workspace is uninitialised, and zeroing counters in it would cost a memset launch
// per call (what the single launch is meant to save). Instead each device gets one buffer,
// allocated and zeroed once, cut into kSlots regions of kMaxTicketsPerCall counters. The kernel
// leaves every counter it used at zero again, so a region can be reused by the next call as long
// as the two calls cannot run at the same time: a region is therefore owned by one stream (calls
// on one stream are serialised). Streams get regions first come first served; a stream beyond
// the kSlots-th, a device >= 64, or a first use during graph capture (no cudaMalloc/sync there)
// gets nullptr and the caller falls back to the two-kernel path, which needs no counters.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>

#include "cuda/kvcache/kvcache_args.h"

namespace flash::kvcache_cuda {
namespace {

constexpr int kMaxDevices = 64;
constexpr int kSlots = 32;  // streams per device with their own counters

struct DeviceTickets {
  unsigned* base = nullptr;  // kSlots * kMaxTicketsPerCall counters, zeroed
  bool failed = false;       // allocation failed once: do not retry on the hot path
  cudaStream_t owner[kSlots] = {};
  bool used[kSlots] = {};
};

std::mutex g_mutex;
DeviceTickets g_devices[kMaxDevices];

bool allocate(DeviceTickets& d, cudaStream_t stream) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  if (capture != cudaStreamCaptureStatusNone) return false;  // try again on an eager call
  const size_t bytes = sizeof(unsigned) * kSlots * kMaxTicketsPerCall;
  void* p = nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    cudaGetLastError();
    d.failed = true;
    return false;
  }
  // Zeroed on the caller's stream and waited for: any later call, on any stream, is issued after
  // this host call returns and so finds zeros.
  if (cudaMemsetAsync(p, 0, bytes, stream) != cudaSuccess ||
      cudaStreamSynchronize(stream) != cudaSuccess) {
    cudaGetLastError();
    cudaFree(p);
    d.failed = true;
    return false;
  }
  d.base = static_cast<unsigned*>(p);
  return true;
}

}  // namespace

unsigned* split_tickets(int64_t count, void* stream_ptr) {
  static const bool disabled = std::getenv("FLASH_KVCACHE_NO_FUSED_COMBINE") != nullptr;
  if (disabled || count <= 0 || count > kMaxTicketsPerCall) return nullptr;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  if (device < 0 || device >= kMaxDevices) return nullptr;
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceTickets& d = g_devices[device];
  if (d.failed) return nullptr;
  if (d.base == nullptr && !allocate(d, stream)) return nullptr;
  for (int s = 0; s < kSlots; ++s) {
    if (d.used[s] && d.owner[s] == stream) return d.base + s * kMaxTicketsPerCall;
  }
  for (int s = 0; s < kSlots; ++s) {
    if (!d.used[s]) {
      d.used[s] = true;
      d.owner[s] = stream;
      return d.base + s * kMaxTicketsPerCall;
    }
  }
  return nullptr;  // more streams than regions: the two-kernel path
}

}  // namespace flash::kvcache_cuda
