#include "ctcal/inspect/inspect.h"

#include "ctcal/inspect/vllm_verdict.h"

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <regex>
#include <set>

#include "ctcal/ct/attention.h"
#include "ctcal/ct/groups.h"
#include "ctcal/ct/quantization_config.h"
#include "ctcal/ct/tensor_names.h"
#include "ctcal/ct/transforms.h"
#include "ctcal/error.h"
#include "ctcal/io/checkpoint.h"
#include "ctcal/io/safetensors.h"
#include "ctcal/model/model_config.h"
#include "ctcal/model/observation.h"
#include "ctcal/model/tensor_types.h"
#include "ctcal/quant/nvfp4_record.h"
#include "ctcal/recipe/recipe.h"
#include "ctcal/transform/hadamard.h"

namespace ctcal {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Plausible FP8/int KV scales: absmax between ~1e-4 and ~4e5 (scale = absmax / 448 or / 127.5).
constexpr double kMinPlausibleScale = 1e-7;
constexpr double kMaxPlausibleScale = 1e3;

struct Problems {
  json list = json::array();
  void add(const std::string& severity, const std::string& code, const std::string& message,
           const std::string& tensor = "", int64_t layer = -1) {
    list.push_back({{"severity", severity}, {"code", code}, {"message", message},
                    {"tensor", tensor.empty() ? json(nullptr) : json(tensor)},
                    {"layer", layer < 0 ? json(nullptr) : json(layer)}});
  }
};

// Shards opened one by one so a broken one is reported, not fatal.
struct LooseCheckpoint {
  std::vector<std::unique_ptr<SafetensorsFile>> shards;
  std::map<std::string, const SafetensorsFile*> where;

  void open(const fs::path& dir, Problems* p) {
    std::vector<std::string> files;
    const fs::path index = dir / "model.safetensors.index.json";
    std::map<std::string, std::string> listed;
    if (fs::is_regular_file(index)) {
      try {
        json j = read_json_file(index);
        for (const auto& [name, f] : j.at("weight_map").items()) {
          listed[name] = f.get<std::string>();
          if (std::find(files.begin(), files.end(), listed[name]) == files.end()) files.push_back(listed[name]);
        }
      } catch (const std::exception& e) {
        p->add("error", "bad_index", fmt::format("{}: unreadable index: {}", index.string(), e.what()));
      }
    } else {
      for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".safetensors") files.push_back(e.path().filename().string());
      std::sort(files.begin(), files.end());
    }
    for (const auto& f : files) {
      if (!fs::is_regular_file(dir / f)) {
        p->add("error", "missing_shard", fmt::format("the index points to shard '{}', which does not exist", f));
        continue;
      }
      try {
        shards.push_back(std::make_unique<SafetensorsFile>(dir / f));
        for (const auto& [name, _] : shards.back()->tensors()) {
          if (where.count(name))
            p->add("error", "duplicate_tensor", fmt::format("'{}' is in {} and {}", name,
                   where[name]->path().filename().string(), f), name);
          where[name] = shards.back().get();
        }
      } catch (const Error& e) {
        p->add("error", "unreadable_shard", e.what());
      }
    }
    for (const auto& [name, f] : listed)
      if (where.count(name) && where[name]->path().filename() != f)
        p->add("error", "index_mismatch", fmt::format("the index lists '{}' in {}, but {} holds it", name, f,
               where[name]->path().filename().string()), name);
      else if (!where.count(name) && fs::is_regular_file(dir / f))
        p->add("error", "index_mismatch", fmt::format("the index lists '{}' in {}, which lacks it", name, f), name);
  }
  const TensorInfo* info(const std::string& n) const {
    auto it = where.find(n);
    return it == where.end() ? nullptr : &it->second->info(n);
  }
  std::vector<double> values(const std::string& n) const {
    const TensorInfo* t = info(n);
    std::vector<double> out;
    const SafetensorsFile* f = where.at(n);
    for (std::size_t i = 0; i < t->numel(); ++i) {
      if (dtype_is_float(t->dtype)) out.push_back(load_as_f32(f->data(*t), t->dtype, i));
      else if (t->dtype == DType::kI8) out.push_back(reinterpret_cast<const int8_t*>(f->data(*t))[i]);
      else if (t->dtype == DType::kI32) { int32_t v; std::memcpy(&v, f->data(*t) + 4 * i, 4); out.push_back(v); }
    }
    return out;
  }
};

