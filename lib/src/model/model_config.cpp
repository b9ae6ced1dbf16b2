#include "ctcal/model/model_config.h"

#include <cmath>
#include <limits>

#include "ctcal/error.h"

namespace ctcal {

using nlohmann::json;

std::string rope_type_name(RopeType t) {
  switch (t) {
    case RopeType::kDefault: return "default";
    case RopeType::kLinear: return "linear";
    case RopeType::kDynamic: return "dynamic";
    case RopeType::kLlama3: return "llama3";
    case RopeType::kLongRope: return "longrope";
    case RopeType::kYarn: return "yarn";
    case RopeType::kProportional: return "proportional";
  }
  return "?";
}

namespace {

struct Reader {
  const json& j;
  std::string where;

  InputError fail(const std::string& field, const std::string& what) const {
    return InputError(fmt::format("{}: field '{}': {}", where, field, what));
  }
  bool present(const json& obj, const std::string& key) const {
    return obj.contains(key) && !obj[key].is_null();
  }
  int64_t positive_int(const std::string& key, std::optional<int64_t> def = std::nullopt) const {
    if (!present(j, key)) {
      if (def) return *def;
      throw fail(key, "missing; expected a positive integer");
    }
    if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0)
      throw fail(key, fmt::format("expected a positive integer, got {}", j[key].dump()));
    return j[key].get<int64_t>();
  }
  bool boolean(const std::string& key, bool def) const {
    if (!present(j, key)) return def;
    if (!j[key].is_boolean()) throw fail(key, fmt::format("expected true or false, got {}", j[key].dump()));
    return j[key].get<bool>();
  }
  double number(const json& obj, const std::string& prefix, const std::string& key,
                std::optional<double> def) const {
    if (!present(obj, key)) {
      if (def) return *def;
      throw fail(prefix + key, "missing; expected a number");
    }
    if (!obj[key].is_number()) throw fail(prefix + key, fmt::format("expected a number, got {}", obj[key].dump()));
    return obj[key].get<double>();
  }
};

// YaRN as transformers 5.17's _compute_yarn_parameters reads it: factor (null: max_position /
// original), original_max_position_embeddings (rope dict, else top-level, else
// max_position_embeddings: standardize_rope_params), beta_fast / beta_slow (absent or 0: 32 / 1),
// truncate (default true), and attention_factor, else from mscale / mscale_all_dim, else
// 0.1 ln(factor) + 1 (1 for factor <= 1).
void parse_yarn(const Reader& r, const json& p, const std::string& prefix, RopeConfig* rope) {
  rope->type = RopeType::kYarn;
  const double max_pos = r.present(r.j, "max_position_embeddings") ? r.j["max_position_embeddings"].get<double>() : 2048.0;
  const std::optional<double> top = r.present(r.j, "original_max_position_embeddings")
                                        ? std::optional<double>(r.j["original_max_position_embeddings"].get<double>())
                                        : std::optional<double>(max_pos);
  const double orig = r.number(p, prefix, "original_max_position_embeddings", top);
  if (orig < 1) throw r.fail(prefix + "original_max_position_embeddings", "expected a positive number");
  rope->original_max_position_embeddings = static_cast<int64_t>(orig);
  if (!p.contains("factor")) throw r.fail(prefix + "factor", "missing; yarn needs a factor (or null)");
  rope->factor = p["factor"].is_null() ? max_pos / orig : r.number(p, prefix, "factor", std::nullopt);
  if (rope->factor <= 0) throw r.fail(prefix + "factor", "expected a positive number");
  auto nonzero_or = [&](const char* key, double def) {
    const double v = r.number(p, prefix, key, def);
    return v == 0.0 ? def : v;  // `rope_parameters.get(key) or default`
  };
  rope->beta_fast = nonzero_or("beta_fast", 32.0);
  rope->beta_slow = nonzero_or("beta_slow", 1.0);
  if (r.present(p, "truncate")) {
    if (!p["truncate"].is_boolean()) throw r.fail(prefix + "truncate", "expected true or false");
    rope->truncate = p["truncate"].get<bool>();
  }
  auto mscale = [](double scale, double m) { return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
  if (r.present(p, "attention_factor")) {
    rope->attention_factor = r.number(p, prefix, "attention_factor", std::nullopt);
  } else {
    const double m = r.number(p, prefix, "mscale", 0.0), m_all = r.number(p, prefix, "mscale_all_dim", 0.0);
    rope->attention_factor = m != 0.0 && m_all != 0.0 ? mscale(rope->factor, m) / mscale(rope->factor, m_all)
                                                      : mscale(rope->factor, 1.0);
  }
}

// The scaling part of a RoPE parameter object (rope_type / legacy type, factor, ...).
void parse_rope_scaling(const Reader& r, const json& params, const std::string& prefix, RopeConfig* rope);

RopeConfig parse_rope(const Reader& r, double default_theta = 10000.0, const json* default_scaling = nullptr) {
  const json& j = r.j;
  RopeConfig rope;
  // transformers-5 spelling: everything inside rope_parameters. Classic: rope_theta at the top
  // and an optional rope_scaling dict.
  const json* params = nullptr;
  std::string prefix;
  if (r.present(j, "rope_parameters")) {
    if (!j["rope_parameters"].is_object()) throw r.fail("rope_parameters", "expected an object");
    params = &j["rope_parameters"];
    prefix = "rope_parameters.";
    rope.theta = r.number(*params, prefix, "rope_theta",
                          r.present(j, "rope_theta") ? std::optional<double>(j["rope_theta"].get<double>())
                                                     : std::optional<double>(default_theta));
  } else {
    rope.theta = r.number(j, "", "rope_theta", default_theta);
    if (r.present(j, "rope_scaling")) {
      if (!j["rope_scaling"].is_object()) throw r.fail("rope_scaling", "expected an object or null");
      params = &j["rope_scaling"];
      prefix = "rope_scaling.";
    }
  }
  if (rope.theta <= 0) throw r.fail(prefix + "rope_theta", "expected a positive number");
  if (!params && default_scaling) {  // the config class's default rope_parameters (gpt-oss: yarn)
    params = default_scaling;
    prefix = "rope_parameters (default).";
  }
  if (params) parse_rope_scaling(r, *params, prefix, &rope);
  return rope;
}

void parse_rope_scaling(const Reader& r, const json& p, const std::string& prefix, RopeConfig* out) {
  const json* params = &p;
  RopeConfig& rope = *out;
  std::string type = "default";
  if (params->contains("rope_type") && (*params)["rope_type"].is_string())
    type = (*params)["rope_type"].get<std::string>();
  else if (params->contains("type") && (*params)["type"].is_string())  // legacy key
    type = (*params)["type"].get<std::string>();
  if (type == "default") {
    rope.type = RopeType::kDefault;
  } else if (type == "linear" || type == "dynamic") {
    rope.type = type == "linear" ? RopeType::kLinear : RopeType::kDynamic;
    rope.factor = r.number(*params, prefix, "factor", std::nullopt);
    if (rope.factor < 1.0) throw r.fail(prefix + "factor", "expected a number >= 1");
  } else if (type == "llama3") {
    rope.type = RopeType::kLlama3;
    rope.factor = r.number(*params, prefix, "factor", std::nullopt);
    rope.low_freq_factor = r.number(*params, prefix, "low_freq_factor", std::nullopt);
    rope.high_freq_factor = r.number(*params, prefix, "high_freq_factor", std::nullopt);
    double orig = r.number(*params, prefix, "original_max_position_embeddings", std::nullopt);
    rope.original_max_position_embeddings = static_cast<int64_t>(orig);
    if (rope.high_freq_factor <= rope.low_freq_factor)
      throw r.fail(prefix + "high_freq_factor", "expected high_freq_factor > low_freq_factor");
  } else if (type == "longrope" || type == "su") {  // "su": the older name of longrope
    rope.type = RopeType::kLongRope;
    for (auto [key, dst] : {std::pair{"short_factor", &rope.short_factor}, {"long_factor", &rope.long_factor}}) {
      if (!params->contains(key) || !(*params)[key].is_array())
        throw r.fail(prefix + key, "missing; longrope needs a list of numbers");
      for (const auto& x : (*params)[key]) {
        if (!x.is_number()) throw r.fail(prefix + key, "expected a list of numbers");
        dst->push_back(x.get<double>());
      }
    }
    // original_max_position_embeddings: in the rope dict, else top-level (Phi-3's configs).
    const std::optional<double> top = r.present(r.j, "original_max_position_embeddings")
                                          ? std::optional<double>(r.j["original_max_position_embeddings"].get<double>())
                                          : std::nullopt;
    const double orig = r.number(*params, prefix, "original_max_position_embeddings", top);
    if (orig < 2) throw r.fail(prefix + "original_max_position_embeddings", "expected a number >= 2");
    rope.original_max_position_embeddings = static_cast<int64_t>(orig);
    // transformers: factor = max_position_embeddings / original when not given;
    // attention_factor = sqrt(1 + ln(factor) / ln(original)) when not given (1 for factor <= 1).
    const double max_pos = r.present(r.j, "max_position_embeddings") ? r.j["max_position_embeddings"].get<double>() : 4096.0;
    const double factor = r.present(*params, "factor") ? r.number(*params, prefix, "factor", std::nullopt) : max_pos / orig;
    rope.attention_factor = r.present(*params, "attention_factor")
                                ? r.number(*params, prefix, "attention_factor", std::nullopt)
                                : (factor <= 1.0 ? 1.0 : std::sqrt(1.0 + std::log(factor) / std::log(orig)));
  } else if (type == "yarn") {
    parse_yarn(r, *params, prefix, &rope);
  } else {
    throw r.fail(prefix + "rope_type",
                 fmt::format("rope type '{}' is not supported; expected default, linear, dynamic, "
                             "llama3, longrope or yarn", type));
  }
}

// Gemma 3: the global (full-attention) and local (sliding) RoPE. transformers 5 writes
// rope_parameters = {"full_attention": {...}, "sliding_attention": {...}}; classic configs have
// rope_theta (+ rope_scaling) for global layers and rope_local_base_freq for local ones.
void parse_gemma_rope(const Reader& r, ModelConfig* c) {
  const json& j = r.j;
  if (r.present(j, "rope_parameters") && j["rope_parameters"].is_object() &&
      j["rope_parameters"].contains("full_attention")) {
    RopeConfig rope[2];
    const char* kinds[2] = {"full_attention", "sliding_attention"};
    const double default_theta[2] = {1000000.0, 10000.0};
    for (int i = 0; i < 2; ++i) {
      const std::string prefix = fmt::format("rope_parameters.{}.", kinds[i]);
      const json& p = j["rope_parameters"].contains(kinds[i]) ? j["rope_parameters"][kinds[i]] : json::object();
      if (!p.is_object()) throw r.fail(prefix.substr(0, prefix.size() - 1), "expected an object");
      rope[i].theta = r.number(p, prefix, "rope_theta", default_theta[i]);
      if (rope[i].theta <= 0) throw r.fail(prefix + "rope_theta", "expected a positive number");
      parse_rope_scaling(r, p, prefix, &rope[i]);
    }
    c->rope = rope[0];
    c->rope_local = rope[1];
    return;
  }
  c->rope = parse_rope(r, 1000000.0);
  RopeConfig local;
  local.theta = r.number(j, "", "rope_local_base_freq", 10000.0);
  if (local.theta <= 0) throw r.fail("rope_local_base_freq", "expected a positive number");
  c->rope_local = local;
}

}  // namespace

ModelConfig parse_model_config_fields(const json& j, const std::string& where);

std::string ModelConfig::layer_prefix(int64_t l) const {
  return fmt::format("{}layers.{}.", weight_prefix, l);
}

std::string ModelConfig::attention_module(int64_t l) const {
  return layer_prefix(l) + std::string(family->attention.module);
}

std::string ModelConfig::top_tensor(const std::string& name) const {
  // The family's own names for the embedding and the final norm (Nemotron-H: embeddings, norm_f).
  if (family && name == "embed_tokens.weight") return weight_prefix + std::string(family->embed_tokens) + ".weight";
  if (family && name == "norm.weight") return weight_prefix + std::string(family->final_norm) + ".weight";
  return weight_prefix + name;
}

std::string ModelConfig::lm_head_module() const { return family ? std::string(family->lm_head) : "lm_head"; }

ModelConfig parse_model_config(const json& j, const std::string& where) {
  if (!j.is_object()) throw InputError(fmt::format("{}: expected a JSON object", where));
  try {
    return parse_model_config_fields(j, where);
  } catch (const json::exception& e) {
    // A field of an unexpected JSON type deep inside (e.g. rope_parameters.factor = "x").
    throw InputError(fmt::format("{}: malformed config: {}", where, e.what()));
  }
}

namespace {

const FamilySpec& parse_family(const Reader& r) {
  const json& j = r.j;
  std::string arch;
  if (r.present(j, "architectures")) {
    if (!j["architectures"].is_array() || j["architectures"].empty() || !j["architectures"][0].is_string())
      throw r.fail("architectures", "expected a list of class names");
    arch = j["architectures"][0].get<std::string>();
  } else if (j.contains("model_type") && j["model_type"].is_string()) {
    if (const FamilySpec* f = find_family_by_model_type(j["model_type"].get<std::string>())) arch = f->architecture;
  }
  const FamilySpec* f = find_family(arch);
  // A named refusal (issue 29), with the reason.
  if (arch.rfind("Gemma4", 0) == 0 && !f)
    throw r.fail("architectures", fmt::format("'{}' is not supported: of Gemma 4 ctcal runs Gemma4ForCausalLM and "
                                              "the language model of Gemma4ForConditionalGeneration", arch));
  if (!f)
    throw r.fail("architectures", fmt::format("'{}' is not supported; expected one of {}",
                                              arch.empty() ? std::string("(missing)") : arch,
                                              supported_architectures()));
  return *f;
}

// `layer_types` ("sliding_attention" / "full_attention") when config.json lists them, else the
// family's rule, as each transformers config's __post_init__ derives them.
std::vector<bool> parse_layer_sliding(const Reader& r, const FamilySpec& f, int64_t layers, const ModelConfig& c) {
  const json& j = r.j;
  std::vector<bool> sliding(static_cast<std::size_t>(layers), false);
  // Mistral, Mixtral, Phi-3 and Qwen3-MoE ignore layer_types (their attention windows every layer);
  // hybrids' layer_types say linear or full attention (parse_linear_attention), never a window.
  if (r.present(j, "layer_types") && f.sliding != SlidingRule::kAllLayers && f.sliding != SlidingRule::kQwenAllLayers &&
      !f.hybrid_linear_attention && !f.hybrid_mamba && !f.llama4_attention) {
    const json& t = j["layer_types"];
    if (!t.is_array() || static_cast<int64_t>(t.size()) != layers)
      throw r.fail("layer_types", fmt::format("expected a list of {} layer types", layers));
    for (std::size_t i = 0; i < t.size(); ++i) {
      if (t[i] == "sliding_attention") sliding[i] = true;
      else if (t[i] != "full_attention")
        throw r.fail("layer_types", fmt::format("layer {}: {} is not supported; expected \"sliding_attention\" or "
                                                "\"full_attention\"", i, t[i].dump()));
    }
    return sliding;
  }
  for (int64_t l = 0; l < layers; ++l) {
    bool s = false;
    switch (f.sliding) {
      case SlidingRule::kNone: break;
      case SlidingRule::kAllLayers: s = true; break;
      case SlidingRule::kQwenAllLayers: s = true; break;
      case SlidingRule::kQwenMaxWindow: s = l >= r.positive_int("max_window_layers", 28); break;
      case SlidingRule::kGemmaPattern: s = (l + 1) % r.positive_int("sliding_window_pattern", 6) != 0; break;
      case SlidingRule::kAlternate: s = (l + 1) % 2 != 0; break;
      case SlidingRule::kNoRopeLayers: s = r.boolean("use_sliding_window", false) && !c.uses_rope(l); break;
      case SlidingRule::kEveryFourthFull: s = (l + 1) % 4 != 0; break;
    }
    sliding[static_cast<std::size_t>(l)] = s;
  }
  return sliding;
}

// SmolLM3: `no_rope_layers` (per layer 1 = RoPE, 0 = none), else every `no_rope_layer_interval`-th
// layer (default 4) has no RoPE (SmolLM3Config.__post_init__).
void parse_nope_layers(const Reader& r, ModelConfig* c) {
  const json& j = r.j;
  const auto layers = static_cast<std::size_t>(c->num_hidden_layers);
  c->layer_nope.assign(layers, false);
  if (r.present(j, "no_rope_layers") && !(j["no_rope_layers"].is_array() && j["no_rope_layers"].empty())) {
    const json& t = j["no_rope_layers"];
    // Llama4TextConfig reads the list by layer index ("at least the same length"); SmolLM3's is exact.
    const bool at_least = c->family && c->family->llama4_attention;
    if (!t.is_array() || t.size() < layers || (!at_least && t.size() != layers))
      throw r.fail("no_rope_layers", fmt::format("expected a list of {}{} flags (1: RoPE, 0: none)", at_least ? "at least " : "", layers));
    for (std::size_t i = 0; i < layers; ++i) {
      if (!t[i].is_number_integer() || (t[i] != 0 && t[i] != 1))
        throw r.fail("no_rope_layers", fmt::format("layer {}: expected 0 or 1, got {}", i, t[i].dump()));
      c->layer_nope[i] = t[i] == 0;
    }
    return;
  }
  // An empty list takes the default as well (Llama4TextConfig: `if self.no_rope_layers`).
  const int64_t interval = r.positive_int("no_rope_layer_interval", 4);
  for (std::size_t i = 0; i < layers; ++i) c->layer_nope[i] = (static_cast<int64_t>(i) + 1) % interval == 0;
}

// OLMo 3: a RoPE per layer type. rope_parameters = {"full_attention": {...}, "sliding_attention":
// {...}} (transformers 5), each without rope_theta taking the default 500000; or the classic
// rope_theta + rope_scaling, which Olmo3Config.convert_rope_params_to_dict gives to the full layers
// only: the sliding layers keep the default type at default_theta (rope_theta is popped once).
void parse_rope_per_layer_type(const Reader& r, const FamilySpec& f, ModelConfig* c) {
  const json& j = r.j;
  if (r.present(j, "rope_parameters")) {
    const json& rp = j["rope_parameters"];
    if (!rp.is_object() || !(rp.contains("full_attention") || rp.contains("sliding_attention")))
      throw r.fail("rope_parameters", fmt::format("expected {{\"full_attention\": {{...}}, \"sliding_attention\": {{...}}}} "
                                                  "({} keeps one RoPE per layer type)", f.architecture));
    RopeConfig rope[2];
    const char* kinds[2] = {"full_attention", "sliding_attention"};
    for (int i = 0; i < 2; ++i) {
      const std::string prefix = fmt::format("rope_parameters.{}.", kinds[i]);
      const json& p = rp.contains(kinds[i]) && !rp[kinds[i]].is_null() ? rp[kinds[i]] : json::object();
      if (!p.is_object()) throw r.fail(prefix.substr(0, prefix.size() - 1), "expected an object");
      rope[i].theta = r.number(p, prefix, "rope_theta", f.default_rope_theta);
      if (rope[i].theta <= 0) throw r.fail(prefix + "rope_theta", "expected a positive number");
      parse_rope_scaling(r, p, prefix, &rope[i]);
    }
    c->rope = rope[0];
    c->rope_local = rope[1];
    return;
  }
  c->rope = parse_rope(r, f.default_rope_theta);
  RopeConfig local;
  local.theta = f.default_rope_theta;
  c->rope_local = local;
}

// Qwen3.5: `layer_types` ("linear_attention" / "full_attention"), else every
// `full_attention_interval`-th layer (default 4) is full attention (Qwen3_5TextConfig.__post_init__),
// and the DeltaNet's linear_* sizes (the config class's defaults when absent).
void parse_linear_attention(const Reader& r, ModelConfig* c) {
  const json& j = r.j;
  const auto layers = static_cast<std::size_t>(c->num_hidden_layers);
  c->layer_linear_attention.assign(layers, false);
  if (r.present(j, "layer_types")) {
    const json& t = j["layer_types"];
    if (!t.is_array() || t.size() != layers)
      throw r.fail("layer_types", fmt::format("expected a list of {} layer types", layers));
    for (std::size_t i = 0; i < layers; ++i) {
      if (t[i] == "linear_attention") c->layer_linear_attention[i] = true;
      else if (t[i] != "full_attention")
        throw r.fail("layer_types", fmt::format("layer {}: {} is not supported; expected \"linear_attention\" or "
                                                "\"full_attention\"", i, t[i].dump()));
    }
  } else {
    const int64_t interval = r.positive_int("full_attention_interval", 4);
    for (std::size_t i = 0; i < layers; ++i) c->layer_linear_attention[i] = (static_cast<int64_t>(i) + 1) % interval != 0;
  }
  LinearAttentionConfig& la = c->linear_attention;
  la.num_k_heads = r.positive_int("linear_num_key_heads", 16);
  la.num_v_heads = r.positive_int("linear_num_value_heads", 32);
  la.head_k_dim = r.positive_int("linear_key_head_dim", 128);
  la.head_v_dim = r.positive_int("linear_value_head_dim", 128);
  la.conv_kernel = r.positive_int("linear_conv_kernel_dim", 4);
  if (la.num_v_heads % la.num_k_heads != 0)
    throw r.fail("linear_num_value_heads", fmt::format("{} value heads are not a multiple of linear_num_key_heads ({})",
                                                       la.num_v_heads, la.num_k_heads));
}

// Llama 4 text (Llama4TextConfig's defaults where config.json omits a key): layer_types (derived
// from no_rope_layers: RoPE layers "chunked_attention", NoPE layers "full_attention"; a list that
// disagrees is refused: transformers would mask by it while vLLM chunks the RoPE layers), the
// chunk (attention_chunk_size 8192; null: none), use_qk_norm (true), attn_temperature_tuning
// (true), floor_scale (8192), attn_scale (0.1), and Llama4TextMoe on moe_layers (else every
// interleave_moe_layer_step-th layer, default 1): num_local_experts (16) experts and a shared
// expert of width intermediate_size, top num_experts_per_tok (1); dense layers of width
// intermediate_size_mlp (16384).
void parse_llama4(const Reader& r, ModelConfig* c) {
  const json& j = r.j;
  const auto layers = static_cast<std::size_t>(c->num_hidden_layers);
  if (r.present(j, "layer_types")) {
    const json& t = j["layer_types"];
    if (!t.is_array() || t.size() != layers)
      throw r.fail("layer_types", fmt::format("expected a list of {} layer types", layers));
    for (std::size_t i = 0; i < layers; ++i) {
      const char* want = c->layer_nope[i] ? "full_attention" : "chunked_attention";
      if (t[i] != want)
        throw r.fail("layer_types", fmt::format("layer {}: {} disagrees with no_rope_layers (expected \"{}\": vLLM 0.34 "
                                                "chunks exactly the RoPE layers)", i, t[i].dump(), want));
    }
  }
  c->attention_chunk_size = std::nullopt;
  if (!j.contains("attention_chunk_size")) c->attention_chunk_size = 8192;
  else if (!j["attention_chunk_size"].is_null()) c->attention_chunk_size = r.positive_int("attention_chunk_size");
  c->l2_qk_norm = r.boolean("use_qk_norm", true);
  c->attn_temperature_tuning = r.boolean("attn_temperature_tuning", true);
  c->floor_scale = r.number(j, "", "floor_scale", 8192.0);
  if (c->floor_scale <= 0) throw r.fail("floor_scale", "expected a positive number");
  c->attn_scale = r.number(j, "", "attn_scale", 0.1);
  c->num_experts = r.positive_int("num_local_experts", 16);
  c->num_experts_per_tok = r.positive_int("num_experts_per_tok", 1);
  if (c->num_experts_per_tok > c->num_experts)
    throw r.fail("num_experts_per_tok", fmt::format("{} experts per token, but only {} experts", c->num_experts_per_tok, c->num_experts));
  c->moe_intermediate_size = c->intermediate_size;
  c->shared_expert_intermediate_size = c->intermediate_size;
  c->intermediate_size = r.positive_int("intermediate_size_mlp", 16384);
  c->layer_moe.assign(layers, false);
  if (r.present(j, "moe_layers")) {
    const json& m = j["moe_layers"];
    if (!m.is_array()) throw r.fail("moe_layers", "expected a list of layer indices");
    for (const json& v : m) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= c->num_hidden_layers)
        throw r.fail("moe_layers", fmt::format("{} is not a layer index below {}", v.dump(), layers));
      c->layer_moe[v.get<std::size_t>()] = true;
    }
  } else {
    const int64_t step = r.positive_int("interleave_moe_layer_step", 1);
    for (int64_t l = step - 1; l < c->num_hidden_layers; l += step) c->layer_moe[static_cast<std::size_t>(l)] = true;
  }
}

