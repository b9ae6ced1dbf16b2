// Strict YAML -> Recipe. Every mapping is checked against its allowed keys; every value against
// its type; errors are collected (not just the first) with "<file>: <yaml.path> (line N)".
#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "ctcal/ct/attention.h"
#include "ctcal/error.h"
#include "ctcal/quant/fp8_weight.h"
#include "ctcal/recipe/preset_schemes.h"
#include "ctcal/recipe/recipe.h"

namespace ctcal {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() > suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

class Parser {
 public:
  explicit Parser(std::string source) : source_(std::move(source)) {}

  void error(const YAML::Node& n, const std::string& path, const std::string& msg) {
    errors_.push_back(fmt::format("{}: {} (line {}): {}", source_, path, n.Mark().line + 1, msg));
  }
  void error_at(int line, const std::string& path, const std::string& msg) {
    errors_.push_back(fmt::format("{}: {} (line {}): {}", source_, path, line, msg));
  }
  const std::vector<std::string>& errors() const { return errors_; }

  bool expect_map(const YAML::Node& n, const std::string& path) {
    if (n.IsMap()) return true;
    error(n, path, "expected a mapping");
    return false;
  }
  void check_keys(const YAML::Node& n, const std::string& path, const std::set<std::string>& allowed) {
    for (const auto& kv : n) {
      const auto key = kv.first.as<std::string>();
      if (!allowed.count(key))
        error(kv.first, path + "." + key,
              fmt::format("unknown key '{}'; valid keys: {}", key, fmt::join(allowed, ", ")));
    }
  }
  static bool is_null(const YAML::Node& n) { return !n || n.IsNull(); }

  std::optional<int64_t> get_int(const YAML::Node& n, const std::string& path) {
    if (is_null(n)) return std::nullopt;
    try {
      // pydantic's lax mode (what llm-compressor validates with) takes "8" for 8.
      if (n.IsScalar()) return n.as<int64_t>();
    } catch (const YAML::Exception&) {}
    error(n, path, fmt::format("expected an integer, got '{}'", scalar_text(n)));
    return std::nullopt;
  }
  std::optional<double> get_number(const YAML::Node& n, const std::string& path) {
    if (is_null(n)) return std::nullopt;
    try {
      if (n.IsScalar()) return n.as<double>();
    } catch (const YAML::Exception&) {}
    error(n, path, fmt::format("expected a number, got '{}'", scalar_text(n)));
    return std::nullopt;
  }
  // YAML 1.1 booleans as PyYAML's safe_load reads them (yes/on), then pydantic's lax mode, which
  // llm-compressor validates with: quoted "true", "1", "t", "y", and the integers 0 and 1.
  static std::optional<bool> as_bool(const YAML::Node& n) {
    if (!n.IsScalar()) return std::nullopt;
    const std::string s = lower(n.Scalar());
    if (s == "true" || s == "yes" || s == "on" || s == "1" || s == "t" || s == "y") return true;
    if (s == "false" || s == "no" || s == "off" || s == "0" || s == "f" || s == "n") return false;
    return std::nullopt;
  }
  std::optional<bool> get_bool(const YAML::Node& n, const std::string& path) {
    if (is_null(n)) return std::nullopt;
    auto b = as_bool(n);
    if (!b) error(n, path, fmt::format("expected true or false, got '{}'", scalar_text(n)));
    return b;
  }
  std::optional<std::string> get_string(const YAML::Node& n, const std::string& path) {
    if (is_null(n)) return std::nullopt;
    if (!n.IsScalar()) {
      error(n, path, "expected a string");
      return std::nullopt;
    }
    return n.Scalar();
  }
  // A string or a list of strings (llm-compressor wraps a bare string into a list).
  std::vector<std::string> get_string_list(const YAML::Node& n, const std::string& path) {
    std::vector<std::string> out;
    if (is_null(n)) return out;
    if (n.IsScalar()) return {n.Scalar()};
    if (!n.IsSequence()) {
      error(n, path, "expected a string or a list of strings");
      return out;
    }
    for (std::size_t i = 0; i < n.size(); ++i) {
      if (n[i].IsScalar()) out.push_back(n[i].Scalar());
      else error(n[i], fmt::format("{}[{}]", path, i), "expected a string");
    }
    return out;
  }
  static std::string scalar_text(const YAML::Node& n) {
    if (n.IsScalar()) return n.Scalar();
    if (n.IsSequence()) return "a list";
    if (n.IsMap()) return "a mapping";
    return "null";
  }