std::string args_words(const QuantArgs& a) {
  std::string s = a.type == QuantType::kFloat ? fmt::format("FP{} (E4M3)", a.num_bits) : fmt::format("INT{}", a.num_bits);
  return fmt::format("{} {}, {}, observer {}", s, a.symmetric ? "symmetric" : "asymmetric",
                     *a.strategy == Strategy::kAttnHead ? "one scale per head (attn_head)" : "one scale per layer (tensor)",
                     a.observer.value_or("none"));
}

struct SchemeInfo : KvSchemeFacts {
  std::string r3_type, r3_group;
  int64_t r3_size = 0;
  bool r3_randomize = false;
};

SchemeInfo read_scheme(const json& config_qc, const std::string& where, Problems* p, json* words) {
  SchemeInfo s;
  const ct::QuantizationConfig qc = ct::read_quantization_config(config_qc);
  if (!qc.kv_cache_scheme.is_null()) {
    try {
      s.kv = parse_quant_args(qc.kv_cache_scheme.dump(), where + ": kv_cache_scheme");
      (*words)["kv_cache"] = args_words(*s.kv);
    } catch (const Error& e) {
      p->add("error", "bad_kv_scheme", e.what());
    }
  }
  json groups = json::array();
  for (const ct::ConfigGroup& g : qc.config_groups) {
    const json targets = g.raw.value("targets", json::array());  // as written, for the messages
    const bool attention = ct::any_targets_attention(g.targets);
    // A non-string target also keeps vLLM from dropping the group.
    if (attention && !(g.targets.size() == targets.size() && ct::vllm_drops_group(g.targets))) {
      s.undroppable_attention_groups.push_back(g.name);
      p->add("error", "attention_group_targets",
             fmt::format("config group '{}' targets {}: vLLM drops an attention group only when it has exactly "
                         "one target ending in 'Attention' (e.g. LlamaAttention); this one is validated as a "
                         "Linear scheme and loading fails on its `weights: null`",
                         g.name, targets.dump()));
    }
    if (attention && !g.input_activations.is_null()) {
      try {
        s.q = parse_quant_args(g.input_activations.dump(), where + ": config_groups." + g.name);
        s.q_group = g.name;
        groups.push_back(fmt::format("{}: attention (query) quantization, {}", g.name, args_words(*s.q)));
      } catch (const Error& e) {
        p->add("error", "bad_attention_scheme", e.what());
      }
    } else {
      groups.push_back(fmt::format("{}: targets {} (weights/activations of Linear layers)", g.name, targets.dump()));
    }
  }
  (*words)["config_groups"] = groups;
  if (s.q && !s.kv) s.kv = s.q;  // attention quantization implies KV with the same args
  json tw = json::array();
  for (const ct::TransformGroup& t : qc.transforms) {
    if (t.rotation == ct::Rotation::kR3) {
      s.r3 = true;
      s.r3_type = t.type;
      s.r3_group = t.name;
      s.r3_size = t.head_dim.value_or(0);
      s.r3_randomize = t.randomize;
      tw.push_back(fmt::format("R3 (group '{}'): {} {}x{} rotation of queries and keys per head after RoPE, "
                               "applied online by the server", t.name, t.type, s.r3_size, s.r3_size));
    } else if (t.rotation == ct::Rotation::kR2) {
      s.r2 = true;
      tw.push_back(fmt::format("R2 (group '{}'): {} rotation of values, folded into v_proj and o_proj weights "
                               "(nothing to do at serving time)", t.name, t.type));
    } else {
      s.other_transforms = true;
      tw.push_back(fmt::format("group '{}': {} transform at {}", t.name, t.type, json(t.locations).dump()));
    }
  }
  (*words)["transforms"] = tw;
  return s;
}

json site_entry(const LooseCheckpoint& ck, const std::string& name, const std::string& zp_name) {
  const TensorInfo* t = ck.info(name);
  json e = {{"name", name}, {"dtype", dtype_name(t->dtype)}, {"shape", t->shape}};
  if (dtype_is_float(t->dtype)) {
    auto v = ck.values(name);
    e["values"] = v;
    if (!v.empty()) {
      e["min"] = *std::min_element(v.begin(), v.end());
      e["max"] = *std::max_element(v.begin(), v.end());
    }
  }
  if (ck.info(zp_name)) e["zero_point"] = ck.values(zp_name);
  return e;
}