// The sigmoid grouped router (Glm4MoeTopkRouter, NemotronHTopkRouter; both config classes default
// norm_topk_prob true, routed_scaling_factor 1.0, n_group 1, topk_group 1), after num_experts and
// num_experts_per_tok: view(-1, n_group, E / n_group).topk(2) per group, then topk(topk_group) groups,
// then topk(num_experts_per_tok) among their experts; shapes torch would refuse (or silently
// degrade) are refused here.
void read_grouped_routing(const Reader& r, ModelConfig* out) {
  ModelConfig& c = *out;
  c.norm_topk_prob = r.boolean("norm_topk_prob", true);
  c.routed_scaling_factor = r.number(r.j, "", "routed_scaling_factor", 1.0);
  if (c.routed_scaling_factor <= 0) throw r.fail("routed_scaling_factor", "expected a positive number");
  c.n_group = r.positive_int("n_group", 1);
  c.topk_group = r.positive_int("topk_group", 1);
  if (c.num_experts % c.n_group != 0 || c.num_experts / c.n_group < 2)
    throw r.fail("n_group", fmt::format("{} experts do not split into {} groups of 2 or more", c.num_experts, c.n_group));
  if (c.topk_group > c.n_group)
    throw r.fail("topk_group", fmt::format("{} groups chosen of {}", c.topk_group, c.n_group));
  if (c.num_experts_per_tok > c.topk_group * (c.num_experts / c.n_group))
    throw r.fail("num_experts_per_tok", fmt::format("{} experts per token, but the {} chosen groups hold {}",
                                                    c.num_experts_per_tok, c.topk_group,
                                                    c.topk_group * (c.num_experts / c.n_group)));
}

