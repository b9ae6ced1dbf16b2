#pragma once
// What a calibration will do, resolved once from (recipe x model): which activations are
// observed with which args, which rotations run, what is written. `--dry-run` prints it.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/model/model_config.h"
#include "ctcal/model/observation.h"
#include "ctcal/model/tensor_types.h"
#include "ctcal/quant/quant_args.h"
#include "ctcal/recipe/recipe.h"

namespace ctcal {

struct RotationPlan {
  std::string group;         // "R3" / "R2" (config group name in transform_config)
  std::string type;          // hadamard / random-hadamard
  int64_t size = 0;          // block size (= head_dim)
  std::string precision;     // "torch.float64"
  nlohmann::json scheme;     // TransformScheme dump for transform_config
  RowMatrixD matrix;         // [size, size], unnormalised ±1 entries (what is stored)
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
  std::vector<Site> sites() const;           // observed per layer
  int64_t heads(Site s) const;               // heads of the scale for a site
};

// Throws RecipeError (exit 3) for combinations the model cannot take (e.g. a Hadamard size that
// has no construction), InputError for model problems. `seed` draws random-hadamard signs.
CalibrationPlan make_plan(const Recipe& recipe, const ModelConfig& model, DType storage,
                          uint64_t seed = 42);

// `transform_config` as compressed-tensors 0.18 dumps it ({} without rotations).
nlohmann::json transform_config_json(const CalibrationPlan& plan);

}  // namespace ctcal
