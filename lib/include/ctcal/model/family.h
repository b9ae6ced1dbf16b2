#pragma once
// The decoder families ctcal runs, as a table (one entry per Hugging Face architecture, in the
// spirit of gemma.cpp's configs): what differs between them is data here, and the one decoder
// layer (model/layer.cpp) branches on it. Each entry matches transformers 5.17's
// modeling_<family>.py; see docs/architecture.md for what is observed where.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ctcal {

// How a norm applies its weight w to x_hat = x * rsqrt(mean(x^2) + eps).
enum class NormKind {
  kRms,         // x_hat * w (Llama, Mistral, Qwen2, Qwen3)
  kRmsOnePlus,  // x_hat * (1 + w) (Gemma 3: weights are stored around 0)
};

// The gated MLP's activation: down(act(gate(x)) * up(x)).
enum class MlpAct {
  kSilu,      // SwiGLU
  kGeluTanh,  // gelu_pytorch_tanh (Gemma 3's hidden_activation)
  // gpt-oss experts: gate = min(gate, limit), up = clamp(up, -limit, limit),
  // act = (up + 1) * gate * sigmoid(1.702 gate)
  kClampedSwiglu,
  // Nemotron-H's MLP blocks (NemotronHMLP, mlp_hidden_act "relu2"): no gate, down(relu(up(x))^2)
  // (MlpNames::gate and gate_up empty)
  kRelu2,
};

// The MLP of the layers: dense, or a sparse mixture of experts (router, top-k, per-expert SwiGLU).
enum class MlpKind { kDense, kMoe };

// Which MoE a family runs: its config keys, its routing and its experts' storage (the names are
// in ExpertNames).
enum class MoeKind {
  kQwen,     // softmax over all experts, then top-k (renormalised when `norm_topk_prob`)
  kMixtral,  // the same, top-k always renormalised (FamilySpec::moe_norm_topk_always)
  // gpt-oss: router mlp.router.{weight,bias}; experts only fused, with biases: mlp.experts.gate_up_proj
  // [E, H, 2 I] (x @ W; gate/up interleaved in the columns), gate_up_proj_bias [E, 2 I],
  // down_proj [E, I, H], down_proj_bias [E, H]; or MXFP4 *_blocks/*_scales (model/gpt_oss_experts.h).
  // Routing: top-k of the biased logits, then softmax over those k; clamped SwiGLU.
  kGptOss,
  // Granite 4 hybrid (GraniteMoeSharedTopKRouter): top-k of the router's logits (no bias), then a
  // softmax over those k; SwiGLU experts stored fused as block_sparse_moe.input_linear [E, 2 I, H]
  // (gate rows, then up) and output_linear [E, H, I].
  kGranite,
  // GLM-4.5 (Glm4MoeTopkRouter; MiniMax-M2's MiniMaxM2TopKRouter is the case of one group, always
  // renormalised, scale 1): scores = sigmoid(logits) in fp32; experts are chosen on scores +
  // e_score_correction_bias (ExpertNames::correction_bias; selection only) within the `topk_group`
  // best of `n_group` groups (a group ranked by the sum of its top 2); their weights are the
  // unbiased scores, / (sum + 1e-20) when `norm_topk_prob`, times `routed_scaling_factor`.
  kSigmoidGrouped,
  // Llama 4 (Llama4Router, Llama4TextMoe): the top num_experts_per_tok router logits, each expert's
  // weight sigmoid(logit) in fp32, applied to the expert's INPUT (routed_in = x * score) and the
  // outputs summed unweighted; SwiGLU experts stored fused only, input-major: feed_forward.experts.
  // gate_up_proj [E, H, 2 I] (x @ W; gate columns, then up) and down_proj [E, I, H] (model/llama4_experts.h).
  kLlama4,
};