  // What the args quantize, for the checks ctcal adds on top of compressed-tensors' rules.
  enum class Role { kGeneric, kAttention, kLinearWeights, kLinearInput };
  std::optional<QuantArgs> quant_args(const YAML::Node& n, const std::string& path, Role role = Role::kGeneric);
  void linear_group(const YAML::Node& g, const std::string& name, const std::string& gp,
                    QuantizationModifierSpec* q, const std::optional<std::string>& weight_observer);
  void preset(const YAML::Node& n, const std::string& path, QuantizationModifierSpec* q);
  void quantization_modifier(const YAML::Node& n, const std::string& path, QuantizationModifierSpec* q);
  void spinquant_modifier(const YAML::Node& n, const std::string& path, SpinQuantSpec* s);
  void transform_config(const YAML::Node& n, const std::string& path, SpinQuantSpec* s);
  void run_defaults(const YAML::Node& n, RunDefaults* d);
  void base_modifier_fields(const YAML::Node& n, const std::string& path);

 private:
  std::string source_;
  std::vector<std::string> errors_;
};

const std::set<std::string> kQuantArgsKeys = {
    "num_bits", "type", "symmetric", "group_size", "strategy", "block_structure", "dynamic",
    "actorder", "scale_dtype", "zp_dtype", "observer", "observer_kwargs"};

std::optional<QuantArgs> Parser::quant_args(const YAML::Node& n, const std::string& path, Role role) {
  if (is_null(n)) return std::nullopt;
  if (!expect_map(n, path)) return std::nullopt;
  const std::size_t before = errors().size();
  check_keys(n, path, kQuantArgsKeys);
  QuantArgs a;
  for (const auto& kv : n) a.user_set.insert(kv.first.as<std::string>());
  if (auto v = get_int(n["num_bits"], path + ".num_bits")) a.num_bits = *v;
  if (auto v = get_string(n["type"], path + ".type")) {
    const std::string t = lower(*v);
    if (t == "int") a.type = QuantType::kInt;
    else if (t == "float") a.type = QuantType::kFloat;
    else error(n["type"], path + ".type", fmt::format("expected 'int' or 'float', got '{}'", *v));
  }
  if (auto v = get_bool(n["symmetric"], path + ".symmetric")) a.symmetric = *v;
  a.group_size = get_int(n["group_size"], path + ".group_size");
  if (auto v = get_string(n["strategy"], path + ".strategy")) {
    a.strategy = strategy_from_name(lower(*v));
    if (!a.strategy)
      error(n["strategy"], path + ".strategy",
            fmt::format("unknown strategy '{}'; expected tensor, channel, group, block, token, "
                        "tensor_group or attn_head", *v));
  }
  if (const YAML::Node b = n["block_structure"]; !is_null(b)) {
    std::optional<std::array<int64_t, 2>> bs;
    if (b.IsScalar()) {  // legacy "RxC"
      const std::string s = b.Scalar();
      const auto x = s.find('x');
      try {
        if (x != std::string::npos) bs = std::array<int64_t, 2>{std::stoll(s.substr(0, x)), std::stoll(s.substr(x + 1))};
      } catch (const std::exception&) {}
    } else if (b.IsSequence() && b.size() == 2) {
      auto r = get_int(b[0], path + ".block_structure[0]"), c = get_int(b[1], path + ".block_structure[1]");
      if (r && c) bs = std::array<int64_t, 2>{*r, *c};
    }
    if (!bs || (*bs)[0] <= 0 || (*bs)[1] <= 0)
      error(b, path + ".block_structure", "expected two positive integers [rows, cols] or \"RxC\"");
    a.block_structure = bs;
  }
  if (const YAML::Node d = n["dynamic"]; !is_null(d)) {
    if (auto b = as_bool(d)) a.dynamic = *b ? Dynamic::kTrue : Dynamic::kFalse;
    else if (d.IsScalar() && lower(d.Scalar()) == "local") a.dynamic = Dynamic::kLocal;
    else error(d, path + ".dynamic", fmt::format("expected true, false or \"local\", got '{}'", scalar_text(d)));
  }
  if (const YAML::Node o = n["actorder"]; !is_null(o)) {
    if (auto b = as_bool(o)) {
      if (*b) a.actorder = "group";
    } else if (o.IsScalar()) {
      const std::string s = lower(o.Scalar());
      if (s == "group" || s == "dynamic") a.actorder = "group";
      else if (s == "weight" || s == "static") a.actorder = "weight";
      else error(o, path + ".actorder", fmt::format("expected group, weight, true, false or null, got '{}'", o.Scalar()));
    }
  }
  for (const char* key : {"scale_dtype", "zp_dtype"}) {
    if (auto v = get_string(n[key], path + "." + key)) {
      auto t = dtype_from_torch_name(*v);
      if (!t) error(n[key], path + "." + key, fmt::format("unknown torch dtype '{}'; expected e.g. "
                                                          "torch.bfloat16 or float8_e4m3fn", *v));
      else if (std::string(key) == "scale_dtype") a.scale_dtype = t;
      else a.zp_dtype = t;
    }
  }
  // compressed-tensors' registry lower-cases names on lookup: `MSE` is `mse`.
  if (auto v = get_string(n["observer"], path + ".observer")) a.observer = lower(*v);
  if (const YAML::Node k = n["observer_kwargs"]; !is_null(k)) {
    if (expect_map(k, path + ".observer_kwargs"))
      for (const auto& kv : k) {
        const auto key = kv.first.as<std::string>();
        if (auto v = get_number(kv.second, path + ".observer_kwargs." + key)) a.observer_kwargs[key] = *v;
      }
  }
  // The rules run even after field errors, so one pass reports every problem.
  const std::string where = fmt::format("{}: {} (line {})", source_, path, n.Mark().line + 1);
  try {
    finalize_quant_args(&a, where, role == Role::kLinearWeights ? "memoryless_minmax" : "static_minmax");
    if (role == Role::kAttention) check_attention_args(a, where);
    if (role == Role::kLinearWeights) check_fp8_weight_args(a, where);
    if (role == Role::kLinearInput) check_fp8_input_args(a, where);
  } catch (const RecipeError& e) {
    errors_.push_back(e.what());
  }
  if (errors().size() != before) return std::nullopt;
  return a;
}

const std::set<std::string> kBaseModifierKeys = {"index", "group", "start", "end", "update",
                                                 "requires_calibration_data"};

void Parser::base_modifier_fields(const YAML::Node& n, const std::string& path) {
  get_int(n["index"], path + ".index");
  get_string(n["group"], path + ".group");
  for (const char* k : {"start", "end", "update"}) get_number(n[k], path + "." + k);
  get_bool(n["requires_calibration_data"], path + ".requires_calibration_data");
}

// An attention module's class name (LlamaAttention, Qwen3Attention, ...; the plan checks that it
// is the model's own) or a regex that picks out the attention module (ct/attention.h).
bool is_attention_target(const std::string& t) { return ct::targets_attention(t); }

void Parser::quantization_modifier(const YAML::Node& n, const std::string& path,
                                   QuantizationModifierSpec* q) {
  std::set<std::string> keys = {"config_groups", "targets", "ignore", "scheme", "kv_cache_scheme",
                                "weight_observer", "input_observer", "output_observer", "observer",
                                "bypass_divisibility_checks"};
  keys.insert(kBaseModifierKeys.begin(), kBaseModifierKeys.end());
  check_keys(n, path, keys);
  base_modifier_fields(n, path);
  if (!is_null(n["targets"])) q->targets = get_string_list(n["targets"], path + ".targets");
  q->ignore = get_string_list(n["ignore"], path + ".ignore");
  if (auto b = get_bool(n["bypass_divisibility_checks"], path + ".bypass_divisibility_checks"))
    q->bypass_divisibility_checks = *b;
  std::optional<std::string> weight_observer = get_string(n["weight_observer"], path + ".weight_observer");
  if (!is_null(n["output_observer"]))
    error(n["output_observer"], path + ".output_observer", "output activation quantization is not supported");
  q->input_observer = get_string(n["input_observer"], path + ".input_observer");
  if (q->input_observer) q->input_observer = lower(*q->input_observer);
  if (const YAML::Node o = n["observer"]; !is_null(o)) {
    if (q->input_observer || !is_null(n["weight_observer"]) || !is_null(n["output_observer"]))
      error(o, path + ".observer", "observer cannot be combined with weight_observer, "
                                   "input_observer or output_observer");
    if (expect_map(o, path + ".observer")) {
      check_keys(o, path + ".observer", {"weights", "input", "output"});
      q->input_observer = get_string(o["input"], path + ".observer.input");
      if (q->input_observer) q->input_observer = lower(*q->input_observer);
      weight_observer = get_string(o["weights"], path + ".observer.weights");
    }
  }
  if (q->input_observer && !is_known_observer(*q->input_observer))
    error(n, path + ".input_observer", fmt::format("observer '{}' is not supported", *q->input_observer));
  if (const YAML::Node kv = n["kv_cache_scheme"]; !is_null(kv)) {
    q->kv_cache_scheme = quant_args(kv, path + ".kv_cache_scheme", Role::kAttention);
  }
  if (const YAML::Node cg = n["config_groups"]; !is_null(cg) && expect_map(cg, path + ".config_groups")) {
    for (const auto& kv : cg) {
      const auto name = kv.first.as<std::string>();
      const std::string gp = path + ".config_groups." + name;
      const YAML::Node g = kv.second;
      if (!expect_map(g, gp)) continue;
      check_keys(g, gp, {"targets", "weights", "input_activations", "output_activations", "format"});
      const auto targets = get_string_list(g["targets"], gp + ".targets");
      if (targets.empty()) {
        error(g, gp + ".targets", "required: the modules this group quantizes");
        continue;
      }
      const bool attention = std::all_of(targets.begin(), targets.end(), is_attention_target);
      if (!attention) {
        for (const auto& t : targets)
          if (is_attention_target(t))
            error(g["targets"], gp + ".targets",
                  fmt::format("mixes the attention module '{}' with Linear targets; put attention "
                              "quantization in its own group", t));
        linear_group(g, name, gp, q, weight_observer);
        continue;
      }
      AttentionGroup group;
      group.name = name;
      group.targets = targets;
      get_string(g["format"], gp + ".format");
      if (!is_null(g["weights"]))
        error(g["weights"], gp + ".weights", "an attention group quantizes the attention module's "
                                             "inputs (queries); weights belong to a group targeting "
                                             "Linear");
      if (!is_null(g["output_activations"]))
        error(g["output_activations"], gp + ".output_activations",
              "output activation quantization is not supported; attention quantization uses "
              "input_activations");
      auto args = quant_args(g["input_activations"], gp + ".input_activations", Role::kAttention);
      if (is_null(g["input_activations"]))
        error(g, gp + ".input_activations", "required for attention quantization");
      if (!args) continue;
      // llm-compressor's QuantizationMixin._apply_observer_overrides: the modifier's
      // input_observer replaces every config group's input observer, even one the group names.
      if (q->input_observer) {
        args->observer = *q->input_observer;
        args->user_set.insert("observer");
      }
      group.input_activations = *args;
      q->attention_groups.push_back(std::move(group));
    }
    if (q->attention_groups.size() > 1)
      error(cg, path + ".config_groups", "more than one attention group; expected one");
  }
  if (q->attention_groups.size() == 1 && q->kv_cache_scheme &&
      !(quant_args_to_json(*q->kv_cache_scheme) == quant_args_to_json(q->attention_groups[0].input_activations)))
    error(n["kv_cache_scheme"], path + ".kv_cache_scheme",
          "differs from the attention group's input_activations; attention quantization implies KV "
          "quantization with the same args (remove kv_cache_scheme or make them equal)");
  if (!is_null(n["scheme"])) {
    if (!is_null(n["config_groups"]))
      error(n["scheme"], path + ".scheme", "scheme and config_groups cannot both be set (as in llm-compressor)");
    else
      preset(n["scheme"], path + ".scheme", q);
  }
  if (is_null(n["kv_cache_scheme"]) && q->attention_groups.empty())
    error(n, path, "nothing to calibrate: expected kv_cache_scheme or an attention config group "
                   "(ctcal calibrates the KV cache; FP8 Linear groups come with it)");
}

void Parser::linear_group(const YAML::Node& g, const std::string& name, const std::string& gp,
                          QuantizationModifierSpec* q, const std::optional<std::string>& weight_observer) {
  LinearGroup group;
  group.name = name;
  group.targets = get_string_list(g["targets"], gp + ".targets");
  group.format = get_string(g["format"], gp + ".format");
  if (group.format && *group.format != "float-quantized")
    error(g["format"], gp + ".format",
          fmt::format("ctcal writes FP8 Linear weights as 'float-quantized', got '{}'", *group.format));
  if (!is_null(g["output_activations"]))
    error(g["output_activations"], gp + ".output_activations", "output activation quantization is not supported");
  if (is_null(g["weights"])) {
    error(g, gp + ".weights", "required for a group targeting Linear layers (ctcal quantizes their "
                              "weights to FP8, optionally with FP8 inputs)");
    return;
  }
  auto w = quant_args(g["weights"], gp + ".weights", Role::kLinearWeights);
  std::optional<QuantArgs> in;
  if (!is_null(g["input_activations"])) {
    in = quant_args(g["input_activations"], gp + ".input_activations", Role::kLinearInput);
    if (!in) return;
  }
  if (!w) return;
  if (weight_observer && !w->user_set.count("observer")) w->observer = *weight_observer;
  if (in && q->input_observer && in->dynamic == Dynamic::kFalse && !in->user_set.count("observer"))
    in->observer = *q->input_observer;
  group.weights = *w;
  group.input_activations = in;
  q->linear_groups.push_back(std::move(group));
}

void Parser::preset(const YAML::Node& n, const std::string& path, QuantizationModifierSpec* q) {
  // A preset name (with the modifier's `targets`), or {preset name: targets}, as llm-compressor's
  // resolve_quantization_config reads it; each becomes config group `group_<i>`.
  std::vector<std::pair<std::string, std::vector<std::string>>> presets;
  if (n.IsScalar()) {
    presets.emplace_back(n.Scalar(), q->targets);
  } else if (n.IsMap()) {
    for (const auto& kv : n)
      presets.emplace_back(kv.first.as<std::string>(),
                           get_string_list(kv.second, path + "." + kv.first.as<std::string>()));
  } else {
    error(n, path, "expected a preset name (FP8, FP8_DYNAMIC, FP8_BLOCK) or {preset: targets}");
    return;
  }
  for (std::size_t i = 0; i < presets.size(); ++i) {
    const auto& [name, targets] = presets[i];
    try {
      PresetScheme p = preset_scheme(name, fmt::format("{}: {} (line {})", source_, path, n.Mark().line + 1));
      LinearGroup group;
      group.name = fmt::format("group_{}", i);
      group.targets = targets;
      group.weights = p.weights;
      group.input_activations = p.input_activations;
      for (const auto& t : targets)
        if (is_attention_target(t))
          error(n, path, fmt::format("preset '{}' targets the attention module '{}'; presets quantize "
                                     "Linear layers", name, t));
      q->linear_groups.push_back(std::move(group));
    } catch (const RecipeError& e) {
      errors_.push_back(e.what());
    }
  }
}

const std::set<std::string> kTransformLocations = {"input", "weight_input", "weight_output",
                                                   "output", "k_cache", "q_attn"};

void Parser::transform_config(const YAML::Node& n, const std::string& path, SpinQuantSpec* s) {
  if (!expect_map(n, path)) return;
  check_keys(n, path, {"config_groups"});
  const YAML::Node groups = n["config_groups"];
  if (is_null(groups) || !expect_map(groups, path + ".config_groups")) return;
  s->explicit_config = true;
  for (const auto& kv : groups) {
    const auto name = kv.first.as<std::string>();
    const std::string sp = path + ".config_groups." + name;
    const YAML::Node g = kv.second;
    if (!expect_map(g, sp)) continue;
    check_keys(g, sp, {"type", "apply", "randomize", "requires_grad", "head_dim", "precision"});
    TransformSchemeSpec scheme;
    if (auto t = get_string(g["type"], sp + ".type")) scheme.type = *t;
    else error(g, sp + ".type", "required: hadamard or random-hadamard");
    if (!scheme.type.empty() && scheme.type != "hadamard" && scheme.type != "random-hadamard")
      error(g["type"], sp + ".type", fmt::format("transform type '{}' is not supported; expected "
                                                 "hadamard or random-hadamard", scheme.type));
    if (auto b = get_bool(g["randomize"], sp + ".randomize")) scheme.randomize = *b;
    if (auto b = get_bool(g["requires_grad"], sp + ".requires_grad")) scheme.requires_grad = *b;
    if (scheme.randomize) error(g["randomize"], sp + ".randomize", "randomize: true is not supported (as in llm-compressor's SpinQuant)");
    if (scheme.requires_grad) error(g["requires_grad"], sp + ".requires_grad", "requires_grad: true is not supported");
    scheme.head_dim = get_int(g["head_dim"], sp + ".head_dim");
    if (auto p = get_string(g["precision"], sp + ".precision")) {
      auto t = dtype_from_torch_name(*p);
      if (!t || !dtype_is_float(*t)) error(g["precision"], sp + ".precision", fmt::format("expected a float torch dtype, got '{}'", *p));
      else scheme.precision = torch_dtype_name(*t);
    }
    const YAML::Node apply = g["apply"];
    if (!is_null(apply) && !apply.IsSequence()) error(apply, sp + ".apply", "expected a list of TransformArgs");
    for (std::size_t i = 0; apply && apply.IsSequence() && i < apply.size(); ++i) {
      const std::string ap = fmt::format("{}.apply[{}]", sp, i);
      const YAML::Node a = apply[i];
      if (!expect_map(a, ap)) continue;
      check_keys(a, ap, {"targets", "location", "inverse", "ignore"});
      TransformArgsSpec args;
      args.targets = get_string_list(a["targets"], ap + ".targets");
      args.ignore = get_string_list(a["ignore"], ap + ".ignore");
      if (auto l = get_string(a["location"], ap + ".location")) args.location = lower(*l);
      if (!kTransformLocations.count(args.location))
        error(a, ap + ".location", fmt::format("unknown location '{}'; expected one of {}", args.location,
                                               fmt::join(kTransformLocations, ", ")));
      if (auto b = get_bool(a["inverse"], ap + ".inverse")) args.inverse = *b;
      scheme.apply.push_back(args);
    }
    s->transform_config.emplace_back(name, scheme);
  }
}

void Parser::spinquant_modifier(const YAML::Node& n, const std::string& path, SpinQuantSpec* s) {
  std::set<std::string> keys = {"rotations", "transform_type", "randomize", "learnable", "precision",
                                "transform_block_size", "mappings", "norm_mappings", "transform_config"};
  keys.insert(kBaseModifierKeys.begin(), kBaseModifierKeys.end());
  check_keys(n, path, keys);
  base_modifier_fields(n, path);
  if (!is_null(n["rotations"])) {
    s->rotations.clear();
    for (auto r : get_string_list(n["rotations"], path + ".rotations")) {
      std::transform(r.begin(), r.end(), r.begin(), [](unsigned char c) { return std::toupper(c); });
      if (r == "R1" || r == "R4")
        error(n["rotations"], path + ".rotations", fmt::format("rotation {} is not supported yet; "
                                                               "ctcal supports R2 and R3", r));
      else if (r != "R2" && r != "R3")
        error(n["rotations"], path + ".rotations", fmt::format("unknown rotation '{}'; expected R2 or R3", r));
      else s->rotations.push_back(r);
    }
  } else {
    error(n, path + ".rotations", "not given: llm-compressor's default is [R1, R2] and R1 is not "
                                  "supported yet; write rotations: [R3] (or [R2, R3])");
  }
  if (auto t = get_string(n["transform_type"], path + ".transform_type")) {
    s->transform_type = *t;
    if (*t != "hadamard" && *t != "random-hadamard")
      error(n["transform_type"], path + ".transform_type",
            fmt::format("'{}' is not supported; expected hadamard or random-hadamard", *t));
  }
  for (const char* k : {"randomize", "learnable"})
    if (auto b = get_bool(n[k], path + "." + k); b && *b)
      error(n[k], path + "." + k, fmt::format("{}: true is not supported (llm-compressor rejects it too)", k));
  s->transform_block_size = get_int(n["transform_block_size"], path + ".transform_block_size");
  if (auto p = get_string(n["precision"], path + ".precision")) {
    auto t = dtype_from_torch_name(*p);
    if (!t || !dtype_is_float(*t)) error(n["precision"], path + ".precision", fmt::format("expected a float torch dtype, got '{}'", *p));
    else s->precision = torch_dtype_name(*t);
  }
  for (const char* k : {"mappings", "norm_mappings"})
    if (!is_null(n[k])) error(n[k], path + "." + k, "custom mappings are not supported; ctcal uses the Llama mapping");
  if (!is_null(n["transform_config"])) transform_config(n["transform_config"], path + ".transform_config", s);
}

void Parser::run_defaults(const YAML::Node& n, RunDefaults* d) {
  if (!expect_map(n, "ctcal")) return;
  check_keys(n, "ctcal", {"model", "dataset", "output", "tokenizer", "num_samples", "max_seq_length", "seed", "shuffle",
                          "key_range", "propagate"});
  d->key_range = get_string(n["key_range"], "ctcal.key_range");
  if (d->key_range && *d->key_range != "observed" && *d->key_range != "envelope")
    error(n["key_range"], "ctcal.key_range", fmt::format("expected observed or envelope, got '{}'", *d->key_range));
  d->propagate = get_string(n["propagate"], "ctcal.propagate");
  if (d->propagate && *d->propagate != "unquantized" && *d->propagate != "quantized")
    error(n["propagate"], "ctcal.propagate", fmt::format("expected unquantized or quantized, got '{}'", *d->propagate));
  d->model = get_string(n["model"], "ctcal.model");
  d->dataset = get_string(n["dataset"], "ctcal.dataset");
  d->output = get_string(n["output"], "ctcal.output");
  d->tokenizer = get_string(n["tokenizer"], "ctcal.tokenizer");
  d->num_samples = get_int(n["num_samples"], "ctcal.num_samples");
  d->max_seq_length = get_int(n["max_seq_length"], "ctcal.max_seq_length");
  if (auto s = get_int(n["seed"], "ctcal.seed")) {
    if (*s < 0) error(n["seed"], "ctcal.seed", "expected a non-negative integer");
    else d->seed = static_cast<uint64_t>(*s);
  }
  d->shuffle = get_bool(n["shuffle"], "ctcal.shuffle");
  if (d->num_samples && *d->num_samples <= 0) error(n["num_samples"], "ctcal.num_samples", "expected a positive integer");
  if (d->max_seq_length && *d->max_seq_length <= 0) error(n["max_seq_length"], "ctcal.max_seq_length", "expected a positive integer");
}

}  // namespace

