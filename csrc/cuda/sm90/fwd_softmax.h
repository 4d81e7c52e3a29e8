// Online softmax over the wgmma accumulator fragments of one consumer thread.
//
// The wgmma C fragment of a 64xN atom gives each thread values ((2,2,N/8), MMA_M, MMA_N):
// mode 0,0 = two adjacent columns, mode 0,1 = rows r and r+8, mode 0,2 = the N/8 column groups.
// `rowcol` re-views it as (rows, cols) so that the softmax code below reads like the math.
// The 4 threads of a quad (lanes 4r..4r+3) hold all columns of the same rows, so a row reduction
// is a thread-local reduction plus two xor-shuffles.
#pragma once

#include <cmath>

#include <cute/tensor.hpp>

namespace flash::sm90 {

using namespace cute;

template <typename Layout_>
__device__ __forceinline__ constexpr auto rowcol(Layout_ const& l) {
  static_assert(decltype(rank<0>(l))::value == 3, "expects a wgmma accumulator layout");
  return make_layout(make_layout(get<0, 1>(l), get<1>(l)),
                     make_layout(get<0, 0>(l), get<0, 2>(l), get<2>(l)));
}

template <typename Tensor_>
__device__ __forceinline__ auto rowcol_view(Tensor_&& t) {
  return make_tensor(t.data(), rowcol(t.layout()));
}

// 2^x with the hardware approximation alone (MUFU.EX2, relative error ~2^-22). exp2f() without
// --use_fast_math wraps the same instruction in a denormal-range fix-up (compare, 2 multiplies),
// which costs three extra ALU ops per score -- the softmax is ALU/MUFU-bound at d=64. Results
// below 2^-126 flush to 0 (negligible next to the row maximum's weight 1); exp2(-inf) = 0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Scores arrive in "score units" u; the softmax weight of a score is exp2(u * scale_log2 - m),
// i.e. scale_log2 folds softmax_scale and log2(e) into the one FFMA per element before exp2.
template <int kRows>
struct OnlineSoftmax {
  float row_max[kRows];  // running max in score units; -inf while the row has seen nothing
  float row_sum[kRows];  // this thread's partial sum (quad-reduced only at the end)
  float scale_log2;

  __device__ __forceinline__ explicit OnlineSoftmax(float scale_log2_) : scale_log2(scale_log2_) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) { row_max[r] = -INFINITY; row_sum[r] = 0.f; }
  }

  // Turns S (rowcol view, fp32, masked entries -inf) into unnormalised probabilities in place and
  // returns, per row, the factor exp2(old_max - new_max) by which O must be rescaled. O itself is
  // not touched, so that this can run while the previous P V wgmma still writes O.
  // kIlp (opt-in variant, fwd_variant.h): the same math with shorter dependency chains. The
  // default form reduces each row with one serial chain of kCols FMNMX (and later kCols FADD)
  // and finishes row 0 before row 1 starts: at d=64 the softmax latency, not its instruction
  // count, decides how much of it the other warpgroup's GEMMs can hide.
  template <bool kIlp = false, typename TS>
  __device__ __forceinline__ void scores_to_probs(TS& S, float (&correction)[kRows]) {
    static_assert(decltype(size<0>(S))::value == kRows);
    if constexpr (kIlp) {
      scores_to_probs_ilp(S, correction);
    } else {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        float m = row_max[r];
#pragma unroll
        for (int c = 0; c < size<1>(S); ++c) m = fmaxf(m, S(r, c));
        m = quad_max(m);
        // A row that has seen only masked keys keeps max -inf; use 0 as the offset then so that
        // exp2(-inf - 0) = 0 instead of exp2(-inf + inf) = NaN.
        const float m_scaled = (m == -INFINITY) ? 0.f : m * scale_log2;
        correction[r] = fast_exp2(row_max[r] * scale_log2 - m_scaled);  // 0 on the first block
        row_max[r] = m;
        float sum = 0.f;
#pragma unroll
        for (int c = 0; c < size<1>(S); ++c) {
          const float pr = fast_exp2(S(r, c) * scale_log2 - m_scaled);
          S(r, c) = pr;
          sum += pr;
        }
        row_sum[r] = row_sum[r] * correction[r] + sum;
      }
    }
  }

  // 4 partial maxima / sums per row (kCols % 4 == 0), all rows interleaved; the quad shuffles of
  // all rows are issued together. max is exact in any order; the sum's rounding order changes
  // (fp32, 4 partial sums of kCols / 4 terms each, then combined), as any reassociation would.
  template <typename TS>
  __device__ __forceinline__ void scores_to_probs_ilp(TS& S, float (&correction)[kRows]) {
    constexpr int kCols = decltype(size<1>(S))::value;
    static_assert(kCols % 4 == 0, "4 partial results per row");
    float mx[kRows][4];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int j = 0; j < 4; ++j) mx[r][j] = S(r, j);
    }
#pragma unroll
    for (int c = 4; c < kCols; c += 4) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int j = 0; j < 4; ++j) mx[r][j] = fmaxf(mx[r][j], S(r, c + j));
      }
    }
    float m[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r)
      m[r] = fmaxf(fmaxf(fmaxf(mx[r][0], mx[r][1]), fmaxf(mx[r][2], mx[r][3])), row_max[r]);
#pragma unroll
    for (int r = 0; r < kRows; ++r) m[r] = fmaxf(m[r], __shfl_xor_sync(0xffffffffu, m[r], 1));
#pragma unroll
    for (int r = 0; r < kRows; ++r) m[r] = fmaxf(m[r], __shfl_xor_sync(0xffffffffu, m[r], 2));
    float m_scaled[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      // As in the default form: a row without any visible key so far keeps max -inf, offset 0.
      m_scaled[r] = (m[r] == -INFINITY) ? 0.f : m[r] * scale_log2;
      correction[r] = fast_exp2(row_max[r] * scale_log2 - m_scaled[r]);
      row_max[r] = m[r];
    }
    float sum[kRows][4];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int j = 0; j < 4; ++j) sum[r][j] = 0.f;
    }
#pragma unroll
    for (int c = 0; c < kCols; c += 4) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float pr = fast_exp2(S(r, c + j) * scale_log2 - m_scaled[r]);
          S(r, c + j) = pr;
          sum[r][j] += pr;
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r)
      row_sum[r] = row_sum[r] * correction[r] + ((sum[r][0] + sum[r][1]) + (sum[r][2] + sum[r][3]));
  }

  template <typename TO>
  __device__ __forceinline__ static void rescale(TO& O, const float (&correction)[kRows]) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int c = 0; c < size<1>(O); ++c) O(r, c) *= correction[r];
    }
  }

  // Normalises O (times out_scale: 1 / (1 - p) with dropout) and returns the natural-log LSE of
  // each row (+inf for a row without keys).
  template <typename TO>
  __device__ __forceinline__ void finalize(TO& O, float (&lse)[kRows], float out_scale = 1.f) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float sum = quad_sum(row_sum[r]);
      const bool empty = !(sum > 0.f);  // also catches NaN
      const float inv = empty ? 0.f : out_scale / sum;
      lse[r] = empty ? INFINITY : (row_max[r] * scale_log2 + log2f(sum)) * 0.69314718055994531f;
#pragma unroll
      for (int c = 0; c < size<1>(O); ++c) O(r, c) *= inv;
    }
  }
};

}  // namespace flash::sm90
