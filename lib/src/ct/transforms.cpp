#include "ctcal/ct/transforms.h"

#include "ctcal/ct/match.h"

namespace ctcal::ct {

Rotation rotation_of(const std::set<std::string>& locations) {
  if (locations.count("q_attn") && locations.count("k_cache")) return Rotation::kR3;
  if (locations.count("weight_output") && locations.count("weight_input")) return Rotation::kR2;
  return Rotation::kOther;
}

std::set<std::string> apply_locations(const nlohmann::json& scheme) {
  std::set<std::string> out;
  if (!scheme.is_object() || !scheme.contains("apply") || !scheme["apply"].is_array()) return out;
  for (const auto& a : scheme["apply"])
    if (a.is_object()) out.insert(a.value("location", ""));
  return out;
}

bool is_attention_location(const std::string& location) { return location == "q_attn" || location == "k_cache"; }

bool targets_projection(const std::string& target, const std::string& proj) {
  const std::string layer = "model.layers.0.self_attn.";
  if (!match_name(layer + proj, target)) return false;
  for (const char* other : {"q_proj", "k_proj", "v_proj", "o_proj"})
    if (other != proj && match_name(layer + other, target)) return false;
  return true;
}

}  // namespace ctcal::ct
