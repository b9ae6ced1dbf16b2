#pragma once
// One quantized configuration to evaluate: the checkpoint whose weights the forward uses (R2
// already folded in), the rotation applied to queries and keys (R3), the args and per-layer
// scales of K/V (and Q), and a weight edit for recipes calibrated on the fly (R2).
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ctcal/eval/kv_fake_quant.h"
#include "ctcal/eval/linear_fake_quant.h"
#include "ctcal/io/checkpoint.h"
#include "ctcal/model/model_config.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/tensor_types.h"
#include "ctcal/pipeline/calibrate.h"
#include "ctcal/pipeline/plan.h"

namespace ctcal {

// An NVFP4 KV cache: which rule chose the decode multipliers ("1.0", "amax/448", "amax/2688",
// "searched") and the multipliers themselves, [layers] {Site::kKey: s, Site::kValue: s}.
struct Nvfp4Kv {
  std::string rule;
  std::vector<std::map<Site, double>> s;
};

struct EvalRun {
  std::string name;                          // directory or recipe path
  const Checkpoint* checkpoint = nullptr;    // weights used by the forward
  std::unique_ptr<Checkpoint> owned;         // when loaded from --quantized
  ModelConfig config;
  QuantArgs kv_args;
  std::optional<QuantArgs> query_args;
  std::vector<LayerScales> scales;           // [layers]
  std::optional<RowMatrix> qk_rotation;      // normalised [head_dim, head_dim]
  std::function<void(int64_t, LayerWeights&)> edit_weights;  // R2 for recipes
  std::optional<CalibrationPlan> plan;       // recipes only (for the report)
  // FP8 W8A8 Linear layers: their weights are FP8 (read from an FP8 checkpoint, or fake-quantized
  // by `quantize_weights` for recipes), and their inputs are fake-quantized per `inputs`.
  bool fp8_weights = false;
  std::function<void(int64_t, LayerWeights&)> quantize_weights;  // recipes: dequantize(quantize(W))
  std::map<std::pair<int64_t, Site>, InputQuantSpec> inputs;      // Linear inputs (layer, site)
  // --kv-cache-dtype nvfp4: the KV cache as vLLM stores it in NVFP4 (eval/nvfp4_fake_quant.h)
  // instead of kv_args / scales, with these per-tensor decode multipliers; Q unquantized.
  std::optional<Nvfp4Kv> nvfp4;
  // A checkpoint ctcal calibrated for NVFP4 (its nvfp4_kv record, quant/nvfp4_record.h): its
  // k/v `scales` are decode multipliers s, and this is the amax each was chosen for, [layers]
  // {Site::kKey: amax, Site::kValue: amax}. Evaluated as it is, the run is FP8 served with s.
  std::optional<std::vector<std::map<Site, double>>> nvfp4_amax;
};

// The Linear-input fake quantization an FP8 checkpoint asks for: static where its modules hold
// `input_scale` (the max of the modules sharing an input), dynamic where their config group's
// input_activations are dynamic. MoE experts' inputs are not fake-quantized (ctcal eval runs the
// router and the experts on the unquantized MoE input).
std::map<std::pair<int64_t, Site>, InputQuantSpec> checkpoint_input_quant(const Checkpoint& ck, const ModelConfig& c);

// Reads a compressed-tensors checkpoint that ctcal or llm-compressor wrote. Throws InputError
// naming the file/tensor when scales are missing or of the wrong shape, or the config is not
// a KV-quantized compressed-tensors config.
EvalRun load_quantized_run(const std::filesystem::path& dir);

// `r` under another name, not owning: the same weights (and R2), config, args, rotation, scales and
// Linear-input quantization. Eval's variant runs start from it and change only what they name.
EvalRun borrowed_copy(const EvalRun& r, const std::string& name);

// `r` with vLLM's NVFP4 KV cache at the decode multipliers `kv.s` instead of its own KV scheme (its
// k/v scales dropped, its nvfp4_amax record left behind: `kv` says which s). Q is not quantized:
// FlashInfer's FA2 path keeps it in the model dtype (v1/attention/backends/flashinfer.py).
EvalRun nvfp4_kv_run(const EvalRun& r, const std::string& name, Nvfp4Kv kv);

// A run from an on-the-fly calibration (plan + result) over the base checkpoint.
EvalRun make_recipe_run(const std::string& name, const Checkpoint& base, const CalibrationPlan& plan,
                        const CalibrationResult& result);

}  // namespace ctcal
