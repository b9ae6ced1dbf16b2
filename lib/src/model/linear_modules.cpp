#include "ctcal/model/linear_modules.h"

#include <fmt/format.h>

#include "ctcal/error.h"
#include "ctcal/model/gated_deltanet.h"
#include "ctcal/model/mamba2.h"

namespace ctcal {

namespace {

std::string join(const std::string& prefix, std::string_view module, std::string_view child) {
  return fmt::format("{}{}.{}", prefix, module, child);
}

LinearModule module(std::string name, LinearKind kind, LinearRole role, std::optional<Site> site, int64_t out,
                    int64_t in, bool bias) {
  LinearModule m;
  m.name = std::move(name);
  m.kind = kind;
  m.role = role;
  m.input_site = site;
  m.out = out;
  m.in = in;
  m.bias = bias;
  m.parts = {out};
  return m;
}

// q, k, v (or Phi-3's fused qkv_proj, one Linear: what compressed-tensors quantizes and vLLM's
// QKVParallelLinear loads from a checkpoint fused on disk), then o.
void attention_modules(const ModelConfig& c, int64_t layer, const std::string& p, std::vector<LinearModule>* out) {
  const AttentionNames& n = c.family->attention;
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim();
  constexpr auto kA = LinearKind::kAttention;
  if (c.family->attention_output_gate) {  // q_proj [2 q_dim, hidden]: per head [query | gate] rows
    out->push_back(module(join(p, n.module, n.q), kA, LinearRole::kQ, Site::kQkvInput, c.q_proj_rows(), h, c.qkv_bias));
    out->push_back(module(join(p, n.module, n.k), kA, LinearRole::kK, Site::kQkvInput, kv, h, c.qkv_bias));
    out->push_back(module(join(p, n.module, n.v), kA, LinearRole::kV, Site::kQkvInput, kv, h, c.qkv_bias));
  } else if (!n.qkv.empty()) {
    LinearModule m = module(join(p, n.module, n.qkv), kA, LinearRole::kQkv, Site::kQkvInput, q + 2 * kv, h, false);
    m.parts = {q, kv, kv};  // rows q, then k, then v (Phi3Attention slices them so)
    out->push_back(std::move(m));
  } else {
    out->push_back(module(join(p, n.module, n.q), kA, LinearRole::kQ, Site::kQkvInput, q, h, c.qkv_bias));
    // Gemma 4's KV-shared layers have neither k_proj nor v_proj (they read an earlier layer's K/V).
    if (c.kv_source_of(layer) < 0)
      out->push_back(module(join(p, n.module, n.k), kA, LinearRole::kK, Site::kQkvInput, kv, h, c.qkv_bias));
    // Gemma 4's attention_k_eq_v full layers have no v_proj (V is k_proj's output).
    if (!c.k_eq_v(layer) && c.kv_source_of(layer) < 0)
      out->push_back(module(join(p, n.module, n.v), kA, LinearRole::kV, Site::kQkvInput, kv, h, c.qkv_bias));
  }
  out->push_back(module(join(p, n.module, n.o), kA, LinearRole::kO, Site::kOProjInput, h, q, c.o_bias));
}

// gate, up (or Phi-3's fused gate_up_proj, gate rows first as Phi3MLP's chunk(2); Granite's
// shared_mlp.input_linear likewise), then down. Nemotron-H's ungated MLP: up and down only.
void dense_mlp_modules(const ModelConfig& c, const std::string& p, std::vector<LinearModule>* out) {
  const MlpNames& n = c.family->mlp_names;
  const int64_t h = c.hidden_size, f = c.intermediate_size;
  constexpr auto kM = LinearKind::kMlp;
  if (n.gate.empty() && n.gate_up.empty()) {
    out->push_back(module(join(p, n.module, n.up), kM, LinearRole::kUp, Site::kGateUpInput, f, h, c.mlp_bias));
  } else if (!n.gate_up.empty()) {
    LinearModule m = module(join(p, n.module, n.gate_up), kM, LinearRole::kGateUp, Site::kGateUpInput, 2 * f, h, false);
    m.parts = {f, f};
    out->push_back(std::move(m));
  } else {
    out->push_back(module(join(p, n.module, n.gate), kM, LinearRole::kGate, Site::kGateUpInput, f, h, c.mlp_bias));
    out->push_back(module(join(p, n.module, n.up), kM, LinearRole::kUp, Site::kGateUpInput, f, h, c.mlp_bias));
  }
  out->push_back(module(join(p, n.module, n.down), kM, LinearRole::kDown, Site::kDownInput, h, f, c.mlp_bias));
}

// A gated DeltaNet mixer's Linears (no biases), in GatedDeltaNetWeights' shapes.
void linear_attention_modules(const ModelConfig& c, const std::string& p, std::vector<LinearModule>* out) {
  const LinearAttentionNames& n = c.family->linear_attention;
  const LinearAttentionConfig& la = c.linear_attention;
  const int64_t h = c.hidden_size;
  constexpr auto kL = LinearKind::kLinearAttention;
  if (n.fused()) {  // Qwen3-Next: in_proj_qkvz [2 key_dim + 2 value_dim, hidden], in_proj_ba [2 num_v_heads, hidden]
    out->push_back(module(join(p, n.module, n.in_proj_qkvz), kL, LinearRole::kInProjQkvz, std::nullopt,
                          la.conv_dim() + la.value_dim(), h, false));
    out->push_back(module(join(p, n.module, n.in_proj_ba), kL, LinearRole::kInProjBa, std::nullopt, 2 * la.num_v_heads, h,
                          false));
    out->push_back(module(join(p, n.module, n.out_proj), kL, LinearRole::kOutProj, std::nullopt, h, la.value_dim(), false));
    return;
  }
  out->push_back(module(join(p, n.module, n.in_proj_qkv), kL, LinearRole::kInProjQkv, std::nullopt, la.conv_dim(), h, false));
  out->push_back(module(join(p, n.module, n.in_proj_z), kL, LinearRole::kInProjZ, std::nullopt, la.value_dim(), h, false));
  out->push_back(module(join(p, n.module, n.in_proj_b), kL, LinearRole::kInProjB, std::nullopt, la.num_v_heads, h, false));
  out->push_back(module(join(p, n.module, n.in_proj_a), kL, LinearRole::kInProjA, std::nullopt, la.num_v_heads, h, false));
  out->push_back(module(join(p, n.module, n.out_proj), kL, LinearRole::kOutProj, std::nullopt, h, la.value_dim(), false));
}

// A Mamba2 mixer's in_proj [2 I + 2 G N + H, hidden] and out_proj [hidden, I], in Mamba2Weights' shapes.
void mamba_modules(const ModelConfig& c, const std::string& p, std::vector<LinearModule>* out) {
  const Mamba2Names& n = c.family->mamba;
  const Mamba2Config& m = c.mamba;
  constexpr auto kK = LinearKind::kMamba;
  out->push_back(module(join(p, n.module, n.in_proj), kK, LinearRole::kMambaInProj, Site::kMambaInProjInput, m.in_proj_dim(),
                        c.hidden_size, c.mamba_proj_bias));
  out->push_back(module(join(p, n.module, n.out_proj), kK, LinearRole::kMambaOutProj, Site::kMambaOutProjInput, c.hidden_size,
                        m.intermediate_size(), c.mamba_proj_bias));
}

// The router, then each expert's gate, up, down: each expert's gate/up read the tokens routed to
// it, its down their act(gate) * up.
void moe_modules(const ModelConfig& c, const std::string& p, ExpertLayout layout, std::vector<LinearModule>* out) {
  const ExpertNames& n = c.family->experts;
  const int64_t h = c.hidden_size, f = c.moe_intermediate_size, e_count = c.num_experts;
  const bool fused = layout == ExpertLayout::kFused;
  const std::string_view block = fused ? n.fused_block : n.block;
  out->push_back(module(n.router_path.empty() ? join(p, block, fused ? n.fused_router : n.router) : p + std::string(n.router_path),
                        LinearKind::kRouter, LinearRole::kRouter, std::nullopt, e_count, h, n.router_bias));
  // gpt-oss [E, H, 2 I] (columns interleaved) and Llama 4 [E, H, 2 I] (gate columns, then up) are
  // input-major: no row slices (model/gpt_oss_experts.h, model/llama4_experts.h read them).
  const bool input_major = fused && (c.family->moe_kind == MoeKind::kGptOss || c.family->moe_kind == MoeKind::kLlama4);
  const std::string_view proj[3] = {n.gate, n.up, n.down};
  constexpr LinearRole kRoles[3] = {LinearRole::kGate, LinearRole::kUp, LinearRole::kDown};
  for (int64_t e = 0; e < (input_major ? 0 : e_count); ++e)
    for (int which = 0; which < 3; ++which) {
      if (proj[which].empty()) continue;  // ungated experts (Nemotron-H): no gate_proj
      const bool down = which == 2;
      const Site site = down ? Site::kExpertDownInput : Site::kExpertGateUpInput;
      const int64_t rows = down ? h : f, cols = down ? f : h;
      LinearModule m;
      if (fused) {  // experts.gate_up_proj [E, 2 I, H] (gate rows, then up, per expert), experts.down_proj [E, H, I]
        m = module(join(p, block, down ? n.fused_down : n.fused_gate_up), LinearKind::kExpert, kRoles[which], site,
                   rows, cols, false);
        m.tensor_shape = down ? std::vector<int64_t>{e_count, h, f} : std::vector<int64_t>{e_count, 2 * f, h};
        m.row0 = down ? e * h : e * 2 * f + which * f;
      } else {
        m = module(fmt::format("{}{}.{}.{}.{}", p, block, n.experts, e, proj[which]), LinearKind::kExpert,
                   kRoles[which], site, rows, cols, false);
      }
      m.expert = e;
      out->push_back(std::move(m));
    }
  if (!c.family->moe_shared_expert) return;
  // Qwen3NextSparseMoeBlock: shared_expert (a Qwen3NextMLP of width shared_expert_intermediate_size,
  // on the block's input) and shared_expert_gate [1, hidden]; plain Linears in both expert layouts.
  const MlpNames& mlp = c.family->mlp_names;
  const std::string shared = fmt::format("{}{}.{}", p, block, n.shared_expert);
  const int64_t fs = c.shared_expert_intermediate_size;
  constexpr auto kM = LinearKind::kMlp;
  if (!mlp.gate.empty())  // Nemotron-H's shared_experts is ungated (NemotronHMLP)
    out->push_back(module(fmt::format("{}.{}", shared, mlp.gate), kM, LinearRole::kGate, Site::kGateUpInput, fs, h, false));
  out->push_back(module(fmt::format("{}.{}", shared, mlp.up), kM, LinearRole::kUp, Site::kGateUpInput, fs, h, false));
  out->push_back(module(fmt::format("{}.{}", shared, mlp.down), kM, LinearRole::kDown, Site::kDownInput, h, fs, false));
  if (!n.shared_expert_gated()) return;  // Glm4MoeMoE: shared_experts added ungated
  out->push_back(module(join(p, block, n.shared_expert_gate), LinearKind::kRouter, LinearRole::kSharedExpertGate,
                        std::nullopt, 1, h, false));
}

// Gemma4TextDecoderLayer's per-layer input: per_layer_input_gate [P, hidden], then
// per_layer_projection [hidden, P]; no hook point (never quantized).
void per_layer_input_modules(const ModelConfig& c, const std::string& p, std::vector<LinearModule>* out) {
  const int64_t h = c.hidden_size, pd = c.per_layer_input_size;
  constexpr auto kP = LinearKind::kPerLayerInput;
  out->push_back(module(p + "per_layer_input_gate", kP, LinearRole::kPerLayerGate, std::nullopt, pd, h, false));
  out->push_back(module(p + "per_layer_projection", kP, LinearRole::kPerLayerProjection, std::nullopt, h, pd, false));
}

}  // namespace

std::vector<LayerBlock> layer_blocks(const ModelConfig& c, int64_t layer, bool with_mlp) {
  std::vector<LayerBlock> b;
  if (c.has_mixer(layer))
    b.push_back(c.is_linear_attention(layer) ? LayerBlock::kLinearAttention
                : c.is_mamba(layer)          ? LayerBlock::kMamba2
                                             : LayerBlock::kAttention);
  if (with_mlp && c.has_mlp_block(layer)) {
    b.push_back(c.is_moe(layer) ? LayerBlock::kMoe : LayerBlock::kDenseMlp);
    // Granite's shared_mlp; Gemma 4's dense MLP beside its MoE block
    if (c.is_moe(layer) && (c.family->moe_plus_dense_mlp || c.family->gemma4_attention)) b.push_back(LayerBlock::kDenseMlp);
    if (c.per_layer_input_size > 0) b.push_back(LayerBlock::kPerLayerInput);  // Gemma 4, after the MLP
  }
  return b;
}

std::vector<LinearModule> linear_modules(const ModelConfig& c, int64_t layer, bool with_mlp, ExpertLayout experts) {
  CTCAL_ASSERT(c.family != nullptr, "a parsed ModelConfig has its family");
  const std::string p = c.layer_prefix(layer);
  std::vector<LinearModule> out;
  const ModelConfig lc = c.at_layer(layer);  // the layer's own head_dim and MLP width (Gemma 4)
  for (LayerBlock b : layer_blocks(c, layer, with_mlp)) switch (b) {
      case LayerBlock::kAttention: attention_modules(lc, layer, p, &out); break;
      case LayerBlock::kDenseMlp: dense_mlp_modules(lc, p, &out); break;
      case LayerBlock::kMoe: moe_modules(c, p, experts, &out); break;
      case LayerBlock::kLinearAttention: linear_attention_modules(c, p, &out); break;
      case LayerBlock::kMamba2: mamba_modules(c, p, &out); break;
      case LayerBlock::kPerLayerInput: per_layer_input_modules(c, p, &out); break;
    }
  return out;
}

ExpertLayout expert_layout(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer) {
  if (!c.is_moe(layer)) return ExpertLayout::kPerExpert;
  // gpt-oss and Granite 4 hybrid store their experts fused only.
  if (c.family->moe_kind == MoeKind::kGptOss || c.family->moe_kind == MoeKind::kGranite ||
      c.family->moe_kind == MoeKind::kLlama4 || c.family->gemma4_attention)  // Gemma 4: fused only
    return ExpertLayout::kFused;
  const bool fused = ckpt.has(join(c.layer_prefix(layer), c.family->experts.fused_block, c.family->experts.fused_gate_up));
  return fused ? ExpertLayout::kFused : ExpertLayout::kPerExpert;
}

std::vector<Linear*> linear_parts(LayerWeights* w, LinearRole role, int64_t expert) {
  if (expert >= 0) {
    const auto e = static_cast<std::size_t>(expert);
    CTCAL_ASSERT(role == LinearRole::kGate || role == LinearRole::kUp || role == LinearRole::kDown,
                 "experts have gate, up and down only");
    return {&(role == LinearRole::kGate ? w->experts.gate : role == LinearRole::kUp ? w->experts.up : w->experts.down).at(e)};
  }
  switch (role) {
    case LinearRole::kQ: return {&w->q};
    case LinearRole::kK: return {&w->k};
    case LinearRole::kV: return {&w->v};
    case LinearRole::kQkv: return {&w->q, &w->k, &w->v};
    case LinearRole::kO: return {&w->o};
    case LinearRole::kGate: return {&w->gate};
    case LinearRole::kUp: return {&w->up};
    case LinearRole::kGateUp: return {&w->gate, &w->up};
    case LinearRole::kDown: return {&w->down};
    case LinearRole::kRouter: return {&w->experts.router};
    case LinearRole::kInProjQkv: return {&w->linear_attn->in_proj_qkv};
    case LinearRole::kInProjZ: return {&w->linear_attn->in_proj_z};
    case LinearRole::kInProjB: return {&w->linear_attn->in_proj_b};
    case LinearRole::kInProjA: return {&w->linear_attn->in_proj_a};
    case LinearRole::kOutProj: return {&w->linear_attn->out_proj};
    case LinearRole::kInProjQkvz:
    case LinearRole::kInProjBa: return {};  // rows interleaved per key head: the loader splits them
    case LinearRole::kSharedExpertGate: return {&w->experts.shared_gate};
    case LinearRole::kMambaInProj: return {&w->mamba->in_proj};
    case LinearRole::kMambaOutProj: return {&w->mamba->out_proj};
    case LinearRole::kPerLayerGate: return {&w->ple.gate};
    case LinearRole::kPerLayerProjection: return {&w->ple.proj};
  }
  return {};
}

}  // namespace ctcal