namespace {

// Weight-quantization algorithms that llm-compressor runs with calibration data. Their
// kv_cache_scheme is what ctcal can take over; the weights are not.
const std::set<std::string> kWeightAlgorithms = {"GPTQModifier", "AWQModifier", "AutoRoundModifier",
                                                 "SmoothQuantModifier", "QuIPModifier"};

std::string weight_algorithm_message(const std::string& type, const YAML::Node& args) {
  std::string kv = "{type: float, num_bits: 8, strategy: tensor, symmetric: true, dynamic: false, observer: static_minmax}";
  const bool has_kv = args.IsMap() && args["kv_cache_scheme"] && args["kv_cache_scheme"].IsMap();
  if (has_kv) {
    YAML::Emitter e;
    e << YAML::Flow << args["kv_cache_scheme"];
    kv = e.c_str();
  }
  return fmt::format(
      "modifier '{}' is not supported: it quantizes weights with an algorithm ctcal does not run{}. "
      "To calibrate the KV cache with ctcal, use a QuantizationModifier that has only the "
      "kv_cache_scheme:\n    quant_stage:\n      quant_modifiers:\n        QuantizationModifier:\n"
      "          kv_cache_scheme: {}\n  (or run {} in llm-compressor first: ctcal calibrates the KV cache of the "
      "quantized checkpoint it writes)",
      type, has_kv ? " (its kv_cache_scheme is below)" : "", kv, type);
}

}  // namespace

