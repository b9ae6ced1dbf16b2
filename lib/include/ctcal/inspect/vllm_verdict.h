#pragma once
// What vLLM 0.34.0 does with a checkpoint: whether it loads, which layers get an FP8 KV cache and
// with which scales, and the serve line that gets what the checkpoint was calibrated for. One home
// for these rules; `inspect` gathers the facts, `calibrate` prints the verdict it returns.
//
// Every rule names the vLLM 0.34.0 file and function behind it (paths relative to the `vllm`
// package of its PyPI wheel; shared/reference/serving-2026.md, docs/serving.md). The peer test
// tests/peer/vllm_judges_outputs.py builds and loads each checkpoint with vLLM 0.34.0's own code
// and fails where this verdict and vLLM disagree.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/quant/nvfp4_record.h"
#include "ctcal/quant/quant_args.h"

namespace ctcal {

// The engine version whose rules this file encodes (printed by inspect and calibrate).
inline constexpr const char* kVllmRulesVersion = "0.34.0";

// What a checkpoint's quantization_config says about attention and the KV cache.
struct KvSchemeFacts {
  std::optional<QuantArgs> kv, q;  // kv_cache_scheme; the attention group's input_activations
  std::string q_group;             // that attention group's name
  bool r3 = false, r2 = false, other_transforms = false;
  // Attention groups vLLM does not drop from its Linear schemes (not exactly one target ending in
  // "Attention"): loading validates their `weights: null` and fails.
  std::vector<std::string> undroppable_attention_groups;
};

// Everything the vLLM verdict is decided from; `inspect` fills it.
struct VllmFacts {
  std::string served_path;         // the directory `vllm serve` is given
  std::string architecture;        // config.json architectures[0], even when ctcal cannot run it
  std::string quant_method;        // quantization_config.quant_method; empty when not quantized
  nlohmann::json config = nlohmann::json::object();  // config.json (model-specific loader rules)
  KvSchemeFacts scheme;
  std::vector<std::string> tensors;  // every tensor name in the checkpoint (empty for a config.json)
  // The attention module of each layer ("model.layers.3.self_attn"); empty when ctcal cannot read
  // the model's config, and then no per-layer verdict is given.
  std::vector<std::string> attention_modules;
  // The decoder layer of each attention module when not every layer has one (a hybrid's
  // full-attention layers: vLLM numbers --kv-cache-dtype-skip-layers by the decoder layer,
  // extract_layer_index of "model.layers.{i}.self_attn.attn"); empty: attention_modules[l] is layer l.
  std::vector<int64_t> attention_layers;
  std::vector<int64_t> ignored_attention_layers;  // layers whose attention module is in `ignore`
  bool has_errors = false;  // inspect found errors (the checkpoint's files disagree with its config)
  // ctcal's record that the k/v scales are NVFP4 decode multipliers (quant/nvfp4_record.h): the
  // serve line then asks for --kv-cache-dtype nvfp4, and `nvfp4` says what FP8 would cost.
  std::optional<Nvfp4KvRecord> nvfp4;
};

// The verdict, as inspect's `serving.vllm` JSON object:
//   engine, loadable, serves_as_calibrated, load_error {exception, tensor, why} | null,
//   reasons[], conditions[], ignored[], notes[], command | null,
//   kv_layers[] {layer, module, cache ("fp8" | "auto"), k/v/q: where vLLM's scale comes from
//   ("checkpoint", "checkpoint kv_scale", "1.0", "unquantized")} under `command`,
//   without_skip_flag | null: the same list when the skip-layers flag is left out;
//   nvfp4 (only with VllmFacts::nvfp4): {meant_for, sources, served_as_fp8 {sites, clipped_sites,
//   worst {layer, site, s, amax, kept} | null, words}}.
nlohmann::json vllm_verdict(const VllmFacts& facts);

// vLLM's --kv-cache-dtype-skip-layers takes space-separated values (argparse nargs="+",
// engine/arg_utils.py) and matches str(layer_idx) against each (Attention.__init__): "1,3" matches
// no layer. Returns "--kv-cache-dtype-skip-layers 1 3", or "" for no layers.
std::string vllm_skip_layers_flag(const std::vector<int64_t>& layers);

}  // namespace ctcal
