#include "ctcal/io/weight_quantization.h"

#include <set>

#include "ctcal/ct/groups.h"

namespace ctcal {

using nlohmann::json;

WeightQuantization WeightQuantization::from_config(const json& config, const std::string& where) {
  WeightQuantization wq;
  if (!config.contains("quantization_config") || config["quantization_config"].is_null()) return wq;
  const json& qc = config["quantization_config"];
  const std::string at = where + ": quantization_config";
  if (!qc.is_object()) throw InputError(fmt::format("{}: expected an object", at));
  const std::string method = qc.value("quant_method", std::string());
  // gpt-oss's published checkpoints: only the experts are MXFP4 (*_blocks / *_scales), read by
  // model/gpt_oss_experts.h; every other weight is a plain float tensor.
  if (method == "mxfp4") return wq;
  if (method != "compressed-tensors")
    throw UnsupportedFormatError(fmt::format(
        "{}.quant_method is '{}'; ctcal reads compressed-tensors checkpoints (and unquantized ones)",
        at, method));
  if (qc.contains("sparsity_config") && qc["sparsity_config"].is_object() &&
      qc["sparsity_config"].contains("format") && qc["sparsity_config"]["format"].is_string() &&
      qc["sparsity_config"]["format"] != "dense")
    throw UnsupportedFormatError(fmt::format("{}.sparsity_config.format is '{}'; ctcal does not read "
                                             "sparse weights", at, qc["sparsity_config"]["format"].get<std::string>()));
  std::string global = "dense";
  if (qc.contains("format") && qc["format"].is_string()) global = qc["format"].get<std::string>();
  if (qc.contains("ignore") && qc["ignore"].is_array())
    for (const auto& i : qc["ignore"])
      if (i.is_string()) wq.ignore_.push_back(i.get<std::string>());
  if (!qc.contains("config_groups") || !qc["config_groups"].is_object()) return wq;
  for (const auto& [name, g] : qc["config_groups"].items()) {
    const std::string gp = at + ".config_groups." + name;
    if (!g.is_object()) throw InputError(fmt::format("{}: expected an object", gp));
    if (!g.contains("weights") || g["weights"].is_null()) continue;  // e.g. an attention group
    std::string fmt_name = global;
    if (g.contains("format") && g["format"].is_string()) fmt_name = g["format"].get<std::string>();
    if (fmt_name == "mixed-precision")
      throw InputError(fmt::format("{}.format: mixed-precision checkpoints name each group's format; "
                                   "expected one in the group", gp));
    const WeightFormat f = weight_format_from_name(fmt_name, g.contains("format") ? gp + ".format" : at + ".format");
    Group group;
    group.name = name;
    group.spec = quantized_weight_spec(g["weights"], f, gp + ".weights");
    if (g.contains("targets") && g["targets"].is_array())
      for (const auto& t : g["targets"])
        if (t.is_string()) group.targets.push_back(t.get<std::string>());
    if (group.targets.empty()) throw InputError(fmt::format("{}.targets: missing or empty", gp));
    wq.groups_.push_back(std::move(group));
  }
  return wq;
}

std::optional<QuantizedWeightSpec> WeightQuantization::spec_for(const TensorGetter& get,
                                                                const std::string& module) const {
  std::vector<std::vector<std::string>> targets;
  for (const auto& g : groups_) targets.push_back(g.targets);
  const auto g = ct::resolve_group({module, ct::kLinearClass}, targets, ignore_);
  if (!g) return std::nullopt;
  const QuantizedWeightSpec& spec = groups_[*g].spec;
  if (spec.format == WeightFormat::kDense || !has_quantized_weight(get, module)) return std::nullopt;
  return spec;
}

std::vector<std::string> WeightQuantization::formats() const {
  std::set<std::string> s;
  for (const auto& g : groups_) s.insert(weight_format_name(g.spec.format));
  return {s.begin(), s.end()};
}

}  // namespace ctcal
