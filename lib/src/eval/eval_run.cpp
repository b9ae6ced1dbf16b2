#include "ctcal/eval/eval_run.h"

#include <cmath>

#include "ctcal/ct/attention.h"
#include "ctcal/ct/groups.h"
#include "ctcal/ct/quantization_config.h"
#include "ctcal/ct/tensor_names.h"
#include "ctcal/ct/transforms.h"
#include "ctcal/error.h"
#include "ctcal/model/linear_modules.h"
#include "ctcal/quant/nvfp4_record.h"
#include "ctcal/pipeline/fake_quant_weights.h"
#include "ctcal/recipe/recipe.h"
#include "ctcal/transform/hadamard.h"

namespace ctcal {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

SiteScales read_site(const Checkpoint& ck, const std::string& module, Site site, int64_t heads, bool want_zp) {
  SiteScales s;
  const std::string name = ct::scale_name(module, site_name(site));
  if (!ck.has(name))
    throw InputError(fmt::format("{}: tensor '{}' is missing; the quantization_config asks for it",
                                 ck.dir().string(), name));
  const TensorInfo& t = ck.info(name);
  if (!(t.numel() == 1 || static_cast<int64_t>(t.numel()) == heads))
    throw InputError(fmt::format("{}: tensor '{}' has shape {}; expected [1] or [{}, 1, 1]",
                                 ck.shard_of(name).path().string(), name, shape_str(t.shape), heads));
  for (float v : ck.read_f32(name)) s.scale.push_back(v);
  for (double v : s.scale)
    if (!(v > 0) || !std::isfinite(v))
      throw InputError(fmt::format("{}: tensor '{}' holds {}; expected positive finite scales",
                                   ck.dir().string(), name, v));
  const std::string zp = ct::zero_point_name(module, site_name(site));
  s.zero_point.assign(s.scale.size(), 0.0);
  if (want_zp && ck.has(zp)) {
    const TensorInfo& z = ck.info(zp);
    const SafetensorsFile& f = ck.shard_of(zp);
    if (z.numel() != s.scale.size())
      throw InputError(fmt::format("{}: '{}' has {} values for {} scales", f.path().string(), zp, z.numel(), s.scale.size()));
    for (std::size_t i = 0; i < z.numel(); ++i)
      s.zero_point[i] = z.dtype == DType::kI8 ? static_cast<double>(reinterpret_cast<const int8_t*>(f.data(z))[i])
                                              : static_cast<double>(load_as_f32(f.data(z), z.dtype, i));
  }
  return s;
}


// The dynamic input args of the config group quantizing `module` (nullopt: none, static or
// ignored), as compressed-tensors applies groups (ct/groups.h).
std::optional<QuantArgs> dynamic_input_args(const ct::QuantizationConfig& qc, const std::string& module,
                                            const std::string& where) {
  const auto i = ct::resolve_group({module, ct::kLinearClass}, qc.group_targets(), qc.ignore);
  if (!i) return std::nullopt;
  const ct::ConfigGroup& g = qc.config_groups[*i];
  if (g.input_activations.is_null()) return std::nullopt;
  const QuantArgs a = parse_quant_args(g.input_activations.dump(), where + ": config_groups." + g.name + ".input_activations");
  if (a.dynamic == Dynamic::kFalse) return std::nullopt;
  return a;
}

InputQuantSpec dynamic_spec(const QuantArgs& a, const std::string& where) {
  if (a.type != QuantType::kFloat || a.num_bits != 8)
    throw InputError(fmt::format("{}: dynamic input activations of type {} with {} bits; ctcal eval fake-quantizes "
                                 "FP8 inputs only", where, quant_type_name(a.type), a.num_bits));
  InputQuantSpec s;
  s.strategy = a.strategy.value_or(Strategy::kToken);
  if (s.strategy == Strategy::kGroup) s.group_size = a.group_size.value_or(0);
  if (s.strategy != Strategy::kToken && s.strategy != Strategy::kTensor && !(s.strategy == Strategy::kGroup && s.group_size > 0))
    throw InputError(fmt::format("{}: dynamic input strategy '{}' is not one ctcal eval fake-quantizes (token, "
                                 "group with group_size, tensor)", where, strategy_name(s.strategy)));
  return s;
}

}  // namespace

