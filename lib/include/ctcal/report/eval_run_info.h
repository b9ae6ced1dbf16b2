#pragma once
// What the eval report shows about one run beyond its metrics, read from the run's own files: a
// checkpoint's config.json (scheme, transforms) and ctcal_report.json (activation ranges, scales,
// zero points, how it was calibrated); for a recipe calibrated on the fly, the recipe.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "ctcal/quant/quant_args.h"

namespace ctcal {

struct EvalRunInfo {
  std::string source;       // the directory or recipe path, as given
  std::string label;        // its last component: what legends show
  bool checkpoint = false;  // a --quantized directory (else a --recipe calibrated on the fly)
  QuantArgs kv;
  std::optional<QuantArgs> q;
  std::string transforms;   // in words ("R3 hadamard 8x8"), "" when none
  nlohmann::json layers;    // ctcal_report.json `layers`, or null when the run has none
  nlohmann::json calibration;  // ctcal_report.json's provenance fields, or null
};

// `run`: one entry of the eval document's `quantized` list (name, kv_cache_scheme, ...).
// Throws InputError when a checkpoint's config.json or ctcal_report.json cannot be parsed.
EvalRunInfo read_eval_run_info(const nlohmann::json& run);

}  // namespace ctcal
