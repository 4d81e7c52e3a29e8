// The fused ops' C++ API (include/flash/ops.h) on the CPU backend: argument validation names the
// argument, and cross-entropy / LayerNorm / RMSNorm match direct fp64 formulas on small inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "flash/ops.h"

namespace {

TEST(OpsCrossEntropy, MatchesFormulaWithSmoothingAndZLoss) {
  const int rows = 3, vocab = 5;
  std::vector<float> logits = {0.1f, -1.f, 2.f, 0.5f, 0.f, 3.f, 1.f, -2.f, 0.f, 0.25f, 1.f, 1.f, 1.f, 1.f, 1.f};
  std::vector<int64_t> labels = {2, 0, -100};
  std::vector<float> lse(rows), loss(rows), z(rows);
  flash::CrossEntropyParams p;
  p.logits = logits.data(), p.logits_row_stride = vocab, p.labels = labels.data();
  p.rows = rows, p.vocab = vocab, p.label_smoothing = 0.1f, p.logit_scale = 0.5f, p.lse_square_scale = 0.01f;
  p.lse = lse.data(), p.loss = loss.data(), p.z_loss = z.data();
  flash::cross_entropy_fwd(p);
  for (int r = 0; r < rows; ++r) {
    double m = -1e30, s = 0, sum = 0;
    for (int j = 0; j < vocab; ++j) m = std::max(m, 0.5 * logits[r * vocab + j]);
    for (int j = 0; j < vocab; ++j) s += std::exp(0.5 * logits[r * vocab + j] - m), sum += 0.5 * logits[r * vocab + j];
    const double l = m + std::log(s);
    EXPECT_NEAR(lse[r], l, 1e-5);
    if (labels[r] < 0) {
      EXPECT_EQ(loss[r], 0.f);
      EXPECT_EQ(z[r], 0.f);
      continue;
    }
    const double want = l - 0.9 * 0.5 * logits[r * vocab + labels[r]] - 0.1 / vocab * sum + 0.01 * l * l;
    EXPECT_NEAR(loss[r], want, 1e-5);
    EXPECT_NEAR(z[r], 0.01 * l * l, 1e-6);
  }
  // The gradient of each row sums to 0 when there is no z-loss term... here check against the formula.
  std::vector<float> dloss = {1.f, 2.f, 3.f}, dlogits(logits.size());
  p.dloss = dloss.data(), p.dlogits = dlogits.data(), p.dlogits_row_stride = vocab;
  flash::cross_entropy_bwd(p);
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < vocab; ++j) {
      if (labels[r] < 0) {
        EXPECT_EQ(dlogits[r * vocab + j], 0.f);
        continue;
      }
      const double pj = std::exp(0.5 * logits[r * vocab + j] - lse[r]);
      double d = pj * (1 + 2 * 0.01 * lse[r]) - 0.1 / vocab - (j == labels[r] ? 0.9 : 0.0);
      EXPECT_NEAR(dlogits[r * vocab + j], dloss[r] * 0.5 * d, 1e-5);
    }
}

TEST(OpsCrossEntropy, ValidationNamesTheArgument) {
  flash::CrossEntropyParams p;
  p.rows = 1, p.vocab = 0;
  try {
    flash::cross_entropy_fwd(p);
    FAIL() << "expected flash::Error";
  } catch (const flash::Error& e) {
    EXPECT_EQ(e.argument(), "logits");
  }
  p.vocab = 4, p.total_classes = 8, p.vocab_start = 6;
  EXPECT_THROW(flash::cross_entropy_fwd(p), flash::Error);  // shard outside the vocabulary
}

TEST(OpsNorm, LayerNormAndRmsNormRows) {
  const int rows = 2, hidden = 6;
  std::vector<float> x = {1, 2, 3, 4, 5, 6, -1, 0, 1, 0, -1, 2}, res(rows * hidden, 0.5f), w(hidden, 2.f),
                     b(hidden, 0.25f), y(rows * hidden), ro(rows * hidden), mean(rows), rstd(rows);
  for (int kind = 0; kind < 2; ++kind) {
    flash::NormParams p;
    p.kind = kind ? flash::NormKind::kRMSNorm : flash::NormKind::kLayerNorm;
    p.rows = rows, p.hidden = hidden, p.eps = 1e-5f;
    p.x0 = x.data(), p.x0_row_stride = hidden, p.residual = res.data(), p.residual_row_stride = hidden;
    p.weight = w.data(), p.bias = b.data();
    p.y = y.data(), p.y_row_stride = hidden, p.residual_out = ro.data(), p.residual_out_row_stride = hidden;
    p.mean = mean.data(), p.rstd = rstd.data();
    flash::norm_fwd(p);
    for (int r = 0; r < rows; ++r) {
      double mu = 0, var = 0;
      for (int j = 0; j < hidden; ++j) mu += x[r * hidden + j] + 0.5;
      mu = kind ? 0.0 : mu / hidden;
      for (int j = 0; j < hidden; ++j) var += std::pow(x[r * hidden + j] + 0.5 - mu, 2);
      const double rs = 1 / std::sqrt(var / hidden + 1e-5);
      EXPECT_NEAR(rstd[r], rs, 1e-5);
      for (int j = 0; j < hidden; ++j) {
        EXPECT_FLOAT_EQ(ro[r * hidden + j], x[r * hidden + j] + 0.5f);
        EXPECT_NEAR(y[r * hidden + j], (x[r * hidden + j] + 0.5 - mu) * rs * 2 + 0.25, 1e-5);
      }
    }
  }
}

TEST(OpsNorm, ValidationNamesTheArgument) {
  flash::NormParams p;
  p.rows = 1, p.hidden = 8;
  try {
    flash::norm_fwd(p);
    FAIL() << "expected flash::Error";
  } catch (const flash::Error& e) {
    EXPECT_EQ(e.argument(), "weight");
  }
  float w[8] = {};
  p.weight = w, p.dropout_p = 1.f;
  EXPECT_THROW(flash::norm_fwd(p), flash::Error);
}

}  // namespace
