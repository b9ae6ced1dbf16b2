#pragma once
// The `quantization_config` block of config.json (SPEC §6, reference §2.3), merged into any
// existing compressed-tensors config. (The scale tensor names are ct/tensor_names.h's.)
#include <string>

#include <nlohmann/json.hpp>

#include "ctcal/pipeline/plan.h"

namespace ctcal {

// `config` is the input config.json; returns the new quantization_config. Throws InputError when
// an existing quantization_config is not compressed-tensors, conflicts with the plan, or rotates
// keys at serving time (R3). An existing attention group, kv_cache_scheme and attention modules in
// `ignore` are the input's old scales' description: the plan's replace them.
nlohmann::json build_quantization_config(const nlohmann::json& config, const CalibrationPlan& plan,
                                         const std::string& where);

// Writes JSON as Python's json.dump(obj, f, indent=2, sort_keys=True) does (objects are sorted
// maps; non-ASCII escaped as \uXXXX).
std::string python_json_dump(const nlohmann::json& j);

}  // namespace ctcal
