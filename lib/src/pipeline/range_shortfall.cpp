#include "ctcal/pipeline/range_shortfall.h"

#include <algorithm>
#include <cmath>

namespace ctcal {

std::optional<RangeShortfall> largest_range_shortfall(const CalibrationResult& result) {
  std::optional<RangeShortfall> worst;
  for (const auto& layer : result.layers)
    for (const auto& s : layer.sites) {
      const std::size_t heads = s.head_min.size();
      const bool per_head = s.obs_min.size() == heads && heads > 1;
      // Per-tensor observers cover all heads at once: compare with the absmax over every head.
      double tensor_full = 0;
      for (std::size_t h = 0; h < heads; ++h)
        tensor_full = std::max({tensor_full, std::fabs(s.head_min[h]), std::fabs(s.head_max[h])});
      for (std::size_t q = 0; q < s.obs_min.size(); ++q) {
        RangeShortfall r;
        r.layer = layer.layer;
        r.site = s.site;
        r.head = per_head ? static_cast<int64_t>(q) : 0;
        r.observed_absmax = std::max(std::fabs(s.obs_min[q]), std::fabs(s.obs_max[q]));
        r.full_absmax = per_head ? std::max(std::fabs(s.head_min[q]), std::fabs(s.head_max[q])) : tensor_full;
        if (r.fraction() > 0 && (!worst || r.fraction() > worst->fraction())) worst = r;
      }
    }
  return worst;
}

}  // namespace ctcal
