#include "ctcal/eval/paired_bootstrap.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "ctcal/data/sampling.h"

namespace ctcal {

double percentile(std::vector<double> values, double q) {
  if (values.empty()) throw std::invalid_argument("percentile: no values");
  if (!(q >= 0 && q <= 1)) throw std::invalid_argument(fmt::format("percentile: q must be in [0, 1], got {}", q));
  std::sort(values.begin(), values.end());
  const double x = q * static_cast<double>(values.size() - 1);
  const auto k = static_cast<std::size_t>(std::floor(x));
  if (k + 1 >= values.size()) return values.back();
  return values[k] + (x - static_cast<double>(k)) * (values[k + 1] - values[k]);
}

BootstrapInterval paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b,
                                   const std::vector<double>& weight, const PairedBootstrapOptions& options) {
  const std::size_t n = a.size();
  if (b.size() != n || weight.size() != n)
    throw std::invalid_argument(fmt::format("paired_bootstrap: a, b and weight must have one entry per sample; got {}, {} and {}",
                                            n, b.size(), weight.size()));
  if (n == 0) throw std::invalid_argument("paired_bootstrap: no samples");
  if (options.resamples < 1)
    throw std::invalid_argument(fmt::format("paired_bootstrap: resamples must be >= 1, got {}", options.resamples));
  if (!(options.level > 0 && options.level < 1))
    throw std::invalid_argument(fmt::format("paired_bootstrap: level must be in (0, 1), got {}", options.level));
  // Per sample: its weighted difference, w (a - b) (the sum over its tokens), and its weight.
  std::vector<double> diff(n);
  double total_diff = 0, total_weight = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!(weight[i] >= 0)) throw std::invalid_argument(fmt::format("paired_bootstrap: weight[{}] = {}; expected >= 0", i, weight[i]));
    diff[i] = weight[i] * (a[i] - b[i]);
    total_diff += diff[i];
    total_weight += weight[i];
  }
  if (total_weight <= 0) throw std::invalid_argument("paired_bootstrap: every weight is zero");

  SplitMix64 rng(options.seed);
  std::vector<double> stats;
  stats.reserve(static_cast<std::size_t>(options.resamples));
  while (static_cast<int64_t>(stats.size()) < options.resamples) {
    double d = 0, w = 0;
    for (std::size_t j = 0; j < n; ++j) {
      const std::size_t i = rng.bounded(n);
      d += diff[i];
      w += weight[i];
    }
    // A resample of only zero-weight samples (possible only when some weights are 0) predicts no
    // token: it says nothing about the difference and is drawn again.
    if (w > 0) stats.push_back(d / w);
  }
  BootstrapInterval out;
  out.estimate = total_diff / total_weight;
  out.lo = percentile(stats, (1 - options.level) / 2);
  out.hi = percentile(std::move(stats), (1 + options.level) / 2);
  return out;
}

}  // namespace ctcal