// Nemotron-H's MoE blocks (NemotronHConfig's defaults where config.json omits a key): n_routed_experts
// (8) ungated relu2 experts of width moe_intermediate_size (7688), num_experts_per_tok (2) chosen within
// topk_group (1) of n_group (1) groups, norm_topk_prob (true), routed_scaling_factor (1.0), and a
// shared expert of width moe_shared_expert_intermediate_size (7688).
void parse_nemotron_moe(const Reader& r, ModelConfig* c) {
  const json& j = r.j;
  // NemotronHMoE's latent projections (fc1/fc2_latent_proj around the experts) are not implemented.
  if (r.present(j, "moe_latent_size") && !j["moe_latent_size"].is_null())
    throw r.fail("moe_latent_size", "Nemotron-H's latent MoE (fc1_latent_proj / fc2_latent_proj around the experts) "
                                    "is not supported; expected null");
  // transformers 5.17 builds one shared expert of width moe_shared_expert_intermediate_size whatever
  // n_shared_experts says; vLLM 0.34's NemotronHMoE multiplies the width by it (none at 0). They
  // agree at 1 only, so anything else is refused rather than calibrated for one of them.
  if (r.present(j, "n_shared_experts") && !(j["n_shared_experts"].is_number_integer() && j["n_shared_experts"] == 1))
    throw r.fail("n_shared_experts", fmt::format("expected 1 (transformers 5.17 builds one shared expert of width "
                                                 "moe_shared_expert_intermediate_size whatever it says; vLLM 0.34 "
                                                 "multiplies that width by it), got {}", j["n_shared_experts"].dump()));
  c->num_experts = r.positive_int("n_routed_experts", 8);
  c->num_experts_per_tok = r.positive_int("num_experts_per_tok", 2);
  c->moe_intermediate_size = r.positive_int("moe_intermediate_size", 7688);
  c->shared_expert_intermediate_size = r.positive_int("moe_shared_expert_intermediate_size", 7688);
  read_grouped_routing(r, c);
}

