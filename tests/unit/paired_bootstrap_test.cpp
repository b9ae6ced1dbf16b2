// paired_bootstrap: the interval eval prints for KL(calibrated) - KL(scale 1.0), checked by
// properties that hold exactly (identical runs, a constant shift, token weighting, numpy's
// percentile on hand-computed cases) and one against the normal theory it approximates.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "ctcal/data/sampling.h"
#include "ctcal/eval/paired_bootstrap.h"

namespace ctcal {
namespace {

// Standard normal draws from SplitMix64 (Box-Muller): the same numbers with every standard
// library, unlike std::normal_distribution.
struct Normal {
  SplitMix64 rng;
  double uniform() { return (static_cast<double>(rng.next() >> 11) + 0.5) * 0x1p-53; }  // (0, 1)
  double operator()() { return std::sqrt(-2 * std::log(uniform())) * std::cos(2 * M_PI * uniform()); }
};

TEST(Percentile, InterpolatesLinearlyAsNumpy) {
  // numpy.percentile(v, 100 q) with its default (linear) method, worked by hand.
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 0.5), 2.5);           // k + f = 1.5
  EXPECT_DOUBLE_EQ(percentile({50, 10, 40, 20, 30}, 0.025), 11);  // 0.1 of the way from 10 to 20
  EXPECT_DOUBLE_EQ(percentile({50, 10, 40, 20, 30}, 0.975), 49);  // 3.9: 0.9 of the way from 40 to 50
  EXPECT_DOUBLE_EQ(percentile({3, 1, 2}, 1), 3);
  EXPECT_DOUBLE_EQ(percentile({3, 1, 2}, 0), 1);
  EXPECT_DOUBLE_EQ(percentile({5}, 0.3), 5);
  EXPECT_THROW(percentile({}, 0.5), std::invalid_argument);
  EXPECT_THROW(percentile({1}, 1.5), std::invalid_argument);
}

TEST(PairedBootstrap, IdenticalRunsGiveExactlyZero) {
  Normal z{SplitMix64(1)};
  std::vector<double> a, w;
  for (int i = 0; i < 50; ++i) a.push_back(std::fabs(z()) * 0.03), w.push_back(10 + i % 7);
  const BootstrapInterval ci = paired_bootstrap(a, a, w);
  EXPECT_EQ(ci.estimate, 0.0);
  EXPECT_EQ(ci.lo, 0.0);
  EXPECT_EQ(ci.hi, 0.0);
  EXPECT_FALSE(ci.excludes_zero());
}

TEST(PairedBootstrap, ConstantShiftGivesExactlyThatShift) {
  // Dyadic values and integer token counts: every sum and the division are exact in double, so
  // each resample's difference is d itself, whatever the samples' own spread.
  for (double d : {0.25, -0.125}) {
    std::vector<double> a, b, w;
    for (int i = 0; i < 40; ++i) {
      b.push_back((i * 37 % 101) / 1024.0);
      a.push_back(b.back() + d);
      w.push_back(1 + i * 13 % 29);
    }
    const BootstrapInterval ci = paired_bootstrap(a, b, w);
    EXPECT_EQ(ci.estimate, d);
    EXPECT_EQ(ci.lo, d);
    EXPECT_EQ(ci.hi, d);
    EXPECT_TRUE(ci.excludes_zero());
  }
}

TEST(PairedBootstrap, PairedNormalDifferenceMatchesNormalTheory) {
  // a = x + e, b = x: x (sd 10) is what a sample does to both runs, e ~ N(0.1, 1) the difference.
  // For n = 400 equally weighted samples the 95 % interval is mean(e) +- 1.96 sd(e) / sqrt(n).
  // Tolerance 0.25 se per endpoint: with 2000 resamples a 2.5 % percentile's Monte Carlo sd is
  // sqrt(0.025 * 0.975 / 2000) / phi(1.96) = 0.06 se, so 0.25 se is 4 sd; a 90 % interval
  // (endpoints 0.31 se inward) fails it, and so does an unpaired bootstrap (x's spread: 10x wider).
  const int n = 400;
  Normal z{SplitMix64(7)};
  std::vector<double> a, b, w(n, 1.0), e;
  for (int i = 0; i < n; ++i) {
    const double x = 10 * z();
    e.push_back(0.1 + z());
    a.push_back(x + e.back());
    b.push_back(x);
  }
  double mean = 0, var = 0;
  for (double v : e) mean += v / n;
  for (double v : e) var += (v - mean) * (v - mean) / n;  // the plug-in variance the bootstrap estimates
  const double se = std::sqrt(var / n);
  const BootstrapInterval ci = paired_bootstrap(a, b, w);
  EXPECT_NEAR(ci.estimate, mean, 1e-12);
  EXPECT_NEAR(ci.lo, mean - 1.959964 * se, 0.25 * se);
  EXPECT_NEAR(ci.hi, mean + 1.959964 * se, 0.25 * se);
}

