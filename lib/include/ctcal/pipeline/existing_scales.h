#pragma once
// Attention scales an input checkpoint already carries (a hub FP8 checkpoint whose scales came
// from a memoryless or moving-average observer, or ctcal's own output calibrated again): which
// input tensors are q/k/v scales or zero points, under the canonical names or a legacy one
// (`k_proj.output_scale`, `kv_scale`, ModelOpt's `k_proj.k_scale`), and what became of each once
// the new scales are known: replaced (old and new values, how far they moved) or dropped (why).
// None of them is copied to the output: vLLM reads every tensor of every shard, so a stale scale
// beside a new one, or of a layer left unquantized, would be loaded; and vLLM 0.34 does not remap
// `k_proj.output_scale` for compressed-tensors checkpoints (loading fails), nor copies `kv_scale`
// into `v_scale`.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/io/checkpoint.h"
#include "ctcal/io/safetensors.h"
#include "ctcal/pipeline/plan.h"

namespace ctcal {

struct ReplacedScale {
  std::string name;      // the new tensor, "model.layers.0.self_attn.k_scale"
  std::string old_name;  // the input's tensor it replaces: `name`, or a legacy name
  std::vector<float> old_values, new_values;
  std::vector<int64_t> old_shape, new_shape;
  // max |new - old| / old over the elements, a single value broadcast against per-head ones;
  // +inf when an old value is zero, negative or not finite.
  double max_relative_change = 0;
  std::optional<int64_t> head;  // the element where it is, when either scale is per head
  double old_at = 0, new_at = 0;  // the old and new values there
};

struct DroppedScale {
  std::string name;    // the input's tensor
  std::string reason;  // why no new tensor replaces it
};

struct ExistingScales {
  std::set<std::string> input_names;  // every attention scale / zero point of the input
  std::vector<ReplacedScale> replaced;  // scales, by new name
  std::vector<DroppedScale> dropped;    // input tensors that no tensor of the same role replaces
  std::vector<std::string> legacy;      // input names under a legacy spelling (replaced or dropped)
  int64_t zero_points_replaced = 0;     // zero points rewritten under the same name
  bool empty() const { return input_names.empty(); }
  const ReplacedScale* largest() const;  // the replaced scale that moved most (null: none)
};

// Every q/k/v scale or zero point of `in`, canonical or legacy, of each layer's attention module.
std::set<std::string> attention_scales_in(const Checkpoint& in, const ModelConfig& model);

// Matches the input's attention scales against `written` (the new scale shard's tensors).
ExistingScales match_existing_scales(const Checkpoint& in, const CalibrationPlan& plan,
                                     const std::map<std::string, TensorBlob>& written);

// ctcal_report.json's `replaced_scales` (name, old_name for legacy ones, old, new, shapes,
// max_relative_change, head) and `dropped_scales` (name, reason).
nlohmann::json replaced_scales_json(const ExistingScales& e);
nlohmann::json dropped_scales_json(const ExistingScales& e);

// One line with the count and the largest change (info), then the dropped and legacy names (warn).
void log_existing_scales(const ExistingScales& e);

}  // namespace ctcal