std::map<std::pair<int64_t, Site>, InputQuantSpec> checkpoint_input_quant(const Checkpoint& ck, const ModelConfig& c) {
  std::map<std::pair<int64_t, Site>, InputQuantSpec> out;
  const ct::QuantizationConfig qc = ct::read_quantization_config(ck.config().value("quantization_config", json::object()));
  const std::string where = ck.config_path().string() + ": quantization_config";
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (const LinearModule& m : linear_modules(c, l)) {
      // Attention, dense-MLP and Mamba2 Linears: MoE experts' inputs are not fake-quantized in eval.
      if (m.kind != LinearKind::kAttention && m.kind != LinearKind::kMlp && m.kind != LinearKind::kMamba) continue;
      const std::string& module = m.name;
      if (!ck.has(module + ".weight") || !ck.quantized_weight(module)) continue;
      const auto key = std::make_pair(l, *m.input_site);
      if (ck.has(ct::input_scale_name(module))) {
        const std::vector<float> v = ck.read_f32(ct::input_scale_name(module));
        if (v.size() != 1 || !(v[0] > 0) || !std::isfinite(v[0]))
          throw InputError(fmt::format("{}: '{}.input_scale' must be one positive finite value", ck.dir().string(), module));
        InputQuantSpec& s = out[key];
        s.static_scale = std::max(s.static_scale.value_or(0.0), static_cast<double>(v[0]));
      } else if (auto a = dynamic_input_args(qc, module, where); a && !out.count(key)) {
        out[key] = dynamic_spec(*a, where + " (" + module + ")");
      }
    }
  return out;
}

EvalRun borrowed_copy(const EvalRun& r, const std::string& name) {
  EvalRun u;
  u.name = name;
  u.checkpoint = r.checkpoint;
  u.config = r.config;
  u.kv_args = r.kv_args;
  u.query_args = r.query_args;
  u.qk_rotation = r.qk_rotation;
  u.edit_weights = r.edit_weights;
  u.scales = r.scales;
  u.fp8_weights = r.fp8_weights;
  u.quantize_weights = r.quantize_weights;
  u.inputs = r.inputs;
  u.nvfp4 = r.nvfp4;
  u.nvfp4_amax = r.nvfp4_amax;
  return u;
}

EvalRun nvfp4_kv_run(const EvalRun& r, const std::string& name, Nvfp4Kv kv) {
  EvalRun u = borrowed_copy(r, name);
  u.query_args.reset();
  for (auto& layer : u.scales) layer.sites.clear();
  u.nvfp4 = std::move(kv);
  u.nvfp4_amax.reset();
  return u;
}

EvalRun load_quantized_run(const fs::path& dir) {
  EvalRun run;
  run.name = dir.string();
  run.owned = std::make_unique<Checkpoint>(dir);
  run.checkpoint = run.owned.get();
  const Checkpoint& ck = *run.owned;
  run.config = load_model_config(ck);
  const std::string where = ck.config_path().string();
  if (!ck.config().contains("quantization_config"))
    throw InputError(fmt::format("{}: no quantization_config; expected a KV-quantized checkpoint", where));
  const ct::QuantizationConfig qc = ct::read_quantization_config(ck.config()["quantization_config"]);
  if (qc.kv_cache_scheme.is_null())
    throw InputError(fmt::format("{}: quantization_config has no kv_cache_scheme", where));
  try {
    run.kv_args = parse_quant_args(qc.kv_cache_scheme.dump(), where + ": quantization_config.kv_cache_scheme");
    check_attention_args(run.kv_args, where + ": kv_cache_scheme");
    const ModelConfig& m = run.config;
    if (const ct::ConfigGroup* g = qc.attention_group(m.attention_module(0), std::string(m.family->attention_class)))
      run.query_args = parse_quant_args(g->input_activations.dump(), where + ": config_groups." + g->name);
  } catch (const RecipeError& e) {
    throw InputError(e.what());
  }
  const ModelConfig& c = run.config;
  // FP8 W8A8: the weights are read dequantized already; the inputs per the checkpoint.
  run.fp8_weights = !ck.weight_quantization().empty();
  try {
    run.inputs = checkpoint_input_quant(ck, c);
  } catch (const RecipeError& e) {
    throw InputError(e.what());
  }
  const bool zp = !run.kv_args.symmetric;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerScales ls;
    if (!c.has_kv_cache(l)) {  // a hybrid's linear-attention layer: no scales, nothing fake-quantized
      run.scales.push_back(std::move(ls));
      continue;
    }
    const std::string m = c.attention_module(l);
    ls.sites[Site::kKey] = read_site(ck, m, Site::kKey, c.kv_heads_of(l), zp);  // Gemma 4: per layer
    ls.sites[Site::kValue] = read_site(ck, m, Site::kValue, c.kv_heads_of(l), zp);
    if (run.query_args) ls.sites[Site::kQuery] = read_site(ck, m, Site::kQuery, c.num_attention_heads, !run.query_args->symmetric);
    run.scales.push_back(std::move(ls));
  }
  // ctcal's record that the k/v scales are NVFP4 decode multipliers: the amax behind each s.
  if (const auto rec = read_nvfp4_record(dir)) {
    std::vector<std::map<Site, double>> amax(static_cast<std::size_t>(c.num_hidden_layers));
    for (const auto& l : rec->layers) {
      if (l.layer < 0 || l.layer >= c.num_hidden_layers)
        throw InputError(fmt::format("{}/ctcal_report.json: {} names layer {} of a {}-layer model", dir.string(),
                                     kNvfp4RecordKey, l.layer, c.num_hidden_layers));
      if (l.k) amax[static_cast<std::size_t>(l.layer)][Site::kKey] = l.k->amax;
      if (l.v) amax[static_cast<std::size_t>(l.layer)][Site::kValue] = l.v->amax;
    }
    run.nvfp4_amax = std::move(amax);
  }
  // R3: a transform group applied at q_attn and k_cache. Prefer the stored matrix (the only way to
  // reproduce random-hadamard); rebuild Sylvester for `hadamard` when it was not stored.
  // (R2 is folded into the weights already.)
  if (const ct::TransformGroup* r3 = qc.r3()) {
    if (c.per_layer_heads() || !c.layer_kv_source.empty())
      throw InputError(fmt::format("{}: an R3 transform group on {}, whose layers differ in head_dim or share K/V: "
                                   "ctcal refuses SpinQuant for it", ck.dir().string(),
                                   c.architecture));
    const std::string& group = r3->name;
    const int64_t n = r3->head_dim.value_or(c.head_dim);
    const std::string stored = ct::transform_weight_name(c.attention_module(0), group, "q_attn");
    RowMatrixD h;
    if (ck.has(stored)) {
      std::vector<float> v = ck.read_f32(stored);
      if (static_cast<int64_t>(v.size()) != n * n)
        throw InputError(fmt::format("{}: '{}' is not {}x{}", ck.dir().string(), stored, n, n));
      h = Eigen::Map<RowMatrix>(v.data(), n, n).cast<double>();
    } else if (r3->type == "hadamard") {
      h = transform_matrix("hadamard", n, 0);
    } else {
      throw InputError(fmt::format("{}: transform group '{}' is {} without a stored matrix ('{}'); "
                                   "it cannot be reproduced", where, group, r3->type, stored));
    }
    run.qk_rotation = (h / std::sqrt(static_cast<double>(n))).cast<float>();
  }
  return run;
}