void check_values(const json& e, const std::string& name, int64_t layer, Problems* p) {
  if (!e.contains("values")) return;
  for (const auto& jv : e["values"]) {
    const double v = jv.is_number() ? jv.get<double>() : std::nan("");
    if (std::isnan(v) || std::isinf(v)) {
      p->add("error", "nonfinite_scale", fmt::format("{} holds NaN or Inf", name), name, layer);
      return;
    }
    if (v == 0) { p->add("error", "zero_scale", fmt::format("{} holds 0: every value would quantize to 0 or divide by zero", name), name, layer); return; }
    if (v < 0) { p->add("error", "negative_scale", fmt::format("{} holds a negative scale {}", name, v), name, layer); return; }
    if (v < kMinPlausibleScale || v > kMaxPlausibleScale) {
      p->add("warning", "implausible_scale", fmt::format("{} = {:.3g} is outside the plausible range [{:g}, {:g}]", name, v,
             kMinPlausibleScale, kMaxPlausibleScale), name, layer);
      return;
    }
  }
}

// FP8 Linear layers (float-quantized W8A8): per module the weight and input scales, and the
// problems vLLM's W8A8 FP8 scheme would trip on: non-finite or non-positive scales, a static
// input scheme without `input_scale`, NaN codes in the F8_E4M3 weight.
json inspect_linear(const json& config_qc, const LooseCheckpoint& ck, Problems* p) {
  const ct::QuantizationConfig qc = ct::read_quantization_config(config_qc);
  // Which config groups are FP8 with static inputs.
  std::vector<bool> static_fp8_input;
  for (const ct::ConfigGroup& g : qc.config_groups) {
    const json& w = g.weights;
    const json& in = g.input_activations;
    static_fp8_input.push_back(w.is_object() && w.value("type", "") == "float" && w.value("num_bits", 0) == 8 &&
                               in.is_object() && in.value("dynamic", json(false)) == json(false));
  }
  const std::vector<std::vector<std::string>> targets = qc.group_targets();
  json modules = json::object();
  for (const auto& [tensor, _] : ck.where) {
    if (!tensor.ends_with(".weight_scale")) continue;
    const std::string m = tensor.substr(0, tensor.size() - 13);  // ct::weight_scale_name(m) == tensor
    const TensorInfo* w = ck.info(m + ".weight");
    if (!w || w->dtype != DType::kF8E4M3) continue;
    json e = {{"weight_scale", site_entry(ck, tensor, "")}};
    check_values(e["weight_scale"], tensor, -1, p);
    e["weight_scale"].erase("values");
    std::size_t nan_codes = 0;
    const unsigned char* codes = ck.where.at(m + ".weight")->data(*w);
    for (std::size_t i = 0; i < w->numel(); ++i) nan_codes += (codes[i] & 0x7F) == 0x7F;
    if (nan_codes)
      p->add("error", "nan_fp8_weight", fmt::format("{}.weight holds {} NaN FP8 codes", m, nan_codes), m + ".weight");
    const auto group = ct::resolve_group({m, ct::kLinearClass}, targets, qc.ignore);
    const bool needs_input = group && static_fp8_input[*group];
    const std::string input_scale = ct::input_scale_name(m);
    if (ck.info(input_scale)) {
      e["input_scale"] = site_entry(ck, input_scale, "");
      check_values(e["input_scale"], input_scale, -1, p);
      e["input_scale"].erase("values");
    } else if (needs_input) {
      p->add("error", "missing_input_scale", fmt::format("{}.input_scale is missing but its config group quantizes "
             "inputs statically: vLLM cannot run this layer as intended", m), input_scale);
    }
    modules[m] = e;
  }
  return modules;
}

}  // namespace

