#pragma once
// The experts of a gpt-oss MoE layer (MoeKind::kGptOss), in either layout a checkpoint holds:
//   - as transformers 5.17 saves GptOssExperts (bf16 / fp32): mlp.experts.gate_up_proj
//     [E, H, 2 I] (used as x @ W; gate and up interleaved: columns 0::2 gate, 1::2 up),
//     gate_up_proj_bias [E, 2 I], down_proj [E, I, H], down_proj_bias [E, H];
//   - as the published checkpoints do (quantization_config.quant_method mxfp4):
//     mlp.experts.gate_up_proj_blocks [E, 2 I, H / 32, 16] + _scales [E, 2 I, H / 32] (rows
//     0::2 gate, 1::2 up once dequantized: io/mxfp4.h), down_proj_blocks [E, H, I / 32, 16] +
//     _scales, and the same float biases.
// Both become per-expert Linear layers (gate/up [I, H], down [H, I], with biases), so the one MoE
// loop (model/moe.cpp) runs them; one layer is resident at a time, as for every family.
#include <string>

#include "ctcal/io/checkpoint.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/model_config.h"

namespace ctcal {

// True when layer prefix `p` ("model.layers.3.") holds MXFP4 experts.
bool gpt_oss_experts_mxfp4(const Checkpoint& ckpt, const ModelConfig& c, const std::string& p);

// Checks names, shapes and dtypes of layer `p`'s expert tensors without reading them; throws
// InputError naming the tensor and what was expected.
void check_gpt_oss_experts(const Checkpoint& ckpt, const ModelConfig& c, const std::string& p);

// Loads layer `p`'s experts into x->gate/up/down (fp32; packed bf16 when `bf16`). The router is
// loaded by the caller.
void load_gpt_oss_experts(const Checkpoint& ckpt, const ModelConfig& c, const std::string& p, bool bf16,
                          ExpertWeights* x);

}  // namespace ctcal
