// CUDA backend of flash::apply_rotary: one kernel for forward and backward (the backward is the
// conjugate rotation, i.e. sin negated), memory-bound, 16-byte vectorised.
//
// Work decomposition: a thread owns one "unit" of one head of one token:
//   not interleaved: V frequencies -> the V-vector at dim f and its partner V-vector at f + half;
//   interleaved:     V consecutive dims (V/2 adjacent pairs);
//   copy unit:       V dims past rotary_dim, moved unchanged (only when out != x).
// V = 16 bytes / sizeof(T) when every pointer, stride and dim allows it; otherwise the scalar
// kernel runs with V = 1 pair (or 1 copied element) per unit. blockDim.x threads walk the
// (head, unit) grid of one token and blockDim.y tokens share a block, so every block has 256
// threads whatever nheads * units is; reading and writing a token's row is then fully coalesced.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "common/rotary.h"
#include "flash/errors.h"
#include "rotary/rotary_backend.h"

namespace flash::rotary {
namespace {

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// N elements moved as one aligned access (ld/st.global.v4 for 16 bytes).
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// Where token (b, s) lives, or false when s is past the end of a varlen sequence.
struct TokenAddr {
  int64_t x, out;  // element offsets of the token's row
  int pos;         // rotary position
};

__device__ __forceinline__ bool locate_token(const RotaryParams& p, int token, TokenAddr& a) {
  const int b = token / p.seqlen;
  const int s = token - b * p.seqlen;
  if (p.cu_seqlens != nullptr) {
    const int start = p.cu_seqlens[b];
    if (s >= p.cu_seqlens[b + 1] - start) return false;
    a.x = static_cast<int64_t>(start + s) * p.x_row_stride;
    a.out = static_cast<int64_t>(start + s) * p.out_row_stride;
  } else {
    a.x = b * p.x_batch_stride + s * p.x_row_stride;
    a.out = b * p.out_batch_stride + s * p.out_row_stride;
  }
  a.pos = (p.seqlen_offsets != nullptr ? p.seqlen_offsets[b] : p.seqlen_offset) + s;
  return true;
}

// cos/sin of N consecutive frequencies from f; identity (1, 0) past the table, as flash-attn.
template <typename TC, int N>
__device__ __forceinline__ void load_cos_sin(const RotaryParams& p, int pos, int f, bool vec_ok, float sin_sign,
                                             float (&c)[N], float (&s)[N]) {
  if (pos < 0 || pos >= p.seqlen_ro) {
#pragma unroll
    for (int i = 0; i < N; ++i) c[i] = 1.0f, s[i] = 0.0f;
    return;
  }
  const TC* cp = static_cast<const TC*>(p.cos) + pos * p.cos_row_stride + f;
  const TC* sp = static_cast<const TC*>(p.sin) + pos * p.sin_row_stride + f;
  if (vec_ok) {
    const Vec<TC, N> cv = *reinterpret_cast<const Vec<TC, N>*>(cp);
    const Vec<TC, N> sv = *reinterpret_cast<const Vec<TC, N>*>(sp);
#pragma unroll
    for (int i = 0; i < N; ++i) c[i] = to_float(cv.v[i]), s[i] = sin_sign * to_float(sv.v[i]);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) c[i] = to_float(cp[i]), s[i] = sin_sign * to_float(sp[i]);
  }
}

template <typename T, typename TC, int V, bool kInterleaved>
__global__ void __launch_bounds__(256) rotary_vec_kernel(const RotaryParams p, int rot_units, int units_per_head,
                                                         bool cos_vec_ok, float sin_sign) {
  const int token = blockIdx.x * blockDim.y + threadIdx.y;
  const int j = blockIdx.y * blockDim.x + threadIdx.x;
  if (token >= p.batch * p.seqlen || j >= p.nheads * units_per_head) return;
  TokenAddr a;
  if (!locate_token(p, token, a)) return;
  const int h = j / units_per_head;
  const int u = j - h * units_per_head;
  const T* x = static_cast<const T*>(p.x) + a.x + h * p.x_head_stride;
  T* out = static_cast<T*>(p.out) + a.out + h * p.out_head_stride;
  using VecT = Vec<T, V>;

  if (u >= rot_units) {  // pass-through dims (out != x only)
    const int d = p.rotary_dim + (u - rot_units) * V;
    *reinterpret_cast<VecT*>(out + d) = *reinterpret_cast<const VecT*>(x + d);
    return;
  }
  if constexpr (kInterleaved) {
    const int d = u * V;
    const VecT xv = *reinterpret_cast<const VecT*>(x + d);
    float c[V / 2], s[V / 2];
    load_cos_sin<TC, V / 2>(p, a.pos, d / 2, cos_vec_ok, sin_sign, c, s);
    VecT ov;
#pragma unroll
    for (int i = 0; i < V / 2; ++i) {
      const float x0 = to_float(xv.v[2 * i]), x1 = to_float(xv.v[2 * i + 1]);
      ov.v[2 * i] = from_float<T>(rotary_element(x0, x1, c[i], s[i], true));
      ov.v[2 * i + 1] = from_float<T>(rotary_element(x1, x0, c[i], s[i], false));
    }
    *reinterpret_cast<VecT*>(out + d) = ov;
  } else {
    const int f = u * V;
    const int half = p.rotary_dim / 2;
    const VecT x0v = *reinterpret_cast<const VecT*>(x + f);
    const VecT x1v = *reinterpret_cast<const VecT*>(x + f + half);
    float c[V], s[V];
    load_cos_sin<TC, V>(p, a.pos, f, cos_vec_ok, sin_sign, c, s);
    VecT o0, o1;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float x0 = to_float(x0v.v[i]), x1 = to_float(x1v.v[i]);
      o0.v[i] = from_float<T>(rotary_element(x0, x1, c[i], s[i], true));
      o1.v[i] = from_float<T>(rotary_element(x1, x0, c[i], s[i], false));
    }
    *reinterpret_cast<VecT*>(out + f) = o0;
    *reinterpret_cast<VecT*>(out + f + half) = o1;
  }
}

