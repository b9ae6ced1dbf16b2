#pragma once
// A decoder layer's Linear modules, enumerated once from the family table's names (model/family.h)
// and the config: the loader reads them, the plan resolves FP8 config groups against them, the
// writer and eval find their tensors by them. A layer is a list of blocks and each block kind
// has its own modules, so a family whose layers differ (a hybrid with linear-attention or Mamba
// mixers) gives those layers other blocks, named in its table entry, without touching the callers.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ctcal/io/checkpoint.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/model_config.h"
#include "ctcal/model/observation.h"

namespace ctcal {

// The blocks of a decoder layer, in forward order.
enum class LayerBlock {
  kAttention,  // self-attention: q/k/v (or fused qkv) and o (AttentionNames)
  kDenseMlp,   // the gated MLP: gate/up (or fused gate_up) and down (MlpNames)
  kMoe,        // a router and per-expert gate/up/down (ExpertNames), and a gated shared expert (Qwen3-Next)
  // A gated DeltaNet mixer instead of attention (hybrids' linear-attention layers):
  // in_proj_qkv, in_proj_z, in_proj_b, in_proj_a, out_proj (LinearAttentionNames)
  kLinearAttention,
  kMamba2,  // a Mamba2 mixer instead of attention (Nemotron-H, Granite 4 hybrid): in_proj, out_proj (Mamba2Names)
  kPerLayerInput,  // Gemma 4's per-layer input after the MLP: per_layer_input_gate, per_layer_projection
};

// Layer `layer`'s blocks: attention (or a linear-attention or Mamba2 mixer), then its dense or MoE MLP (none when !with_mlp: calibration
// skips the last layer's MLP unless an MLP input is observed). Nemotron-H's layers have one block,
// a mixer or an MLP; Granite 4 hybrid's MoE layers add the dense shared_mlp after the MoE block.
std::vector<LayerBlock> layer_blocks(const ModelConfig& c, int64_t layer, bool with_mlp = true);

enum class LinearKind {
  kAttention,  // a projection of the attention block
  kMlp,        // a projection of the dense MLP
  kExpert,     // one expert's projection in a MoE block
  // a MoE block's router, or its shared expert's gate (ctcal never quantizes them: routing and
  // gating decisions; vLLM builds both without a quant config)
  kRouter,
  // a projection of a linear-attention mixer: never quantized (vLLM's Qwen3.5 / Qwen3-Next FP8
  // checkpoints keep linear_attn unquantized; see plan.cpp)
  kLinearAttention,
  // a Mamba2 mixer's in_proj / out_proj: FP8 like any Linear, inputs at kMambaInProjInput /
  // kMambaOutProjInput (plan.cpp refuses an ignore entry vLLM's `mixer` name would not match)
  kMamba,
  // Gemma 4's per-layer-input gate / projection (per_layer_input_gate, per_layer_projection): kept
  // unquantized (plan.cpp refuses a group that would quantize them unless they are ignored)
  kPerLayerInput,
};

// What a Linear computes: which LayerWeights projection(s) its rows fill (linear_parts).
enum class LinearRole {
  kQ, kK, kV, kQkv, kO, kGate, kUp, kGateUp, kDown, kRouter,
  kInProjQkv, kInProjZ, kInProjB, kInProjA, kOutProj,  // GatedDeltaNetWeights' Linears
  // Qwen3-Next's fused in-projections, rows interleaved per key head: no projection holds them as
  // a block, so linear_parts gives none; the loader splits them (split_qwen3_next_in_proj).
  kInProjQkvz, kInProjBa,
  kSharedExpertGate,  // shared_expert_gate [1, hidden] (ExpertWeights::shared_gate)
  kMambaInProj, kMambaOutProj,  // Mamba2Weights' Linears
  kPerLayerGate, kPerLayerProjection,  // PerLayerInputWeights' gate / proj (Gemma 4)
};

// How a MoE layer's experts are stored.
enum class ExpertLayout {
  kPerExpert,  // hub checkpoints: a Linear per expert and projection (compressed-tensors' modules)
  kFused,      // transformers 5: one bare 3-D tensor per projection, every expert's rows in it
};

struct LinearModule {
  // The module's path, "model.layers.0.self_attn.q_proj"; fused experts: their 3-D tensor's name.
  std::string name;
  LinearKind kind = LinearKind::kAttention;
  LinearRole role = LinearRole::kQ;
  std::optional<Site> input_site;  // the hook point showing its input (none for the router and linear attention)
  int64_t out = 0, in = 0;         // its weight [out, in] (a fused one: all its parts' rows)
  bool bias = false;               // "<name>.bias" [out]
  int64_t expert = -1;             // kExpert: which expert
  // Rows of each LayerWeights projection it fills, in stored order: {q_dim, kv_dim, kv_dim} for a
  // fused qkv, {intermediate, intermediate} for a fused gate_up, {out} otherwise.
  std::vector<int64_t> parts;
  // ExpertLayout::kFused: the weight is rows [row0, row0 + out) of `name`, a bare tensor of shape
  // tensor_shape ([num_experts, rows per expert, in]); empty for a module with "<name>.weight".
  std::vector<int64_t> tensor_shape;
  int64_t row0 = 0;
  std::string weight_tensor() const { return tensor_shape.empty() ? name + ".weight" : name; }
};

// The Linear modules of layer `layer`, block by block in forward order (within a MoE block: the
// router, then expert by expert gate, up, down, then the shared expert's gate, up, down and its
// gate shared_expert_gate, where the family has one). The shared expert's gate/up/down are kMlp
// modules (roles kGate/kUp/kDown: LayerWeights::gate/up/down) reading the MoE block's input
// (kGateUpInput) and their act(gate) * up (kDownInput). gpt-oss's fused experts are no row slices
// (model/gpt_oss_experts.h reads them): in ExpertLayout::kFused its MoE block lists the router only.
std::vector<LinearModule> linear_modules(const ModelConfig& c, int64_t layer, bool with_mlp = true,
                                         ExpertLayout experts = ExpertLayout::kPerExpert);

// The layout of layer `layer`'s experts in `ckpt` (kPerExpert for a dense layer): fused when the
// family's fused gate_up tensor is there; gpt-oss's always (MoeKind::kGptOss).
ExpertLayout expert_layout(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer);

// The projections of `w` that a module with `role` fills, in its stored row order ([q, k, v] for
// kQkv, [gate, up] for kGateUp); `expert` >= 0 picks that expert's gate/up/down (sized already).
std::vector<Linear*> linear_parts(LayerWeights* w, LinearRole role, int64_t expert = -1);

}  // namespace ctcal
