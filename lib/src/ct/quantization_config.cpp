#include "ctcal/ct/quantization_config.h"

#include "ctcal/ct/attention.h"

namespace ctcal::ct {

using nlohmann::json;

namespace {

std::vector<std::string> string_list(const json& j) {
  std::vector<std::string> out;
  if (j.is_array())
    for (const auto& x : j)
      if (x.is_string()) out.push_back(x.get<std::string>());
  return out;
}

json field(const json& j, const char* key) { return j.is_object() && j.contains(key) ? j[key] : json(nullptr); }

}  // namespace

std::vector<std::vector<std::string>> QuantizationConfig::group_targets() const {
  std::vector<std::vector<std::string>> out;
  for (const auto& g : config_groups) out.push_back(g.targets);
  return out;
}

const ConfigGroup* QuantizationConfig::attention_group(const std::string& attention_module,
                                                       const std::string& attention_class) const {
  for (const auto& g : config_groups)
    if (!g.input_activations.is_null() && any_targets_attention(g.targets, {attention_module, attention_class}))
      return &g;
  return nullptr;
}

const TransformGroup* QuantizationConfig::r3() const {
  for (const auto& t : transforms)
    if (t.rotation == Rotation::kR3) return &t;
  return nullptr;
}

QuantizationConfig read_quantization_config(const json& qc) {
  QuantizationConfig c;
  if (!qc.is_object()) return c;
  if (qc.contains("quant_method") && qc["quant_method"].is_string()) c.quant_method = qc["quant_method"];
  c.ignore = string_list(field(qc, "ignore"));
  c.kv_cache_scheme = field(qc, "kv_cache_scheme");
  if (const json groups = field(qc, "config_groups"); groups.is_object())
    for (const auto& [name, g] : groups.items())
      c.config_groups.push_back({name, string_list(field(g, "targets")), field(g, "weights"),
                                 field(g, "input_activations"), g});
  const json tc = field(field(qc, "transform_config"), "config_groups");
  if (tc.is_object())
    for (const auto& [name, s] : tc.items()) {
      TransformGroup t;
      t.name = name;
      t.raw = s;
      const json type = field(s, "type");
      t.type = type.is_string() ? type.get<std::string>() : "?";
      if (const json h = field(s, "head_dim"); h.is_number()) t.head_dim = h.get<int64_t>();
      t.randomize = field(s, "randomize") == json(true);
      t.locations = apply_locations(s);
      t.rotation = rotation_of(t.locations);
      c.transforms.push_back(std::move(t));
    }
  return c;
}

}  // namespace ctcal::ct