// Fallback for layouts the vector kernel cannot take (odd strides, misaligned views, small dims):
// a unit is one pair, or one copied dim.
template <typename T, typename TC>
__global__ void __launch_bounds__(256) rotary_scalar_kernel(const RotaryParams p, int units_per_head, float sin_sign) {
  const int token = blockIdx.x * blockDim.y + threadIdx.y;
  const int j = blockIdx.y * blockDim.x + threadIdx.x;
  if (token >= p.batch * p.seqlen || j >= p.nheads * units_per_head) return;
  TokenAddr a;
  if (!locate_token(p, token, a)) return;
  const int h = j / units_per_head;
  const int u = j - h * units_per_head;
  const T* x = static_cast<const T*>(p.x) + a.x + h * p.x_head_stride;
  T* out = static_cast<T*>(p.out) + a.out + h * p.out_head_stride;
  const int half = p.rotary_dim / 2;
  if (u >= half) {
    const int d = p.rotary_dim + (u - half);
    out[d] = x[d];
    return;
  }
  const int d0 = p.interleaved ? 2 * u : u;
  const int d1 = rotary_partner(d0, p.rotary_dim, p.interleaved);
  float c[1], s[1];
  load_cos_sin<TC, 1>(p, a.pos, u, false, sin_sign, c, s);
  const float x0 = to_float(x[d0]), x1 = to_float(x[d1]);
  out[d0] = from_float<T>(rotary_element(x0, x1, c[0], s[0], true));
  out[d1] = from_float<T>(rotary_element(x1, x0, c[0], s[0], false));
}

