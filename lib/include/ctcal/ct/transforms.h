#pragma once
// SpinQuant's rotations as compressed-tensors' transform_config spells them (TransformArgs
// locations; reference §1.4): R3 rotates queries and keys online, R2 is folded into v_proj/o_proj.
#include <set>
#include <string>

#include <nlohmann/json.hpp>

namespace ctcal::ct {

enum class Rotation { kR3, kR2, kOther };

// By the locations a transform scheme applies at: q_attn and k_cache make R3, weight_output and
// weight_input make R2 (whatever the group is called); anything else is another transform.
Rotation rotation_of(const std::set<std::string>& locations);
// The `location`s of a TransformScheme dump's `apply` list (non-objects skipped).
std::set<std::string> apply_locations(const nlohmann::json& scheme);
// A location compressed-tensors applies to the attention module at run time (R3's halves).
bool is_attention_location(const std::string& location);

// `target` names one projection of the Llama layout ("re:.*v_proj$" for "v_proj"): it matches
// model.layers.0.self_attn.<proj> and no other of q/k/v/o_proj.
bool targets_projection(const std::string& target, const std::string& proj);

}  // namespace ctcal::ct
