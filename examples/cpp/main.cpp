// Causal attention on the CPU backend through the C++ API, checked against a direct computation of
// one output row. Exit code 0 when they agree.
#include <flash/api.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  const int b = 1, s = 64, h = 2, d = 32;
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  std::vector<float> q(b * s * h * d), k(q.size()), v(q.size()), out(q.size()), lse(b * h * s);
  for (auto* t : {&q, &k, &v})
    for (float& x : *t) x = normal(gen);

  flash::FwdParams p;
  p.device = flash::Device::kCPU;
  p.dtype = flash::DType::kFloat32;
  p.batch = b, p.seqlen_q = s, p.seqlen_k = s, p.nheads = h, p.nheads_k = h, p.head_dim = d;
  const int64_t row = h * d, batch = int64_t(s) * row;
  p.q = q.data(), p.q_batch_stride = batch, p.q_row_stride = row, p.q_head_stride = d;
  p.k = k.data(), p.k_batch_stride = batch, p.k_row_stride = row, p.k_head_stride = d;
  p.v = v.data(), p.v_batch_stride = batch, p.v_row_stride = row, p.v_head_stride = d;
  p.out = out.data(), p.out_batch_stride = batch, p.out_row_stride = row, p.out_head_stride = d;
  p.softmax_lse = lse.data(), p.lse_batch_stride = int64_t(h) * s, p.lse_head_stride = s;
  p.softmax_scale = 1.0f / std::sqrt(float(d));
  p.causal = true;
  try {
    flash::fwd(p);
  } catch (const flash::Error& e) {
    std::fprintf(stderr, "bad argument %s: %s\n", e.argument().c_str(), e.what());
    return 1;
  }

  // Row i = 10 of head 1, computed directly: softmax over keys 0..10.
  const int i = 10, hh = 1;
  std::vector<double> w(i + 1);
  double mx = -1e300, sum = 0;
  for (int j = 0; j <= i; ++j) {
    double dot = 0;
    for (int c = 0; c < d; ++c) dot += double(q[i * row + hh * d + c]) * k[j * row + hh * d + c];
    w[j] = dot * p.softmax_scale;
    mx = std::max(mx, w[j]);
  }
  for (double& x : w) sum += (x = std::exp(x - mx));
  double err = std::fabs(std::log(sum) + mx - lse[hh * s + i]);
  for (int c = 0; c < d; ++c) {
    double o = 0;
    for (int j = 0; j <= i; ++j) o += w[j] / sum * v[j * row + hh * d + c];
    err = std::max(err, std::fabs(o - out[i * row + hh * d + c]));
  }
  std::printf("flash_attn C++ example: max |error| = %.3g (%s)\n", err, err < 1e-4 ? "ok" : "MISMATCH");
  return err < 1e-4 ? 0 : 1;
}
