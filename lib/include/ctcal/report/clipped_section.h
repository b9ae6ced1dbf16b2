#pragma once
// What ctcal eval counted that calibration does not: per layer, the share of K/V (and Q) values
// whose quantization saturated (KvFakeQuant::clipped_fraction), with the calibrated scales and
// with scale 1.0 side by side. Both reports show it beside the ranges, which only say whether an
// observed extreme went past the representable range, not how many values did.
#include <string>

#include <nlohmann/json.hpp>

namespace ctcal {

// `layers`, `unit_layers`: [{layer, k_clipped_fraction, v_clipped_fraction, q_clipped_fraction?}]
// as evaluate_runs writes them for the calibrated run and its scale-1.0 run (`unit_layers` may be
// null: the scale-1.0 columns are then left out). `measured_on`: the data eval ran on, in words.
// A table of class "clipped", one row (data-layer) per layer, cells data-col="k-calibrated",
// "k-unit", ...; a fraction eval saw no value for is shown as "—".
std::string clipped_table(const nlohmann::json& layers, const nlohmann::json& unit_layers, const std::string& measured_on);

// A fraction as the table shows it: "0 %", "0.0123 %".
std::string clipped_percent(const nlohmann::json& fraction);

}  // namespace ctcal
