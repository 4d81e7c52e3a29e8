// Host emulation of the CUDA primitives the kvcache kernels use (threads = std::thread per CTA).
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <vector_types.h>
#include <vector_functions.h>
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
using std::max; using std::min;
struct Dim3E { unsigned x, y, z; };
extern thread_local Dim3E threadIdx;
extern Dim3E blockIdx;
extern unsigned char* g_smem;
extern std::unique_ptr<std::barrier<>> g_bar;
extern std::unique_ptr<std::barrier<>> g_warp_bar[8];
inline void __syncthreads() { g_bar->arrive_and_wait(); }
inline void warp_sync() { g_warp_bar[threadIdx.x / 32]->arrive_and_wait(); }
extern float g_xf[8][32];
extern const void* g_xp[8][32];
extern uint32_t g_xa[8][32][4];
extern uint32_t g_xb[8][32][2];
inline float __shfl_xor_sync(unsigned, float v, int off) {
  int w = threadIdx.x / 32, l = threadIdx.x % 32;
  g_xf[w][l] = v; warp_sync(); float r = g_xf[w][l ^ off]; warp_sync(); return r;
}
template <class T> inline T __ldg(const T* p) { return *p; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
#undef __global__
#undef __device__
#undef __forceinline__
#define __global__
#define __device__
#define __forceinline__
#define __launch_bounds__(...)
namespace flash::kvcache_cuda {
template <typename T> struct ElemTraits;
template <typename E> inline float h2f(uint16_t u) { E e; std::memcpy(&e, &u, 2); if constexpr (std::is_same_v<E, __half>) return __half2float(e); else return __bfloat162float(e); }
template <typename E> inline void emu_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  int w = threadIdx.x / 32, l = threadIdx.x % 32;
  for (int i = 0; i < 4; ++i) g_xa[w][l][i] = a[i];
  g_xb[w][l][0] = b0; g_xb[w][l][1] = b1;
  warp_sync();
  float A[16][16], B[16][8];
  for (int ln = 0; ln < 32; ++ln) {
    int g = ln >> 2, t = ln & 3;
    auto lo = [](uint32_t x) { return (uint16_t)(x & 0xffff); };
    auto hi = [](uint32_t x) { return (uint16_t)(x >> 16); };
    const uint32_t* ra = g_xa[w][ln];
    A[g][2*t] = h2f<E>(lo(ra[0])); A[g][2*t+1] = h2f<E>(hi(ra[0]));
    A[g+8][2*t] = h2f<E>(lo(ra[1])); A[g+8][2*t+1] = h2f<E>(hi(ra[1]));
    A[g][2*t+8] = h2f<E>(lo(ra[2])); A[g][2*t+9] = h2f<E>(hi(ra[2]));
    A[g+8][2*t+8] = h2f<E>(lo(ra[3])); A[g+8][2*t+9] = h2f<E>(hi(ra[3]));
    B[2*t][g] = h2f<E>(lo(g_xb[w][ln][0])); B[2*t+1][g] = h2f<E>(hi(g_xb[w][ln][0]));
    B[2*t+8][g] = h2f<E>(lo(g_xb[w][ln][1])); B[2*t+9][g] = h2f<E>(hi(g_xb[w][ln][1]));
  }
  warp_sync();
  int g = l >> 2, t = l & 3;
  int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2*t, 2*t+1, 2*t, 2*t+1};
  for (int e = 0; e < 4; ++e) { float s = 0; for (int k = 0; k < 16; ++k) s += A[rows[e]][k] * B[k][cols[e]]; d[e] += s; }
}
template <> struct ElemTraits<__half> {
  static float to_float(__half x) { return __half2float(x); }
  static __half from_float(float x) { return __float2half_rn(x); }
  static uint32_t pack2(float lo, float hi) { __half2 h = __floats2half2_rn(lo, hi); uint32_t u; std::memcpy(&u, &h, 4); return u; }
  static void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) { emu_mma<__half>(d, a, b0, b1); }
};
template <> struct ElemTraits<__nv_bfloat16> {
  static float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
  static uint32_t pack2(float lo, float hi) { __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi); uint32_t u; std::memcpy(&u, &h, 4); return u; }
  static void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) { emu_mma<__nv_bfloat16>(d, a, b0, b1); }
};
inline void cp_async_16(void* dst, const void* src, bool valid) { if (valid) std::memcpy(dst, src, 16); else std::memset(dst, 0, 16); }
inline void cp_async_commit() {}
template <int N> inline void cp_async_wait() {}
// CTAs run one after another here, so the arrival counter needs no atomicity.
inline float load_cg(const float* p) { return *p; }
inline float4 load_cg(const float4* p) { return *p; }
inline void fence_device() {}
inline unsigned ticket_arrive(unsigned* counter) { return (*counter)++; }
inline void ldmatrix_common(uint32_t (&r)[4], const void* p, bool trans) {
  int w = threadIdx.x / 32, l = threadIdx.x % 32;
  g_xp[w][l] = p; warp_sync();
  int g = l >> 2, t = l & 3;
  for (int i = 0; i < 4; ++i) {
    uint16_t lo, hi;
    if (!trans) { const uint16_t* row = (const uint16_t*)g_xp[w][8*i + g]; lo = row[2*t]; hi = row[2*t+1]; }
    else { lo = ((const uint16_t*)g_xp[w][8*i + 2*t])[g]; hi = ((const uint16_t*)g_xp[w][8*i + 2*t + 1])[g]; }
    r[i] = lo | ((uint32_t)hi << 16);
  }
  warp_sync();
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) { ldmatrix_common(r, p, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) { ldmatrix_common(r, p, true); }
}  // namespace flash::kvcache_cuda
