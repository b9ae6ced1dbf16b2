#pragma once
// The effective recipe as YAML in llm-compressor's layout (stage and group names kept, every
// default filled in), written as recipe.yaml into the output and printed by `ctcal validate`.
#include <string>

#include <nlohmann/json.hpp>

#include "ctcal/recipe/recipe.h"

namespace ctcal {

// A Linear group as compressed-tensors 0.18 dumps a QuantizationScheme: targets, weights,
// input_activations, output_activations (null), format (null unless the recipe set one).
nlohmann::json linear_group_json(const LinearGroup& g);

// `run` holds the resolved `ctcal:` block (num_samples, seed, ...); null to omit it.
// `transform_config` is the resolved transform config ({} when none).
std::string effective_recipe_yaml(const Recipe& recipe, const nlohmann::json& run,
                                  const nlohmann::json& transform_config);

// The same content as JSON, with "defaults" listing the QuantizationArgs fields the recipe did
// not write (for `ctcal validate --json`).
nlohmann::json effective_recipe_json(const Recipe& recipe, const nlohmann::json& run,
                                     const nlohmann::json& transform_config);

}  // namespace ctcal
