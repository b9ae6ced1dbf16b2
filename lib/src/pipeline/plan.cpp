#include "ctcal/pipeline/plan.h"

#include <spdlog/spdlog.h>

#include "ctcal/ct/attention.h"
#include "ctcal/ct/groups.h"
#include "ctcal/ct/match.h"
#include "ctcal/ct/transforms.h"
#include "ctcal/error.h"
#include "ctcal/io/checkpoint.h"
#include "ctcal/model/linear_modules.h"
#include "ctcal/recipe/recipe_emit.h"
#include "ctcal/transform/hadamard.h"

namespace ctcal {

using nlohmann::json;

std::vector<Site> CalibrationPlan::sites() const {
  std::vector<Site> s;
  if (query_args) s.push_back(Site::kQuery);
  s.push_back(Site::kKey);
  s.push_back(Site::kValue);
  for (const auto& [site, _] : input_args)
    if (site != Site::kExpertGateUpInput && site != Site::kExpertDownInput) s.push_back(site);
  return s;
}

std::vector<Site> CalibrationPlan::sites(int64_t l) const {
  std::vector<Site> s = sites();
  // A Mamba2 mixer's inputs exist only in Mamba2 layers.
  if (!model.is_mamba(l))
    std::erase_if(s, [](Site x) { return x == Site::kMambaInProjInput || x == Site::kMambaOutProjInput; });
  if (model.has_kv_cache(l)) return s;
  std::erase_if(s, [](Site x) {
    return x == Site::kQuery || x == Site::kKey || x == Site::kValue || x == Site::kQkvInput || x == Site::kOProjInput;
  });
  return s;
}

std::vector<Site> CalibrationPlan::expert_sites() const {
  std::vector<Site> s;
  for (Site site : {Site::kExpertGateUpInput, Site::kExpertDownInput})
    if (input_args.count(site)) s.push_back(site);
  return s;
}

int64_t CalibrationPlan::heads(Site s, int64_t layer) const {
  if (input_args.count(s)) return 1;
  return s == Site::kQuery ? model.num_attention_heads : model.kv_heads_of(layer);
}

const QuantArgs& CalibrationPlan::site_args(Site s) const {
  if (auto it = input_args.find(s); it != input_args.end()) return it->second;
  return s == Site::kQuery ? *query_args : kv_args;
}

bool CalibrationPlan::observes_last_mlp() const {
  return input_args.count(Site::kGateUpInput) != 0 || input_args.count(Site::kDownInput) != 0 ||
         input_args.count(Site::kExpertGateUpInput) != 0 || input_args.count(Site::kExpertDownInput) != 0;
}

namespace {

json args_json(const TransformArgsSpec& a) {
  return {{"targets", a.targets}, {"location", a.location}, {"inverse", a.inverse}, {"ignore", a.ignore}};
}

json scheme_json(const TransformSchemeSpec& s) {
  json apply = json::array();
  for (const auto& a : s.apply) apply.push_back(args_json(a));
  return {{"type", s.type}, {"apply", apply}, {"randomize", s.randomize},
          {"requires_grad", s.requires_grad},
          {"head_dim", s.head_dim ? json(*s.head_dim) : json(nullptr)}, {"precision", s.precision}};
}

ct::AttentionModule attention_of(const ModelConfig& m) {
  return {m.attention_module(0), std::string(m.family->attention_class)};
}

bool targets_projection(const std::vector<std::string>& t, const std::string& proj) {
  for (const auto& x : t)
    if (ct::targets_projection(x, proj)) return true;
  return false;
}

// Which rotation a scheme is: R3 (q_attn + k_cache on attention) or R2 (weight_output on
// v_proj + inverse weight_input on o_proj). Anything else is not something ctcal can run.
std::string classify(const std::string& name, const TransformSchemeSpec& s, const ModelConfig& m,
                     const std::string& where) {
  bool q = false, k = false, v = false, o = false;
  for (const auto& a : s.apply) {
    if (!a.ignore.empty())
      throw RecipeError(fmt::format("{}: transform group '{}': 'ignore' lists are not supported", where, name));
    if (ct::is_attention_location(a.location) && ct::any_targets_attention(a.targets, attention_of(m)) && !a.inverse)
      (a.location == "q_attn" ? q : k) = true;
    else if (a.location == "weight_output" && targets_projection(a.targets, "v_proj") && !a.inverse)
      v = true;
    else if (a.location == "weight_input" && targets_projection(a.targets, "o_proj") && a.inverse)
      o = true;
    else
      throw RecipeError(fmt::format(
          "{}: transform group '{}': location '{}' on {} is not supported; ctcal runs R3 (q_attn "
          "and k_cache on re:.*self_attn$) and R2 (weight_output on re:.*v_proj$, inverse "
          "weight_input on re:.*o_proj$)", where, name, a.location, json(a.targets).dump()));
  }
  if (q && k && !v && !o) return "R3";
  if (v && o && !q && !k) return "R2";
  throw RecipeError(fmt::format("{}: transform group '{}' must be a complete R3 (q_attn + k_cache) "
                                "or R2 (v_proj weight_output + o_proj inverse weight_input) pair",
                                where, name));
}

RotationPlan make_rotation(const std::string& group, const TransformSchemeSpec& s,
                           const ModelConfig& m, const std::string& where, uint64_t seed) {
  RotationPlan r;
  r.group = group;
  r.type = s.type;
  r.size = s.head_dim.value_or(m.head_dim);
  r.precision = s.precision;
  r.scheme = scheme_json(s);
  if (r.size != m.head_dim)
    throw RecipeError(fmt::format("{}: transform group '{}': head_dim {} must equal the model's "
                                  "head_dim {} for R2/R3", where, group, r.size, m.head_dim));
  try {
    r.matrix = transform_matrix(s.type, r.size, seed);
  } catch (const RecipeError& e) {
    throw RecipeError(fmt::format("{}: transform group '{}' (head_dim {}): {}", where, group, r.size, e.what()));
  }
  return r;
}

// The TransformScheme llm-compressor's SpinQuantModifier generates for R2 / R3 (reference §1.4).
TransformSchemeSpec generated_scheme(const std::string& rotation, const SpinQuantSpec& sq,
                                     int64_t head_dim) {
  TransformSchemeSpec s;
  s.type = sq.transform_type;
  s.head_dim = head_dim;
  s.precision = sq.precision;
  if (rotation == "R3") {
    s.apply = {{{ct::kSelfAttnTarget}, "q_attn", false, {}}, {{ct::kSelfAttnTarget}, "k_cache", false, {}}};
  } else {
    s.apply = {{{"re:.*v_proj$"}, "weight_output", false, {}}, {{"re:.*o_proj$"}, "weight_input", true, {}}};
  }
  return s;
}

// Resolves FP8 Linear groups against the model's Linear layers, with `ignore`, as
// compressed-tensors applies them (ct/groups.h).
void plan_linear(const QuantizationModifierSpec& q, const ModelConfig& model, const std::string& where,
                 CalibrationPlan* p) {
  p->ignore = q.ignore;
  if (q.linear_groups.empty()) return;
  std::vector<std::vector<std::string>> group_targets;
  for (const auto& g : q.linear_groups) group_targets.push_back(g.targets);
  std::map<std::string, int> hits;
  for (int64_t l = 0; l < model.num_hidden_layers; ++l) {
    // The layer's Linear modules as checkpoints name them (model/linear_modules.h): Phi-3's fused
    // qkv_proj / gate_up_proj are one Linear each (one weight, weight_scale and input_scale); an
    // MoE layer's MLP is its per-expert Linears and the router.
    const std::vector<LinearModule> modules = linear_modules(model, l);
    for (const LinearModule& m : modules) {
      if (m.kind == LinearKind::kLinearAttention) {
        // vLLM 0.34's Qwen3.5 (models/qwen3_5.py, Qwen3_5GatedDeltaNet) builds in_proj_qkvz / in_proj_ba /
        // out_proj with the quant config, but the published FP8 checkpoints (Qwen/Qwen3.5-*-FP8,
        // Qwen3-Next-80B-A3B-*-FP8) and llm-compressor's Qwen3-Next example (examples/quantization_w8a8_fp8/
        // qwen3_next_example.py: ignore "re:.*linear_attn.*") keep the linear-attention projections
        // unquantized; ctcal does the same.
        for (const auto& g : q.linear_groups)
          if (ct::is_match({m.name, ct::kLinearClass}, g.targets, q.ignore))
            throw RecipeError(fmt::format("{}: config group '{}' would quantize the linear-attention projection {}, "
                                          "which ctcal keeps unquantized; add \"re:.*linear_attn.*\" to ignore, as "
                                          "llm-compressor's Qwen3-Next FP8 example does", where, g.name, m.name));
        continue;
      }
      if (m.kind == LinearKind::kPerLayerInput) {
        // Gemma 4's per-layer-input gate / projection: vLLM 0.34 builds them as ReplicatedLinear with
        // the quant config (models/gemma4.py), but ctcal has no hook point for their inputs; kept
        // unquantized, so a group must not claim them.
        for (const auto& g : q.linear_groups)
          if (ct::is_match({m.name, ct::kLinearClass}, g.targets, q.ignore))
            throw RecipeError(fmt::format("{}: config group '{}' would quantize Gemma 4's per-layer-input projection {}, "
                                          "which ctcal keeps unquantized; add \"re:.*per_layer_.*\" to ignore", where,
                                          g.name, m.name));
        continue;
      }
      if (m.kind == LinearKind::kMamba) {
        // vLLM 0.34 names both families' mixer `mixer` (MambaMixer2(..., prefix=f"{prefix}.mixer"):
        // models/nemotron_h.py:390-405, granitemoehybrid.py:72-87) and matches `ignore` against that
        // name; the checkpoint and compressed-tensors name Granite's `mamba`. An ignore entry that
        // matches one name and not the other makes vLLM build FP8 layers for unquantized weights
        // (their weight_scale never loaded: -3.4e38, checked with the vLLM judge) or the reverse.
        const std::string mixer(model.family->mamba.module);
        const std::size_t at = m.name.rfind("." + mixer + ".");
        CTCAL_ASSERT(at != std::string::npos, "a Mamba2 projection is named under its mixer");
        const std::string vllm_name = m.name.substr(0, at) + ".mixer." + m.name.substr(at + mixer.size() + 2);
        if (ct::is_match({m.name, ct::kLinearClass}, q.ignore) != ct::is_match({vllm_name, ct::kLinearClass}, q.ignore))
          throw RecipeError(fmt::format("{}: `ignore` treats the Mamba2 projection {} and vLLM 0.34's name for it, {}, "
                                        "differently, so vLLM would load it in the wrong format; match both (e.g. "
                                        "\"re:.*(mamba|mixer).(in|out)_proj$\") or neither", where, m.name,
                                        vllm_name));
        continue;
      }
      if (m.kind != LinearKind::kRouter) continue;
      // The router decides which experts run: ctcal keeps it unquantized, as llm-compressor's MoE
      // examples do by ignoring it (examples/quantizing_moe: "re:.*mlp.gate$" for Qwen3-MoE,
      // "re:.*block_sparse_moe.gate" for Mixtral). The same for Qwen3-Next's shared_expert_gate,
      // which vLLM 0.34 builds without a quant config (models/qwen3_next.py:205-211) and the
      // Qwen3-Next / Qwen3.5 FP8 examples ignore ("re:.*mlp.shared_expert_gate$"). GLM-4.5's router
      // mlp.gate is a GateLinear built without a quant config in vLLM 0.34 (models/glm4_moe.py:141),
      // and so is Llama 4's feed_forward.router (models/llama4.py:101; llm-compressor's Llama 4
      // recipes ignore "re:.*router").
      const std::string suffix = m.name.substr(model.layer_prefix(l).size());
      const char* what = m.role == LinearRole::kSharedExpertGate ? "shared-expert gate" : "MoE router";
      for (const auto& g : q.linear_groups)
        if (ct::is_match({m.name, ct::kLinearClass}, g.targets, q.ignore))
          throw RecipeError(fmt::format("{}: config group '{}' would quantize the {} {}, which ctcal keeps "
                                        "unquantized; add \"re:.*{}$\" to ignore, as llm-compressor's MoE "
                                        "examples do", where, g.name, what, m.name, suffix));
    }
    for (const LinearModule& m : modules) {
      // Mamba2 in_proj / out_proj are quantized like any Linear: vLLM 0.34's MambaMixer2 builds them with the
      // quant config (layers/mamba/mamba_mixer2.py:360-371, :499-505) and llm-compressor's Granite 4 and
      // Nemotron FP8 examples quantize them (granite4_example.py, nemotron_3_5_lightning_example.py).
      if (m.kind == LinearKind::kRouter || m.kind == LinearKind::kLinearAttention || m.kind == LinearKind::kPerLayerInput)
        continue;
      const Site site = *m.input_site;
      const auto group = ct::resolve_group({m.name, ct::kLinearClass}, group_targets, q.ignore);
      if (!group) continue;
      const LinearGroup& g = q.linear_groups[*group];
      ++hits[g.name];
      LinearQuantPlan lp{m.name, l, site, g.name, g.weights, std::nullopt, m.expert, m.role};
      if (g.input_activations && g.input_activations->dynamic == Dynamic::kFalse) {
        lp.input = g.input_activations;
        auto [it, fresh] = p->input_args.emplace(site, *g.input_activations);
        if (!fresh && !(it->second == *g.input_activations))
          throw RecipeError(fmt::format("{}: Linear layers sharing the input '{}' get different static "
                                        "input_activations from their groups; one observation "
                                        "serves them all, so make the args equal", where,
                                        site_name(site)));
      }
      p->linear.push_back(std::move(lp));
    }
  }
  for (const auto& g : q.linear_groups) {
    // Gemma 4's per_layer_model_projection (a top-level Linear vLLM builds with the quant config) is
    // run unquantized by ctcal: a group must not claim it either.
    if (model.per_layer_input_size > 0) {
      const std::string ple = model.weight_prefix + "per_layer_model_projection";
      if (ct::is_match({ple, ct::kLinearClass}, g.targets, q.ignore))
        throw RecipeError(fmt::format("{}: config group '{}' would quantize Gemma 4's {}, which ctcal keeps "
                                      "unquantized; add \"re:.*per_layer_.*\" to ignore", where, g.name, ple));
    }
    if (const std::string head = model.lm_head_module(); ct::is_match({head, ct::kLinearClass}, g.targets, q.ignore))
      throw RecipeError(fmt::format("{}: config group '{}' would quantize {}, which ctcal does not (it never runs "
                                    "it while calibrating); add \"{}\" to ignore, as llm-compressor's examples do",
                                    where, g.name, head, head == "lm_head" ? head : "re:.*lm_head"));
    if (!hits.count(g.name))
      throw RecipeError(fmt::format("{}: config group '{}' (targets {}) matches no Linear layer of the "
                                    "model", where, g.name, json(g.targets).dump()));
    json dump = linear_group_json(g);
    // compressed-tensors writes each group's compression format next to its args.
    if (dump["format"].is_null()) dump["format"] = "float-quantized";
    p->linear_groups[g.name] = dump;
  }
}

}  // namespace

CalibrationPlan make_plan(const Recipe& recipe, const ModelConfig& model, DType storage, uint64_t seed) {
  CalibrationPlan p;
  p.model = model;
  p.storage = storage;
  auto kv = recipe.kv_args();
  CTCAL_ASSERT(kv.has_value(), "parse_recipe guarantees KV args");
  p.kv_args = *kv;
  p.query_args = recipe.query_args();
  if (const auto* q = recipe.quantization(); q && !q->attention_groups.empty()) {
    p.attention_group = q->attention_groups[0].name;
    for (const auto& t : q->attention_groups[0].targets)
      if (!ct::targets_attention(t, attention_of(model)))
        throw RecipeError(fmt::format("{}: attention group '{}' targets {}, but this model ({}) has {}",
                                      recipe.source, p.attention_group.value(), t, model.architecture,
                                      model.family->attention_class));
    // vLLM drops a config group from its Linear schemes only when its single target is an
    // `...Attention` class name (serving-2026.md): written as the model's own class.
    p.attention_targets = {std::string(model.family->attention_class)};
    if (q->attention_groups[0].targets != p.attention_targets)
      spdlog::info("attention group '{}': targets [{}] written as [\"{}\"], the model's attention class: vLLM loads "
                   "an attention group only when its single target is an ...Attention class name",
                   p.attention_group.value(), fmt::format("{}", fmt::join(q->attention_groups[0].targets, ", ")),
                   model.family->attention_class);
  }
  p.write_zero_points = !p.kv_args.symmetric || p.query_args.has_value();
  if (const auto* q = recipe.quantization()) plan_linear(*q, model, recipe.source, &p);
  if (const SpinQuantSpec* sq = recipe.spinquant()) {
    const std::string where = recipe.source;
    // R2/R3 write a transform per layer and rewrite every layer's v/o: not yet written for a
    // hybrid's attention layers only, so refused rather than written wrong.
    if (model.family->hybrid_linear_attention || model.family->hybrid_mamba)
      throw RecipeError(fmt::format("{}: SpinQuant rotations are not supported for {} (a hybrid: its "
                                    "{} layers have no self_attn to rotate); drop the SpinQuantModifier",
                                    where, model.architecture,
                                    model.family->hybrid_mamba ? "Mamba2" : "linear-attention"));
    // One Hadamard size per transform group, but Gemma 4's sliding and full layers differ in head_dim.
    if (model.per_layer_heads())
      throw RecipeError(fmt::format("{}: SpinQuant rotations are not supported for {}: its layers differ in "
                                    "head_dim ({} and {}), and an R2/R3 transform group has one head_dim; drop "
                                    "the SpinQuantModifier", where, model.architecture,
                                    *std::min_element(model.layer_head_dim.begin(), model.layer_head_dim.end()),
                                    *std::max_element(model.layer_head_dim.begin(), model.layer_head_dim.end())));
    if (!model.layer_kv_source.empty())
      throw RecipeError(fmt::format("{}: SpinQuant rotations are not supported for {} with KV-shared layers "
                                    "(num_kv_shared_layers): R2 would rewrite a v_proj whose V other layers read, "
                                    "and ctcal has not checked R3 there; drop the SpinQuantModifier", where,
                                    model.architecture));
    std::vector<std::pair<std::string, TransformSchemeSpec>> groups;
    if (sq->explicit_config) {
      groups = sq->transform_config;
    } else {
      for (const auto& rot : sq->rotations) groups.emplace_back(rot, generated_scheme(rot, *sq, model.head_dim));
    }
    for (const auto& [name, scheme] : groups) {
      const std::string kind = classify(name, scheme, model, where);
      auto& slot = kind == "R3" ? p.r3 : p.r2;
      if (slot) throw RecipeError(fmt::format("{}: two transform groups are both {}", where, kind));
      slot = make_rotation(name, scheme, model, where, seed);
    }
    p.rotations_observed = recipe.rotation_before_quantization();
    if (p.r2 && !p.linear.empty())
      throw RecipeError(fmt::format("{}: R2 rewrites v_proj and o_proj, and FP8 Linear quantization "
                                    "would have to quantize the rotated weights; ctcal does not "
                                    "combine them yet (use R3, or drop R2)", recipe.source));
  }
  return p;
}

void check_groups_stay_in_language_model(const CalibrationPlan& plan, const Checkpoint& checkpoint,
                                         const std::string& where) {
  if (plan.linear_groups.empty()) return;
  const std::string& inside = plan.model.weight_prefix;  // "model.language_model." on a wrapper
  for (const std::string& name : checkpoint.tensor_names()) {
    if (!name.ends_with(".weight") || name.starts_with(inside) || checkpoint.info(name).shape.size() != 2) continue;
    const std::string module = name.substr(0, name.size() - std::string(".weight").size());
    // The language model's head is the plan's own business; an embedding table is 2-D but no Linear.
    if (module == plan.model.lm_head_module() || module.find("embed") != std::string::npos) continue;
    for (const auto& [group, g] : plan.linear_groups.items()) {
      std::vector<std::string> targets;
      for (const auto& t : g.value("targets", json::array()))
        if (t.is_string()) targets.push_back(t.get<std::string>());
      if (!ct::is_match({module, ct::kLinearClass}, targets, plan.ignore)) continue;
      // The tower's own prefix: "model.visual" of "model.visual.blocks.0.attn.qkv", "vision_tower" of
      // "vision_tower.vision_model.encoder.layers.0.mlp.fc1" (Gemma 3's older layout).
      const std::size_t first = module.find('.');
      const std::size_t end = module.starts_with("model.") ? module.find('.', first + 1) : first;
      const std::string tower = end == std::string::npos ? module : module.substr(0, end);
      throw RecipeError(fmt::format("{}: config group '{}' would declare {} quantized, but it lies outside the "
                                    "language model ({}*), which ctcal copies unchanged: vLLM would build it with "
                                    "the quantization config (models/qwen3_5.py builds its vision tower so) and find no FP8 weights for "
                                    "it; add \"re:{}.*\" to ignore, as llm-compressor's Qwen3.5 FP8 example does",
                                    where, group, module, inside, tower));
    }
  }
}

json transform_config_json(const CalibrationPlan& plan) {
  json groups = json::object();
  if (plan.r2) groups[plan.r2->group] = plan.r2->scheme;
  if (plan.r3) groups[plan.r3->group] = plan.r3->scheme;
  if (groups.empty()) return json::object();
  return {{"config_groups", groups}};
}

}  // namespace ctcal