// Which layers use the sliding window when config.json has no `layer_types` list.
enum class SlidingRule {
  kNone,            // never (Llama)
  kAllLayers,       // every layer, when `sliding_window` is set (Mistral, Mixtral, Phi-3)
  kQwenAllLayers,   // every layer, when `use_sliding_window` (Qwen3-MoE)
  kQwenMaxWindow,   // `use_sliding_window` and layer >= `max_window_layers` (Qwen2, Qwen3)
  kGemmaPattern,    // every `sliding_window_pattern`-th layer is global (Gemma 3 classic configs)
  kAlternate,       // even layers slide, odd ones are global (gpt-oss's default `layer_types`)
  // SmolLM3Config.__post_init__: a layer slides when `use_sliding_window`, `sliding_window` is set
  // and the layer has no RoPE (no_rope_layers[i] == 0)
  kNoRopeLayers,
  kEveryFourthFull,  // every 4th layer is global, the others slide (Olmo3Config's default `layer_types`)
};

// Module names, relative to a layer's prefix "<weight_prefix>layers.{i}.", as transformers 5.17's
// save_pretrained writes them (and hub checkpoints hold them). Defaults: Llama's.
struct AttentionNames {
  std::string_view module = "self_attn";  // the attention module: its scales and R3 matrices live here
  // The projections [q_dim | kv_dim | kv_dim, hidden] as three Linears, or fused into one
  // [q_dim + 2 kv_dim, hidden] Linear with rows q, k, v (`qkv` non-empty: Phi3Attention's qkv_proj).
  std::string_view q = "q_proj", k = "k_proj", v = "v_proj", qkv;
  std::string_view o = "o_proj";
  std::string_view q_norm = "q_norm", k_norm = "k_norm";  // FamilySpec::qk_norm families
  std::string_view sinks = "sinks";  // a bare [heads] parameter (FamilySpec::attention_sinks)
};

struct MlpNames {  // the dense gated MLP
  std::string_view module = "mlp";
  // gate/up [intermediate, hidden] as two Linears, or one [2 intermediate, hidden] with the gate rows
  // first (`gate_up` non-empty: Phi3MLP's gate_up_proj).
  std::string_view gate = "gate_proj", up = "up_proj", gate_up;
  std::string_view down = "down_proj";
};

// A sparse MoE block in its two layouts. Hub checkpoints: "<block>.<router>" [E, hidden] and
// "<block>.experts.{e}.<gate|up|down>" per expert. transformers 5 (in memory, and what its
// save_pretrained writes): "<fused_block>.<fused_router>", "<fused_block>.experts.gate_up_proj"
// [E, 2 I, hidden] and "<fused_block>.experts.down_proj" [E, hidden, I], bare parameters.
struct ExpertNames {
  std::string_view block = "mlp", router = "gate", experts = "experts";
  std::string_view gate = "gate_proj", up = "up_proj", down = "down_proj";
  std::string_view fused_block = "mlp", fused_router = "gate";
  std::string_view fused_gate_up = "experts.gate_up_proj", fused_down = "experts.down_proj";
  bool router_bias = false;  // the router has a bias [E] (gpt-oss's GptOssTopKRouter)
  // FamilySpec::moe_shared_expert: "<block>.<shared_expert>.{gate,up,down}_proj" (a SwiGLU MLP of
  // width shared_expert_intermediate_size, the MlpNames' projection names) and its gate
  // "<block>.<shared_expert_gate>" [1, hidden], in both layouts (Qwen3NextSparseMoeBlock).
  std::string_view shared_expert = "shared_expert", shared_expert_gate = "shared_expert_gate";
  // An empty shared_expert_gate: the shared expert's output is added as is (Glm4MoeMoE's shared_experts).
  bool shared_expert_gated() const { return !shared_expert_gate.empty(); }
  // "<block>.<correction_bias>" [E] (the fused layout: "<fused_block>.<correction_bias>"), fp32: added
  // to the scores for the choice only (MoeKind::kSigmoidGrouped). GLM-4.5 keeps it on the router
  // ("gate.e_score_correction_bias"), MiniMax-M2 on the block ("e_score_correction_bias"); empty: none.
  std::string_view correction_bias;
  // The router's Linear relative to the layer when it is not "<block>.<router>" (Gemma 4:
  // "router.proj", beside its "router.scale" [hidden] and "router.per_expert_scale" [E]).
  std::string_view router_path;
};