// GLM-4.5 (Glm4MoeConfig, its defaults where config.json omits a key): n_routed_experts (128) of width
// moe_intermediate_size (1408), num_experts_per_tok (8) chosen within topk_group (1) of n_group (1)
// groups, norm_topk_prob (true), routed_scaling_factor (1.0), a shared expert of width
// moe_intermediate_size * n_shared_experts (1), and dense layers below first_k_dense_replace (1).
void parse_sigmoid_grouped_moe(const Reader& r, const FamilySpec& f, ModelConfig* c) {
  const json& j = r.j;
  if (!f.moe_shared_expert) {
    // MiniMaxM2Config: num_local_experts (256) experts of width intermediate_size, top
    // num_experts_per_tok (8), always renormalised, no groups, no scaling, every layer sparse.
    c->num_experts = r.positive_int("num_local_experts", 256);
    c->num_experts_per_tok = r.positive_int("num_experts_per_tok", 8);
    if (c->num_experts_per_tok > c->num_experts)
      throw r.fail("num_experts_per_tok", fmt::format("{} experts per token, but only {} experts", c->num_experts_per_tok, c->num_experts));
    c->moe_intermediate_size = c->intermediate_size;
    c->norm_topk_prob = true;
    c->layer_moe.assign(static_cast<std::size_t>(c->num_hidden_layers), true);
    return;
  }
  c->num_experts = r.positive_int("n_routed_experts", 128);
  c->num_experts_per_tok = r.positive_int("num_experts_per_tok", 8);
  c->moe_intermediate_size = r.positive_int("moe_intermediate_size", 1408);
  read_grouped_routing(r, c);
  c->shared_expert_intermediate_size = c->moe_intermediate_size * r.positive_int("n_shared_experts", 1);
  const int64_t dense = r.present(j, "first_k_dense_replace") && j["first_k_dense_replace"] == 0
                            ? 0 : r.positive_int("first_k_dense_replace", 1);
  c->layer_moe.assign(static_cast<std::size_t>(c->num_hidden_layers), true);
  for (int64_t l = 0; l < std::min(dense, c->num_hidden_layers); ++l) c->layer_moe[static_cast<std::size_t>(l)] = false;
}

// Qwen3-MoE and Qwen3-Next: num_experts, moe_intermediate_size, norm_topk_prob, decoder_sparse_step,
// mlp_only_layers (Qwen3-Next: shared_expert_intermediate_size). Qwen3.5-MoE: the same on every
// layer, top-k always renormalised, no dense layers. Mixtral: num_local_experts, experts of width intermediate_size, always
// renormalised, every layer sparse.
void parse_moe(const Reader& r, const FamilySpec& f, ModelConfig* c) {
  const json& j = r.j;
  if (f.moe_kind == MoeKind::kGptOss) {
    // GptOssConfig: num_local_experts (128) experts of width intermediate_size, 4 per token, on
    // every layer; routing weights are a softmax over the chosen k (no norm_topk_prob).
    c->num_experts = r.positive_int(r.present(j, "num_local_experts") ? "num_local_experts" : "num_experts", 128);
    c->num_experts_per_tok = r.positive_int("num_experts_per_tok", 4);
    if (c->num_experts_per_tok > c->num_experts)
      throw r.fail("num_experts_per_tok", fmt::format("{} experts per token, but only {} experts", c->num_experts_per_tok, c->num_experts));
    c->moe_intermediate_size = c->intermediate_size;
    c->layer_moe.assign(static_cast<std::size_t>(c->num_hidden_layers), true);
    // transformers' GptOssExperts clamps at 7.0 (its MXFP4 kernels read swiglu_limit, 7.0 in every
    // published config): a different value would make the two paths disagree.
    c->swiglu_limit = r.number(j, "", "swiglu_limit", 7.0);
    if (c->swiglu_limit != 7.0)
      throw r.fail("swiglu_limit", fmt::format("expected 7.0 (transformers 5.17's GptOssExperts clamps at 7.0), got {}", c->swiglu_limit));
    return;
  }
  if (f.moe_kind == MoeKind::kSigmoidGrouped) {
    parse_sigmoid_grouped_moe(r, f, c);
    return;
  }
  const bool mixtral = f.moe_kind == MoeKind::kMixtral;
  // Hub Qwen3-MoE configs say num_experts; transformers 5.17 saves it as num_local_experts (its
  // attribute map), Mixtral's own name.
  const char* experts_key = r.present(j, "num_experts") ? "num_experts" : "num_local_experts";
  // Defaults where config.json omits the key, as each transformers 5.17 config class has them:
  // Qwen3MoeConfig 128 experts / top 8 / 768, Qwen3NextConfig 512 / 10 / 512, Qwen3_5MoeTextConfig
  // 256 / 8 / 512, MixtralConfig 8 / 2 (read with from_dict({}) in the peer venv).
  const bool next = f.architecture == "Qwen3NextForCausalLM";
  const bool qwen35_moe = f.moe_shared_expert && !next;
  c->num_experts = r.positive_int(experts_key, mixtral ? 8 : next ? 512 : qwen35_moe ? 256 : 128);
  c->num_experts_per_tok = r.positive_int("num_experts_per_tok", mixtral ? 2 : next ? 10 : 8);
  if (c->num_experts_per_tok > c->num_experts)
    throw r.fail("num_experts_per_tok", fmt::format("{} experts per token, but only {} experts", c->num_experts_per_tok, c->num_experts));
  c->moe_intermediate_size = mixtral ? c->intermediate_size : r.positive_int("moe_intermediate_size", f.moe_shared_expert ? 512 : 768);
  c->norm_topk_prob = f.moe_norm_topk_always || r.boolean("norm_topk_prob", f.moe_norm_topk_default);
  c->layer_moe.assign(static_cast<std::size_t>(c->num_hidden_layers), true);
  if (f.moe_shared_expert)  // Qwen3NextConfig / Qwen3_5MoeTextConfig default 512
    c->shared_expert_intermediate_size = r.positive_int("shared_expert_intermediate_size", 512);
  if (!mixtral && !f.moe_every_layer) {
    const int64_t step = r.positive_int("decoder_sparse_step", 1);
    for (int64_t l = 0; l < c->num_hidden_layers; ++l) c->layer_moe[static_cast<std::size_t>(l)] = (l + 1) % step == 0;
    if (r.present(j, "mlp_only_layers")) {
      if (!j["mlp_only_layers"].is_array()) throw r.fail("mlp_only_layers", "expected a list of layer indices");
      for (const auto& x : j["mlp_only_layers"]) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= c->num_hidden_layers)
          throw r.fail("mlp_only_layers", fmt::format("{} is not a layer index", x.dump()));
        c->layer_moe[x.get<std::size_t>()] = false;
      }
    }
  }
  // router_jitter_noise (Mixtral) applies in training only: nothing to do.
}


// A float that transformers 5.17's config serialisation may write as {"__float__": "Infinity"}
// (time_step_limit's upper end), a plain number, or null / absent (the default).
double float_or_infinity(const Reader& r, const json& v, const std::string& field, double def) {
  if (v.is_null()) return def;
  if (v.is_number()) return v.get<double>();
  const json& s = v.is_object() && v.contains("__float__") ? v["__float__"] : v;
  if (s.is_string() && (s == "Infinity" || s == "inf")) return std::numeric_limits<double>::infinity();
  throw r.fail(field, fmt::format("expected a number or Infinity, got {}", v.dump()));
}

