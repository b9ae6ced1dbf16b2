#pragma once
// eval's verdict against scale 1.0 (eval/unit_scales_verdict.h) in the words a person reads: the
// line `ctcal eval` prints, and both HTML reports show.
#include <string>

#include <nlohmann/json.hpp>

namespace ctcal {

// What a person reads for `wins`: "calibration wins", "scale 1.0 wins", "no significant difference".
std::string verdict_words(const std::string& wins);

// "KL calibrated - scale 1.0: -0.000812, 95 % interval [-0.00231, +0.000715] over 32 samples
// (paired bootstrap)": the line eval prints and both reports show.
std::string kl_diff_words(const nlohmann::json& comparison);

}  // namespace ctcal
