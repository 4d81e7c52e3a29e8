// The oracle itself: analytic gradients of the double reference match central finite
// differences of its forward, with every score modifier on (softcap, ALiBi, window, dropout).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "reference.h"
#include "test_support.h"

namespace {

double loss(const ref::HeadSpec& s, const std::vector<double>& q, const std::vector<double>& k,
            const std::vector<double>& v, const std::vector<double>& dout) {
  const auto f = ref::forward(s, q, k, v);
  double l = 0;
  for (size_t i = 0; i < dout.size(); ++i) l += f.out[i] * dout[i];
  return l;
}

}  // namespace

TEST(Reference, GradientsMatchFiniteDifferences) {
  std::mt19937 rng(3);
  ref::HeadSpec s;
  s.seqlen_q = 5;
  s.seqlen_k = 7;
  s.head_dim = 4;
  s.window_left = 3;
  s.window_right = 1;
  s.scale = 0.7;
  s.softcap = 2.0;
  s.alibi_slope = 0.3;
  s.dropout_p = 0.3;
  s.keep = [](int i, int j) { return (i * 7 + j * 3) % 4 != 0; };
  auto q = testing_support::random_normal(rng, 5 * 4);
  auto k = testing_support::random_normal(rng, 7 * 4);
  auto v = testing_support::random_normal(rng, 7 * 4);
  auto dout = testing_support::random_normal(rng, 5 * 4);
  const auto g = ref::backward(s, q, k, v, dout);
  const double h = 1e-6;
  auto check = [&](std::vector<double>& x, const std::vector<double>& grad, const char* name) {
    for (size_t t = 0; t < x.size(); ++t) {
      const double keep = x[t];
      x[t] = keep + h;
      const double up = loss(s, q, k, v, dout);
      x[t] = keep - h;
      const double down = loss(s, q, k, v, dout);
      x[t] = keep;
      EXPECT_NEAR(grad[t], (up - down) / (2 * h), 1e-6) << name << "[" << t << "]";
    }
  };
  check(q, g.dq, "dq");
  check(k, g.dk, "dk");
  check(v, g.dv, "dv");
}

TEST(Reference, BottomRightCausalAlignment) {
  ref::HeadSpec s;
  s.seqlen_q = 2;
  s.seqlen_k = 5;
  s.window_right = 0;
  EXPECT_TRUE(ref::visible(s, 0, 3));
  EXPECT_FALSE(ref::visible(s, 0, 4));
  EXPECT_TRUE(ref::visible(s, 1, 4));
  s.seqlen_q = 5;
  s.seqlen_k = 2;
  EXPECT_FALSE(ref::visible(s, 2, 0));  // rows 0..2 see nothing
  EXPECT_TRUE(ref::visible(s, 3, 0));
}