// Nemotron-H's block types, as NemotronHConfig.__post_init__ derives them: `layers_block_type`
// (legacy names remapped: "mamba" -> "linear_attention", "attention" -> "full_attention"), else
// `hybrid_override_pattern` (M, *, -, E), else the class default [linear_attention, moe,
// full_attention, mlp]. The layer count is the list's length (num_hidden_layers is ignored).
std::vector<std::string> nemotron_block_types(const Reader& r) {
  const json& j = r.j;
  std::vector<std::string> types;
  const char* key = r.present(j, "layers_block_type") ? "layers_block_type" : r.present(j, "layer_types") ? "layer_types" : nullptr;
  if (key) {
    if (!j[key].is_array() || j[key].empty()) throw r.fail(key, "expected a non-empty list of block types");
    for (const auto& t : j[key]) {
      if (!t.is_string()) throw r.fail(key, fmt::format("expected block type names, got {}", t.dump()));
      std::string s = t.get<std::string>();
      if (s == "mamba") s = "linear_attention";
      if (s == "attention") s = "full_attention";
      types.push_back(s);
    }
  } else if (r.present(j, "hybrid_override_pattern")) {
    if (!j["hybrid_override_pattern"].is_string()) throw r.fail("hybrid_override_pattern", "expected a string of M, *, - and E");
    for (char ch : j["hybrid_override_pattern"].get<std::string>()) {
      switch (ch) {
        case 'M': types.emplace_back("linear_attention"); break;
        case '*': types.emplace_back("full_attention"); break;
        case '-': types.emplace_back("mlp"); break;
        case 'E': types.emplace_back("moe"); break;
        default: throw r.fail("hybrid_override_pattern", fmt::format("'{}' is not a block type (M, *, - or E)", ch));
      }
    }
    if (types.empty()) throw r.fail("hybrid_override_pattern", "empty");
  } else {
    types = {"linear_attention", "moe", "full_attention", "mlp"};
  }
  return types;
}

// The Mamba2 hybrids' layer kinds and mixer sizes, with each transformers 5.17 config class's
// defaults (NemotronHConfig, GraniteMoeHybridConfig); see model/mamba2_config.h for the mixer.
void parse_mamba_hybrid(const Reader& r, const FamilySpec& f, ModelConfig* c) {
  const json& j = r.j;
  const auto layers = static_cast<std::size_t>(c->num_hidden_layers);
  c->layer_mamba.assign(layers, false);
  Mamba2Config& m = c->mamba;
  m.hidden_size = c->hidden_size;
  if (f.one_block_per_layer) {  // Nemotron-H
    const std::vector<std::string> types = nemotron_block_types(r);
    CTCAL_ASSERT(types.size() == layers, "num_hidden_layers comes from the block types");
    c->layer_mlp_block.assign(layers, false);
    c->layer_moe.assign(layers, false);
    for (std::size_t i = 0; i < layers; ++i) {
      if (types[i] == "linear_attention") c->layer_mamba[i] = true;
      else if (types[i] == "mlp") c->layer_mlp_block[i] = true;
      else if (types[i] == "moe") c->layer_mlp_block[i] = c->layer_moe[i] = true;  // NemotronHMoE, no mixer
      else if (types[i] != "full_attention")
        throw r.fail("layers_block_type", fmt::format("layer {}: \"{}\" is not a block type; expected linear_attention, "
                                                      "full_attention, mlp or moe", i, types[i]));
    }
    if (std::find(types.begin(), types.end(), "moe") != types.end()) parse_nemotron_moe(r, c);
    // NemotronHMamba2Mixer: I = mamba_num_heads * mamba_head_dim (expand is not read), gated norm
    // in n_groups groups, dt clamped below at time_step_min only (time_step_limit is not read).
    // Legacy keys (mamba_n_groups, mamba_d_conv, mamba_dt_min, mamba_conv_bias, mamba_chunk_size)
    // as __post_init__ pops them.
    auto legacy_int = [&](const char* key, const char* legacy, int64_t def) {
      return r.present(j, legacy) ? r.positive_int(legacy) : r.positive_int(key, def);
    };
    m.num_heads = r.positive_int("mamba_num_heads", 128);
    m.head_dim = r.positive_int("mamba_head_dim", 64);
    m.state_size = r.positive_int("ssm_state_size", 128);
    m.n_groups = legacy_int("n_groups", "mamba_n_groups", 8);
    m.conv_kernel = legacy_int("conv_kernel", "mamba_d_conv", 4);
    m.chunk_size = legacy_int("chunk_size", "mamba_chunk_size", 128);
    m.norm_eps = c->rms_norm_eps;  // layer_norm_epsilon, like the blocks' norms
    if (m.n_groups < 1 || m.intermediate_size() % m.n_groups != 0)
      throw r.fail("n_groups", fmt::format("{} groups do not divide the Mamba intermediate size {}", m.n_groups, m.intermediate_size()));
    m.norm_group_size = m.intermediate_size() / m.n_groups;
    m.time_step_min = r.number(j, "", r.present(j, "mamba_dt_min") ? "mamba_dt_min" : "time_step_min", 0.001);
    m.time_step_max = std::numeric_limits<double>::infinity();
    c->mamba_proj_bias = r.boolean("use_bias", false);
    c->mamba_conv_bias = r.boolean(r.present(j, "mamba_conv_bias") ? "mamba_conv_bias" : "use_conv_bias", true);
    if (r.present(j, "mamba_hidden_act") && j["mamba_hidden_act"] != "silu")
      throw r.fail("mamba_hidden_act", fmt::format("expected \"silu\" (the Mamba2 mixer ctcal computes), got {}",
                                                   j["mamba_hidden_act"].dump()));
    return;
  }
  // Granite 4 hybrid: layer_types ("linear_attention" = Mamba2, "full_attention"; legacy "mamba",
  // "attention"), default all Mamba2. BambaMixer: I = mamba_expand * hidden, head dim
  // mamba_d_head ("auto": I / mamba_n_heads), gated norm over the whole I, rms_norm_eps,
  // dt clamped to time_step_limit.
  if (r.present(j, "layer_types")) {
    const json& t = j["layer_types"];
    if (!t.is_array() || t.size() != layers)
      throw r.fail("layer_types", fmt::format("expected a list of {} layer types", layers));
    for (std::size_t i = 0; i < layers; ++i) {
      if (t[i] == "linear_attention" || t[i] == "mamba") c->layer_mamba[i] = true;
      else if (t[i] != "full_attention" && t[i] != "attention")
        throw r.fail("layer_types", fmt::format("layer {}: {} is not supported; expected \"linear_attention\" (Mamba2) "
                                                "or \"full_attention\"", i, t[i].dump()));
    }
  } else {
    c->layer_mamba.assign(layers, true);
  }
  const int64_t expand = r.positive_int("mamba_expand", 2);
  const int64_t inter = expand * c->hidden_size;
  m.num_heads = r.positive_int("mamba_n_heads", 128);
  if (inter % m.num_heads != 0)
    throw r.fail("mamba_n_heads", fmt::format("{} heads do not divide mamba_expand * hidden_size = {}", m.num_heads, inter));
  m.head_dim = r.present(j, "mamba_d_head") && j["mamba_d_head"] == "auto" ? inter / m.num_heads
                                                                           : r.positive_int("mamba_d_head", inter / m.num_heads);
  if (m.head_dim * m.num_heads != inter)
    throw r.fail("mamba_d_head", fmt::format("{} heads x {} != mamba_expand * hidden_size = {}", m.num_heads, m.head_dim, inter));
  m.state_size = r.positive_int("mamba_d_state", 256);
  m.n_groups = r.positive_int("mamba_n_groups", 1);
  m.conv_kernel = r.positive_int("mamba_d_conv", 4);
  m.chunk_size = r.positive_int("mamba_chunk_size", 256);
  m.norm_eps = c->rms_norm_eps;
  m.norm_group_size = inter;
  if (r.present(j, "time_step_limit")) {
    const json& lim = j["time_step_limit"];
    if (!lim.is_array() || lim.size() != 2) throw r.fail("time_step_limit", "expected [min, max]");
    m.time_step_min = float_or_infinity(r, lim[0], "time_step_limit", 0.0);
    m.time_step_max = float_or_infinity(r, lim[1], "time_step_limit", std::numeric_limits<double>::infinity());
  } else if (j.contains("time_step_limit")) {
    // null: BambaMixer would call torch.clamp(dt, min=None[0]) and fail; refuse by name.
    throw r.fail("time_step_limit", "null; transformers 5.17's BambaMixer needs [min, max]");
  }
  c->mamba_proj_bias = r.boolean("mamba_proj_bias", false);
  c->mamba_conv_bias = r.boolean("mamba_conv_bias", true);
}

