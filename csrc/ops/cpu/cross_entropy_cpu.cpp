// CPU backend of flash::cross_entropy_fwd / _bwd: the same one-pass online max / sum-exp per row as
// the CUDA kernel, fp32 accumulation, rows in parallel.
#include <cmath>
#include <limits>

#include "ops/cpu/elem_access.h"
#include "ops/ops_backend.h"

namespace flash::ops {

void cross_entropy_fwd_cpu(const CrossEntropyParams& p) {
  const float scale = p.logit_scale;
  const float eps = p.label_smoothing;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < p.rows; ++r) {
    const int64_t base = r * p.logits_row_stride;
    float m = -std::numeric_limits<float>::infinity(), s = 0.f, sum_z = 0.f;
    for (int64_t j = 0; j < p.vocab; ++j) {
      const float z = scale * load_elem(p.logits, p.dtype, base + j);
      sum_z += z;
      if (z > m) {
        s = s * std::exp(m - z) + 1.f;  // exp(-inf) = 0 on the first finite value
        m = z;
      } else {
        s += std::exp(z - m);
      }
    }
    const float lse = m + std::log(s);
    const int64_t label = p.labels[r];
    const int64_t col = label - p.vocab_start;
    const float target = (col >= 0 && col < p.vocab) ? scale * load_elem(p.logits, p.dtype, base + col) : 0.f;
    p.lse[r] = lse;
    if (p.target) p.target[r] = target;
    if (p.sum_z) p.sum_z[r] = sum_z;
    const bool ignored = label == p.ignore_index;
    const float zl = ignored ? 0.f : p.lse_square_scale * lse * lse;
    if (p.loss) {
      const float ce = lse - (1.f - eps) * target - eps / static_cast<float>(p.total_classes) * sum_z;
      p.loss[r] = ignored ? 0.f : ce + zl;
    }
    if (p.z_loss) p.z_loss[r] = zl;
  }
}

void cross_entropy_bwd_cpu(const CrossEntropyParams& p) {
  const float scale = p.logit_scale;
  const float eps = p.label_smoothing;
  const float smooth = eps / static_cast<float>(p.total_classes);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < p.rows; ++r) {
    const int64_t in = r * p.logits_row_stride, out = r * p.dlogits_row_stride;
    const int64_t label = p.labels[r];
    if (label == p.ignore_index) {
      for (int64_t j = 0; j < p.vocab; ++j) store_elem(p.dlogits, p.dtype, out + j, 0.f);
      continue;
    }
    const float lse = p.lse[r];
    const float g = p.dloss[r * p.dloss_stride] * scale;
    const float pscale = 1.f + 2.f * p.lse_square_scale * lse;
    const int64_t col = label - p.vocab_start;
    for (int64_t j = 0; j < p.vocab; ++j) {
      const float z = scale * load_elem(p.logits, p.dtype, in + j);
      float d = std::exp(z - lse) * pscale - smooth;
      if (j == col) d -= 1.f - eps;
      store_elem(p.dlogits, p.dtype, out + j, g * d);
    }
  }
}

}  // namespace flash::ops
