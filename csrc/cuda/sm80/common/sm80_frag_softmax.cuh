// Offers: online (streaming) softmax on m16n8 fp32 accumulator fragments, for Ampere-class
// kernels. Each thread holds, per m-tile, two rows (g and g + 8); a row's 8 NT values per tile
// are spread across the 4 threads of a quad, so row reductions use two xor-shuffles.
//
// Scores enter in "logit units" x with probability proportional to exp2(x * scale_log2):
// without softcap/ALiBi x is the raw q.k and scale_log2 = softmax_scale * log2(e) (one FFMA +
// exp2f per element); with them x is the final natural-log score and scale_log2 = log2(e).
#pragma once

#include <cmath>

namespace flash::sm80 {

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <int MT>
struct OnlineSoftmax {
  float row_max[MT][2];  // running max of x (logit units); -inf while the row saw nothing
  float row_sum[MT][2];  // thread-partial running sum of exp2((x - max) * scale_log2)

  __device__ __forceinline__ void init() {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) { row_max[mt][h] = -INFINITY; row_sum[mt][h] = 0.f; }
  }

  // The exponent offset of a row: a row that has seen nothing keeps -inf scores, which must map
  // to exp2(-inf) = 0 rather than NaN, so it uses offset 0.
  __device__ __forceinline__ static float offset_of(float m, float scale_log2) {
    return m == -INFINITY ? 0.f : m * scale_log2;
  }

  // Folds a block of scores into the running state: updates max, rescales o and the sums, and
  // turns s into unnormalised probabilities exp2(x * scale_log2 - max * scale_log2).
  template <int NT, int DT>
  __device__ __forceinline__ void update(float (&s)[MT][NT][4], float (&o)[MT][DT][4], float scale_log2) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float m = row_max[mt][h];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) m = fmaxf(m, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
        m = quad_max(m);
        const float off = offset_of(m, scale_log2);
        // exp2(-inf) = 0 when the old max was -inf (o and the sum are 0 then anyway).
        const float corr = exp2f(row_max[mt][h] * scale_log2 - off);
        row_max[mt][h] = m;
        float sum = row_sum[mt][h] * corr;
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) { o[mt][dt][2 * h] *= corr; o[mt][dt][2 * h + 1] *= corr; }
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = exp2f(fmaf(s[mt][nt][2 * h + e], scale_log2, -off));
            s[mt][nt][2 * h + e] = p;
            sum += p;
          }
        row_sum[mt][h] = sum;
      }
    }
  }

  // update() with lazy rescaling (the trick of FlashAttention-4): a row keeps its running max
  // while the block's max exceeds it by at most kLazyLog2 (probabilities then reach at most
  // 2^kLazyLog2 = 256, harmless for fp32 sums / accumulators and for the 16-bit P operand, whose
  // relative precision does not depend on magnitude). Only when some row of the warp needs a new max
  // does the warp run update() (warp-uniform, so no divergence): the O rescale (DT * 4 * MT
  // multiplies) and the correction exponentials disappear from almost every key block. The result
  // is the same softmax; lse() uses the max the sums were taken against.
  static constexpr float kLazyLog2 = 8.f;
  template <int NT, int DT>
  __device__ __forceinline__ void update_lazy(float (&s)[MT][NT][4], float (&o)[MT][DT][4], float scale_log2) {
    float blk_max[MT][2];
    bool need = false;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float m = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) m = fmaxf(m, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
        blk_max[mt][h] = quad_max(m);
        // A row that saw nothing (-inf) and now sees a key needs a max; -inf blocks never do
        // ((-inf) - m is -inf or NaN, both compare false).
        need |= (blk_max[mt][h] - row_max[mt][h]) * scale_log2 > kLazyLog2;
      }
    if (__any_sync(0xffffffffu, need)) {
      update(s, o, scale_log2);
      return;
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float off = offset_of(row_max[mt][h], scale_log2);
        float sum = row_sum[mt][h];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = exp2f(fmaf(s[mt][nt][2 * h + e], scale_log2, -off));
            s[mt][nt][2 * h + e] = p;
            sum += p;
          }
        row_sum[mt][h] = sum;
      }
  }

  // update() / update_lazy() for kernels whose O rows live in other warps (fwd kernel kVarSplitPV):
  // identical arithmetic on s and the running state, but instead of rescaling O the correction factor
  // of each row is returned in corr (what update() would have multiplied O's rows by). Returns
  // whether the rows were rescaled (false: the lazy path kept every row's max, corr untouched).
  template <int NT>
  __device__ __forceinline__ void update_rows(float (&s)[MT][NT][4], float scale_log2, float (&corr)[MT][2]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float m = row_max[mt][h];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) m = fmaxf(m, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
        m = quad_max(m);
        const float off = offset_of(m, scale_log2);
        const float c = exp2f(row_max[mt][h] * scale_log2 - off);
        corr[mt][h] = c;
        row_max[mt][h] = m;
        float sum = row_sum[mt][h] * c;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = exp2f(fmaf(s[mt][nt][2 * h + e], scale_log2, -off));
            s[mt][nt][2 * h + e] = p;
            sum += p;
          }
        row_sum[mt][h] = sum;
      }
    }
  }
  template <int NT>
  __device__ __forceinline__ bool update_lazy_rows(float (&s)[MT][NT][4], float scale_log2, float (&corr)[MT][2],
                                                   bool lazy) {
    bool need = !lazy;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float m = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) m = fmaxf(m, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
        m = quad_max(m);
        need |= (m - row_max[mt][h]) * scale_log2 > kLazyLog2;
      }
    if (__any_sync(0xffffffffu, need)) {
      update_rows(s, scale_log2, corr);
      return true;
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float off = offset_of(row_max[mt][h], scale_log2);
        float sum = row_sum[mt][h];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = exp2f(fmaf(s[mt][nt][2 * h + e], scale_log2, -off));
            s[mt][nt][2 * h + e] = p;
            sum += p;
          }
        row_sum[mt][h] = sum;
      }
    return false;
  }

  // Completes the row sums across the quad (call once, after the last update).
  __device__ __forceinline__ void finalize() {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) row_sum[mt][h] = quad_sum(row_sum[mt][h]);
  }

  // Natural-log sum-exp of a finalized row: max * scale_log2 * ln2 + ln(sum); +inf if empty.
  __device__ __forceinline__ float lse(int mt, int h, float scale_log2) const {
    const float l = row_sum[mt][h];
    if (row_max[mt][h] == -INFINITY || !(l > 0.f)) return INFINITY;
    return row_max[mt][h] * scale_log2 * 0.6931471805599453f + logf(l);
  }
};

}  // namespace flash::sm80
