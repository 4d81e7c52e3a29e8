#include "reference.h"

#include <cmath>
#include <limits>

namespace ref {

bool visible(const HeadSpec& s, int i, int j) {
  if (j < 0 || j >= s.seqlen_k) return false;
  if (!s.key_valid.empty() && !s.key_valid[j]) return false;
  const long d = static_cast<long>(j) - (static_cast<long>(i) + s.seqlen_k - s.seqlen_q);
  if (s.window_left >= 0 && d < -s.window_left) return false;
  if (s.window_right >= 0 && d > s.window_right) return false;
  return true;
}

namespace {

// Score of (i, j) and d(score)/d(scale * q.k).
double score(const HeadSpec& s, const std::vector<double>& q, const std::vector<double>& k, int i,
             int j, double* dcap) {
  double dot = 0;
  for (int c = 0; c < s.head_dim; ++c) dot += q[i * s.head_dim + c] * k[j * s.head_dim + c];
  double x = dot * s.scale;
  *dcap = 1.0;
  if (s.softcap > 0) {
    const double t = std::tanh(x / s.softcap);
    x = s.softcap * t;
    *dcap = 1 - t * t;
  }
  const long dist = static_cast<long>(i) + s.seqlen_k - s.seqlen_q - j;
  x -= s.alibi_slope * std::fabs(static_cast<double>(dist));
  return x;
}

double keep_factor(const HeadSpec& s, int i, int j) {
  if (s.dropout_p <= 0) return 1.0;
  return s.keep(i, j) ? 1.0 / (1.0 - s.dropout_p) : 0.0;
}

}  // namespace

HeadForward forward(const HeadSpec& s, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& v) {
  const int d = s.head_dim;
  HeadForward f;
  f.out.assign(static_cast<size_t>(s.seqlen_q) * d, 0.0);
  f.lse.assign(s.seqlen_q, std::numeric_limits<double>::infinity());
  f.probs.assign(static_cast<size_t>(s.seqlen_q) * s.seqlen_k, 0.0);
  std::vector<double> row(s.seqlen_k);
  for (int i = 0; i < s.seqlen_q; ++i) {
    double m = -std::numeric_limits<double>::infinity();
    double dc;
    for (int j = 0; j < s.seqlen_k; ++j) {
      row[j] = visible(s, i, j) ? score(s, q, k, i, j, &dc)
                                : -std::numeric_limits<double>::infinity();
      m = std::max(m, row[j]);
    }
    if (m == -std::numeric_limits<double>::infinity()) continue;
    double sum = 0;
    for (int j = 0; j < s.seqlen_k; ++j) sum += std::exp(row[j] - m);
    f.lse[i] = m + std::log(sum);
    for (int j = 0; j < s.seqlen_k; ++j) {
      const double p = std::exp(row[j] - f.lse[i]);
      const double z = keep_factor(s, i, j);
      f.probs[static_cast<size_t>(i) * s.seqlen_k + j] = (z == 0.0 ? -p : p);
      for (int c = 0; c < d; ++c) f.out[i * d + c] += p * z * v[j * d + c];
    }
  }
  return f;
}

HeadGrads backward(const HeadSpec& s, const std::vector<double>& q, const std::vector<double>& k,
                   const std::vector<double>& v, const std::vector<double>& dout) {
  const int d = s.head_dim;
  const HeadForward f = forward(s, q, k, v);
  HeadGrads g;
  g.dq.assign(q.size(), 0.0);
  g.dk.assign(k.size(), 0.0);
  g.dv.assign(v.size(), 0.0);
  for (int i = 0; i < s.seqlen_q; ++i) {
    if (std::isinf(f.lse[i])) continue;
    double D = 0;
    for (int c = 0; c < d; ++c) D += dout[i * d + c] * f.out[i * d + c];
    for (int j = 0; j < s.seqlen_k; ++j) {
      if (!visible(s, i, j)) continue;
      double dcap;
      const double p = std::exp(score(s, q, k, i, j, &dcap) - f.lse[i]);
      const double z = keep_factor(s, i, j);
      double dp = 0;
      for (int c = 0; c < d; ++c) dp += dout[i * d + c] * v[j * d + c];
      for (int c = 0; c < d; ++c) g.dv[j * d + c] += p * z * dout[i * d + c];
      const double ds = p * (z * dp - D) * dcap * s.scale;
      for (int c = 0; c < d; ++c) {
        g.dq[i * d + c] += ds * k[j * d + c];
        g.dk[j * d + c] += ds * q[i * d + c];
      }
    }
  }
  return g;
}

void rotary(std::vector<double>& x, const std::vector<double>& cos_row,
            const std::vector<double>& sin_row, int rotary_dim, bool interleaved) {
  const int half = rotary_dim / 2;
  for (int f = 0; f < half; ++f) {
    const int a = interleaved ? 2 * f : f;
    const int b = interleaved ? 2 * f + 1 : f + half;
    const double x0 = x[a], x1 = x[b];
    x[a] = x0 * cos_row[f] - x1 * sin_row[f];
    x[b] = x1 * cos_row[f] + x0 * sin_row[f];
  }
}

}  // namespace ref
