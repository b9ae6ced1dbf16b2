#include "ctcal/model/llama_config.h"

#include "ctcal/error.h"

namespace ctcal {

using nlohmann::json;

std::string rope_type_name(RopeType t) {
  switch (t) {
    case RopeType::kDefault: return "default";
    case RopeType::kLinear: return "linear";
    case RopeType::kDynamic: return "dynamic";
    case RopeType::kLlama3: return "llama3";
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

RopeConfig parse_rope(const Reader& r) {
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
                                                     : std::optional<double>(10000.0));
  } else {
    rope.theta = r.number(j, "", "rope_theta", 10000.0);
    if (r.present(j, "rope_scaling")) {
      if (!j["rope_scaling"].is_object()) throw r.fail("rope_scaling", "expected an object or null");
      params = &j["rope_scaling"];
      prefix = "rope_scaling.";
    }
  }
  if (rope.theta <= 0) throw r.fail(prefix + "rope_theta", "expected a positive number");
  if (!params) return rope;
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
  } else {
    throw r.fail(prefix + "rope_type",
                 fmt::format("rope type '{}' is not supported; expected default, linear, dynamic or "
                             "llama3", type));
  }
  return rope;
}

}  // namespace

LlamaConfig parse_llama_config_fields(const json& j, const std::string& where);

LlamaConfig parse_llama_config(const json& j, const std::string& where) {
  if (!j.is_object()) throw InputError(fmt::format("{}: expected a JSON object", where));
  try {
    return parse_llama_config_fields(j, where);
  } catch (const json::exception& e) {
    // A field of an unexpected JSON type deep inside (e.g. rope_parameters.factor = "x").
    throw InputError(fmt::format("{}: malformed config: {}", where, e.what()));
  }
}

LlamaConfig parse_llama_config_fields(const json& j, const std::string& where) {
  Reader r{j, where};
  LlamaConfig c;
  if (r.present(j, "architectures")) {
    if (!j["architectures"].is_array() || j["architectures"].empty() || !j["architectures"][0].is_string())
      throw r.fail("architectures", "expected a list of class names");
    c.architecture = j["architectures"][0].get<std::string>();
  } else if (j.value("model_type", "") == "llama") {
    c.architecture = "LlamaForCausalLM";
  } else if (j.value("model_type", "") == "mistral") {
    c.architecture = "MistralForCausalLM";
  }
  if (c.architecture != "LlamaForCausalLM" && c.architecture != "MistralForCausalLM")
    throw r.fail("architectures",
                 fmt::format("'{}' is not supported; expected LlamaForCausalLM or MistralForCausalLM",
                             c.architecture.empty() ? std::string("(missing)") : c.architecture));
  const bool mistral = c.architecture == "MistralForCausalLM";
  if (r.present(j, "hidden_act") && j["hidden_act"] != "silu")
    throw r.fail("hidden_act", fmt::format("expected \"silu\", got {}", j["hidden_act"].dump()));
  c.vocab_size = r.positive_int("vocab_size");
  c.hidden_size = r.positive_int("hidden_size");
  c.intermediate_size = r.positive_int("intermediate_size");
  c.num_hidden_layers = r.positive_int("num_hidden_layers");
  c.num_attention_heads = r.positive_int("num_attention_heads");
  c.num_key_value_heads = r.positive_int("num_key_value_heads", c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    throw r.fail("num_key_value_heads",
                 fmt::format("num_attention_heads ({}) must be divisible by num_key_value_heads ({})",
                             c.num_attention_heads, c.num_key_value_heads));
  if (!r.present(j, "head_dim") && c.hidden_size % c.num_attention_heads != 0)
    throw r.fail("head_dim", fmt::format("missing, and hidden_size ({}) is not divisible by "
                                         "num_attention_heads ({})", c.hidden_size,
                                         c.num_attention_heads));
  c.head_dim = r.positive_int("head_dim", c.hidden_size / c.num_attention_heads);
  if (c.head_dim % 2 != 0) throw r.fail("head_dim", fmt::format("expected an even number for RoPE, got {}", c.head_dim));
  c.max_position_embeddings = r.positive_int("max_position_embeddings", mistral ? 4096 * 32 : 2048);
  if (mistral && r.present(j, "sliding_window")) c.sliding_window = r.positive_int("sliding_window");
  c.rms_norm_eps = r.number(j, "", "rms_norm_eps", 1e-6);
  if (c.rms_norm_eps < 0) throw r.fail("rms_norm_eps", "expected a non-negative number");
  c.attention_bias = r.boolean("attention_bias", false);
  c.mlp_bias = r.boolean("mlp_bias", false);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.rope = parse_rope(r);
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (!r.present(j, key)) continue;
    if (!j[key].is_string()) throw r.fail(key, "expected a dtype name such as \"bfloat16\"");
    auto t = dtype_from_torch_name(j[key].get<std::string>());
    if (!t || (*t != DType::kF32 && *t != DType::kF16 && *t != DType::kBF16))
      throw r.fail(key, fmt::format("expected float32, float16 or bfloat16, got {}", j[key].dump()));
    c.dtype = t;
    break;
  }
  return c;
}

}  // namespace ctcal
