#include "ctcal/model/family.h"

#include <array>

namespace ctcal {

namespace {

// The language model inside a multimodal wrapper: the text family's layers and math, the wrapper's
// architecture and model_type, its hyper-parameters under `text_config` and its tensors under
// `prefix`. The caller adds what else differs (another prefix layout, the head's place).
FamilySpec inside_wrapper(FamilySpec text, std::string_view architecture, std::string_view model_type,
                          std::string_view prefix) {
  text.architecture = architecture;
  text.model_type = model_type;
  text.text_config = true;
  text.weight_prefix = prefix;
  return text;
}

// One entry per architecture, read from transformers 5.17's modeling_<family>.py.
const std::array<FamilySpec, 25>& families() {
  static const std::array<FamilySpec, 25> table = [] {
    FamilySpec llama;
    llama.architecture = "LlamaForCausalLM";
    llama.attention_class = "LlamaAttention";
    llama.model_type = "llama";

    FamilySpec mistral = llama;  // LlamaAttention math with a sliding window on every layer
    mistral.architecture = "MistralForCausalLM";
    mistral.attention_class = "MistralAttention";
    mistral.model_type = "mistral";
    mistral.sliding = SlidingRule::kAllLayers;

    FamilySpec qwen2 = llama;  // q/k/v biases (o_proj none); sliding window on upper layers
    qwen2.architecture = "Qwen2ForCausalLM";
    qwen2.attention_class = "Qwen2Attention";
    qwen2.model_type = "qwen2";
    qwen2.qkv_bias_always = true;
    qwen2.o_bias_follows_attention_bias = false;
    qwen2.sliding = SlidingRule::kQwenMaxWindow;

    FamilySpec qwen3 = llama;  // per-head RMSNorm on q and k before RoPE
    qwen3.architecture = "Qwen3ForCausalLM";
    qwen3.attention_class = "Qwen3Attention";
    qwen3.model_type = "qwen3";
    qwen3.qk_norm = true;
    qwen3.sliding = SlidingRule::kQwenMaxWindow;

    FamilySpec gemma3;  // (1 + w) norms everywhere, sandwich norms, GELU-tanh, scaled embeddings
    gemma3.architecture = "Gemma3ForCausalLM";
    gemma3.attention_class = "Gemma3Attention";
    gemma3.model_type = "gemma3_text";
    gemma3.norm = NormKind::kRmsOnePlus;
    gemma3.act = MlpAct::kGeluTanh;
    gemma3.qk_norm = true;
    gemma3.norms.attn_out = "post_attention_layernorm";  // Gemma3DecoderLayer's four norms
    gemma3.norms.mlp = "pre_feedforward_layernorm";
    gemma3.norms.mlp_out = "post_feedforward_layernorm";
    gemma3.embed_scale = true;
    gemma3.sliding = SlidingRule::kGemmaPattern;

    // transformers 5.17's save_pretrained writes language_model.model.*; checkpoints converted by
    // other tools (and the in-memory module tree) use model.language_model.*.
    FamilySpec gemma3_mm = inside_wrapper(gemma3, "Gemma3ForConditionalGeneration", "gemma3", "language_model.model.");
    gemma3_mm.alt_weight_prefix = "model.language_model.";
    FamilySpec phi3 = llama;  // fused projections, longrope, optional sliding window on every layer
    phi3.architecture = "Phi3ForCausalLM";
    phi3.attention_class = "Phi3Attention";
    phi3.model_type = "phi3";
    phi3.attention.qkv = "qkv_proj";  // Phi3Attention: one qkv_proj, sliced q, k, v
    phi3.mlp_names.gate_up = "gate_up_proj";  // Phi3MLP: one gate_up_proj, chunk(2) gate, up
    phi3.partial_rotary = true;
    phi3.sliding = SlidingRule::kAllLayers;
    FamilySpec qwen3_moe = qwen3;  // Qwen3 attention; sparse MoE MLPs except mlp_only_layers
    qwen3_moe.architecture = "Qwen3MoeForCausalLM";
    qwen3_moe.attention_class = "Qwen3MoeAttention";
    qwen3_moe.model_type = "qwen3_moe";
    qwen3_moe.mlp = MlpKind::kMoe;
    qwen3_moe.sliding = SlidingRule::kQwenAllLayers;

    FamilySpec mixtral = mistral;  // Mistral attention; every MLP a sparse MoE
    mixtral.architecture = "MixtralForCausalLM";
    mixtral.attention_class = "MixtralAttention";
    mixtral.model_type = "mixtral";
    mixtral.mlp = MlpKind::kMoe;
    mixtral.moe_kind = MoeKind::kMixtral;
    // MixtralSparseMoeBlock on the hub: block_sparse_moe.gate, experts.{e}.w1 / w3 / w2 (gate, up,
    // down); transformers 5 renamed the block mlp.
    mixtral.experts.block = "block_sparse_moe";
    mixtral.experts.gate = "w1";
    mixtral.experts.up = "w3";
    mixtral.experts.down = "w2";
    mixtral.moe_norm_topk_always = true;

    FamilySpec gpt_oss = llama;  // sinks, biases everywhere, alternating windows, YaRN, biased MoE
    gpt_oss.architecture = "GptOssForCausalLM";
    gpt_oss.attention_class = "GptOssAttention";
    gpt_oss.model_type = "gpt_oss";
    gpt_oss.attention_bias_default = true;
    gpt_oss.attention_sinks = true;
    gpt_oss.default_rope_theta = 150000.0;
    gpt_oss.default_rms_norm_eps = 1e-5;
    gpt_oss.mlp = MlpKind::kMoe;
    gpt_oss.moe_kind = MoeKind::kGptOss;
    // GptOssTopKRouter (mlp.router, with a bias); its experts are stored fused only (MoeKind::kGptOss),
    // so the per-expert names are those an FP8 output would need (the plan names them, calibrate
    // refuses them as for any fused checkpoint).
    gpt_oss.experts.router = "router";
    gpt_oss.experts.fused_router = "router";
    gpt_oss.experts.router_bias = true;
    gpt_oss.act = MlpAct::kClampedSwiglu;
    gpt_oss.sliding = SlidingRule::kAlternate;

    // Qwen3.5 dense (modeling_qwen3_5.py): gated DeltaNet layers (linear_attn) and gated full
    // attention (self_attn) by layer_types, Qwen3_5RMSNorm = x_hat * (1 + w) everywhere (input,
    // post-attention, q/k and final norms; the DeltaNet's own RMSNormGated multiplies by w),
    // partial rotary (half-split, 0.25 by default), q/k norms, dense SwiGLU MLP on every layer.
    FamilySpec qwen3_5 = llama;
    qwen3_5.architecture = "Qwen3_5ForCausalLM";
    qwen3_5.attention_class = "Qwen3_5Attention";
    qwen3_5.model_type = "qwen3_5_text";
    qwen3_5.norm = NormKind::kRmsOnePlus;
    qwen3_5.qk_norm = true;
    qwen3_5.partial_rotary = true;
    qwen3_5.default_partial_rotary_factor = 0.25;
    qwen3_5.attention_output_gate = true;
    qwen3_5.hybrid_linear_attention = true;

    // transformers 5.17's save_pretrained (and the hub's Qwen3.5 checkpoints) write
    // model.language_model.*; lm_head.weight stays at the top.
    const FamilySpec qwen3_5_mm =
        inside_wrapper(qwen3_5, "Qwen3_5ForConditionalGeneration", "qwen3_5", "model.language_model.");

    // Qwen3.5-MoE (modeling_qwen3_5_moe.py): Qwen3.5's layers (Qwen3_5MoeGatedDeltaNet = Qwen3.5's,
    // Qwen3_5MoeAttention = Qwen3NextAttention: the same [query | gate] q_proj, (1 + w) norms) with
    // Qwen3_5MoeSparseMoeBlock on every layer: softmax router whose top-k weights are always
    // renormalised (Qwen3VLMoeTextTopKRouter), SwiGLU experts, and a shared expert gated by
    // sigmoid(shared_expert_gate(x)). save_pretrained writes the experts per expert
    // (mlp.experts.{e}.gate_proj); the fused 3-D layout is read too.
    FamilySpec qwen3_5_moe = qwen3_5;
    qwen3_5_moe.architecture = "Qwen3_5MoeForCausalLM";
    qwen3_5_moe.attention_class = "Qwen3_5MoeAttention";
    qwen3_5_moe.model_type = "qwen3_5_moe_text";
    qwen3_5_moe.mlp = MlpKind::kMoe;
    qwen3_5_moe.moe_norm_topk_always = true;
    qwen3_5_moe.moe_every_layer = true;
    qwen3_5_moe.moe_shared_expert = true;

    const FamilySpec qwen3_5_moe_mm =
        inside_wrapper(qwen3_5_moe, "Qwen3_5MoeForConditionalGeneration", "qwen3_5_moe", "model.language_model.");

    // Qwen3-Next (modeling_qwen3_next.py): Qwen3.5-MoE's layers with the DeltaNet's in-projections
    // fused per key head (in_proj_qkvz, in_proj_ba: Qwen3NextGatedDeltaNet.fix_query_key_value_ordering),
    // the plain RoPE of any type (Qwen3NextRotaryEmbedding; ctcal runs the default one), `norm_topk_prob`
    // (default true) and dense Qwen3NextMLP layers by `mlp_only_layers` / `decoder_sparse_step`.
    // Qwen3NextAttention's q_proj is Qwen3.5's [query | gate] per head (view(..., -1, 2 head_dim),
    // chunk(2)); Qwen3NextRMSNorm is (1 + w), Qwen3NextRMSNormGated w.
    FamilySpec qwen3_next = qwen3_5_moe;
    qwen3_next.architecture = "Qwen3NextForCausalLM";
    qwen3_next.attention_class = "Qwen3NextAttention";
    qwen3_next.model_type = "qwen3_next";
    qwen3_next.moe_norm_topk_always = false;
    qwen3_next.moe_norm_topk_default = true;
    qwen3_next.moe_every_layer = false;
    qwen3_next.linear_attention.in_proj_qkvz = "in_proj_qkvz";
    qwen3_next.linear_attention.in_proj_ba = "in_proj_ba";

    // Nemotron-H (modeling_nemotron_h.py): every layer is one NemotronHBlock, x += mixer(norm(x)),
    // the mixer chosen by `layers_block_type`: Mamba2 (NemotronHMamba2Mixer), attention without
    // RoPE and without biases (NemotronHAttention), an MLP down(relu(up(x))^2) (NemotronHMLP), or
    // a MoE block (NemotronHMoE): NemotronHTopkRouter (sigmoid scores plus e_score_correction_bias
    // for the choice, group top-k, routed_scaling_factor: GLM-4.5's routing), ungated relu2 experts
    // (mixer.experts.{e}.up_proj / down_proj as save_pretrained writes them) and an ungated relu2
    // shared_experts MLP on the same input. All modules are "mixer"; tensors under backbone.
    // (embeddings, norm_f), as save_pretrained writes them.
    FamilySpec nemotron_h = llama;
    nemotron_h.architecture = "NemotronHForCausalLM";
    nemotron_h.attention_class = "NemotronHAttention";
    nemotron_h.model_type = "nemotron_h";
    nemotron_h.act = MlpAct::kRelu2;
    nemotron_h.default_rms_norm_eps = 1e-5;  // NemotronHConfig.layer_norm_epsilon
    nemotron_h.hybrid_mamba = true;
    nemotron_h.one_block_per_layer = true;
    nemotron_h.rope = false;
    nemotron_h.attention.module = "mixer";
    nemotron_h.mlp_names.module = "mixer";
    nemotron_h.mlp_names.gate = "";
    nemotron_h.norms.input = "norm";
    nemotron_h.norms.mlp = "norm";
    nemotron_h.mamba.module = "mixer";
    nemotron_h.moe_kind = MoeKind::kSigmoidGrouped;
    nemotron_h.moe_shared_expert = true;
    nemotron_h.experts.block = "mixer";
    nemotron_h.experts.gate = "";  // NemotronHExperts: up_proj and down_proj only
    nemotron_h.experts.shared_expert = "shared_experts";
    nemotron_h.experts.shared_expert_gate = "";
    nemotron_h.experts.correction_bias = "gate.e_score_correction_bias";
    nemotron_h.weight_prefix = "backbone.";
    nemotron_h.embed_tokens = "embeddings";
    nemotron_h.final_norm = "norm_f";

    // Granite 4 hybrid (modeling_granitemoehybrid.py): each layer is Mamba2 (mamba,
    // GraniteMoeHybridMambaLayer = BambaMixer) or attention (self_attn, softmax scale
    // attention_multiplier; RoPE only when position_embedding_type is "rope") by `layer_types`, then
    // block_sparse_moe(x) + shared_mlp(x) (or shared_mlp alone without experts); residual branches
    // times residual_multiplier, embeddings times embedding_multiplier, logits / logits_scaling.
    // shared_mlp: input_linear [2 I, H] (gate rows, then up: chunk(2)), output_linear [H, I].
    FamilySpec granite_hybrid = llama;
    granite_hybrid.architecture = "GraniteMoeHybridForCausalLM";
    granite_hybrid.attention_class = "GraniteMoeHybridAttention";
    granite_hybrid.model_type = "granitemoehybrid";
    granite_hybrid.hybrid_mamba = true;
    granite_hybrid.granite_multipliers = true;
    granite_hybrid.mlp = MlpKind::kMoe;
    granite_hybrid.moe_kind = MoeKind::kGranite;
    granite_hybrid.moe_plus_dense_mlp = true;
    granite_hybrid.mlp_names.module = "shared_mlp";
    granite_hybrid.mlp_names.gate_up = "input_linear";
    granite_hybrid.mlp_names.down = "output_linear";
    granite_hybrid.experts.block = "block_sparse_moe";
    granite_hybrid.experts.router = "router.layer";
    granite_hybrid.experts.fused_block = "block_sparse_moe";
    granite_hybrid.experts.fused_router = "router.layer";
    // The fused experts are ParallelExperts modules whose 3-D parameter is named weight.
    granite_hybrid.experts.fused_gate_up = "input_linear.weight";
    granite_hybrid.experts.fused_down = "output_linear.weight";
    granite_hybrid.mamba.module = "mamba";

    // SmolLM3 (modeling_smollm3.py): Llama's layer, with RoPE skipped on the layers no_rope_layers
    // marks 0 (every 4th by default); a sliding window only on layer_types' sliding layers.
    FamilySpec smollm3 = llama;
    smollm3.architecture = "SmolLM3ForCausalLM";
    smollm3.attention_class = "SmolLM3Attention";
    smollm3.model_type = "smollm3";
    smollm3.nope_layers = true;
    smollm3.default_rope_theta = 2000000.0;  // SmolLM3Config.default_theta
    smollm3.tie_word_embeddings_default = true;
    smollm3.sliding = SlidingRule::kNoRopeLayers;

    // OLMo 3 (modeling_olmo3.py): post-norms only (post_attention_layernorm on the attention output,
    // post_feedforward_layernorm on the MLP output, no input norm), q/k RMSNorm over the whole
    // projection, sliding and full layers by layer_types, each type with its own RoPE.
    FamilySpec olmo3 = llama;
    olmo3.architecture = "Olmo3ForCausalLM";
    olmo3.attention_class = "Olmo3Attention";
    olmo3.model_type = "olmo3";
    olmo3.qk_norm = true;
    olmo3.qk_norm_whole = true;
    olmo3.norms.input = "";
    olmo3.norms.attn_out = "post_attention_layernorm";
    olmo3.norms.mlp = "";
    olmo3.norms.mlp_out = "post_feedforward_layernorm";
    olmo3.default_rope_theta = 500000.0;  // Olmo3Config.default_theta
    olmo3.default_rms_norm_eps = 1e-5;
    olmo3.rope_per_layer_type = true;
    olmo3.default_sliding_window = 4096;
    olmo3.sliding = SlidingRule::kEveryFourthFull;

    // GLM-4.5 / 4.6 (modeling_glm4_moe.py): q/k/v biases by attention_bias (o_proj none), per-head q/k
    // norms when use_qk_norm, partial rotate-half RoPE (partial_rotary_factor, default 0.5), dense
    // Glm4MoeMLP layers below first_k_dense_replace, then Glm4MoeMoE: a sigmoid router with grouped
    // top-k and a score-correction bias (MoeKind::kSigmoidGrouped), SwiGLU experts (saved per expert,
    // mlp.experts.{e}.*, as Qwen2-MoE's conversion mapping writes them; the fused 3-D layout is read
    // too) and an ungated shared expert mlp.shared_experts.
    FamilySpec glm4_moe = llama;
    glm4_moe.architecture = "Glm4MoeForCausalLM";
    glm4_moe.attention_class = "Glm4MoeAttention";
    glm4_moe.model_type = "glm4_moe";
    glm4_moe.o_bias_follows_attention_bias = false;
    glm4_moe.qk_norm_flag = "use_qk_norm";
    glm4_moe.partial_rotary = true;
    glm4_moe.default_partial_rotary_factor = 0.5;
    glm4_moe.default_rms_norm_eps = 1e-5;
    glm4_moe.mlp = MlpKind::kMoe;
    glm4_moe.moe_kind = MoeKind::kSigmoidGrouped;
    glm4_moe.moe_shared_expert = true;
    glm4_moe.experts.shared_expert = "shared_experts";
    glm4_moe.experts.shared_expert_gate = "";
    glm4_moe.experts.correction_bias = "gate.e_score_correction_bias";  // on the router (Glm4MoeTopkRouter)

    // MiniMax-M2 (modeling_minimax_m2.py): q/k RMSNorm over the whole projection (as OLMo 3), partial
    // rotate-half RoPE (rope_parameters' partial_rotary_factor, default 1.0), every layer a sparse MoE:
    // MiniMaxM2TopKRouter's sigmoid scores, choice on scores + the block's e_score_correction_bias,
    // top-k always renormalised (MoeKind::kSigmoidGrouped with one group, scale 1), SwiGLU experts of
    // width intermediate_size stored as Mixtral's (block_sparse_moe.experts.{e}.w1/w3/w2 as the hub and
    // transformers 5.17's save_pretrained write them; mlp.experts.* fused).
    FamilySpec minimax_m2 = llama;
    minimax_m2.architecture = "MiniMaxM2ForCausalLM";
    minimax_m2.attention_class = "MiniMaxM2Attention";
    minimax_m2.model_type = "minimax_m2";
    minimax_m2.qk_norm = true;
    minimax_m2.qk_norm_whole = true;
    minimax_m2.partial_rotary = true;
    minimax_m2.default_rope_theta = 5000000.0;  // MiniMaxM2Config.default_theta
    minimax_m2.mlp = MlpKind::kMoe;
    minimax_m2.moe_kind = MoeKind::kSigmoidGrouped;
    minimax_m2.experts.block = "block_sparse_moe";
    minimax_m2.experts.gate = "w1";
    minimax_m2.experts.up = "w3";
    minimax_m2.experts.down = "w2";
    minimax_m2.experts.correction_bias = "e_score_correction_bias";  // on the block (MiniMaxM2SparseMoeBlock)
    // Llama 4 text (modeling_llama4.py, Llama4ForCausalLM): Llama's layer with interleaved RoPE, the
    // weightless L2 q/k norm and chunked attention on RoPE layers, NoPE layers every
    // no_rope_layer_interval-th (temperature-tuned queries, global attention), and feed_forward:
    // dense (intermediate_size_mlp) or Llama4TextMoe on moe_layers (top-k sigmoid router on the
    // expert inputs, fused input-major experts, an ungated shared_expert of width intermediate_size).
    FamilySpec llama4 = llama;
    llama4.architecture = "Llama4ForCausalLM";
    llama4.attention_class = "Llama4TextAttention";
    llama4.model_type = "llama4_text";
    llama4.llama4_attention = true;
    llama4.nope_layers = true;
    llama4.default_rope_theta = 500000.0;  // Llama4TextConfig.default_theta
    llama4.default_rms_norm_eps = 1e-5;
    llama4.mlp = MlpKind::kMoe;
    llama4.moe_kind = MoeKind::kLlama4;
    llama4.moe_shared_expert = true;
    llama4.mlp_names.module = "feed_forward";
    llama4.experts.block = llama4.experts.fused_block = "feed_forward";
    llama4.experts.router = llama4.experts.fused_router = "router";
    llama4.experts.shared_expert = "shared_expert";
    llama4.experts.shared_expert_gate = "";

    // transformers 5.17's save_pretrained writes language_model.model.* and the head at
    // language_model.lm_head (vLLM 0.34's mllama4.py loads both names as they are).
    FamilySpec llama4_mm = inside_wrapper(llama4, "Llama4ForConditionalGeneration", "llama4", "language_model.model.");
    llama4_mm.lm_head = "language_model.lm_head";

    // Gemma 4 text (modeling_gemma4.py, Gemma4ForCausalLM): Gemma 3's sandwich norms, GELU-tanh and
    // scaled embeddings with plain-w norms (Gemma4RMSNorm), per-head q/k norms, a weightless
    // v_norm, per-layer head_dim / KV heads, k_eq_v full layers and the layer_scalar
    // (FamilySpec::gemma4_attention); sliding layers by layer_types (default: every 6th full).
    FamilySpec gemma4 = gemma3;
    gemma4.architecture = "Gemma4ForCausalLM";
    gemma4.attention_class = "Gemma4TextAttention";
    gemma4.model_type = "gemma4_text";
    gemma4.norm = NormKind::kRms;
    gemma4.gemma4_attention = true;
    // enable_moe_block layers: the dense MLP plus Gemma4TextRouter / Gemma4TextExperts, fused only
    // (experts.gate_up_proj [E, 2 I, H], experts.down_proj [E, H, I]), the router at router.proj.
    gemma4.experts.fused_block = "experts";
    gemma4.experts.fused_gate_up = "gate_up_proj";
    gemma4.experts.fused_down = "down_proj";
    gemma4.experts.router_path = "router.proj";
    gemma4.norms.dense_out_moe = "post_feedforward_layernorm_1";
    gemma4.norms.experts_in = "pre_feedforward_layernorm_2";
    gemma4.norms.experts_out = "post_feedforward_layernorm_2";

    // transformers 5.17's save_pretrained writes model.language_model.*; the vision / audio towers
    // (model.vision_tower.*, model.embed_vision.*, ...) are copied unchanged.
    const FamilySpec gemma4_mm = inside_wrapper(gemma4, "Gemma4ForConditionalGeneration", "gemma4", "model.language_model.");
    return std::array<FamilySpec, 25>{llama,   mistral, qwen2,      qwen3,       gemma3,         gemma3_mm,
                                      phi3,    qwen3_moe, mixtral, gpt_oss,  qwen3_5,        qwen3_5_mm,
                                      qwen3_5_moe, qwen3_5_moe_mm, qwen3_next, nemotron_h, granite_hybrid,
                                      smollm3, olmo3, glm4_moe, minimax_m2, llama4,  llama4_mm, gemma4, gemma4_mm};
  }();
  return table;
}

}  // namespace

const FamilySpec* find_family(std::string_view architecture) {
  for (const auto& f : families())
    if (f.architecture == architecture) return &f;
  return nullptr;
}

const FamilySpec* find_family_by_model_type(std::string_view model_type) {
  for (const auto& f : families())
    if (f.model_type == model_type) return &f;
  return nullptr;
}

std::string supported_architectures() {
  std::string s;
  for (const auto& f : families()) {
    if (!s.empty()) s += ", ";
    s += f.architecture;
  }
  return s;
}

std::vector<std::string> attention_class_names() {
  std::vector<std::string> names;
  for (const auto& f : families())
    if (names.empty() || names.back() != f.attention_class) names.emplace_back(f.attention_class);
  return names;
}

}  // namespace ctcal
