#pragma once
// What a calibration will do, resolved once from (recipe x model): which activations are
// observed with which args, which rotations run, what is written. `--dry-run` prints it.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/model/linear_modules.h"
#include "ctcal/model/model_config.h"
#include "ctcal/model/observation.h"
#include "ctcal/model/tensor_types.h"
#include "ctcal/quant/quant_args.h"
#include "ctcal/recipe/recipe.h"

namespace ctcal {

class Checkpoint;

struct RotationPlan {
  std::string group;         // "R3" / "R2" (config group name in transform_config)
  std::string type;          // hadamard / random-hadamard
  int64_t size = 0;          // block size (= head_dim)
  std::string precision;     // "torch.float64"
  nlohmann::json scheme;     // TransformScheme dump for transform_config
  RowMatrixD matrix;         // [size, size], unnormalised ±1 entries (what is stored)
};

// One Linear layer quantized to FP8: data-free weight scales, and an input scale observed at
// `input_site` when its input args are static.
struct LinearQuantPlan {
  std::string module;               // "model.layers.0.self_attn.q_proj"
  int64_t layer = 0;
  Site input_site = Site::kQkvInput;
  std::string group;                // config group name
  QuantArgs weights;
  std::optional<QuantArgs> input;   // static input args (observed); nullopt: none or dynamic
  int64_t expert = -1;              // MoE experts: the expert (input observed on its routed tokens)
  LinearRole role = LinearRole::kQ; // the projection(s) it fills (model/linear_modules.h: linear_parts)
};

struct CalibrationPlan {
  ModelConfig model;
  DType storage = DType::kF32;               // dtype of the written scales (the model's dtype)
  QuantArgs kv_args;                         // K and V
  std::optional<QuantArgs> query_args;       // Q, with attention quantization
  std::optional<std::string> attention_group;   // its config group name
  std::vector<std::string> attention_targets;
  std::optional<RotationPlan> r3;            // queries and keys, online, after RoPE
  std::optional<RotationPlan> r2;            // v_proj / o_proj weights, offline
  bool rotations_observed = true;            // SpinQuant listed before QuantizationModifier
  bool write_zero_points = false;            // asymmetric, or attention quantization
  std::vector<LinearQuantPlan> linear;       // FP8 Linear layers, by layer then module
  nlohmann::json linear_groups = nlohmann::json::object();  // their config groups, as written
  std::vector<std::string> ignore;           // the recipe's ignore list
  std::map<Site, QuantArgs> input_args;      // static Linear-input sites and their args
  // --key-range envelope: K's range from the pre-RoPE pair norms (quant/key_envelope.h), so that
  // k_scale holds at every position; false: the observed post-RoPE keys (llm-compressor).
  bool key_envelope = false;
  // Layers whose attention stays unquantized (--kv-skip-layers): their module in `ignore`, no
  // q/k/v scales written; served with vLLM's --kv-cache-dtype-skip-layers.
  std::vector<int64_t> kv_skip_layers;
  std::vector<Site> sites() const;           // observed per layer (one result each: LayerResult::sites)
  // Those of layer `l`: a layer without a KV cache (a hybrid's linear attention) has no Q/K/V and
  // no attention-block Linear inputs; its MLP inputs stay.
  std::vector<Site> sites(int64_t l) const;
  std::vector<Site> expert_sites() const;    // observed per MoE layer and expert (LayerResult::experts)
  int64_t heads(Site s, int64_t layer) const;  // heads of the scale for a site in a layer (1 for Linear inputs)
  const QuantArgs& site_args(Site s) const;  // the args a site is observed with
  bool observes_last_mlp() const;            // an MLP input is observed (the last MLP must run)
};

// Throws RecipeError (exit 3) for combinations the model cannot take (e.g. a Hadamard size that
// has no construction), InputError for model problems. `seed` draws random-hadamard signs.
CalibrationPlan make_plan(const Recipe& recipe, const ModelConfig& model, DType storage,
                          uint64_t seed = 42);

// A multimodal checkpoint's modules outside the language model (Qwen3.5's model.visual.*, Gemma 3's
// model.vision_tower.*) are copied unchanged. A Linear config group that matches one of them would
// declare it quantized in config.json, and vLLM builds those towers with the quantization config
// (models/qwen3_5.py: Qwen3_VisionTransformer(..., quant_config)) and then finds no FP8 weights
// for them. Throws RecipeError (exit 3) naming the first such 2-D `.weight` and the `ignore` entry
// that keeps the tower out, as llm-compressor's Qwen3.5 FP8 example does ("re:model.visual.*").
void check_groups_stay_in_language_model(const CalibrationPlan& plan, const Checkpoint& checkpoint,
                                         const std::string& where);

// `transform_config` as compressed-tensors 0.18 dumps it ({} without rotations).
nlohmann::json transform_config_json(const CalibrationPlan& plan);

}  // namespace ctcal
