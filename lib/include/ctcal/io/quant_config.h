#pragma once
// The `quantization_config` block of config.json (SPEC §6, reference §2.3), merged into any
// existing compressed-tensors config, and the scale tensor names of reference §4.1.
#include <string>

#include <nlohmann/json.hpp>

#include "ctcal/model/observation.h"
#include "ctcal/pipeline/plan.h"

namespace ctcal {

// `config` is the input config.json; returns the new quantization_config. Throws InputError when
// an existing quantization_config is not compressed-tensors or conflicts with the plan.
nlohmann::json build_quantization_config(const nlohmann::json& config, const CalibrationPlan& plan,
                                         const std::string& where);

// "<attention module>.k_scale" / ".k_zero_point", e.g. "model.layers.3.self_attn.k_scale" (the
// module path is the family's: ModelConfig::attention_module). vLLM's loaders of every supported
// family remap these names to "...self_attn.attn.k_scale" (maybe_remap_kv_scale_name).
std::string scale_name(const std::string& attention_module, Site site);
std::string zero_point_name(const std::string& attention_module, Site site);

// Writes JSON as Python's json.dump(obj, f, indent=2, sort_keys=True) does (objects are sorted
// maps; non-ASCII escaped as \uXXXX).
std::string python_json_dump(const nlohmann::json& j);

}  // namespace ctcal