// A gated DeltaNet linear-attention mixer (Qwen3.5's Qwen3_5GatedDeltaNet, model/gated_deltanet.h):
// the module and its tensors, relative to the layer prefix.
struct LinearAttentionNames {
  std::string_view module = "linear_attn";
  // Linears: in_proj_qkv [2 key_dim + value_dim, hidden], in_proj_z [value_dim, hidden],
  // in_proj_b / in_proj_a [num_v_heads, hidden], out_proj [hidden, value_dim] (no biases).
  std::string_view in_proj_qkv = "in_proj_qkv", in_proj_z = "in_proj_z", in_proj_b = "in_proj_b",
                   in_proj_a = "in_proj_a", out_proj = "out_proj";
  // Parameters: conv1d.weight [conv_dim, 1, kernel], dt_bias / A_log [num_v_heads], norm.weight [head_v_dim].
  std::string_view conv1d = "conv1d", dt_bias = "dt_bias", a_log = "A_log", norm = "norm";
  // Qwen3-Next (Qwen3NextGatedDeltaNet) stores the four in-projections fused, interleaved per key
  // head: in_proj_qkvz [2 key_dim + 2 value_dim, hidden] and in_proj_ba [2 num_v_heads, hidden]
  // (model/gated_deltanet.h, qwen3_next_in_proj_rows). Non-empty: this layout instead of the four.
  std::string_view in_proj_qkvz, in_proj_ba;
  bool fused() const { return !in_proj_qkvz.empty(); }
};

// A Mamba2 mixer (model/mamba2.h): Nemotron-H's NemotronHMamba2Mixer ("mixer"), Granite 4's
// GraniteMoeHybridMambaLayer ("mamba"); relative to the layer prefix.
struct Mamba2Names {
  std::string_view module = "mamba";
  // Linears: in_proj [2 I + 2 G N + H, hidden], out_proj [hidden, I] (biases by the config).
  std::string_view in_proj = "in_proj", out_proj = "out_proj";
  // Parameters: conv1d.weight [conv_dim, 1, K] (+ conv1d.bias), dt_bias / A_log / D [H], norm.weight [I].
  std::string_view conv1d = "conv1d", dt_bias = "dt_bias", a_log = "A_log", d = "D", norm = "norm";
};

// The layer's norms [hidden]; an empty name: the family has none there.
struct NormNames {
  // Empty input and mlp: the block reads the residual stream as is (Olmo3DecoderLayer has post-norms only).
  std::string_view input = "input_layernorm";           // before attention
  std::string_view attn_out;                            // on the attention output (Gemma 3: post_attention_layernorm)
  std::string_view mlp = "post_attention_layernorm";    // before the MLP (Gemma 3: pre_feedforward_layernorm)
  std::string_view mlp_out;                             // on the MLP output (Gemma 3: post_feedforward_layernorm)
  // Gemma 4's MoE layers (enable_moe_block): the dense MLP's output norm (post_feedforward_layernorm_1),
  // the experts' input norm (pre_feedforward_layernorm_2) and output norm (post_feedforward_layernorm_2).
  std::string_view dense_out_moe, experts_in, experts_out;
};

