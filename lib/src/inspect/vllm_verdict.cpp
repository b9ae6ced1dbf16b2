#include "ctcal/inspect/vllm_verdict.h"

#include <algorithm>
#include <regex>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ctcal/ct/groups.h"
#include "ctcal/ct/quantization_config.h"
#include "ctcal/error.h"
#include "ctcal/model/model_config.h"

namespace ctcal {

using nlohmann::json;

namespace {

// Architectures whose vLLM 0.34 model loads through AutoWeightsLoader (models/utils.py,
// _load_module): a tensor name that is neither a parameter nor a buffer raises ValueError ("There
// is no module or parameter named ..."). gpt-oss is not among them: _load_weights_other in
// models/gpt_oss.py skips unknown names. SmolLM3 and OLMo 3 have no model file of their own: the
// registry's _TRANSFORMERS_SUPPORTED_MODELS serves them with the Transformers backend
// (models/transformers/base.py), whose load_weights is AutoWeightsLoader and whose Attention
// layers sit at <layer>.self_attn.attn (VLLM_ATTN_ATTR), where get_cache_scale_mapper puts
// self_attn.k_scale / v_scale. GLM-4.5's Glm4MoeModel.load_weights is AutoWeightsLoader too
// (models/glm4_moe.py; its MTP layers are dropped before it by skip_spec_layers), and so is
// MiniMaxM2Model.load_weights (models/minimax_m2.py). Llama4ForCausalLM.load_weights is
// AutoWeightsLoader over Llama4Model.load_weights, which indexes params_dict[name] (KeyError on
// an unknown name) after the quant config's cache-scale mapper has moved self_attn.k_scale /
// v_scale to self_attn.attn (models/llama4.py; its Attention / ChunkedLocalAttention at
// prefix f"{prefix}.attn"). Gemma4ForCausalLM.load_weights is AutoWeightsLoader (models/gemma4.py;
// Attention at self_attn.attn). Llama4ForConditionalGeneration (models/mllama4.py) hands the
// language_model.* tensors to the same loader and indexes params_dict[name] for the others.
bool raises_on_unknown_names(const std::string& arch) {
  static const std::set<std::string> archs = {
      "LlamaForCausalLM",   "MistralForCausalLM",          "Qwen2ForCausalLM",
      "Qwen3ForCausalLM",   "Qwen3MoeForCausalLM",         "MixtralForCausalLM",
      "Gemma3ForCausalLM",  "Gemma3ForConditionalGeneration", "Phi3ForCausalLM",
      "SmolLM3ForCausalLM", "Olmo3ForCausalLM",  "Glm4MoeForCausalLM", "MiniMaxM2ForCausalLM",
      "Llama4ForCausalLM",  "Llama4ForConditionalGeneration", "Gemma4ForCausalLM",
      "Gemma4ForConditionalGeneration"};
  return archs.count(arch) > 0;
}

bool skips_unknown_names(const std::string& arch) { return arch == "GptOssForCausalLM"; }

// MLA models: MLAAttention (layers/attention/mla_attention.py) is not an Attention, so
// compressed-tensors creates no KV scale parameters for it, and DeepseekV2Model.load_weights
// (models/deepseek_v2.py) drops self_attn.k_scale with a "not loaded" warning.
bool is_mla(const std::string& arch) {
  static const std::set<std::string> archs = {"DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM",
                                              "DeepseekV32ForCausalLM", "KimiK2ForCausalLM"};
  return archs.count(arch) > 0;
}

// Hybrid models whose attention layers are ordinary Attention(..., quant_config, prefix=...attn)
// in vLLM 0.34 (models/qwen3_next.py, nemotron_h.py, granitemoehybrid.py): their scales load.
bool is_hybrid(const std::string& arch) {
  static const std::set<std::string> archs = {
      "Qwen3NextForCausalLM", "Qwen3_5ForCausalLM", "Qwen3_5MoeForCausalLM", "Qwen3_5ForConditionalGeneration",
      "Qwen3_5MoeForConditionalGeneration", "NemotronHForCausalLM", "GraniteMoeHybridForCausalLM"};
  return archs.count(arch) > 0;
}

// Whether the layers mix sliding and full attention: config.json's layer_types, or as transformers'
// Qwen2Config derives them (sliding from layer max_window_layers on, when use_sliding_window).
bool mixes_layer_types(const json& c) {
  if (c.contains("layer_types") && c["layer_types"].is_array()) {
    std::set<std::string> kinds;
    for (const auto& t : c["layer_types"])
      if (t.is_string()) kinds.insert(t.get<std::string>());
    return kinds.size() > 1;
  }
  if (!c.value("use_sliding_window", false) || !c.value("sliding_window", json(nullptr)).is_number()) return false;
  const json mwl = c.value("max_window_layers", json(nullptr)), n = c.value("num_hidden_layers", json(nullptr));
  return mwl.is_number_integer() && n.is_number_integer() && mwl.get<int64_t>() > 0 && mwl.get<int64_t>() < n.get<int64_t>();
}

bool contains(const std::set<std::string>& names, const std::string& n) { return names.count(n) > 0; }

// The first stored name matching `re`, or "".
std::string first_match(const std::vector<std::string>& names, const std::regex& re) {
  for (const auto& n : names)
    if (std::regex_search(n, re)) return n;
  return "";
}

// How vLLM names a checkpoint tensor before looking it up: QuantizationConfig.get_cache_scale_mapper
// (layers/quantization/base_config.py) leaves `k_proj.output_scale` alone, so it stays unknown.
json load_error(const std::string& exception, const std::string& tensor, const std::string& why) {
  return {{"exception", exception}, {"tensor", tensor.empty() ? json(nullptr) : json(tensor)}, {"why", why}};
}

// A checkpoint calibrated for NVFP4 (quant/nvfp4_record.h): what it is meant for, and what its
// scales cost served as FP8 (without --kv-cache-dtype nvfp4 vLLM turns `auto` into fp8, which
// represents |x| up to 448 s: an s below amax/448 clips the largest values).
json nvfp4_words(const Nvfp4KvRecord& r) {
  const std::vector<Fp8Clip> clips = fp8_clipping(r);
  const int64_t sites = nvfp4_record_sites(r);
  json worst = nullptr;
  std::string words;
  if (clips.empty()) {
    words = fmt::format("served as FP8 instead (without --kv-cache-dtype nvfp4), none of the {} k/v scales clips: "
                        "every s is at least amax/448",
                        sites);
  } else {
    const Fp8Clip& w = *std::min_element(clips.begin(), clips.end(),
                                         [](const Fp8Clip& a, const Fp8Clip& b) { return a.kept() < b.kept(); });
    worst = {{"layer", w.layer}, {"site", std::string(1, w.site)}, {"s", w.s}, {"amax", w.amax}, {"kept", w.kept()}};
    words = fmt::format("these scales are meant for --kv-cache-dtype nvfp4; served as FP8 (without that flag vLLM "
                        "uses fp8) {} of {} k/v scales are below amax/448 and clip every value above 448 s (worst: "
                        "layer {} {}_scale, FP8 keeps {:.1f} % of its range [0, {:.4g}]); `ctcal eval --quantized` "
                        "on this checkpoint measures that FP8 cost",
                        clips.size(), sites, w.layer, w.site, 100 * w.kept(), w.amax);
  }
  return {{"meant_for", "--kv-cache-dtype nvfp4"},
          {"scale_rule", r.rule},
          {"served_as_fp8",
           {{"sites", sites}, {"clipped_sites", clips.size()}, {"worst", worst}, {"words", words}}}};
}

}  // namespace

std::string vllm_skip_layers_flag(const std::vector<int64_t>& layers) {
  if (layers.empty()) return "";
  return fmt::format("--kv-cache-dtype-skip-layers {}", fmt::join(layers, " "));
}

json vllm_verdict(const VllmFacts& f) {
  json v = {{"engine", fmt::format("vllm {}", kVllmRulesVersion)},
            {"loadable", true},
            {"serves_as_calibrated", true},
            {"load_error", nullptr},
            {"reasons", json::array()},
            {"conditions", json::array()},
            {"ignored", json::array()},
            {"notes", json::array()},
            {"command", nullptr},
            {"kv_layers", json::array()},
            {"without_skip_flag", nullptr}};
  auto cannot_load = [&](const std::string& exception, const std::string& tensor, const std::string& why) {
    if (v["loadable"].get<bool>()) v["load_error"] = load_error(exception, tensor, why);
    v["loadable"] = false;
    v["serves_as_calibrated"] = false;
    v["reasons"].push_back(fmt::format("cannot load ({}): {}", exception, why));
  };
  auto not_as_calibrated = [&](const std::string& why) {
    v["serves_as_calibrated"] = false;
    v["reasons"].push_back(why);
  };
  const std::set<std::string> names(f.tensors.begin(), f.tensors.end());
  const KvSchemeFacts& s = f.scheme;

  if (f.quant_method == "mxfp4") {
    not_as_calibrated("quant_method mxfp4: Mxfp4Config.get_quant_method returns None for attention "
                      "(layers/quantization/mxfp4.py), so vLLM creates no KV scale parameters and skips any "
                      "stored ones: an FP8 KV cache (--kv-cache-dtype fp8) runs at scale 1.0 in every layer");
    return v;
  }
  if (!f.quant_method.empty() && f.quant_method != "compressed-tensors") {
    not_as_calibrated(fmt::format("quant_method {}: ctcal's verdicts cover compressed-tensors checkpoints only",
                                  f.quant_method));
    return v;
  }
  if (!s.kv) {
    not_as_calibrated("no kv_cache_scheme: vLLM loads the model, but --kv-cache-dtype fp8 would use scale 1.0 "
                      "for every layer (nothing computes scales at serving time since calculate_kv_scales was "
                      "removed)");
    return v;
  }

  // CompressedTensorsKVCacheMethod.validate_kv_cache_scheme (compressed_tensors.py).
  const QuantArgs& a = *s.kv;
  if (a.type != QuantType::kFloat || a.num_bits != 8)
    cannot_load("NotImplementedError", "",
                "validate_kv_cache_scheme accepts only 8-bit float KV caches (int scales are for research and "
                "`ctcal eval`)");
  else if (*a.strategy != Strategy::kTensor && *a.strategy != Strategy::kAttnHead)
    cannot_load("NotImplementedError", "", "validate_kv_cache_scheme accepts strategy tensor or attn_head only");
  else if (!a.symmetric)
    cannot_load("NotImplementedError", "", "validate_kv_cache_scheme refuses asymmetric KV quantization");
  // CompressedTensorsConfig.from_config drops an attention group only when it has exactly one
  // target ending in "Attention"; any other is validated as a Linear scheme.
  if (!s.undroppable_attention_groups.empty())
    cannot_load("ValidationError", "",
                fmt::format("attention group(s) {} have targets other than one '...Attention' class name, so "
                            "CompressedTensorsConfig.from_config validates their `weights: null` as "
                            "QuantizationArgs",
                            json(s.undroppable_attention_groups).dump()));

  // compressed-tensors' QuantizationArgs validator (quantization/quant_args.py, vLLM's pinned 0.17)
  // refuses static per-token quantization ("Cannot perform static token quantization"), so
  // CompressedTensorsConfig.from_config fails on such a config group.
  if (f.config.contains("quantization_config"))
    for (const auto& g : ct::read_quantization_config(f.config["quantization_config"]).config_groups)
      for (const json* q : {&g.weights, &g.input_activations})
        if (q->is_object() && q->value("strategy", "") == "token" && !(q->contains("dynamic") && (*q)["dynamic"] == json(true))) {
          cannot_load("ValidationError", "",
                      fmt::format("config group '{}' asks for static per-token quantization, which compressed-tensors' "
                                  "QuantizationArgs refuses (\"Cannot perform static token quantization\")",
                                  g.name));
          break;
        }

  // Qwen2Model.__init__ (models/qwen2.py) asserts that a model whose layer_types mix sliding and
  // full attention has max_window_layers == num_hidden_layers.
  if (f.architecture == "Qwen2ForCausalLM" && mixes_layer_types(f.config) &&
      f.config.value("max_window_layers", json(-1)) != f.config.value("num_hidden_layers", json(-2)))
    cannot_load("AssertionError", "",
                fmt::format("vLLM's Qwen2 model refuses a mix of sliding and full layers (\"Sliding window for some but "
                            "all layers is not supported\", Qwen2Model.__init__): this config slides from layer "
                            "max_window_layers = {} of {}",
                            f.config.value("max_window_layers", json(nullptr)).dump(),
                            f.config.value("num_hidden_layers", json(nullptr)).dump()));

  if (f.architecture == "MiniMaxM2ForCausalLM") {
    // Checked before the tensor names: the model's construction raises first.
    // models/minimax_m2.py reads config.rotary_dim (MiniMaxM2DecoderLayer) and config.scoring_func
    // (MiniMaxM2MoE), keys of the hub's config.json that transformers 5.17's MiniMaxM2Config neither
    // defines nor writes; and it creates e_score_correction_bias only when config.use_routing_bias.
    for (const char* key : {"rotary_dim", "scoring_func"})
      if (!f.config.contains(key))
        cannot_load("AttributeError", "",
                    fmt::format("config.json has no '{}', which vLLM's MiniMax-M2 model reads (models/minimax_m2.py); "
                                "transformers 5.17 does not write it: add it as the hub's MiniMax-M2 config has it",
                                key));
    static const std::regex bias(R"(\.e_score_correction_bias$)");
    if (const std::string b = first_match(f.tensors, bias); !b.empty() && f.config.value("use_routing_bias", false) != true)
      cannot_load("ValueError", b,
                  fmt::format("'{}' has no parameter in vLLM's MiniMax-M2 without \"use_routing_bias\": true in "
                              "config.json (MiniMaxM2MoE), so AutoWeightsLoader raises \"There is no module or "
                              "parameter named ...\"", b));
  }
  if (f.architecture == "Llama4ForCausalLM" || f.architecture == "Llama4ForConditionalGeneration") {
    // models/llama4.py, Llama4DecoderLayer: a layer is MoE when (layer + 1) % interleave_moe_layer_step
    // == 0, whatever config.json's moe_layers says (transformers 5.17 builds Llama4TextMoe exactly on
    // moe_layers); a layer of the other kind finds no parameter for its feed_forward tensors and
    // Llama4Model.load_weights raises KeyError (params_dict[name]). Its attention is built with
    // bias=False, bias_o_proj=False: attention_bias tensors raise the same KeyError.
    // The multimodal checkpoint's text model is under text_config (Llama4Config).
    const json& text = f.config.contains("text_config") && f.config["text_config"].is_object() ? f.config["text_config"]
                                                                                                : f.config;
    const int64_t layers = text.value("num_hidden_layers", int64_t{0});
    const int64_t step = text.value("interleave_moe_layer_step", int64_t{1});
    if (text.contains("moe_layers") && text["moe_layers"].is_array()) {
      std::set<int64_t> listed;
      for (const json& entry : text["moe_layers"])
        if (entry.is_number_integer()) listed.insert(entry.get<int64_t>());
      for (int64_t l = 0; l < layers; ++l)
        if ((step > 0 && (l + 1) % step == 0) != (listed.count(l) > 0)) {
          cannot_load("KeyError", "",
                      fmt::format("layer {} is {} in config.json's moe_layers, but vLLM's Llama 4 makes a layer MoE "
                                  "by interleave_moe_layer_step = {} alone (Llama4DecoderLayer), so its feed_forward "
                                  "tensors have no parameter", l, listed.count(l) ? "MoE" : "dense", step));
          break;
        }
    }
    // The language model's layers only: the multimodal checkpoint's vision tower has biased
    // self_attn projections of its own (Llama4VisionAttention), which vLLM loads.
    static const std::regex attn_bias(R"(^(language_model\.)?model\.layers\.\d+\.self_attn\.[qkvo]_proj\.bias$)");
    if (const std::string b = first_match(f.tensors, attn_bias); !b.empty())
      cannot_load("KeyError", b,
                  fmt::format("'{}': vLLM's Llama 4 builds its attention without biases (Llama4DecoderLayer: "
                              "bias=False, bias_o_proj=False)", b));
  }
  if ((f.architecture == "Gemma4ForCausalLM" || f.architecture == "Gemma4ForConditionalGeneration") &&
      *a.strategy == Strategy::kAttnHead) {
    // compressed_tensors.py, CompressedTensorsKVCacheMethod's _tp_aware_loader for attn_head scales:
    // it compares each layer's KV heads with the model's total_num_kv_heads (config.json's
    // num_key_value_heads), not the layer's own. A Gemma 4 layer whose per_layer_config gives it
    // other KV heads (num_global_key_value_heads on the full layers) takes the "replicated" branch:
    // one KV head divides by tp_size // total = 0 (ZeroDivisionError), more trip `assert
    // layer.num_kv_heads == 1` (AssertionError). Seen by the vLLM judge on gemma4_text_fp32.
    try {
      const ModelConfig m = parse_model_config(f.config, "config.json");
      for (int64_t l = 0; l < m.num_hidden_layers; ++l)
        if (m.kv_heads_of(l) != m.num_key_value_heads) {
          cannot_load(m.kv_heads_of(l) == 1 && m.num_key_value_heads > 1 ? "ZeroDivisionError" : "AssertionError", "",
                      fmt::format("per-head (attn_head) KV scales: layer {} has {} KV head(s) (per_layer_config) but "
                                  "vLLM's scale loader splits every layer's scales by the model's num_key_value_heads "
                                  "= {} (compressed_tensors.py _tp_aware_loader); use the per-tensor scheme "
                                  "(recipes/fp8_kv_per_tensor.yaml)", l, m.kv_heads_of(l), m.num_key_value_heads));
          break;
        }
    } catch (const InputError&) {
      // a config ctcal cannot read: no per-layer verdict (inspect says why elsewhere)
    }
  }
  // Tensor names vLLM cannot place. get_cache_scale_mapper maps .kv_scale, .{k,v}_proj.{k,v}_scale
  // and .{q,k,v}_scale, but not the legacy .{q,k,v}_proj.output_scale.
  static const std::regex legacy_output(R"(\.[qkv]_proj\.output_scale$)");
  static const std::regex r3_weight(R"(_(q_attn|k_cache)\.weight$)");
  const std::string legacy = first_match(f.tensors, legacy_output);
  const std::string r3 = first_match(f.tensors, r3_weight);
  const bool raises = raises_on_unknown_names(f.architecture);
  const bool skips = skips_unknown_names(f.architecture);
  if (!legacy.empty()) {
    // Not remapped, the name reaches the model's stacked-parameter mapping, which renames q/k/v_proj
    // to the fused qkv_proj and then reads `.data` of that module: AttributeError.
    if (raises)
      cannot_load("AttributeError", legacy,
                  fmt::format("'{}' is a legacy scale name that QuantizationConfig.get_cache_scale_mapper does not "
                              "remap for compressed-tensors checkpoints; the model's load_weights maps it onto the "
                              "fused qkv_proj module, which has no such parameter ('QKVParallelLinear' object has no "
                              "attribute 'data'); recalibrate to get self_attn.k_scale / v_scale",
                              legacy));
    else if (skips)
      not_as_calibrated(fmt::format("'{}' is a legacy scale name that vLLM's gpt-oss loader skips: that layer's "
                                    "scale stays 1.0",
                                    legacy));
  }
  // FP8 MoE experts, in vLLM's two steps. CompressedTensorsMoEMethod.get_moe_method
  // (compressed_tensors_moe/compressed_tensors_moe.py) picks the FP8 method only when
  // CompressedTensorsConfig._is_fp8_w8a8 holds (float weights and inputs; weights symmetric, static,
  // per tensor, channel or block; inputs dynamic, or static symmetric per tensor); float groups that
  // fail it raise RuntimeError ("Unsupported FusedMoe scheme"). Then
  // CompressedTensorsW8A8Fp8MoEMethod.__init__ (compressed_tensors_moe_w8a8_fp8.py) takes per-tensor
  // weights with per-tensor inputs, per-channel weights with per-token inputs, or block weights,
  // and asserts block weights otherwise (AssertionError: e.g. per-channel weights with per-tensor
  // inputs, the shape a dense model's FP8 recipe often has).
  static const std::regex expert_scale(R"(^(.*\.experts\.\d+\.(?:gate_proj|up_proj|down_proj|w1|w2|w3))\.weight_scale$)");
  if (const std::string expert = first_match(f.tensors, expert_scale); !expert.empty() && f.config.contains("quantization_config")) {
    const std::string module = expert.substr(0, expert.size() - std::string(".weight_scale").size());
    const ct::QuantizationConfig qc = ct::read_quantization_config(f.config["quantization_config"]);
    const auto g = ct::resolve_group({module, "Linear"}, qc.group_targets(), qc.ignore);
    if (g && qc.config_groups[*g].weights.is_object() && qc.config_groups[*g].input_activations.is_object() &&
        qc.config_groups[*g].weights.value("type", "") == "float" &&
        qc.config_groups[*g].input_activations.value("type", "") == "float") {
      const json& w = qc.config_groups[*g].weights;
      const json& in = qc.config_groups[*g].input_activations;
      // QuantizationArgs' defaults: symmetric true, dynamic false, strategy as written.
      auto flag = [](const json& q, const char* key, bool dflt) { return q.contains(key) && q[key].is_boolean() ? q[key].get<bool>() : dflt; };
      const std::string ws = w.value("strategy", ""), is = in.value("strategy", "");
      const bool weights_ok = flag(w, "symmetric", true) && !flag(w, "dynamic", false) &&
                              (ws == "tensor" || ws == "channel" || ws == "block");
      const bool inputs_ok = flag(in, "dynamic", false) || (flag(in, "symmetric", true) && is == "tensor");
      const std::string group = qc.config_groups[*g].name;
      if (!weights_ok || !inputs_ok)
        cannot_load("RuntimeError", expert,
                    fmt::format("config group '{}' quantizes the MoE experts with {} {} weights and {} {} inputs, which "
                                "CompressedTensorsConfig._is_fp8_w8a8 does not accept for experts (weights symmetric, "
                                "static, per tensor, channel or block; inputs dynamic, or static symmetric per tensor): "
                                "\"Unsupported FusedMoe scheme\" (CompressedTensorsMoEMethod.get_moe_method)",
                                group, flag(w, "dynamic", false) ? "dynamic" : "static", ws,
                                flag(in, "dynamic", false) ? "dynamic" : "static", is));
      else if (!(ws == "tensor" && is == "tensor") && !(ws == "channel" && is == "token") && ws != "block")
        cannot_load("AssertionError", expert,
                    fmt::format("config group '{}' quantizes the MoE experts with {} weights and {} inputs; vLLM's "
                                "FP8 MoE method (CompressedTensorsW8A8Fp8MoEMethod) takes per-tensor weights with "
                                "per-tensor inputs, per-channel weights with per-token inputs, or block weights, and "
                                "asserts block weights otherwise",
                                group, ws, is));
    }
  }
  // vLLM's Mixtral and MiniMax-M2 name their experts block_sparse_moe.experts.{e}.w1/w2/w3
  // (MixtralModel.load_weights; MiniMaxM2DecoderLayer.block_sparse_moe); the fused layout
  // transformers 5 saves (mlp.experts.gate_up_proj [E, 2I, H]) has no module there.
  static const std::regex fused_experts(R"(\.mlp\.experts\.(gate_up_proj|down_proj)$)");
  const bool block_sparse_moe = f.architecture == "MixtralForCausalLM" || f.architecture == "MiniMaxM2ForCausalLM";
  const std::string fused = block_sparse_moe ? first_match(f.tensors, fused_experts) : "";
  if (!fused.empty())
    cannot_load("ValueError", fused,
                fmt::format("'{}' is the fused expert layout transformers 5 saves; vLLM's {} loads "
                            "block_sparse_moe.experts.{{e}}.w1/w2/w3 only (\"There is no module or parameter named "
                            "'layers.N.mlp'\")",
                            fused, f.architecture == "MixtralForCausalLM" ? "Mixtral" : "MiniMax-M2"));
  if (!r3.empty() && raises) {
    cannot_load("ValueError", r3,
                fmt::format("the R3 transform weights ('{}') are neither parameters nor scales, so AutoWeightsLoader "
                            "(models/utils.py, _load_module) raises \"There is no module or parameter named ...\"; "
                            "mainline vLLM applies no attention rotation either",
                            r3));
  } else if (!r3.empty() && skips) {
    not_as_calibrated(fmt::format(
        "WRONG OUTPUT, SILENTLY: vLLM's gpt-oss loader (_load_weights_other) skips the R3 transform weights "
        "('{}'), so the model loads and runs unrotated while its k_scale was measured on rotated keys",
        r3));
  } else if (s.r3) {
    not_as_calibrated("transform_config has an R3 (q_attn/k_cache) rotation, which mainline vLLM does not apply, so "
                      "k_scale (calibrated on rotated keys) would be wrong");
  }
  if (s.other_transforms)
    not_as_calibrated("transform_config has online transforms vLLM does not apply (it supports only Linear "
                      "input/output transforms)");
  if (is_mla(f.architecture))
    not_as_calibrated("MLA attention: vLLM creates no KV scale parameters for MLAAttention and "
                      "DeepseekV2Model.load_weights drops self_attn.k_scale with a warning");
  if (f.has_errors) not_as_calibrated("the errors listed under problems must be fixed first");

  if (*a.strategy == Strategy::kAttnHead)
    v["conditions"].push_back(
        "per-head scales (attn_head) need a backend with supports_per_head_quant_scales: FlashAttention 3 (Hopper) "
        "or 4 (Blackwell) (v1/attention/backends/flash_attn.py); auto-selection skips the others, and forcing "
        "FlashAttention 2, FlashInfer or Triton fails at start-up");
  // Gemma 3's multimodal model attends bidirectionally over image tokens (mm_prefix): on Hopper
  // FlashAttention 3 refuses an FP8 KV cache with it and CudaPlatform picks Triton, which has no
  // per-head scales (v1/attention/backends/flash_attn.py and triton_attn.py, validate_configuration).
  if (f.architecture == "Gemma3ForConditionalGeneration") {
    if (*a.strategy == Strategy::kAttnHead)
      v["conditions"].push_back("Gemma 3 multimodal with per-head scales: no Hopper backend serves them (FlashAttention 3 "
                                "refuses FP8 KV with mm_prefix, Triton has no per-head scales); Blackwell's "
                                "FlashAttention 4 only");
    else
      v["conditions"].push_back("Gemma 3 multimodal on Hopper: served by the Triton backend (FlashAttention 3 refuses FP8 "
                                "KV with mm_prefix)");
  }
  if (f.nvfp4)
    v["conditions"].push_back(
        "--kv-cache-dtype nvfp4 runs on FlashInfer only (v1/attention/backends/flashinfer.py): its FA2 path on SM80/90/120, "
        "which refuses head_size 64, attention sinks and DCP (supports_combination, FlashInferImpl.__init__), or "
        "trtllm-gen on SM100");
  if (s.q && s.undroppable_attention_groups.empty())
    v["ignored"].push_back(fmt::format("config group '{}' (attention quantization): vLLM drops it from the Linear "
                                       "schemes and reads q_scale with the KV scales",
                                       s.q_group));
  if (is_hybrid(f.architecture))
    v["notes"].push_back("hybrid model: its attention layers are ordinary Attention layers in vLLM, and their scales "
                         "load; linear-attention and Mamba layers have no KV cache (kv_layers lists the attention "
                         "layers only, numbered by decoder layer as --kv-cache-dtype-skip-layers counts them)");
  if (f.nvfp4)
    v["notes"].push_back(
        "the k_scale / v_scale are NVFP4 decode multipliers s that ctcal chose for --kv-cache-dtype nvfp4 (its "
        "ctcal_report.json nvfp4_kv record): vLLM copies them unchanged (model_executor/layers/quantization/"
        "kv_cache.py process_weights_after_loading) and passes them as `s` to FlashInfer's "
        "nvfp4_append_quantize_block (include/flashinfer/page.cuh) on Hopper's FA2 path "
        "(v1/attention/backends/flashinfer.py), to reshape_and_cache_nvfp4_kernel on SM100");
  else
    v["notes"].push_back("--kv-cache-dtype fp8 is not needed: vLLM turns `auto` into fp8 when the checkpoint declares "
                         "a kv_cache_scheme (Attention.__init__)");
  v["notes"].push_back("a missing q/k/v scale becomes 1.0 with no warning (CompressedTensorsKVCacheMethod."
                       "create_weights creates ones)");

  // Per layer, under the serve line and without its skip flag.
  std::vector<int64_t> skipped = f.ignored_attention_layers;
  std::sort(skipped.begin(), skipped.end());
  const bool per_layer = !f.attention_modules.empty() && v["loadable"].get<bool>() && !is_mla(f.architecture);
  auto layer_list = [&](bool with_flag) {
    json list = json::array();
    for (std::size_t i = 0; i < f.attention_modules.size(); ++i) {
      const std::string& m = f.attention_modules[i];
      const int64_t l = f.attention_layers.empty() ? static_cast<int64_t>(i) : f.attention_layers[i];
      const bool skip = with_flag && std::binary_search(skipped.begin(), skipped.end(), l);
      auto source = [&](char site) -> std::string {
        if (skip) return "unquantized";
        const std::string canon = fmt::format("{}.{}_scale", m, site);
        if (contains(names, canon)) return "checkpoint";
        // get_cache_scale_mapper: .kv_scale -> .attn.k_scale (v_scale is not copied from it);
        // ModelOpt .{k,v}_proj.{k,v}_scale -> .attn.{k,v}_scale.
        if (site == 'k' && contains(names, m + ".kv_scale")) return "checkpoint kv_scale";
        if (site != 'q' && contains(names, fmt::format("{}.{}_proj.{}_scale", m, site, site))) return "checkpoint";
        return "1.0";
      };
      list.push_back({{"layer", l}, {"module", m}, {"cache", skip ? "auto" : f.nvfp4 ? "nvfp4" : "fp8"}, {"k", source('k')},
                      {"v", source('v')}, {"q", source('q')}});
    }
    return list;
  };
  if (per_layer) {
    v["kv_layers"] = layer_list(true);
    if (!skipped.empty()) {
      json without = {{"kv_layers", layer_list(false)}};
      without["words"] = fmt::format(
          "without {}: CompressedTensorsConfig.get_quant_method gives every Attention the KV method and never "
          "consults `ignore`, so layer(s) {} run an FP8 cache at scale 1.0: neither unquantized, as intended, nor "
          "calibrated",
          vllm_skip_layers_flag(skipped), fmt::join(skipped, ", "));
      v["without_skip_flag"] = without;
    }
    for (const auto& l : v["kv_layers"])
      for (const char* site : {"k", "v"})
        if (l[site] == "1.0" && l["cache"] != "auto") {
          not_as_calibrated(fmt::format("layer {} has no {}_scale vLLM can read: it runs at scale 1.0",
                                        l["layer"].get<int64_t>(), site));
          break;
        }
    for (const auto& l : v["kv_layers"])
      if (l["k"] == "checkpoint kv_scale" && l["v"] == "1.0") {
        not_as_calibrated(fmt::format("layer {} stores a fused kv_scale: vLLM maps it to k_scale and does not copy "
                                      "it into v_scale, which stays 1.0",
                                      l["layer"].get<int64_t>()));
        break;
      }
  }
  if (v["serves_as_calibrated"].get<bool>()) {
    std::string cmd = fmt::format("vllm serve {}", f.served_path);
    if (!skipped.empty()) cmd += " " + vllm_skip_layers_flag(skipped);
    if (f.nvfp4) cmd += " --kv-cache-dtype nvfp4";
    v["command"] = cmd;
  }
  if (f.nvfp4) v["nvfp4"] = nvfp4_words(*f.nvfp4);
  return v;
}

}  // namespace ctcal
