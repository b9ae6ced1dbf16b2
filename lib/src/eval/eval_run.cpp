#include "ctcal/eval/eval_run.h"

#include <cmath>

#include "ctcal/error.h"
#include "ctcal/io/quant_config.h"
#include "ctcal/recipe/recipe.h"
#include "ctcal/transform/hadamard.h"

namespace ctcal {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

SiteScales read_site(const Checkpoint& ck, const std::string& module, Site site, int64_t heads, bool want_zp) {
  SiteScales s;
  const std::string name = scale_name(module, site);
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
  const std::string zp = zero_point_name(module, site);
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

bool is_attention_targets(const json& targets, const ModelConfig& c) {
  for (const auto& t : targets)
    if (t.is_string() && (t == c.family->attention_class || t == "re:.*self_attn$" || t == "re:.*(self_attn|attention)$"))
      return true;
  return false;
}

}  // namespace

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
  const json& qc = ck.config()["quantization_config"];
  if (!qc.contains("kv_cache_scheme") || qc["kv_cache_scheme"].is_null())
    throw InputError(fmt::format("{}: quantization_config has no kv_cache_scheme", where));
  try {
    run.kv_args = parse_quant_args(qc["kv_cache_scheme"].dump(), where + ": quantization_config.kv_cache_scheme");
    check_attention_args(run.kv_args, where + ": kv_cache_scheme");
    if (qc.contains("config_groups") && qc["config_groups"].is_object())
      for (const auto& [name, g] : qc["config_groups"].items())
        if (g.is_object() && g.contains("targets") && is_attention_targets(g["targets"], run.config) &&
            g.contains("input_activations") && !g["input_activations"].is_null())
          run.query_args = parse_quant_args(g["input_activations"].dump(), where + ": config_groups." + name);
  } catch (const RecipeError& e) {
    throw InputError(e.what());
  }
  const ModelConfig& c = run.config;
  const bool zp = !run.kv_args.symmetric;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerScales ls;
    const std::string m = c.attention_module(l);
    ls.sites[Site::kKey] = read_site(ck, m, Site::kKey, c.num_key_value_heads, zp);
    ls.sites[Site::kValue] = read_site(ck, m, Site::kValue, c.num_key_value_heads, zp);
    if (run.query_args) ls.sites[Site::kQuery] = read_site(ck, m, Site::kQuery, c.num_attention_heads, !run.query_args->symmetric);
    run.scales.push_back(std::move(ls));
  }
  // R3: a transform group applied at q_attn and k_cache. Prefer the stored matrix (the only way to
  // reproduce random-hadamard); rebuild Sylvester for `hadamard` when it was not stored.
  if (qc.contains("transform_config") && qc["transform_config"].contains("config_groups"))
    for (const auto& [group, scheme] : qc["transform_config"]["config_groups"].items()) {
      bool q = false, k = false;
      for (const auto& a : scheme.value("apply", json::array())) {
        q = q || a.value("location", "") == "q_attn";
        k = k || a.value("location", "") == "k_cache";
      }
      if (!(q && k)) continue;  // R2 is already folded into the weights
      const int64_t n = scheme.value("head_dim", c.head_dim);
      const std::string stored = fmt::format("{}.{}_q_attn.weight", c.attention_module(0), group);
      RowMatrixD h;
      if (ck.has(stored)) {
        std::vector<float> v = ck.read_f32(stored);
        if (static_cast<int64_t>(v.size()) != n * n)
          throw InputError(fmt::format("{}: '{}' is not {}x{}", ck.dir().string(), stored, n, n));
        h = Eigen::Map<RowMatrix>(v.data(), n, n).cast<double>();
      } else if (scheme.value("type", "") == "hadamard") {
        h = transform_matrix("hadamard", n, 0);
      } else {
        throw InputError(fmt::format("{}: transform group '{}' is {} without a stored matrix ('{}'); "
                                     "it cannot be reproduced", where, group, scheme.value("type", "?"), stored));
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
    for (const auto& s : layer.sites) ls.sites[s.site] = {s.qparams.scale, s.qparams.zero_point};
    run.scales.push_back(std::move(ls));
  }
  if (plan.r3) run.qk_rotation = (plan.r3->matrix / std::sqrt(static_cast<double>(plan.r3->size))).cast<float>();
  if (plan.r2) run.edit_weights = [plan](int64_t, LayerWeights& w) { apply_r2(plan, &w); };
  run.plan = plan;
  return run;
}

}  // namespace ctcal