TEST(PairedBootstrap, SignKnownOnlyWhenTheIntervalSaysSo) {
  // Differences +-1 around 0 in equal numbers: the bootstrap distribution is centred on 0.
  std::vector<double> a, b, w;
  for (int i = 0; i < 64; ++i) a.push_back(i % 2 ? 1.0 : -1.0), b.push_back(0), w.push_back(100);
  BootstrapInterval ci = paired_bootstrap(a, b, w);
  EXPECT_LT(ci.lo, 0);
  EXPECT_GT(ci.hi, 0);
  EXPECT_FALSE(ci.excludes_zero());
  // Moved by 1 (4 standard errors of 1/8): every resample is above 0.
  for (double& x : a) x += 1;
  ci = paired_bootstrap(a, b, w);
  EXPECT_GT(ci.lo, 0);
  EXPECT_TRUE(ci.excludes_zero());
}

TEST(PairedBootstrap, TokenWeightedAsEvalReportsKl) {
  // Sample 0: 3 tokens with difference 1, sample 1: 1 token with 0 -> 3/4, not the per-sample 1/2.
  const BootstrapInterval ci = paired_bootstrap({1, 0}, {0, 0}, {3, 1});
  EXPECT_DOUBLE_EQ(ci.estimate, 0.75);
  EXPECT_GE(ci.lo, 0);  // every resample is a token-weighted mean of 1s and 0s
  EXPECT_LE(ci.hi, 1);
  // A sample without tokens never moves the statistic, whatever its values.
  const BootstrapInterval z = paired_bootstrap({1, 0, 1e9}, {0, 0, -1e9}, {3, 1, 0});
  EXPECT_DOUBLE_EQ(z.estimate, 0.75);
  EXPECT_GE(z.lo, 0);
  EXPECT_LE(z.hi, 1);
}

TEST(PairedBootstrap, SeededAndReproducible) {
  Normal z{SplitMix64(3)};
  std::vector<double> a, b, w;
  for (int i = 0; i < 30; ++i) a.push_back(z()), b.push_back(z()), w.push_back(1 + i % 5);
  const BootstrapInterval x = paired_bootstrap(a, b, w), y = paired_bootstrap(a, b, w);
  EXPECT_EQ(x.lo, y.lo);
  EXPECT_EQ(x.hi, y.hi);
  PairedBootstrapOptions other;
  other.seed = 43;
  const BootstrapInterval s = paired_bootstrap(a, b, w, other);
  EXPECT_NE(x.lo, s.lo);  // the seed is what draws the resamples
  EXPECT_EQ(x.estimate, s.estimate);
}

TEST(PairedBootstrap, RefusesInputsItCannotResample) {
  EXPECT_THROW(paired_bootstrap({1, 2}, {1}, {1, 1}), std::invalid_argument);
  EXPECT_THROW(paired_bootstrap({}, {}, {}), std::invalid_argument);
  EXPECT_THROW(paired_bootstrap({1, 2}, {1, 2}, {0, 0}), std::invalid_argument);
  EXPECT_THROW(paired_bootstrap({1, 2}, {1, 2}, {1, -1}), std::invalid_argument);
  PairedBootstrapOptions none;
  none.resamples = 0;
  EXPECT_THROW(paired_bootstrap({1, 2}, {1, 2}, {1, 1}, none), std::invalid_argument);
}

}  // namespace
}  // namespace ctcal