EvalRun make_recipe_run(const std::string& name, const Checkpoint& base, const CalibrationPlan& plan,
                        const CalibrationResult& result) {
  EvalRun run;
  run.name = name;
  run.checkpoint = &base;
  run.config = plan.model;
  run.kv_args = plan.kv_args;
  run.query_args = plan.query_args;
  for (const auto& layer : result.layers) {
    LayerScales ls;
    for (const auto& s : layer.sites)  // K/V (and Q); Linear inputs are `inputs` below
      if (s.site == Site::kKey || s.site == Site::kValue || s.site == Site::kQuery)
        ls.sites[s.site] = {s.qparams.scale, s.qparams.zero_point};
    run.scales.push_back(std::move(ls));
  }
  if (plan.r3) run.qk_rotation = (plan.r3->matrix / std::sqrt(static_cast<double>(plan.r3->size))).cast<float>();
  if (plan.r2) run.edit_weights = [plan](int64_t, LayerWeights& w) { apply_r2(plan, &w); };
  // FP8 Linear layers: weights fake-quantized as the writer quantizes them; inputs at their
  // observed static scales, or dynamic per the group's args.
  if (!plan.linear.empty()) {
    run.fp8_weights = true;
    run.quantize_weights = [plan, &base](int64_t l, LayerWeights& w) { fake_quantize_fp8_weights(base, plan, l, &w); };
  }
  for (const auto& lp : plan.linear) {
    if (lp.expert >= 0) continue;  // MoE experts' inputs: not fake-quantized in eval
    const auto key = std::make_pair(lp.layer, lp.input_site);
    if (lp.input) {
      const SiteResult* s = result.layers.at(static_cast<std::size_t>(lp.layer)).find(lp.input_site);
      CTCAL_ASSERT(s != nullptr, "planned input site observed");
      run.inputs[key] = InputQuantSpec{s->qparams.scale.at(0), Strategy::kToken, 0};
    } else if (const json& ia = plan.linear_groups.at(lp.group)["input_activations"]; !ia.is_null() && !run.inputs.count(key)) {
      run.inputs[key] = dynamic_spec(parse_quant_args(ia.dump(), name + ": " + lp.group + ".input_activations"), name);
    }
  }
  run.plan = plan;
  return run;
}

}  // namespace ctcal
