// Rotary position embedding (RoPE), flash-attn 2.8 semantics, as a standalone C++ API.
//
// x is (batch, seqlen, nheads, headdim) with any element strides (the last dim contiguous), or
// varlen (total, nheads, headdim) with cu_seqlens. For token s of sequence b, at position
// pos = seqlen_offset(b) + s, the first rotary_dim dims of every head are rotated by the angles of
// cos/sin row `pos` (see csrc/common/rotary.h for the pair layout); a position at or past seqlen_ro
// is left unrotated (only possible with per-batch or varlen offsets). Dims past rotary_dim are
// copied to out (nothing to do when out == x, i.e. in place).
// conjugate = true rotates by -theta: the backward pass (the rotation is orthogonal, so its
// gradient is the inverse rotation).
#pragma once

#include <cstdint>

#include "flash/errors.h"
#include "flash/types.h"

namespace flash {

struct RotaryParams {
  Device device = Device::kCPU;
  int device_index = 0;
  DType dtype = DType::kFloat32;  // of x and out

  // Input. Strides are in elements; batch_stride is unused with cu_seqlens.
  const void* x = nullptr;
  int64_t x_batch_stride = 0, x_row_stride = 0, x_head_stride = 0;
  // Output; may equal x (in place), then its strides must equal x's.
  void* out = nullptr;
  int64_t out_batch_stride = 0, out_row_stride = 0, out_head_stride = 0;

  int batch = 0;
  int seqlen = 0;  // fixed length; with cu_seqlens: max_seqlen (an upper bound of every length)
  int nheads = 0;
  int headdim = 0;
  // Varlen: (batch + 1,) int32 prefix sums on x's device; x then has (total, nheads, headdim).
  const int32_t* cu_seqlens = nullptr;

  // cos/sin: (seqlen_ro, rotary_dim / 2), rows row_stride elements apart (0 = rotary_dim / 2).
  const void* cos = nullptr;
  const void* sin = nullptr;
  DType cos_dtype = DType::kFloat32;  // of both cos and sin
  int64_t cos_row_stride = 0, sin_row_stride = 0;
  int seqlen_ro = 0;
  int rotary_dim = 0;  // even, <= headdim

  bool interleaved = false;  // true: GPT-J pairs (2f, 2f+1); false: GPT-NeoX (f, f + rotary_dim/2)
  bool conjugate = false;    // rotate by -theta (backward)

  // Position of a sequence's first token: seqlen_offsets[b] (int32 (batch,) on x's device) when
  // given, else seqlen_offset for every sequence.
  int seqlen_offset = 0;
  const int32_t* seqlen_offsets = nullptr;
};

// Validates p (throws flash::Error naming the argument) and runs the rotation on p.device; on CUDA
// the launch is asynchronous on `stream` (a cudaStream_t; nullptr = the legacy default stream).
// Throws flash::DeviceError if the launch fails or the library was built without CUDA.
void apply_rotary(RotaryParams& p, void* stream = nullptr);

}  // namespace flash
