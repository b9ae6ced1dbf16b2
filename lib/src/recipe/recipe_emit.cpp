#include "ctcal/recipe/recipe_emit.h"

#include <yaml-cpp/yaml.h>

namespace ctcal {

using nlohmann::json;

namespace {

json quantization_json(const QuantizationModifierSpec& q) {
  json m;
  m["targets"] = q.targets;
  m["ignore"] = q.ignore;
  if (!q.attention_groups.empty() || !q.linear_groups.empty()) {
    json groups = json::object();
    for (const auto& g : q.linear_groups) groups[g.name] = linear_group_json(g);
    for (const auto& g : q.attention_groups)
      groups[g.name] = {{"targets", g.targets}, {"input_activations", quant_args_to_json(g.input_activations)}};
    m["config_groups"] = groups;
  }
  if (q.kv_cache_scheme) m["kv_cache_scheme"] = quant_args_to_json(*q.kv_cache_scheme);
  m["bypass_divisibility_checks"] = q.bypass_divisibility_checks;
  m["requires_calibration_data"] = true;
  return m;
}

json spinquant_json(const SpinQuantSpec& s, const json& transform_config) {
  json m;
  m["rotations"] = s.rotations;
  m["transform_type"] = s.transform_type;
  m["randomize"] = false;
  m["learnable"] = false;
  m["precision"] = s.precision;
  if (s.transform_block_size) m["transform_block_size"] = *s.transform_block_size;
  if (!transform_config.empty()) m["transform_config"] = transform_config;
  m["requires_calibration_data"] = false;
  return m;
}

// Emits JSON into YAML, keeping key order of `order` first for readability, lists of scalars in
// flow style.
void emit(YAML::Emitter& out, const json& j) {
  if (j.is_object()) {
    out << YAML::BeginMap;
    for (const auto& [k, v] : j.items()) {
      out << YAML::Key << k << YAML::Value;
      emit(out, v);
    }
    out << YAML::EndMap;
  } else if (j.is_array()) {
    bool scalars = true;
    for (const auto& v : j) scalars = scalars && !v.is_structured();
    if (scalars) out << YAML::Flow;
    out << YAML::BeginSeq;
    for (const auto& v : j) emit(out, v);
    out << YAML::EndSeq;
  } else if (j.is_null()) {
    out << YAML::Null;
  } else if (j.is_boolean()) {
    out << j.get<bool>();
  } else if (j.is_number_integer()) {
    out << j.get<int64_t>();
  } else if (j.is_number_unsigned()) {
    out << j.get<uint64_t>();
  } else if (j.is_number_float()) {
    out << j.get<double>();
  } else {
    // Quote strings PyYAML could misread in flow style (e.g. the target "re:.*self_attn$").
    const std::string v = j.get<std::string>();
    if (v.find_first_of(":#[]{},&*!|>'\"%@`") != std::string::npos) out << YAML::DoubleQuoted;
    out << v;
  }
}

}  // namespace

json linear_group_json(const LinearGroup& g) {
  return {{"targets", g.targets},
          {"weights", quant_args_to_json(g.weights)},
          {"input_activations", g.input_activations ? quant_args_to_json(*g.input_activations) : json(nullptr)},
          {"output_activations", nullptr},
          {"format", g.format ? json(*g.format) : json(nullptr)}};
}

json effective_recipe_json(const Recipe& recipe, const json& run, const json& transform_config) {
  json root = json::object();
  for (const auto& m : recipe.modifiers) {
    json args;
    if (const auto* q = std::get_if<QuantizationModifierSpec>(&m.spec)) args = quantization_json(*q);
    else args = spinquant_json(std::get<SpinQuantSpec>(m.spec), transform_config);
    root[m.stage + "_stage"][m.group + "_modifiers"][m.type] = args;
  }
  if (!run.is_null()) root["ctcal"] = run;
  return root;
}

std::string effective_recipe_yaml(const Recipe& recipe, const json& run, const json& transform_config) {
  // Modifier order matters (SpinQuant before quantization), so emit stages and modifiers in
  // recipe order rather than through a sorted JSON object.
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string open_stage, open_group;
  std::vector<const ModifierEntry*> mods;
  for (const auto& m : recipe.modifiers) mods.push_back(&m);
  std::size_t i = 0;
  while (i < mods.size()) {
    const std::string stage = mods[i]->stage;
    out << YAML::Key << stage + "_stage" << YAML::Value << YAML::BeginMap;
    while (i < mods.size() && mods[i]->stage == stage) {
      const std::string group = mods[i]->group;
      out << YAML::Key << group + "_modifiers" << YAML::Value << YAML::BeginMap;
      while (i < mods.size() && mods[i]->stage == stage && mods[i]->group == group) {
        const ModifierEntry& m = *mods[i++];
        json args = std::holds_alternative<QuantizationModifierSpec>(m.spec)
                        ? quantization_json(std::get<QuantizationModifierSpec>(m.spec))
                        : spinquant_json(std::get<SpinQuantSpec>(m.spec), transform_config);
        out << YAML::Key << m.type << YAML::Value;
        emit(out, args);
      }
      out << YAML::EndMap;
    }
    out << YAML::EndMap;
  }
  if (!run.is_null()) {
    out << YAML::Key << "ctcal" << YAML::Value;
    emit(out, run);
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace ctcal
