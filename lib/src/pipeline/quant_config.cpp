#include "ctcal/pipeline/quant_config.h"

#include "ctcal/error.h"
#include "ctcal/version.h"

namespace ctcal {

using nlohmann::json;

std::string python_json_dump(const json& j) { return j.dump(2, ' ', /*ensure_ascii=*/true); }

json build_quantization_config(const json& config, const CalibrationPlan& plan, const std::string& where) {
  json qc = json::object();
  if (config.contains("quantization_config") && !config["quantization_config"].is_null()) {
    qc = config["quantization_config"];
    if (!qc.is_object() || qc.value("quant_method", "") != "compressed-tensors")
      throw InputError(fmt::format("{}: existing quantization_config has quant_method {}; ctcal can "
                                   "only add KV scales to a compressed-tensors checkpoint",
                                   where, qc.is_object() && qc.contains("quant_method") ? qc["quant_method"].dump() : "(none)"));
  }
  if (!qc.contains("config_groups") || !qc["config_groups"].is_object()) qc["config_groups"] = json::object();
  if (plan.query_args) {
    const std::string& name = *plan.attention_group;
    if (qc["config_groups"].contains(name))
      throw InputError(fmt::format("{}: quantization_config.config_groups already has a group '{}'; "
                                   "rename the attention group in the recipe", where, name));
    qc["config_groups"][name] = {{"targets", plan.attention_targets},
                                 {"weights", nullptr},
                                 {"input_activations", quant_args_to_json(*plan.query_args)},
                                 {"output_activations", nullptr},
                                 {"format", nullptr}};
  }
  for (const auto& [name, group] : plan.linear_groups.items()) {
    if (qc["config_groups"].contains(name))
      throw InputError(fmt::format("{}: quantization_config.config_groups already has a group '{}'; "
                                   "ctcal does not quantize weights that are already quantized", where, name));
    qc["config_groups"][name] = group;
  }
  if (!plan.linear.empty()) {
    qc["format"] = "float-quantized";  // FP8 weights as compressed-tensors' FloatQuantizationCompressor
    qc["ignore"] = plan.ignore;
  }
  if (!qc.contains("format") || qc["format"].is_null()) qc["format"] = "dense";
  if (!qc.contains("global_compression_ratio")) qc["global_compression_ratio"] = nullptr;
  if (!qc.contains("ignore") || !qc["ignore"].is_array()) qc["ignore"] = json::array();
  for (int64_t l : plan.kv_skip_layers) qc["ignore"].push_back(plan.model.attention_module(l));
  qc["kv_cache_scheme"] = quant_args_to_json(plan.kv_args);
  qc["quant_method"] = "compressed-tensors";
  qc["quantization_status"] = "compressed";
  if (!qc.contains("sparsity_config") || qc["sparsity_config"].is_null()) qc["sparsity_config"] = json::object();
  json tc = transform_config_json(plan);
  if (qc.contains("transform_config") && qc["transform_config"].is_object() && !qc["transform_config"].empty()) {
    if (!tc.empty())
      throw InputError(fmt::format("{}: the checkpoint already has a transform_config; ctcal will not "
                                   "stack rotations on a rotated model", where));
  } else {
    qc["transform_config"] = tc;
  }
  qc["version"] = kCompressedTensorsVersion;
  qc["provider"] = fmt::format("ctcal {}", kVersion);
  return qc;
}

}  // namespace ctcal