bool aligned(const void* ptr, int bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

// Grid: blockDim.x threads over (head, unit) of a token, blockDim.y tokens per block (256 threads).
void launch_shape(const RotaryParams& p, int units_per_head, dim3& grid, dim3& block) {
  const int per_token = p.nheads * units_per_head;
  const int bx = per_token >= 256 ? 256 : ((per_token + 31) / 32) * 32;
  const int by = 256 / bx;
  const int64_t tokens = static_cast<int64_t>(p.batch) * p.seqlen;
  block = dim3(bx, by);
  grid = dim3(static_cast<unsigned>((tokens + by - 1) / by), static_cast<unsigned>((per_token + bx - 1) / bx));
  if (tokens > INT32_MAX || grid.y > 65535)
    throw Error("x", "too large for the rotary kernel (batch * seqlen must fit in int32)");
}

template <typename T, typename TC>
void launch_typed(const RotaryParams& p, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const int half = p.rotary_dim / 2;
  const bool copy_tail = p.out != p.x;
  const float sin_sign = p.conjugate ? -1.0f : 1.0f;
  auto strides_ok = [&](int64_t a, int64_t b, int64_t c) { return a % V == 0 && b % V == 0 && c % V == 0; };
  const bool vec_ok = aligned(p.x, 16) && aligned(p.out, 16) &&
                      strides_ok(p.cu_seqlens ? 0 : p.x_batch_stride, p.x_row_stride, p.x_head_stride) &&
                      strides_ok(p.cu_seqlens ? 0 : p.out_batch_stride, p.out_row_stride, p.out_head_stride) &&
                      (p.interleaved ? p.rotary_dim % V == 0 : half % V == 0) &&
                      (!copy_tail || (p.headdim - p.rotary_dim) % V == 0);
  dim3 grid, block;
  if (vec_ok) {
    const int n_cs = p.interleaved ? V / 2 : V;  // cos/sin values one unit reads
    const int cs_bytes = n_cs * static_cast<int>(sizeof(TC));
    const bool cos_vec_ok = aligned(p.cos, cs_bytes) && aligned(p.sin, cs_bytes) && p.cos_row_stride % n_cs == 0 &&
                            p.sin_row_stride % n_cs == 0;
    const int rot_units = p.interleaved ? p.rotary_dim / V : half / V;
    const int units = rot_units + (copy_tail ? (p.headdim - p.rotary_dim) / V : 0);
    launch_shape(p, units, grid, block);
    if (p.interleaved)
      rotary_vec_kernel<T, TC, V, true><<<grid, block, 0, stream>>>(p, rot_units, units, cos_vec_ok, sin_sign);
    else
      rotary_vec_kernel<T, TC, V, false><<<grid, block, 0, stream>>>(p, rot_units, units, cos_vec_ok, sin_sign);
  } else {
    const int units = half + (copy_tail ? p.headdim - p.rotary_dim : 0);
    launch_shape(p, units, grid, block);
    rotary_scalar_kernel<T, TC><<<grid, block, 0, stream>>>(p, units, sin_sign);
  }
}

template <typename T>
void launch_for_cos(const RotaryParams& p, cudaStream_t stream) {
  switch (p.cos_dtype) {
    case DType::kFloat32: return launch_typed<T, float>(p, stream);
    case DType::kFloat16: return launch_typed<T, __half>(p, stream);
    case DType::kBFloat16: return launch_typed<T, __nv_bfloat16>(p, stream);
  }
  throw Error("cos", "unsupported dtype");
}

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw DeviceError(std::string("flash_attn rotary: CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

// Makes p.device_index current for the launch and restores the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
    target_ = device;
  }
  ~DeviceGuard() {
    if (previous_ != target_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0, target_ = 0;
};

}  // namespace

void run_cuda(const RotaryParams& p, void* stream_ptr) {
  DeviceGuard guard(p.device_index);
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  switch (p.dtype) {
    case DType::kFloat32: launch_for_cos<float>(p, stream); break;
    case DType::kFloat16: launch_for_cos<__half>(p, stream); break;
    case DType::kBFloat16: launch_for_cos<__nv_bfloat16>(p, stream); break;
  }
  check_cuda(cudaGetLastError(), "rotary kernel launch");
}

}  // namespace flash::rotary