Recipe parse_recipe_checked(const std::string& text, const std::string& source);

Recipe parse_recipe(const std::string& text, const std::string& source) {
  try {
    return parse_recipe_checked(text, source);
  } catch (const YAML::Exception& e) {
    // yaml-cpp conversions that the checks above did not anticipate (e.g. a mapping as a key).
    throw RecipeError(fmt::format("{}: line {}, column {}: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
}

Recipe parse_recipe_checked(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw RecipeError(fmt::format("{}: YAML syntax error at line {}, column {}: {}", source,
                                  e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (!root.IsMap())
    throw RecipeError(fmt::format("{}: expected a mapping with `<name>_stage` keys (llm-compressor "
                                  "recipe layout)", source));
  Parser p(source);
  Recipe r;
  r.source = source;
  for (const auto& top : root) {
    const auto key = top.first.as<std::string>();
    if (key == "ctcal") {
      p.run_defaults(top.second, &r.ctcal);
      continue;
    }
    // llm-compressor's Recipe ignores these top-level keys; so does ctcal.
    if (key == "version" || key == "args") continue;
    if (!ends_with(key, "_stage")) {
      p.error(top.first, key, "unknown top-level key; expected `<name>_stage` stages or the `ctcal` block");
      continue;
    }
    const std::string stage = key.substr(0, key.size() - 6);
    if (!p.expect_map(top.second, key)) continue;
    for (const auto& grp : top.second) {
      const auto gkey = grp.first.as<std::string>();
      const std::string gpath = key + "." + gkey;
      if (gkey == "run_type") continue;  // a stage's run_type is ignored by llm-compressor too
      if (!ends_with(gkey, "_modifiers")) {
        p.error(grp.first, gpath, "unknown key in a stage; expected `<name>_modifiers`");
        continue;
      }
      if (!p.expect_map(grp.second, gpath)) continue;
      for (const auto& mod : grp.second) {
        const auto type = mod.first.as<std::string>();
        const std::string mpath = gpath + "." + type;
        ModifierEntry e;
        e.stage = stage;
        e.group = gkey.substr(0, gkey.size() - 10);
        e.type = type;
        e.line = mod.first.Mark().line + 1;
        const YAML::Node args = mod.second.IsNull() ? YAML::Node(YAML::NodeType::Map) : mod.second;
        if (!p.expect_map(args, mpath)) continue;
        if (type == "QuantizationModifier") {
          QuantizationModifierSpec q;
          p.quantization_modifier(args, mpath, &q);
          e.spec = q;
        } else if (type == "SpinQuantModifier") {
          SpinQuantSpec s;
          p.spinquant_modifier(args, mpath, &s);
          e.spec = s;
        } else if (kWeightAlgorithms.count(type)) {
          p.error(mod.first, mpath, weight_algorithm_message(type, args));
          continue;
        } else {
          p.error(mod.first, mpath, fmt::format("modifier '{}' is not supported; ctcal runs "
                                                "QuantizationModifier (kv_cache_scheme, attention "
                                                "groups, FP8 Linear groups) and SpinQuantModifier "
                                                "(R2, R3)", type));
          continue;
        }
        r.modifiers.push_back(std::move(e));
      }
    }
  }
  int quant = 0, spin = 0;
  for (const auto& m : r.modifiers) (m.type == "QuantizationModifier" ? quant : spin)++;
  if (quant > 1 || spin > 1)
    p.error_at(1, "recipe", "expected at most one QuantizationModifier and one SpinQuantModifier");
  if (quant == 0 && p.errors().empty())
    p.error_at(1, "recipe", "no QuantizationModifier with a kv_cache_scheme: nothing to calibrate");
  if (!p.errors().empty()) {
    std::string msg = p.errors().size() == 1 ? p.errors()[0]
                                             : fmt::format("{} errors:\n  {}", p.errors().size(),
                                                           fmt::join(p.errors(), "\n  "));
    throw RecipeError(msg);
  }
  return r;
}

QuantArgs parse_quant_args(const std::string& text, const std::string& where) {
  YAML::Node node;
  try {
    node = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw RecipeError(fmt::format("{}: not valid YAML/JSON: {}", where, e.msg));
  }
  Parser p(where);
  auto args = p.quant_args(node, "args");
  if (!p.errors().empty() || !args)
    throw RecipeError(p.errors().empty() ? where + ": empty QuantizationArgs" : fmt::format("{}", fmt::join(p.errors(), "\n  ")));
  return *args;
}

Recipe load_recipe(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: cannot open recipe", path.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_recipe(ss.str(), path.string());
}

const QuantizationModifierSpec* Recipe::quantization() const {
  for (const auto& m : modifiers)
    if (auto* q = std::get_if<QuantizationModifierSpec>(&m.spec)) return q;
  return nullptr;
}

const SpinQuantSpec* Recipe::spinquant() const {
  for (const auto& m : modifiers)
    if (auto* s = std::get_if<SpinQuantSpec>(&m.spec)) return s;
  return nullptr;
}

std::optional<QuantArgs> Recipe::kv_args() const {
  const auto* q = quantization();
  if (!q) return std::nullopt;
  if (q->kv_cache_scheme) return q->kv_cache_scheme;
  if (!q->attention_groups.empty()) return q->attention_groups[0].input_activations;
  return std::nullopt;
}

std::optional<QuantArgs> Recipe::query_args() const {
  const auto* q = quantization();
  if (!q || q->attention_groups.empty()) return std::nullopt;
  return q->attention_groups[0].input_activations;
}

bool Recipe::rotation_before_quantization() const {
  for (const auto& m : modifiers) {
    if (m.type == "SpinQuantModifier") return true;
    if (m.type == "QuantizationModifier") return false;
  }
  return false;
}

}  // namespace ctcal