// Granite 4 hybrid: the multipliers, RoPE by position_embedding_type, and the MLPs: experts of
// width intermediate_size (num_local_experts, 0 = none) plus shared_mlp of width
// shared_intermediate_size on every layer (GraniteMoeHybridConfig defaults 8 / 2 / 11008 / 1024).
void parse_granite_hybrid(const Reader& r, ModelConfig* c) {
  const json& j = r.j;
  c->embedding_multiplier = r.number(j, "", "embedding_multiplier", 1.0);
  c->attention_multiplier = r.number(j, "", "attention_multiplier", 1.0);
  c->residual_multiplier = r.number(j, "", "residual_multiplier", 1.0);
  c->logits_scaling = r.number(j, "", "logits_scaling", 1.0);
  if (c->logits_scaling == 0) throw r.fail("logits_scaling", "expected a non-zero divisor");
  if (r.present(j, "position_embedding_type")) {
    if (j["position_embedding_type"] != "rope")
      throw r.fail("position_embedding_type", fmt::format("expected \"rope\" or null, got {}", j["position_embedding_type"].dump()));
    c->rope_on = true;
  } else {
    c->rope_on = false;  // GraniteMoeHybridModel builds no rotary embedding: NoPE attention
  }
  const int64_t experts = r.present(j, "num_local_experts") && j["num_local_experts"] == 0 ? 0 : r.positive_int("num_local_experts", 8);
  c->moe_intermediate_size = c->intermediate_size;
  c->intermediate_size = r.positive_int("shared_intermediate_size", 1024);
  c->layer_moe.assign(static_cast<std::size_t>(c->num_hidden_layers), experts > 0);
  if (experts > 0) {
    c->num_experts = experts;
    c->num_experts_per_tok = r.positive_int("num_experts_per_tok", 2);
    if (c->num_experts_per_tok > c->num_experts)
      throw r.fail("num_experts_per_tok", fmt::format("{} experts per token, but only {} experts", c->num_experts_per_tok, c->num_experts));
  }
}

// Gemma 4 text (Gemma4TextConfig, its defaults where config.json omits a key). Per layer type: the
// last layer is always full (__post_init__ forces it); head_dim / num_key_value_heads per layer
// from `per_layer_config` ({"<layer>": {"head_dim": .., "num_key_value_heads": ..}}, as
// save_pretrained writes it), else `global_head_dim` (default 512) and, with attention_k_eq_v,
// `num_global_key_value_heads` on the full layers; attention_k_eq_v full layers (V = k_proj x);
// rope_parameters per layer type (default: sliding {default, 10000}, full {proportional 0.25,
// 1e6}); softmax scale 1.0 (Gemma4TextAttention.scaling). What is not implemented yet is refused.
void parse_gemma4(const Reader& r, ModelConfig* c) {
  const json& j = r.j;
  const auto layers = static_cast<std::size_t>(c->num_hidden_layers);
  // Refused by name until implemented (issue 29's Gemma 4 stages), each with what it would change.
  // Per-layer input embeddings (Gemma4TextModel.get_per_layer_inputs / project_per_layer_inputs):
  // hidden_size_per_layer_input P (default 256; 0: none) over a table of vocab_size_per_layer_input
  // rows. vLLM 0.34 maps ids beyond that table to row 0, transformers indexes past it: a table
  // smaller than the vocabulary is refused.
  if (r.present(j, "hidden_size_per_layer_input") &&
      (!j["hidden_size_per_layer_input"].is_number_integer() || j["hidden_size_per_layer_input"].get<int64_t>() < 0))
    throw r.fail("hidden_size_per_layer_input", "expected a non-negative integer");
  c->per_layer_input_size = r.present(j, "hidden_size_per_layer_input") ? j["hidden_size_per_layer_input"].get<int64_t>() : 256;
  if (c->per_layer_input_size > 0 && r.positive_int("vocab_size_per_layer_input", 262144) != c->vocab_size)
    throw r.fail("vocab_size_per_layer_input", fmt::format("{} differs from vocab_size {}: transformers and vLLM 0.34 "
                                                           "disagree on ids beyond the per-layer table (vLLM maps them to "
                                                           "row 0), so ctcal refuses it", r.positive_int("vocab_size_per_layer_input", 262144),
                                                           c->vocab_size));
  // The MoE block (Gemma4TextDecoderLayer: enable_moe_block; vLLM 0.34's gemma4.py builds it when
  // num_experts is set): every layer, beside the dense MLP; top_k_experts of num_experts, softmax
  // over all, the top-k renormalised and times per_expert_scale; experts of moe_intermediate_size.
  const bool moe = r.boolean("enable_moe_block", false);
  if (moe != r.present(j, "num_experts"))
    throw r.fail("enable_moe_block", fmt::format("enable_moe_block is {} but num_experts is {}: transformers 5.17 builds "
                                                 "the MoE block by the first, vLLM 0.34 by the second", moe,
                                                 r.present(j, "num_experts") ? j["num_experts"].dump() : "null"));
  if (moe) {
    c->num_experts = r.positive_int("num_experts");
    c->num_experts_per_tok = r.positive_int("top_k_experts");
    c->moe_intermediate_size = r.positive_int("moe_intermediate_size");
    if (c->num_experts_per_tok > c->num_experts)
      throw r.fail("top_k_experts", fmt::format("{} experts per token, but only {} experts", c->num_experts_per_tok, c->num_experts));
    c->norm_topk_prob = true;  // always renormalised (Gemma4TextRouter)
    c->layer_moe.assign(layers, true);
  }
  if (r.present(j, "use_bidirectional_attention") && j["use_bidirectional_attention"] == "all")
    throw r.fail("use_bidirectional_attention", "\"all\" (every token sees every token) is not supported: ctcal runs "
                                                "causal attention");
  if (r.present(j, "attn_logit_softcapping"))
    throw r.fail("attn_logit_softcapping", "Gemma4TextAttention applies no attention logit softcapping but vLLM 0.34's "
                                           "gemma4.py does when this key is set: refused, the two would differ");
  // Layer types: layer_types (parse_layer_sliding read them into layer_sliding, unless
  // sliding_window is null) or the 5:1 pattern; the last layer full.
  std::vector<bool> full(layers, false);
  if (r.present(j, "layer_types")) {
    for (std::size_t i = 0; i < layers; ++i) full[i] = j["layer_types"][i] == "full_attention";
  } else {
    for (std::size_t i = 0; i < layers; ++i) full[i] = (i + 1) % 6 == 0;
  }
  full[layers - 1] = true;
  if (c->sliding_window)
    for (std::size_t i = 0; i < layers; ++i) c->layer_sliding[i] = !full[i];
  const bool k_eq_v = r.boolean("attention_k_eq_v", false);
  c->layer_head_dim.assign(layers, c->head_dim);
  c->layer_kv_heads.assign(layers, c->num_key_value_heads);
  if (r.present(j, "per_layer_config")) {
    const json& plc = j["per_layer_config"];
    if (!plc.is_object()) throw r.fail("per_layer_config", "expected an object {\"<layer>\": {...}}");
    for (const auto& [key, o] : plc.items()) {
      const std::string f = "per_layer_config." + key;
      std::size_t l = layers;
      try {
        std::size_t used = 0;
        l = static_cast<std::size_t>(std::stoul(key, &used));
        if (used != key.size()) l = layers;
      } catch (const std::exception&) {
      }
      if (l >= layers) throw r.fail(f, fmt::format("expected a layer index below {}", layers));
      if (!o.is_object()) throw r.fail(f, "expected an object");
      for (const auto& [name, v] : o.items()) {
        if (name != "head_dim" && name != "num_key_value_heads")
          throw r.fail(f + "." + name, "only head_dim and num_key_value_heads may differ per layer (what "
                                       "Gemma4TextConfig sets there); ctcal runs no other per-layer override");
        if (!v.is_number_integer() || v.get<int64_t>() <= 0) throw r.fail(f + "." + name, "expected a positive integer");
        (name == "head_dim" ? c->layer_head_dim : c->layer_kv_heads)[l] = v.get<int64_t>();
      }
    }
  } else {
    const int64_t global_head_dim = r.positive_int("global_head_dim", 512);
    const std::optional<int64_t> global_kv =
        k_eq_v && r.present(j, "num_global_key_value_heads") ? std::optional<int64_t>(r.positive_int("num_global_key_value_heads"))
                                                             : std::nullopt;
    for (std::size_t i = 0; i < layers; ++i)
      if (full[i]) {
        c->layer_head_dim[i] = global_head_dim;
        if (global_kv) c->layer_kv_heads[i] = *global_kv;
      }
  }
  for (std::size_t i = 0; i < layers; ++i) {
    if (c->layer_head_dim[i] % 2 != 0)
      throw r.fail("per_layer_config", fmt::format("layer {}: head_dim {} is odd (RoPE needs pairs)", i, c->layer_head_dim[i]));
    if (c->num_attention_heads % c->layer_kv_heads[i] != 0)
      throw r.fail("per_layer_config", fmt::format("layer {}: num_attention_heads ({}) must be divisible by its "
                                                   "num_key_value_heads ({})", i, c->num_attention_heads, c->layer_kv_heads[i]));
  }
  // KV-shared layers (Gemma4TextAttention.is_kv_shared_layer): the last num_kv_shared_layers attend
  // with the K/V of the last earlier non-shared layer of their type (store_full_length_kv; vLLM
  // 0.34: kv_sharing_target_layer_name, that layer's cache). Their dense MLP is double-wide with
  // use_double_wide_mlp (Gemma4TextMLP: layer >= first shared > 0).
  const int64_t shared = r.present(j, "num_kv_shared_layers") ? j["num_kv_shared_layers"].get<int64_t>() : 0;
  if (shared < 0 || shared > c->num_hidden_layers) throw r.fail("num_kv_shared_layers", "expected 0 .. num_hidden_layers");
  const auto first_shared = static_cast<std::size_t>(c->num_hidden_layers - shared);
  if (shared > 0) {
    c->layer_kv_source.assign(layers, -1);
    for (std::size_t i = first_shared; i < layers; ++i) {
      for (std::size_t k = first_shared; k-- > 0;)
        if (full[k] == full[i]) {
          c->layer_kv_source[i] = static_cast<int64_t>(k);
          break;
        }
      if (c->layer_kv_source[i] < 0)
        throw r.fail("num_kv_shared_layers", fmt::format("layer {} ({}) shares K/V, but no earlier layer of its type "
                                                         "computes them", i, full[i] ? "full_attention" : "sliding_attention"));
      if (c->layer_head_dim[i] != c->layer_head_dim[static_cast<std::size_t>(c->layer_kv_source[i])] ||
          c->layer_kv_heads[i] != c->layer_kv_heads[static_cast<std::size_t>(c->layer_kv_source[i])])
        throw r.fail("per_layer_config", fmt::format("KV-shared layer {} differs in head_dim / KV heads from layer {}, "
                                                     "whose K/V it reads", i, c->layer_kv_source[i]));
    }
    if (r.boolean("use_double_wide_mlp", false) && first_shared > 0) {
      c->layer_intermediate_size.assign(layers, c->intermediate_size);
      for (std::size_t i = first_shared; i < layers; ++i) c->layer_intermediate_size[i] = 2 * c->intermediate_size;
    }
  }
  if (k_eq_v) {
    c->layer_k_eq_v.assign(layers, false);
    for (std::size_t i = 0; i < layers; ++i) c->layer_k_eq_v[i] = full[i] && c->kv_source_of(static_cast<int64_t>(i)) < 0;
  }
  // RoPE per layer type. A layer type's rope_parameters entry: "default" (every angle, theta) or
  // "proportional" (Gemma4TextRotaryEmbedding through ROPE_INIT_FUNCTIONS); others refused.
  static const json kDefaults = {{"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 10000.0}}},
                                 {"full_attention", {{"rope_type", "proportional"}, {"partial_rotary_factor", 0.25},
                                                     {"rope_theta", 1000000.0}}}};
  const json& rp = r.present(j, "rope_parameters") ? j["rope_parameters"] : kDefaults;
  if (!rp.is_object()) throw r.fail("rope_parameters", "expected {\"full_attention\": {...}, \"sliding_attention\": {...}}");
  RopeConfig rope[2];
  const char* kinds[2] = {"full_attention", "sliding_attention"};
  for (int i = 0; i < 2; ++i) {
    const bool used = std::any_of(full.begin(), full.end(), [&](bool f) { return f == (i == 0); });
    const std::string prefix = fmt::format("rope_parameters.{}.", kinds[i]);
    if (!rp.contains(kinds[i]) || rp[kinds[i]].is_null()) {
      if (used) throw r.fail(prefix.substr(0, prefix.size() - 1), "missing; Gemma 4 keeps one RoPE per layer type");
      continue;
    }
    const json& p = rp[kinds[i]];
    if (!p.is_object()) throw r.fail(prefix.substr(0, prefix.size() - 1), "expected an object");
    const std::string type = p.contains("rope_type") && p["rope_type"].is_string() ? p["rope_type"].get<std::string>() : "default";
    rope[i].theta = r.number(p, prefix, "rope_theta", 10000.0);
    if (rope[i].theta <= 0) throw r.fail(prefix + "rope_theta", "expected a positive number");
    if (type == "proportional") {
      rope[i].type = RopeType::kProportional;
      rope[i].rope_proportion = r.number(p, prefix, "partial_rotary_factor", 1.0);
      rope[i].factor = r.number(p, prefix, "factor", 1.0);
      if (rope[i].rope_proportion < 0 || rope[i].rope_proportion > 1)
        throw r.fail(prefix + "partial_rotary_factor", "expected a share in [0, 1]");
      if (rope[i].factor <= 0) throw r.fail(prefix + "factor", "expected a positive number");
    } else if (type == "default") {
      // compute_default_rope_parameters rotates the whole head whatever partial_rotary_factor says;
      // vLLM's get_rope would honour it: refused rather than guessed.
      if (r.present(p, "partial_rotary_factor") && r.number(p, prefix, "partial_rotary_factor", 1.0) != 1.0)
        throw r.fail(prefix + "partial_rotary_factor", "a default-type RoPE with a partial factor: transformers 5.17 "
                                                       "rotates every dim, vLLM 0.34 would not");
    } else {
      throw r.fail(prefix + "rope_type", fmt::format("'{}' is not supported for Gemma 4; expected default or "
                                                     "proportional", type));
    }
  }
  c->rope = rope[0];
  c->rope_local = rope[1];
  c->query_pre_attn_scalar = 1.0;  // scaling = 1.0: q_norm / k_norm carry the scale (scale = 1^-0.5)
  if (r.present(j, "final_logit_softcapping"))
    c->final_logit_softcapping = r.number(j, "", "final_logit_softcapping", std::nullopt);
}

}  // namespace

