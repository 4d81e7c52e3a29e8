// CPU backend of flash::norm_fwd / norm_bwd (dropout + add + LayerNorm / RMSNorm), row by row in
// fp32 with the formulas of include/flash/ops.h. Column sums of the backward (dweight...) are
// accumulated per thread and added up at the end, so rows run in parallel.
#include <cmath>
#include <vector>

#include "ops/cpu/elem_access.h"
#include "ops/norm_dropout.h"
#include "ops/ops_backend.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace flash::ops {
namespace {

int64_t subset_row(const int32_t* subset, int64_t r) { return subset ? int64_t{subset[r]} - 1 : r; }

struct RowInputs {
  // a = pre-norm sum; also returns the per-column factor that multiplied x0 (for the backward).
  static void build(const NormParams& p, int64_t r, uint32_t threshold, std::vector<float>& a,
                    std::vector<uint8_t>& keep0, std::vector<uint8_t>& keep1) {
    const int64_t H = p.hidden;
    const float inv_keep = p.dropout_p > 0.f ? 1.f / (1.f - p.dropout_p) : 1.f;
    const int64_t r0 = subset_row(p.x0_subset, r);
    const float rs = (p.rowscale ? p.rowscale[r] : 1.f) * p.rowscale_const;
    for (int64_t j = 0; j < H; ++j) {
      keep0[j] = p.dropout_p > 0.f ? norm_dropout_keep(p.seed, p.offset, 0, r, j, threshold) : 1;
      float v = 0.f;
      if (r0 >= 0) {
        v = load_elem(p.x0, p.in_dtype, r0 * p.x0_row_stride + j) * rs;
        if (p.colscale) v *= load_elem(p.colscale, p.weight_dtype, j);
        v = keep0[j] ? v * inv_keep : 0.f;
      }
      if (p.x1) {
        keep1[j] = p.dropout_p > 0.f ? norm_dropout_keep(p.seed, p.offset, 1, r, j, threshold) : 1;
        const float v1 = load_elem(p.x1, p.in_dtype, r * p.x1_row_stride + j);
        v += keep1[j] ? v1 * inv_keep : 0.f;
      }
      if (p.residual) v += load_elem(p.residual, p.residual_dtype, r * p.residual_row_stride + j);
      a[j] = v;
    }
  }
};

}  // namespace

void norm_fwd_cpu(const NormParams& p) {
  const int64_t H = p.hidden;
  const bool rms = p.kind == NormKind::kRMSNorm;
  const uint32_t threshold = dropout_keep_threshold(p.dropout_p);
#pragma omp parallel
  {
    std::vector<float> a(H);
    std::vector<uint8_t> keep0(H), keep1(H);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < p.rows; ++r) {
      RowInputs::build(p, r, threshold, a, keep0, keep1);
      if (p.residual_out) {
        // The statistics use the value as stored, so the backward (which reloads it) sees the same.
        for (int64_t j = 0; j < H; ++j) {
          store_elem(p.residual_out, p.residual_dtype, r * p.residual_out_row_stride + j, a[j]);
          a[j] = load_elem(p.residual_out, p.residual_dtype, r * p.residual_out_row_stride + j);
        }
      }
      if (p.dmask) for (int64_t j = 0; j < H; ++j) p.dmask[r * H + j] = keep0[j];
      if (p.dmask1) for (int64_t j = 0; j < H; ++j) p.dmask1[r * H + j] = keep1[j];
      float mean = 0.f;
      if (!rms) {
        for (int64_t j = 0; j < H; ++j) mean += a[j];
        mean /= static_cast<float>(H);
      }
      float var = 0.f;
      for (int64_t j = 0; j < H; ++j) var += (a[j] - mean) * (a[j] - mean);
      var /= static_cast<float>(H);
      const float rstd = 1.f / std::sqrt(var + p.eps);
      if (p.mean) p.mean[r] = mean;
      p.rstd[r] = rstd;
      const int64_t ro = subset_row(p.out_subset, r);
      if (ro < 0) continue;
      for (int64_t j = 0; j < H; ++j) {
        const float xhat = (a[j] - mean) * rstd;
        float y = xhat * load_elem(p.weight, p.weight_dtype, j);
        if (p.bias) y += load_elem(p.bias, p.weight_dtype, j);
        store_elem(p.y, p.out_dtype, ro * p.y_row_stride + j, y);
        if (p.weight1) {
          float y1 = xhat * load_elem(p.weight1, p.weight_dtype, j);
          if (p.bias1) y1 += load_elem(p.bias1, p.weight_dtype, j);
          store_elem(p.y1, p.out_dtype, ro * p.y1_row_stride + j, y1);
        }
      }
    }
  }
}