struct FamilySpec {
  std::string_view architecture;     // the `architectures[0]` of config.json
  std::string_view attention_class;  // the attention module's class (a config group's target)
  std::string_view model_type;       // config.json `model_type` (used when `architectures` is absent)
  NormKind norm = NormKind::kRms;
  MlpAct act = MlpAct::kSilu;
  bool qkv_bias_always = false;  // q/k/v_proj have biases whatever `attention_bias` says (Qwen2)
  bool o_bias_follows_attention_bias = true;  // o_proj bias = `attention_bias` (not for Qwen2)
  bool attention_bias_default = false;  // `attention_bias` when config.json omits it (gpt-oss: true)
  // A learned logit per query head (self_attn.sinks [heads]) joins each softmax's denominator and
  // is dropped afterwards (gpt-oss): rows may attend to "nothing".
  bool attention_sinks = false;
  double default_rope_theta = 10000.0;  // the config class's default_theta (gpt-oss: 150000)
  double default_rms_norm_eps = 1e-6;   // the config class's rms_norm_eps default (gpt-oss: 1e-5)
  bool qk_norm = false;          // per-head q_norm / k_norm over head_dim, before RoPE
  // A config.json flag that turns the per-head q/k norms on (GLM-4.5: `use_qk_norm`, default false);
  // ModelConfig::qk_norm holds the outcome.
  std::string_view qk_norm_flag;
  // With qk_norm: q_norm / k_norm are one RMSNorm over the whole projection [heads * head_dim]
  // (weights [q_dim] / [kv_dim]), not per head (Olmo3Attention: q_norm(q_proj(x)) before the view).
  bool qk_norm_whole = false;
  // Layers without RoPE by config.json's `no_rope_layers` (1 = RoPE, 0 = none), else every
  // `no_rope_layer_interval`-th layer (default 4) has none (SmolLM3Config.__post_init__,
  // SmolLM3Attention.use_rope).
  bool nope_layers = false;
  // Llama 4's attention (Llama4TextAttention): RoPE on interleaved pairs (2i, 2i+1) (apply_rotary_emb's
  // complex view); ctcal permutes each q/k head to [even dims | odd dims] right after the projection,
  // as vLLM 0.34's permute_qk_weight_for_rotary permutes the weights, so RoPE is the rotate-half one
  // and Q/K are observed in the order vLLM caches them. RoPE layers then apply the weightless L2 norm
  // (use_qk_norm) and chunked local attention (attention_chunk_size); NoPE layers (no_rope_layers)
  // attend globally with the query temperature-tuned (attn_temperature_tuning).
  bool llama4_attention = false;
  // Gemma 4's attention (Gemma4TextAttention): head_dim and num_key_value_heads per layer from
  // config.json's `per_layer_config` (or `global_head_dim` / `num_global_key_value_heads` on the
  // full layers, as Gemma4TextConfig.__post_init__ builds it), softmax scale 1.0, a weightless
  // RMSNorm over each V head (v_norm) before the cache, and `attention_k_eq_v` full layers with no
  // v_proj (V = v_norm(k_proj x), K = rope(k_norm(k_proj x))). RoPE per layer type
  // ("proportional" on the full layers). The layer's output is multiplied by its saved
  // `layer_scalar` [1] (Gemma4TextDecoderLayer).
  bool gemma4_attention = false;
  bool tie_word_embeddings_default = false;  // `tie_word_embeddings` when config.json omits it (SmolLM3: true)
  // RoPE per layer type: rope_parameters = {"full_attention": {...}, "sliding_attention": {...}}, or
  // the classic rope_theta (both types) + rope_scaling (full_attention only): Olmo3Config.
  bool rope_per_layer_type = false;
  int64_t default_sliding_window = 0;  // `sliding_window` when config.json omits it (Olmo3Config: 4096); 0: none
  bool embed_scale = false;      // embeddings * sqrt(hidden_size) (Gemma 3)
  bool text_config = false;      // hyper-parameters under `text_config` (multimodal wrappers)
  bool partial_rotary = false;   // `partial_rotary_factor`: RoPE on the first part of each head (Phi-3)
  // The config's `partial_rotary_factor` when it has none (Qwen3_5TextConfig's __post_init__: 0.25).
  double default_partial_rotary_factor = 1.0;
  // q_proj rows per head are [query (head_dim) | gate (head_dim)] and the attention output is
  // multiplied by sigmoid(gate) before o_proj (Qwen3_5Attention).
  bool attention_output_gate = false;
  // Layers are gated DeltaNet linear attention or full attention by the config's `layer_types`
  // ("linear_attention" / "full_attention"; else every `full_attention_interval`-th layer is full):
  // Qwen3_5DecoderLayer. Linear-attention layers have no KV cache, hence no scales.
  bool hybrid_linear_attention = false;
  // Layers are Mamba2 ("linear_attention" in transformers 5.17's layer types) or attention
  // ("full_attention"): Nemotron-H, Granite 4 hybrid. Mamba2 layers have no KV cache.
  bool hybrid_mamba = false;
  // Every layer is ONE block, pre-norm and residual (NemotronHBlock): a Mamba2 mixer, attention or
  // an MLP, by the config's block types; NormNames::input is its norm ("norm"), for MLP blocks too.
  bool one_block_per_layer = false;
  // Attention without RoPE (NemotronHAttention). Granite 4 hybrid: by `position_embedding_type`.
  bool rope = true;
  // Granite's multipliers (GraniteMoeHybridModel / DecoderLayer / ForCausalLM): embeddings *
  // embedding_multiplier, softmax scale attention_multiplier, each residual branch *
  // residual_multiplier, logits / logits_scaling.
  bool granite_multipliers = false;
  // The MoE block's output plus the dense MLP's (MlpNames) on the same input, ungated
  // (GraniteMoeHybridDecoderLayer: block_sparse_moe(x) + shared_mlp(x)).
  bool moe_plus_dense_mlp = false;
  MlpKind mlp = MlpKind::kDense;
  MoeKind moe_kind = MoeKind::kQwen;
  bool moe_norm_topk_always = false;  // Mixtral renormalises the top-k weights; Qwen: `norm_topk_prob`
  bool moe_norm_topk_default = false;  // `norm_topk_prob` when config.json omits it (Qwen3NextConfig: true)
  // Every layer's MLP is the sparse MoE block: no `decoder_sparse_step` / `mlp_only_layers`, no
  // dense `intermediate_size` (Qwen3_5MoeTextConfig deletes them; Qwen3_5MoeDecoderLayer).
  bool moe_every_layer = false;
  // The MoE block adds a shared expert gated per token: out = experts(x) + sigmoid(shared_expert_gate(x))
  // * shared_expert(x) (Qwen3NextSparseMoeBlock, Qwen3_5MoeSparseMoeBlock; names in ExpertNames).
  bool moe_shared_expert = false;
  // Before "layers.{i}.", "embed_tokens" and "norm" in tensor names, as save_pretrained writes
  // them; `alt_weight_prefix` is the other layout hub checkpoints of the family use (empty: none).
  std::string_view weight_prefix = "model.";
  std::string_view alt_weight_prefix;
  // The layer's module names: the one place they are written (model/linear_modules.h enumerates
  // a layer's Linear modules from them for the loader, the plan, the writer and eval).
  AttentionNames attention;
  MlpNames mlp_names;
  ExpertNames experts;  // MlpKind::kMoe families
  NormNames norms;
  LinearAttentionNames linear_attention;  // hybrid_linear_attention families
  Mamba2Names mamba;                      // hybrid_mamba families
  // The embedding and the final norm under the weight prefix ("embed_tokens", "norm"; Nemotron-H:
  // "embeddings", "norm_f").
  std::string_view embed_tokens = "embed_tokens", final_norm = "norm";
  // The output head's module, outside the weight prefix (Llama 4's multimodal checkpoint, as
  // transformers 5.17 saves it: "language_model.lm_head").
  std::string_view lm_head = "lm_head";
  SlidingRule sliding = SlidingRule::kNone;
};

// The family of an architecture name, or null when ctcal does not run it.
const FamilySpec* find_family(std::string_view architecture);
// The family of a config.json `model_type` (for configs without `architectures`), or null.
const FamilySpec* find_family_by_model_type(std::string_view model_type);
// "LlamaForCausalLM, MistralForCausalLM, ..." for error messages and the docs.
std::string supported_architectures();
// Every family's attention class name (recipes may target any of them; the plan checks the
// model's own).
std::vector<std::string> attention_class_names();

}  // namespace ctcal
