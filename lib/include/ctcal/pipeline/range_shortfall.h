#pragma once
// How much of the range seen over all calibration tokens an observer's statistics miss. A
// memoryless observer (memoryless_minmax, the default compressed-tensors >= 0.14 infers and the
// observer llm-compressor writes into its recipe.yaml) keeps only the last sample's range, so the
// largest keys of earlier samples saturate; this names the worst layer.
#include <cstdint>
#include <optional>

#include "ctcal/pipeline/calibrate.h"

namespace ctcal {

struct RangeShortfall {
  int64_t layer = 0;
  Site site = Site::kKey;
  int64_t head = 0;             // the worst head (0 for per-tensor scales)
  double observed_absmax = 0;   // what the observer's qparams cover
  double full_absmax = 0;       // the range over all tokens
  double fraction() const { return full_absmax > 0 ? 1.0 - observed_absmax / full_absmax : 0.0; }
};

// The (layer, site, head) whose observer range falls furthest short of the full range, relative
// to the full range; nullopt when every observer covers the full range.
std::optional<RangeShortfall> largest_range_shortfall(const CalibrationResult& result);

}  // namespace ctcal