void norm_bwd_cpu(const NormParams& p) {
  const int64_t H = p.hidden;
  const bool rms = p.kind == NormKind::kRMSNorm;
  const uint32_t threshold = dropout_keep_threshold(p.dropout_p);
  const float inv_keep = p.dropout_p > 0.f ? 1.f / (1.f - p.dropout_p) : 1.f;
  int nthreads = 1;
#ifdef _OPENMP
  nthreads = omp_get_max_threads();
#endif
  // Per-thread column sums: dweight, dbias, dweight1, dbias1, dcolscale.
  std::vector<float> partial(static_cast<size_t>(nthreads) * 5 * H, 0.f);
#pragma omp parallel num_threads(nthreads)
  {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    float* dw = partial.data() + static_cast<size_t>(tid) * 5 * H;
    float *db = dw + H, *dw1 = dw + 2 * H, *db1 = dw + 3 * H, *dcs = dw + 4 * H;
    std::vector<float> xhat(H), g(H), dx(H);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < p.rows; ++r) {
      const float mean = rms ? 0.f : p.mean[r];
      const float rstd = p.rstd[r];
      const int64_t ro = subset_row(p.out_subset, r);
      float sum_g = 0.f, sum_gx = 0.f;
      for (int64_t j = 0; j < H; ++j) {
        const float a = load_elem(p.residual_out, p.residual_dtype, r * p.residual_out_row_stride + j);
        xhat[j] = (a - mean) * rstd;
        float gj = 0.f;
        if (ro >= 0) {
          const float dy = load_elem(p.dy, p.out_dtype, ro * p.dy_row_stride + j);
          gj = dy * load_elem(p.weight, p.weight_dtype, j);
          dw[j] += dy * xhat[j];
          db[j] += dy;
          if (p.weight1) {
            const float dy1 = load_elem(p.dy1, p.out_dtype, ro * p.dy1_row_stride + j);
            gj += dy1 * load_elem(p.weight1, p.weight_dtype, j);
            dw1[j] += dy1 * xhat[j];
            db1[j] += dy1;
          }
        }
        g[j] = gj;
        sum_g += gj;
        sum_gx += gj * xhat[j];
      }
      const float mg = rms ? 0.f : sum_g / static_cast<float>(H);
      const float mgx = sum_gx / static_cast<float>(H);
      const int64_t r0 = subset_row(p.x0_subset, r);
      const float rs = (p.rowscale ? p.rowscale[r] : 1.f) * p.rowscale_const;
      for (int64_t j = 0; j < H; ++j) {
        float d = rstd * (g[j] - mg - xhat[j] * mgx);
        if (p.dresidual_out)
          d += load_elem(p.dresidual_out, p.residual_dtype, r * p.dresidual_out_row_stride + j);
        if (p.dresidual) store_elem(p.dresidual, p.residual_dtype, r * p.dresidual_row_stride + j, d);
        if (r0 >= 0) {
          const bool k0 = p.dropout_p > 0.f ? norm_dropout_keep(p.seed, p.offset, 0, r, j, threshold) : true;
          const float dk = k0 ? d * inv_keep * rs : 0.f;  // grad of x0 * colscale
          float cs = 1.f;
          if (p.colscale) {
            cs = load_elem(p.colscale, p.weight_dtype, j);
            dcs[j] += dk * load_elem(p.x0, p.in_dtype, r0 * p.x0_row_stride + j);
          }
          store_elem(p.dx0, p.in_dtype, r0 * p.dx0_row_stride + j, dk * cs);
        }
        if (p.dx1) {
          const bool k1 = p.dropout_p > 0.f ? norm_dropout_keep(p.seed, p.offset, 1, r, j, threshold) : true;
          store_elem(p.dx1, p.in_dtype, r * p.dx1_row_stride + j, k1 ? d * inv_keep : 0.f);
        }
      }
    }
  }
  for (int64_t j = 0; j < H; ++j) {
    float s[5] = {0.f, 0.f, 0.f, 0.f, 0.f};
    for (int t = 0; t < nthreads; ++t)
      for (int q = 0; q < 5; ++q) s[q] += partial[(static_cast<size_t>(t) * 5 + q) * H + j];
    p.dweight[j] = s[0];
    if (p.dbias) p.dbias[j] = s[1];
    if (p.dweight1) p.dweight1[j] = s[2];
    if (p.dbias1) p.dbias1[j] = s[3];
    if (p.dcolscale) p.dcolscale[j] = s[4];
  }
}

}  // namespace flash::ops
