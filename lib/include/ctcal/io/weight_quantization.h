#pragma once
// Which Linear weights of a compressed-tensors checkpoint are stored quantized, and how: read from
// config.json's `quantization_config` (config_groups with `weights`, the global or per-group
// `format`, `ignore`). A module counts as quantized when compressed-tensors would give it a group
// (ct/groups.h: targets and `ignore` matched as compressed-tensors matches them, the module's class
// being `Linear`) and its quantized tensors are present; the caller asks only for Linear modules.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/io/quantized_weight.h"

namespace ctcal {

class WeightQuantization {
 public:
  WeightQuantization() = default;
  // `config`: the whole config.json; `where` names it for messages. No quantization_config, or
  // one without weight groups (e.g. KV scales only): empty. Throws UnsupportedFormatError (exit 4)
  // for another quant_method, an unknown or sparse format; InputError for a malformed group.
  static WeightQuantization from_config(const nlohmann::json& config, const std::string& where);

  bool empty() const { return groups_.empty(); }
  // The spec for Linear `module` ("model.layers.0.self_attn.q_proj") when it is stored quantized.
  std::optional<QuantizedWeightSpec> spec_for(const TensorGetter& get, const std::string& module) const;
  // Formats in use (for the log), e.g. {"float-quantized"}.
  std::vector<std::string> formats() const;

 private:
  struct Group {
    std::string name;
    std::vector<std::string> targets;
    QuantizedWeightSpec spec;
  };
  std::vector<Group> groups_;
  std::vector<std::string> ignore_;
};

}  // namespace ctcal
