#pragma once
// Is the difference between two runs' token-weighted mean metric (eval's KL) beyond sampling
// noise? A paired bootstrap over samples (Efron & Tibshirani 1993, ch. 13, percentile interval):
// both runs saw the same samples, so each resample draws n sample indices with replacement and
// takes the two runs' values of those samples together; the pairing cancels what a sample does
// to both runs alike (a hard story raises both KLs), leaving the noise of the difference itself.
// The draws are SplitMix64's (data/sampling.h), so a seed gives the same interval everywhere.
#include <cstdint>
#include <vector>

namespace ctcal {

struct PairedBootstrapOptions {
  int64_t resamples = 2000;  // percentile endpoints then move by ~1.5 % of the interval's width
  uint64_t seed = 42;
  double level = 0.95;  // the interval's coverage: percentiles (1 - level)/2 and (1 + level)/2
};

struct BootstrapInterval {
  double estimate = 0;  // the statistic on the samples as they are: sum w (a - b) / sum w
  double lo = 0, hi = 0;
  // The interval leaves zero out: the sign of the difference is beyond the sampling noise.
  bool excludes_zero() const { return lo > 0 || hi < 0; }
};

// a[i], b[i]: sample i's mean of the metric (per token) in runs a and b; weight[i]: its tokens,
// so the statistic is the difference of the token-weighted means eval reports. Throws
// std::invalid_argument when the lengths differ, there are no samples, a weight is negative or
// all are zero, or resamples < 1 or level is outside (0, 1).
BootstrapInterval paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b,
                                   const std::vector<double>& weight, const PairedBootstrapOptions& options = {});

// The q-quantile (0 <= q <= 1) of `values` with linear interpolation between order statistics
// (Hyndman & Fan type 7, numpy's default): sorted[k] + f (sorted[k+1] - sorted[k]), k + f = q (n-1).
double percentile(std::vector<double> values, double q);

}  // namespace ctcal
