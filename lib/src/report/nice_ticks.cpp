#include "ctcal/report/nice_ticks.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace ctcal {

namespace {

// The smallest 1, 2 or 5 x 10^k that is >= raw (raw > 0).
double nice_step(double raw) {
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / p;
  // A relative slack so that 0.2000000001 (float noise) still counts as 2, not 5.
  const double m = f <= 1 + 1e-9 ? 1 : f <= 2 + 1e-9 ? 2 : f <= 5 + 1e-9 ? 5 : 10;
  return m * p;
}

}  // namespace

AxisTicks nice_ticks(double min, double max, int intervals, double min_step) {
  if (!std::isfinite(min) || !std::isfinite(max)) min = 0, max = 1;
  if (max < min) std::swap(min, max);
  if (max == min) {
    // One value: an axis around it a tenth of its size wide (or [-1, 1] around zero).
    const double d = min == 0 ? 1 : std::fabs(min) * 0.1;
    min -= d;
    max += d;
  }
  AxisTicks t;
  t.step = std::max(nice_step((max - min) / std::max(1, intervals)), min_step);
  // Multiples of the step; the small slack keeps a value that sits on a tick from adding one more.
  t.lo = std::floor(min / t.step + 1e-9) * t.step;
  t.hi = std::ceil(max / t.step - 1e-9) * t.step;
  const auto n = static_cast<long>(std::llround((t.hi - t.lo) / t.step));
  for (long i = 0; i <= n; ++i) {
    // k * step from integers, not repeated addition: 0.1 + 0.2 would print as 0.30000000000000004.
    const double k = std::round(t.lo / t.step) + static_cast<double>(i);
    t.values.push_back(k * t.step);
  }
  t.decimals = std::max(0, static_cast<int>(-std::floor(std::log10(t.step) + 1e-9)));
  return t;
}

std::string format_tick(double value, int decimals) {
  std::string s = fmt::format("{:.{}f}", value, decimals);
  if (s.find_first_not_of("-0.") == std::string::npos && s[0] == '-') s.erase(0, 1);  // "-0.00" -> "0.00"
  return s;
}

}  // namespace ctcal
