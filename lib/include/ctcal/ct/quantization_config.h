#pragma once
// config.json's `quantization_config` block (compressed-tensors' QuantizationConfig dump plus its
// transform_config; reference §2.3, §6) read once into one struct. Reading is lenient: a field of
// the wrong type reads as absent, and each caller validates what it uses, with its own message.
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/ct/transforms.h"

namespace ctcal::ct {

// One entry of `config_groups` (a QuantizationScheme dump).
struct ConfigGroup {
  std::string name;
  std::vector<std::string> targets;  // the string entries of `targets`
  nlohmann::json weights;            // QuantizationArgs dumps, null when absent
  nlohmann::json input_activations;
  nlohmann::json raw;                // the group as written (maybe not an object)
};

// One entry of `transform_config.config_groups` (a TransformScheme dump).
struct TransformGroup {
  std::string name;
  std::string type;                  // "hadamard", ...; "?" when absent
  std::optional<int64_t> head_dim;
  bool randomize = false;
  std::set<std::string> locations;   // of its `apply` entries
  Rotation rotation = Rotation::kOther;
  nlohmann::json raw;
};

struct QuantizationConfig {
  std::string quant_method;                  // "" when absent
  std::vector<std::string> ignore;           // the string entries of `ignore`
  std::vector<ConfigGroup> config_groups;    // by name (nlohmann::json keeps objects sorted)
  nlohmann::json kv_cache_scheme;            // null when absent
  std::vector<TransformGroup> transforms;

  // Each group's targets, in config_groups' order (for resolve_group).
  std::vector<std::vector<std::string>> group_targets() const;
  // The group that quantizes attention (queries): input_activations and a target picking out the
  // attention module (ct/attention.h) of `attention_module` / `attention_class` ("" = any).
  const ConfigGroup* attention_group(const std::string& attention_module = "model.layers.0.self_attn",
                                     const std::string& attention_class = "") const;
  const TransformGroup* r3() const;          // the transform group that is R3, if any
};

// `qc`: the `quantization_config` object (a non-object reads as empty).
QuantizationConfig read_quantization_config(const nlohmann::json& qc);

}  // namespace ctcal::ct
