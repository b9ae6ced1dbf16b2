#pragma once
// What the activations spanned against what the chosen scales can represent, per layer and per
// head, from ctcal_report.json's `layers` (observed head_min/head_max, scale, zero_point per site):
// a chart per site (Q, K, V) and a table. Calibration does not count clipped values, so these show
// how far the observed range reaches into (or past) the representable one; the counts eval makes
// are report/clipped_section.h's.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "ctcal/quant/quant_args.h"

namespace ctcal {

// The values one scale and zero point can hold: (q_min - zp) * scale .. (q_max - zp) * scale.
struct Representable {
  double lo = 0, hi = 0;
};
Representable representable_range(const QuantArgs& a, double scale, double zero_point);

// "scale x [-448, 448]", "scale x ([0, 15] - zero point)".
std::string representable_words(const QuantArgs& a);

// The charts (a div of class "charts") and the table for one run. `q` is null without attention
// quantization; `title` prefixes each chart's title (a run's short name, or "").
std::string range_section(const nlohmann::json& layers, const QuantArgs& kv, const std::optional<QuantArgs>& q,
                          const std::string& title);

// The paragraph that says what the range charts and the "reach" column mean, and where the page
// shows the clamped fractions an eval pass counted (`clipped_where`, e.g. "below each run's
// ranges"), or, when "", that the page was made without an eval pass and has none.
std::string range_section_note(const std::string& clipped_where);

}  // namespace ctcal