json serving_verdicts(const json& config, const std::optional<std::vector<std::string>>& tensors,
                      const std::string& served_path, bool has_errors, const std::optional<Nvfp4KvRecord>& nvfp4) {
  // The model as ctcal reads its config.json (none when it cannot: no per-layer verdict then), in
  // the family's other tensor-name layout when the files use it (Gemma 3's wrapper).
  std::optional<ModelConfig> cfg;
  try {
    cfg = parse_model_config(config, served_path + "/config.json");
  } catch (const Error&) {
  }
  const std::set<std::string> names = tensors ? std::set<std::string>(tensors->begin(), tensors->end()) : std::set<std::string>();
  if (cfg && tensors && !cfg->family->alt_weight_prefix.empty() && !names.count(cfg->top_tensor("embed_tokens.weight")) &&
      names.count(std::string(cfg->family->alt_weight_prefix) + "embed_tokens.weight"))
    cfg->weight_prefix = std::string(cfg->family->alt_weight_prefix);
  const bool quantized = config.contains("quantization_config") && config["quantization_config"].is_object();
  SchemeInfo scheme;
  if (quantized && config["quantization_config"].value("quant_method", "") == "compressed-tensors") {
    Problems unused;  // inspect reports the scheme's problems; here only the facts count
    json words;
    scheme = read_scheme(config["quantization_config"], served_path + "/config.json", &unused, &words);
  }

  VllmFacts facts;
  facts.served_path = served_path;
  if (config.contains("architectures") && config["architectures"].is_array() && !config["architectures"].empty() &&
      config["architectures"][0].is_string())
    facts.architecture = config["architectures"][0].get<std::string>();
  if (quantized) facts.quant_method = config["quantization_config"].value("quant_method", "?");
  facts.config = config;
  facts.scheme = scheme;
  if (tensors) facts.tensors = *tensors;
  if (cfg && tensors) {
    // An attention module in `ignore` keeps an unquantized KV cache (--kv-cache-dtype-skip-layers).
    std::set<std::string> ignored;
    if (quantized && config["quantization_config"].contains("ignore") && config["quantization_config"]["ignore"].is_array())
      for (const auto& x : config["quantization_config"]["ignore"])
        if (x.is_string()) ignored.insert(x.get<std::string>());
    for (int64_t l = 0; l < cfg->num_hidden_layers; ++l) {
      if (!cfg->has_kv_cache(l)) continue;
      facts.attention_modules.push_back(cfg->attention_module(l));
      if (cfg->family->hybrid_linear_attention || cfg->family->hybrid_mamba) facts.attention_layers.push_back(l);
      if (scheme.kv && ignored.count(cfg->attention_module(l))) facts.ignored_attention_layers.push_back(l);
    }
  }
  facts.has_errors = has_errors;
  facts.nvfp4 = nvfp4;
  const json vllm = vllm_verdict(facts);

  json r3 = {{"applicable", scheme.r3}, {"meets", false}, {"reasons", json::array()}};
  if (quantized && scheme.kv && scheme.r3) {
    const QuantArgs& a = *scheme.kv;
    bool meets = true;
    auto fail = [&](const std::string& why) { meets = false; r3["reasons"].push_back(why); };
    if (scheme.r3_type != "hadamard") fail("the R3 serving branch accepts type 'hadamard' only (not " + scheme.r3_type + ")");
    if (scheme.r3_randomize) fail("randomize must be false");
    // Llama-family: the architectures vLLM serves with llama.py's attention (Phi-3 is its subclass).
    if (cfg && cfg->architecture != "LlamaForCausalLM" && cfg->architecture != "MistralForCausalLM" &&
        cfg->architecture != "Phi3ForCausalLM")
      fail(fmt::format("it covers Llama-family models (vLLM's llama.py); {} has its own attention class", cfg->architecture));
    if (cfg && (scheme.r3_size != cfg->head_dim)) fail(fmt::format("head_dim {} must equal the model's head size {}", scheme.r3_size, cfg->head_dim));
    if (!is_power_of_two(scheme.r3_size) || scheme.r3_size > (1 << 15)) fail("head_dim must be a power of two <= 2^15");
    if (cfg && cfg->dtype && *cfg->dtype != DType::kF16 && *cfg->dtype != DType::kBF16) fail("weights must be fp16 or bf16");
    if (a.type == QuantType::kFloat && a.num_bits == 8) fail("it refuses FP8 KV scales together with the rotation");
    if (a.type != QuantType::kFloat || !a.symmetric)
      fail("it keeps mainline vLLM's KV rules: int and asymmetric KV caches do not load (NotImplementedError)");
    if (!scheme.undroppable_attention_groups.empty()) fail("the attention group targets break loading there too");
    r3["meets"] = meets;
  }
  return {{"vllm", vllm}, {"vllm_r3", r3}};
}

