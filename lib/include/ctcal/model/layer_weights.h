#pragma once
// One decoder layer's weights, converted to fp32 from the checkpoint's mmap when the layer is
// reached and dropped after it, so resident memory holds one layer at a time.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ctcal/io/checkpoint.h"
#include "ctcal/model/model_config.h"
#include "ctcal/model/onednn_matmul.h"
#include "ctcal/model/tensor_types.h"

namespace ctcal {

struct Linear {
  RowMatrix w;  // [out_features, in_features], as stored by PyTorch (empty in bf16 compute mode)
  Vector b;     // [out_features], size 0 when the layer has no bias
  // [out_features, in_features] in bf16, packed for oneDNN (bf16 compute mode only; null otherwise)
  std::shared_ptr<const PackedBf16Weights> w_bf16;
  // [out_features, in_features] bf16 bits, row-major: the CUDA backend's form (empty otherwise).
  std::vector<uint16_t> w_bf16_rows;
  // The same rows read in place from a bf16 checkpoint's mmap instead (valid until the layer's
  // pages are released); empty otherwise. rows() gives whichever is set.
  std::span<const uint16_t> w_bf16_view;
  std::span<const uint16_t> bf16_rows() const { return w_bf16_view.empty() ? std::span<const uint16_t>(w_bf16_rows) : w_bf16_view; }
  int64_t out_features() const { return w_bf16 ? w_bf16->out() : w.rows(); }
};

// A sparse MoE MLP (Qwen3-MoE, Mixtral, gpt-oss): the router and every expert's SwiGLU projections.
struct ExpertWeights {
  Linear router;                       // [num_experts, hidden] (+ [num_experts] bias: gpt-oss); always fp32 (routing decisions)
  std::vector<Linear> gate, up, down;  // [num_experts] x gate/up: [moe_intermediate, hidden], down: [hidden, moe_intermediate]
                                       // (biases: gpt-oss only)
  // Qwen3-Next / Qwen3.5-MoE: shared_expert_gate [1, hidden], always fp32 (a gating decision); the
  // shared expert itself is LayerWeights::gate/up/down. Empty for other families.
  Linear shared_gate;
  Vector correction_bias;  // [num_experts] e_score_correction_bias (MoeKind::kSigmoidGrouped), else empty
  // Gemma 4 (Gemma4TextRouter): router input = rms_norm(x) * router_scale * hidden^-0.5, and each
  // chosen expert's weight times per_expert_scale[e]; empty elsewhere.
  Vector router_scale;      // [hidden]
  Vector per_expert_scale;  // [num_experts]
};

struct GatedDeltaNetWeights;  // model/gated_deltanet.h (which includes this header for Linear)
struct Mamba2Weights;         // model/mamba2.h (likewise)

// Gemma 4's per-layer input embeddings of one layer (model/per_layer_input.h), all fp32 (never
// quantized: ctcal keeps these Linears unquantized). P = hidden_size_per_layer_input.
struct PerLayerInputWeights {
  Linear model_proj;  // [P, hidden]: rows [layer P, (layer + 1) P) of per_layer_model_projection
  Vector proj_norm;   // [P] per_layer_projection_norm (shared by every layer)
  Linear gate;        // [P, hidden] per_layer_input_gate
  Linear proj;        // [hidden, P] per_layer_projection
  Vector post_norm;   // [hidden] post_per_layer_input_norm
};

// Norm weights are stored as the factor the norm multiplies by: w, or 1 + w (in fp32, as
// transformers computes it) for NormKind::kRmsOnePlus, so the layer applies every norm alike.
struct LayerWeights {
  Vector input_norm;          // [hidden] input_layernorm, before attention; empty: none (OLMo 3)
  Linear q, k, v, o;          // q: [q_dim, hidden], k/v: [kv_dim, hidden], o: [hidden, q_dim]
  Vector q_norm, k_norm;      // [head_dim] per-head norms before RoPE (qk_norm families; [q_dim] / [kv_dim] for qk_norm_whole), else empty
  Vector sinks;               // [heads] attention sink logits (gpt-oss), else empty
  Vector attn_out_norm;       // [hidden] on the attention output before the residual (Gemma 3), else empty
  Vector mlp_norm;            // [hidden] before the MLP (post_attention_layernorm; Gemma 3: pre_feedforward_layernorm)
  // dense MLP: gate/up: [intermediate, hidden], down: [hidden, intermediate]; on a MoE layer with
  // a shared expert (FamilySpec::moe_shared_expert) that expert, of width shared_expert_intermediate_size
  Linear gate, up, down;
  ExpertWeights experts;      // MoE layers (ModelConfig::is_moe) instead of gate/up/down
  Vector mlp_out_norm;        // [hidden] on the MLP output before the residual (Gemma 3), else empty
  // A linear-attention layer's mixer instead of q/k/v/o (ModelConfig::is_linear_attention; null
  // otherwise). Shared, not copied, when a LayerWeights is copied (nothing edits it).
  std::shared_ptr<GatedDeltaNetWeights> linear_attn;
  // A Mamba2 layer's mixer instead of q/k/v/o (ModelConfig::is_mamba; null otherwise), shared likewise.
  std::shared_ptr<Mamba2Weights> mamba;
  // Gemma 4's MoE layers (NormNames::dense_out_moe, experts_in, experts_out), else empty.
  Vector dense_out_moe_norm, experts_in_norm, experts_out_norm;  // [hidden] each
  // Gemma 4's per-layer input (FamilySpec::gemma4_attention with hidden_size_per_layer_input > 0),
  // after the MLP block; has_ple false elsewhere and when the MLP is skipped.
  PerLayerInputWeights ple;
  bool has_ple = false;
  // Gemma 4: the layer's output times its saved layer_scalar [1] (Gemma4TextDecoderLayer); 1 elsewhere.
  float layer_scalar = 1.0f;
  // false when calibration skips the last layer's MLP, or the layer has none (Nemotron-H's mixer blocks)
  bool has_mlp = false;
};

// Loads layer `layer`; `with_mlp` false skips the MLP tensors. Throws InputError naming the
// tensor on a missing tensor or wrong shape.
LayerWeights load_layer_weights(const Checkpoint& ckpt, const ModelConfig& cfg, int64_t layer,
                                bool with_mlp);
// The same into an existing LayerWeights (the previous layer's), reusing its fp32 buffers: the
// calibration loop's way, so that each layer's weights are not page-faulted in afresh.
void reload_layer_weights(const Checkpoint& ckpt, const ModelConfig& cfg, int64_t layer, bool with_mlp,
                          LayerWeights* w);
// The same with the projections in bf16 (for --compute-dtype bf16): bf16 checkpoint tensors are
// copied bit for bit, others rounded to nearest even; no fp32 copy is made.
LayerWeights load_layer_weights_bf16(const Checkpoint& ckpt, const ModelConfig& cfg, int64_t layer,
                                     bool with_mlp);
// The same with the dense projections as plain bf16 rows (Linear::w_bf16_rows, for the CUDA
// backend), reusing *w's buffers; bf16 checkpoint tensors are copied bit for bit.
void reload_layer_weights_bf16_rows(const Checkpoint& ckpt, const ModelConfig& cfg, int64_t layer, bool with_mlp,
                                    LayerWeights* w);
// w [out, in] fp32 -> out [out, in] bf16 bits, round to nearest even (NaN stays NaN), rows in
// parallel: the one rounding of fp32 weights to bf16 (the CPU's bf16 mode and the GPU's loader).
void round_weights_to_bf16(const RowMatrix& w, uint16_t* out);
// One projection's fp32 weights [out, in] -> packed bf16 (round_weights_to_bf16, then
// PackedBf16Weights); the fp32 copy is dropped.
void pack_weights_bf16(Linear* l);
// Rounds each dense projection's fp32 weights (after an edit such as R2) into w_bf16_rows.
void to_bf16_rows(LayerWeights* w);
// bf16 compute mode: moves each projection's weights to packed bf16 (round to nearest even; exact
// for a bf16 checkpoint) and frees the fp32 copies.
void to_bf16_weights(LayerWeights* w);

// Releases the pages of a layer's tensors from the page cache mapping (after the layer ran).
void release_layer_pages(const Checkpoint& ckpt, const ModelConfig& cfg, int64_t layer);
// Starts reading a layer's tensors from disk in the background (the next layer's, while this one
// computes): from a cold page cache, reading 16 GB (an 8B model) would otherwise stall each layer.
void prefetch_layer_pages(const Checkpoint& ckpt, const ModelConfig& cfg, int64_t layer);

// A norm's multiplier [n]: the stored weight, or 1 + weight for the family's NormKind::kRmsOnePlus.
Vector read_norm(const Checkpoint& ckpt, const ModelConfig& cfg, const std::string& name, int64_t n);

// config.json of a checkpoint parsed (parse_model_config), with the tensor-name prefix the
// checkpoint actually uses (a family's alternative layout is detected from the embedding's name).
ModelConfig load_model_config(const Checkpoint& ckpt);

// Reads a float tensor, checking its shape. Used for the embedding and head too.
std::vector<float> read_checked(const Checkpoint& ckpt, const std::string& name,
                                std::initializer_list<int64_t> shape);

// Checks, without reading data, that every tensor the forward pass needs exists with the right
// shape and a float dtype (called once before any work starts).
void check_model_tensors(const Checkpoint& ckpt, const ModelConfig& cfg);

}  // namespace ctcal
