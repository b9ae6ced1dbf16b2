#include "ctcal/pipeline/quant_config.h"

#include <optional>
#include <set>

#include "ctcal/ct/attention.h"
#include "ctcal/ct/transforms.h"
#include "ctcal/error.h"
#include "ctcal/version.h"

namespace ctcal {

using nlohmann::json;

namespace {

// A config group that quantizes attention (queries) only: no weights, every target the attention
// module (ct/attention.h: `LlamaAttention`, `re:.*self_attn$`). An input's such group describes
// its old q scales, which the new recipe's attention group (or none) replaces.
bool is_attention_group(const json& g, const ModelConfig& m) {
  if (!g.is_object() || !g.value("weights", json()).is_null() || !g.contains("targets") || !g["targets"].is_array())
    return false;
  std::vector<std::string> targets;
  for (const auto& t : g["targets"]) {
    if (!t.is_string()) return false;
    targets.push_back(t.get<std::string>());
  }
  return ct::all_target_attention(targets, {m.attention_module(0), ""});  // any ...Attention class name
}

// The input's transform group rotating queries or keys at serving time (R3), if any.
std::optional<std::string> online_rotation(const json& tc) {
  if (!tc.is_object() || !tc.contains("config_groups") || !tc["config_groups"].is_object()) return std::nullopt;
  for (const auto& [name, scheme] : tc["config_groups"].items())
    for (const auto& location : ct::apply_locations(scheme))
      if (ct::is_attention_location(location)) return name;
  return std::nullopt;
}

}  // namespace

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
  // A checkpoint that already carries attention scales: what describes the weights stays, the
  // attention group and the attention modules in `ignore` (--kv-skip-layers) become what this plan
  // says, as kv_cache_scheme does below.
  for (auto it = qc["config_groups"].begin(); it != qc["config_groups"].end();)
    it = is_attention_group(*it, plan.model) ? qc["config_groups"].erase(it) : std::next(it);
  if (qc.contains("ignore") && qc["ignore"].is_array()) {
    std::set<std::string> attention;
    for (int64_t l = 0; l < plan.model.num_hidden_layers; ++l) attention.insert(plan.model.attention_module(l));
    json kept = json::array();
    for (const auto& x : qc["ignore"])
      if (!x.is_string() || !attention.count(x.get<std::string>())) kept.push_back(x);
    qc["ignore"] = kept;
  }
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
  // A layer without a KV cache (a hybrid's linear attention) has no attention module to ignore.
  for (int64_t l : plan.kv_skip_layers)
    if (plan.model.has_kv_cache(l)) qc["ignore"].push_back(plan.model.attention_module(l));
  qc["kv_cache_scheme"] = quant_args_to_json(plan.kv_args);
  qc["quant_method"] = "compressed-tensors";
  qc["quantization_status"] = "compressed";
  if (!qc.contains("sparsity_config") || qc["sparsity_config"].is_null()) qc["sparsity_config"] = json::object();
  json tc = transform_config_json(plan);
  if (qc.contains("transform_config") && qc["transform_config"].is_object() && !qc["transform_config"].empty()) {
    if (!tc.empty())
      throw InputError(fmt::format("{}: the checkpoint already has a transform_config; ctcal will not "
                                   "stack rotations on a rotated model", where));
    // R2 is folded into the stored weights, so the forward sees it; R3 runs only at serving time,
    // and K scales observed on unrotated keys would not fit the rotated ones.
    if (const auto r3 = online_rotation(qc["transform_config"]))
      throw InputError(fmt::format("{}: quantization_config.transform_config group '{}' rotates queries and keys "
                                   "at serving time (q_attn / k_cache), which ctcal's forward does not apply to "
                                   "this checkpoint: its K scales would not fit the rotated keys; calibrate the "
                                   "unrotated checkpoint with an R3 recipe instead", where, *r3));
  } else {
    qc["transform_config"] = tc;
  }
  qc["version"] = kCompressedTensorsVersion;
  qc["provider"] = fmt::format("ctcal {}", kVersion);
  return qc;
}

}  // namespace ctcal
