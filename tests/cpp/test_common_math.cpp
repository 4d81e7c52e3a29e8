// csrc/common/rotary.h and split_combine.h on their own.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/rotary.h"
#include "common/split_combine.h"
#include "reference.h"

TEST(Rotary, MatchesReferenceBothStyles) {
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.f, 1.f);
  for (bool interleaved : {false, true}) {
    const int d = 12, rd = 8;
    std::vector<float> x(d), c(rd / 2), s(rd / 2);
    for (auto& e : x) e = n(rng);
    for (int f = 0; f < rd / 2; ++f) {
      c[f] = std::cos(0.3f * (f + 1));
      s[f] = std::sin(0.3f * (f + 1));
    }
    std::vector<double> xd(x.begin(), x.end()), cd(c.begin(), c.end()), sd(s.begin(), s.end());
    ref::rotary(xd, cd, sd, rd, interleaved);
    // Per-element form, computed from the unrotated values.
    std::vector<float> y(d);
    for (int dd = 0; dd < d; ++dd) {
      if (dd >= rd) {
        y[dd] = x[dd];
        continue;
      }
      const int f = flash::rotary_freq(dd, rd, interleaved);
      y[dd] = flash::rotary_element(x[dd], x[flash::rotary_partner(dd, rd, interleaved)], c[f],
                                    s[f], flash::rotary_is_first(dd, rd, interleaved));
    }
    flash::apply_rotary(x.data(), c.data(), s.data(), rd, interleaved);
    for (int dd = 0; dd < d; ++dd) {
      EXPECT_NEAR(x[dd], xd[dd], 1e-6) << dd;
      EXPECT_NEAR(y[dd], xd[dd], 1e-6) << dd;
    }
  }
}

TEST(SplitCombine, ExactLse) {
  const float parts[4] = {1.0f, -INFINITY, 2.5f, 0.3f};
  const double want = std::log(std::exp(1.0) + std::exp(2.5) + std::exp(0.3));
  EXPECT_NEAR(flash::combine_lse(parts, 4, 1), want, 1e-6);
  const float empty[2] = {-INFINITY, -INFINITY};
  EXPECT_EQ(flash::combine_lse(empty, 2, 1), -INFINITY);
  EXPECT_EQ(flash::split_weight(-INFINITY, 1.f), 0.f);
  EXPECT_EQ(flash::split_weight(1.f, -INFINITY), 0.f);
  EXPECT_EQ(flash::public_lse(-INFINITY), INFINITY);
  float w = 0;
  for (float p : parts) w += flash::split_weight(p, flash::combine_lse(parts, 4, 1));
  EXPECT_NEAR(w, 1.f, 1e-6);
}