int64_t ModelConfig::widest_q_dim() const {
  int64_t w = q_dim();
  for (int64_t d : layer_head_dim) w = std::max(w, num_attention_heads * d);
  return w;
}

int64_t ModelConfig::widest_kv_dim() const {
  int64_t w = kv_dim();
  for (std::size_t l = 0; l < layer_head_dim.size(); ++l) w = std::max(w, layer_kv_heads[l] * layer_head_dim[l]);
  return w;
}

ModelConfig parse_model_config_fields(const json& top, const std::string& where) {
  const FamilySpec& family = parse_family(Reader{top, where});
  // Multimodal wrappers keep the language model's hyper-parameters under text_config.
  if (family.text_config && (!top.contains("text_config") || !top["text_config"].is_object()))
    throw InputError(fmt::format("{}: field 'text_config': missing; {} keeps the language model's "
                                 "hyper-parameters there", where, family.architecture));
  const json& j = family.text_config ? top["text_config"] : top;
  Reader r{j, family.text_config ? where + ": text_config" : where};
  ModelConfig c;
  c.family = &family;
  c.weight_prefix = std::string(family.weight_prefix);
  c.architecture = std::string(family.architecture);
  const bool mistral = family.architecture == "MistralForCausalLM";
  const bool gemma = family.act == MlpAct::kGeluTanh;
  // transformers reads hidden_act (Llama, Qwen) or hidden_activation (Gemma 3, which ignores
  // hidden_act); ctcal runs the activation the family's MLP uses.
  // Nemotron-H's MLP blocks read mlp_hidden_act (relu2).
  const bool relu2 = family.act == MlpAct::kRelu2;
  const char* act_key = gemma ? "hidden_activation" : relu2 ? "mlp_hidden_act" : "hidden_act";
  const char* act_want = gemma ? "gelu_pytorch_tanh" : relu2 ? "relu2" : "silu";
  if (r.present(j, act_key) && j[act_key] != act_want)
    throw r.fail(act_key, fmt::format("expected \"{}\", got {}", act_want, j[act_key].dump()));
  c.vocab_size = r.positive_int("vocab_size");
  c.hidden_size = r.positive_int("hidden_size");
  // Qwen3.5-MoE has no dense MLP and no intermediate_size (Qwen3_5MoeTextConfig deletes it); one
  // that is there anyway is never used (0: no dense layer reads it).
  c.intermediate_size = family.moe_every_layer && !r.present(j, "intermediate_size") ? 0 : r.positive_int("intermediate_size");
  // Nemotron-H: one layer per block type (NemotronHConfig.num_hidden_layers is their count).
  c.num_hidden_layers = family.one_block_per_layer ? static_cast<int64_t>(nemotron_block_types(r).size())
                                                   : r.positive_int("num_hidden_layers");
  c.num_attention_heads = r.positive_int("num_attention_heads");
  // NemotronHConfig's class defaults: 8 KV heads, head_dim 128 (not hidden / heads).
  c.num_key_value_heads = r.positive_int("num_key_value_heads", family.one_block_per_layer ? 8 : c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    throw r.fail("num_key_value_heads",
                 fmt::format("num_attention_heads ({}) must be divisible by num_key_value_heads ({})",
                             c.num_attention_heads, c.num_key_value_heads));
  if (!r.present(j, "head_dim") && !family.one_block_per_layer && c.hidden_size % c.num_attention_heads != 0)
    throw r.fail("head_dim", fmt::format("missing, and hidden_size ({}) is not divisible by "
                                         "num_attention_heads ({})", c.hidden_size,
                                         c.num_attention_heads));
  c.head_dim = r.positive_int("head_dim", family.one_block_per_layer ? 128 : c.hidden_size / c.num_attention_heads);
  if (c.head_dim % 2 != 0) throw r.fail("head_dim", fmt::format("expected an even number for RoPE, got {}", c.head_dim));
  c.max_position_embeddings = r.positive_int("max_position_embeddings", mistral ? 4096 * 32 : 2048);
  // Qwen2/Qwen3 drop the window unless use_sliding_window is true (their __post_init__).
  const bool qwen_rule = family.sliding == SlidingRule::kQwenMaxWindow || family.sliding == SlidingRule::kQwenAllLayers;
  const bool window_on = !qwen_rule || r.boolean("use_sliding_window", false);
  if (family.sliding != SlidingRule::kNone && window_on && r.present(j, "sliding_window"))
    c.sliding_window = r.positive_int("sliding_window");
  else if (family.sliding != SlidingRule::kNone && !j.contains("sliding_window") && family.default_sliding_window > 0)
    c.sliding_window = family.default_sliding_window;  // an explicit null keeps none
  if (family.nope_layers) parse_nope_layers(r, &c);
  c.layer_sliding = parse_layer_sliding(r, family, c.num_hidden_layers, c);
  if (!c.sliding_window) c.layer_sliding.assign(c.layer_sliding.size(), false);
  const char* eps_key = family.one_block_per_layer ? "layer_norm_epsilon" : "rms_norm_eps";  // NemotronHConfig's name
  c.rms_norm_eps = r.number(j, "", eps_key, family.default_rms_norm_eps);
  if (c.rms_norm_eps < 0) throw r.fail(eps_key, "expected a non-negative number");
  c.attention_bias = r.boolean("attention_bias", family.attention_bias_default);
  c.qkv_bias = family.qkv_bias_always || c.attention_bias;
  c.o_bias = family.o_bias_follows_attention_bias && c.attention_bias;
  // NemotronHAttention builds q/k/v/o with bias=False whatever attention_bias says (so does vLLM
  // 0.34's nemotron_h.py).
  if (family.one_block_per_layer) c.qkv_bias = c.o_bias = false;
  c.mlp_bias = r.boolean("mlp_bias", false);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", gemma || family.tie_word_embeddings_default);
  c.qk_norm = family.qk_norm || (!family.qk_norm_flag.empty() && r.boolean(std::string(family.qk_norm_flag), false));
  if (family.text_config && top.contains("tie_word_embeddings"))  // the wrapper's flag wins
    c.tie_word_embeddings = Reader{top, where}.boolean("tie_word_embeddings", c.tie_word_embeddings);
  if (family.gemma4_attention) {
    parse_gemma4(r, &c);
  } else if (gemma) {
    parse_gemma_rope(r, &c);
  } else if (family.rope_per_layer_type) {
    parse_rope_per_layer_type(r, family, &c);
  } else if (family.moe_kind == MoeKind::kGptOss && family.mlp == MlpKind::kMoe) {
    // GptOssConfig's default rope_parameters when config.json has none.
    static const json kGptOssYarn = {{"rope_type", "yarn"}, {"factor", 32.0}, {"beta_fast", 32.0}, {"beta_slow", 1.0},
                                     {"truncate", false}, {"original_max_position_embeddings", 4096}};
    c.rope = parse_rope(r, family.default_rope_theta, &kGptOssYarn);
  } else {
    c.rope = parse_rope(r, family.default_rope_theta);
  }
  if (family.partial_rotary) {
    // Phi-3: in rope_parameters (transformers 5) or top-level (classic).
    const json& rp = r.present(j, "rope_parameters") && j["rope_parameters"].is_object() ? j["rope_parameters"] : j;
    const std::string prefix = &rp == &j ? "" : "rope_parameters.";
    c.rope.partial_rotary_factor =
        r.number(rp, prefix, "partial_rotary_factor", r.present(j, "partial_rotary_factor")
                                                          ? std::optional<double>(j["partial_rotary_factor"].get<double>())
                                                          : std::optional<double>(family.default_partial_rotary_factor));
    const int64_t rd = c.rope.rotary_dim(c.head_dim);
    if (c.rope.partial_rotary_factor <= 0 || c.rope.partial_rotary_factor > 1 || rd % 2 != 0)
      throw r.fail(prefix + "partial_rotary_factor",
                   fmt::format("expected a factor in (0, 1] giving an even rotary dimension, got {}", c.rope.partial_rotary_factor));
    // MiniMax-M2's hub config also says rotary_dim (vLLM reads it when rope_parameters has no
    // partial_rotary_factor; transformers never does): one that disagrees is refused, not guessed.
    if (r.present(j, "rotary_dim") && r.positive_int("rotary_dim") != rd)
      throw r.fail("rotary_dim", fmt::format("{} disagrees with partial_rotary_factor {} x head_dim {} = {} (transformers "
                                             "rotates {} dims)", j["rotary_dim"].dump(), c.rope.partial_rotary_factor,
                                             c.head_dim, rd, rd));
    if (c.rope.type == RopeType::kLongRope &&
        (static_cast<int64_t>(c.rope.short_factor.size()) != rd / 2 || static_cast<int64_t>(c.rope.long_factor.size()) != rd / 2))
      throw r.fail(prefix + "short_factor", fmt::format("longrope factors need {} entries (rotary_dim / 2)", rd / 2));
  } else if (c.rope.type == RopeType::kLongRope &&
             (static_cast<int64_t>(c.rope.short_factor.size()) != c.head_dim / 2 ||
              static_cast<int64_t>(c.rope.long_factor.size()) != c.head_dim / 2)) {
    throw r.fail("rope_scaling.short_factor", fmt::format("longrope factors need {} entries (head_dim / 2)", c.head_dim / 2));
  }
  if (gemma && !family.gemma4_attention) {
    c.query_pre_attn_scalar = r.number(j, "", "query_pre_attn_scalar", 256.0);
    if (*c.query_pre_attn_scalar <= 0) throw r.fail("query_pre_attn_scalar", "expected a positive number");
    if (r.present(j, "final_logit_softcapping"))
      c.final_logit_softcapping = r.number(j, "", "final_logit_softcapping", std::nullopt);
    if (r.present(j, "attn_logit_softcapping"))
      throw r.fail("attn_logit_softcapping", "attention logit softcapping is not supported (Gemma 3 has none)");
  }
  if (family.moe_kind == MoeKind::kGranite) parse_granite_hybrid(r, &c);
  else if (family.moe_kind == MoeKind::kLlama4) parse_llama4(r, &c);
  else if (family.mlp == MlpKind::kMoe) parse_moe(r, family, &c);
  if (family.hybrid_mamba) {
    parse_mamba_hybrid(r, family, &c);
    if (!family.rope) c.rope_on = false;  // NemotronHAttention: no position embedding at all
    // Granite's GraniteMoeHybridRotaryEmbedding would take any rope type; the golden data covers
    // the default one only: refused, as for the DeltaNet hybrids.
    if (c.rope_on && c.rope.type != RopeType::kDefault)
      throw r.fail("rope_parameters.rope_type", fmt::format("{} RoPE is not supported for {} (ctcal runs its default "
                                                            "RoPE only)", rope_type_name(c.rope.type), family.architecture));
  }
  if (family.hybrid_linear_attention) {
    parse_linear_attention(r, &c);
    // Qwen3.5's text RoPE is multimodal (mrope_section): for text every position id of the three
    // sections is the token's position, so it is the plain half-split RoPE over rotary_dim
    // (Qwen3_5TextRotaryEmbedding.recomposition_frequencies picks equal frequencies). Only the
    // default rope type exists there (its inv_freq comes from compute_default_rope_parameters).
    // Qwen3-Next's Qwen3NextRotaryEmbedding would take any rope type, but the golden data of the
    // hybrids covers the default one only (the one Qwen3-Next's published configs use): refused.
    if (c.rope.type != RopeType::kDefault)
      throw r.fail("rope_parameters.rope_type", fmt::format("{} RoPE is not supported for {} (ctcal runs its default "
                                                            "RoPE only)", rope_type_name(c.rope.type), family.architecture));
  }
  for (const json* obj : {&j, &top})
    for (const char* key : {"dtype", "torch_dtype"}) {
      if (c.dtype || !r.present(*obj, key)) continue;
      if (!(*obj)[key].is_string()) throw r.fail(key, "expected a dtype name such as \"bfloat16\"");
      auto t = dtype_from_torch_name((*obj)[key].get<std::string>());
      if (!t || (*t != DType::kF32 && *t != DType::kF16 && *t != DType::kBF16))
        throw r.fail(key, fmt::format("expected float32, float16 or bfloat16, got {}", (*obj)[key].dump()));
      c.dtype = t;
    }
  return c;
}

}  // namespace ctcal