json inspect_checkpoint(const fs::path& path) {
  fs::path dir, config_path;
  if (fs::is_directory(path)) {
    dir = path;
    config_path = path / "config.json";
    if (!fs::is_regular_file(config_path))
      throw InputError(fmt::format("{}: not a checkpoint directory (no config.json)", path.string()));
  } else if (fs::is_regular_file(path) && path.extension() == ".json") {
    config_path = path;
  } else {
    throw InputError(fmt::format("{}: expected a checkpoint directory or a config.json", path.string()));
  }
  const json config = read_json_file(config_path);
  Problems p;
  json doc = {{"path", path.string()}, {"kind", dir.empty() ? "config" : "checkpoint"}};
  std::optional<ModelConfig> cfg;
  try {
    cfg = parse_model_config(config, config_path.string());
    doc["model"] = {{"architecture", cfg->architecture}, {"layers", cfg->num_hidden_layers},
                    {"heads", cfg->num_attention_heads}, {"kv_heads", cfg->num_key_value_heads},
                    {"head_dim", cfg->head_dim}, {"vocab_size", cfg->vocab_size},
                    {"dtype", cfg->dtype ? json(torch_dtype_name(*cfg->dtype)) : json(nullptr)}};
  } catch (const Error& e) {
    p.add("error", "bad_config", e.what());
    doc["model"] = nullptr;
  }
  const bool quantized = config.contains("quantization_config") && config["quantization_config"].is_object();
  doc["quantized"] = quantized;
  json words = json::object();
  SchemeInfo scheme;
  if (quantized) {
    const json& qc = config["quantization_config"];
    words["quant_method"] = qc.value("quant_method", "?");
    words["format"] = qc.value("format", json(nullptr));
    words["version"] = qc.value("version", json(nullptr));
    if (qc.value("quant_method", "") != "compressed-tensors")
      p.add("warning", "not_compressed_tensors", fmt::format("quant_method is {}; ctcal reads compressed-tensors configs", qc.value("quant_method", json("?")).dump()));
    else
      scheme = read_scheme(qc, config_path.string(), &p, &words);
  }
  doc["quantization"] = words;

  LooseCheckpoint ck;
  json layers = json::array();
  std::set<std::string> ignored_modules;  // quantization_config.ignore entries (exact names)
  if (quantized && config["quantization_config"].contains("ignore") && config["quantization_config"]["ignore"].is_array())
    for (const auto& x : config["quantization_config"]["ignore"])
      if (x.is_string()) ignored_modules.insert(x.get<std::string>());
  if (!dir.empty()) {
    ck.open(dir, &p);
    // The family's other tensor-name layout, when the checkpoint uses it (Gemma 3's wrapper).
    if (cfg && !cfg->family->alt_weight_prefix.empty() && !ck.where.count(cfg->top_tensor("embed_tokens.weight")) &&
        ck.where.count(std::string(cfg->family->alt_weight_prefix) + "embed_tokens.weight"))
      cfg->weight_prefix = std::string(cfg->family->alt_weight_prefix);
    // Legacy and foreign scale names vLLM remaps or skips (reference §4.3).
    static const std::regex legacy(R"((?:model\.|model\.language_model\.|language_model\.model\.)layers\.(\d+)\.self_attn\.(k_proj\.output_scale|v_proj\.output_scale|q_proj\.output_scale|kv_scale|k_proj\.k_scale|v_proj\.v_scale))");
    for (const auto& [name, _] : ck.where) {
      std::smatch m;
      if (std::regex_match(name, m, legacy))
        p.add("warning", "legacy_scale_name",
              fmt::format("{}: a legacy/ModelOpt name ({}); vLLM {} maps kv_scale to k_scale only (v_scale stays 1.0), maps "
                          "ModelOpt's k_proj.k_scale / v_proj.v_scale, and has no name for *_proj.output_scale — "
                          "recalibrate to get self_attn.k_scale / v_scale", name, m[2].str(), kVllmRulesVersion),
              name, std::stoll(m[1].str()));
    }
    if (cfg && scheme.kv) {
      for (int64_t l = 0; l < cfg->num_hidden_layers; ++l) {
        json entry = {{"layer", l}};
        if (!cfg->has_kv_cache(l)) {  // a hybrid's linear-attention / Mamba2 / MLP-block layer: no scales expected
          entry["kv_cache"] = fmt::format("{}: no KV cache", cfg->layer_kind(l));
          layers.push_back(entry);
          continue;
        }
        // An attention module in `ignore` keeps an unquantized KV cache (vLLM:
        // --kv-cache-dtype-skip-layers): no scales expected.
        if (ignored_modules.count(cfg->attention_module(l))) {
          entry["ignored"] = true;
          layers.push_back(entry);
          continue;
        }
        for (Site site : {Site::kQuery, Site::kKey, Site::kValue}) {
          const QuantArgs* a = site == Site::kQuery ? (scheme.q ? &*scheme.q : nullptr) : &*scheme.kv;
          const std::string name = ct::scale_name(cfg->attention_module(l), site_name(site));
          if (!a) {
            if (ck.info(name)) p.add("warning", "extra_scale", fmt::format("{} exists but the config quantizes no queries", name), name, l);
            continue;
          }
          if (!ck.info(name)) {
            p.add("error", "missing_scale", fmt::format("{} is missing: vLLM falls back to scale 1.0 for this layer", name), name, l);
            continue;
          }
          json e = site_entry(ck, name, ct::zero_point_name(cfg->attention_module(l), site_name(site)));
          const int64_t heads = site == Site::kQuery ? cfg->num_attention_heads : cfg->kv_heads_of(l);
          const std::vector<int64_t> want = *a->strategy == Strategy::kAttnHead ? std::vector<int64_t>{heads, 1, 1} : std::vector<int64_t>{1};
          if (e["shape"].get<std::vector<int64_t>>() != want)
            p.add("error", "scale_shape", fmt::format("{} has shape {}; the {} scheme needs {}", name, e["shape"].dump(),
                  strategy_name(*a->strategy), json(want).dump()), name, l);
          if (!dtype_is_float(ck.info(name)->dtype))
            p.add("error", "scale_dtype", fmt::format("{} has dtype {}; expected a float dtype", name, e["dtype"].get<std::string>()), name, l);
          check_values(e, name, l, &p);
          if (!a->symmetric && !e.contains("zero_point"))
            p.add("error", "missing_zero_point", fmt::format("{} is missing for asymmetric args", ct::zero_point_name(cfg->attention_module(l), site_name(site))), ct::zero_point_name(cfg->attention_module(l), site_name(site)), l);
          entry[std::string(site_name(site))] = e;
        }
        layers.push_back(entry);
      }
      // Extra scales beyond the model's layers.
      static const std::regex any_scale(R"((?:model\.|model\.language_model\.|language_model\.model\.)layers\.(\d+)\.self_attn\.[qkv]_scale)");
      for (const auto& [name, _] : ck.where) {
        std::smatch m;
        if (std::regex_match(name, m, any_scale) && std::stoll(m[1].str()) >= cfg->num_hidden_layers)
          p.add("warning", "extra_scale", fmt::format("{} is beyond the model's {} layers", name, cfg->num_hidden_layers), name);
      }
      // Every k and v scale exactly 1.0: never calibrated.
      bool all_one = !layers.empty();
      for (const auto& l : layers)
        for (const char* s : {"k", "v"})
          if (!l.contains(s) || !l[s].contains("values")) all_one = false;
          else for (const auto& v : l[s]["values"]) all_one = all_one && v == 1.0;
      if (all_one) p.add("error", "uncalibrated", "every k_scale and v_scale is exactly 1.0: the checkpoint was never calibrated");
    } else if (cfg && !quantized) {
      bool any = false;
      for (const auto& [name, _] : ck.where) any = any || name.ends_with("_scale");
      if (any) p.add("warning", "scales_without_config", "the checkpoint holds *_scale tensors but config.json has no quantization_config");
    }
    // Transform weights must be orthogonal up to the 1/sqrt(n) normalisation.
    static const std::regex transform(R"(.*\.(R\d|[A-Za-z0-9]+)_(q_attn|k_cache)\.weight)");
    int checked = 0;
    for (const auto& [name, _] : ck.where) {
      if (!std::regex_match(name, transform) || checked++ > 64) continue;
      const TensorInfo* t = ck.info(name);
      if (t->shape.size() != 2 || t->shape[0] != t->shape[1]) {
        p.add("error", "transform_shape", fmt::format("{} has shape {}; expected a square matrix", name, shape_str(t->shape)), name);
        continue;
      }
      const int64_t n = t->shape[0];
      auto v = ck.values(name);
      Eigen::Map<RowMatrixD> h(v.data(), n, n);
      const double err = (h * h.transpose() / static_cast<double>(n) - RowMatrixD::Identity(n, n)).cwiseAbs().maxCoeff();
      if (err > 1e-6)
        p.add("error", "transform_not_orthogonal", fmt::format("{}: H·Hᵀ/n differs from the identity by {:.3g}", name, err), name);
    }
  }
  doc["layers"] = layers;
  if (quantized && !dir.empty()) doc["linear"] = inspect_linear(config["quantization_config"], ck, &p);

  // Serving verdicts: what vLLM 0.34.0's loader does (inspect/vllm_verdict.h holds the rules),
  // from what was read here.
  bool has_errors = false;
  for (const auto& pr : p.list) has_errors = has_errors || pr["severity"] == "error";
  std::optional<std::vector<std::string>> names;
  if (!dir.empty()) {
    names.emplace();
    for (const auto& [name, _] : ck.where) names->push_back(name);
  }
  // ctcal's record that the k/v scales are NVFP4 decode multipliers (calibrate --kv-cache-dtype
  // nvfp4): it changes the serve line, and a malformed one is a problem of the checkpoint.
  std::optional<Nvfp4KvRecord> nvfp4;
  if (!dir.empty()) {
    try {
      nvfp4 = read_nvfp4_record(dir);
    } catch (const InputError& e) {
      p.add("error", "nvfp4_record", e.what());
      has_errors = true;
    }
  }
  if (nvfp4 && !(scheme.kv && scheme.kv->type == QuantType::kFloat && scheme.kv->num_bits == 8 &&
                 scheme.kv->symmetric && scheme.kv->strategy == Strategy::kTensor)) {
    p.add("error", "nvfp4_record", fmt::format("ctcal_report.json records NVFP4 decode multipliers ({}), but the "
                                               "kv_cache_scheme is not FP8 per tensor, which is what ctcal writes them "
                                               "under", kNvfp4RecordKey));
    has_errors = true;
  }
  if (nvfp4 && doc["quantization"].contains("kv_cache"))
    doc["quantization"]["kv_cache"] = doc["quantization"]["kv_cache"].get<std::string>() +
                                      "; the scales are NVFP4 decode multipliers s (ctcal_report.json nvfp4_kv, rule " +
                                      nvfp4->rule + "): serve with --kv-cache-dtype nvfp4";
  doc["serving"] = serving_verdicts(config, names, dir.empty() ? config_path.parent_path().string() : dir.string(),
                                    has_errors, nvfp4);
  if (!quantized || !scheme.kv)
    p.add("warning", "no_kv_scales", "no kv_cache_scheme and no calibrated KV scales: with --kv-cache-dtype fp8 vLLM "
                                     "uses scale 1.0 everywhere");
  doc["problems"] = p.list;
  return doc;
}

bool engine_serves(const json& doc, ServingEngine engine) {
  const json& v = doc["serving"]["vllm"];
  const json& r3 = doc["serving"]["vllm_r3"];
  // The R3 serving branch is mainline vLLM plus the rotation: without R3 the rules are the same.
  if (engine == ServingEngine::kVllmR3 && r3["applicable"].get<bool>()) return r3["meets"].get<bool>();
  return v["serves_as_calibrated"].get<bool>();
}

int inspect_exit_code(const json& doc, bool strict, ServingEngine engine) {
  if (!strict) return 0;
  const bool ok = doc["problems"].empty() && engine_serves(doc, engine);
  return ok ? 0 : static_cast<int>(ExitCode::kProblemsFound);
}

std::optional<ServingEngine> serving_engine_from_name(const std::string& name) {
  if (name == "vllm") return ServingEngine::kVllm;
  if (name == "vllm-r3") return ServingEngine::kVllmR3;
  return std::nullopt;
}

}  // namespace ctcal
