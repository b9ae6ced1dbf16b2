#pragma once
// Llama 4's fused experts (Llama4TextExperts), as transformers 5.17 holds and saves them and the hub
// checkpoints store them: input-major bare tensors feed_forward.experts.gate_up_proj [E, H, 2 I]
// (gate_up = x @ W, gate the first I columns, up the next I: chunk(2, dim=-1)) and
// feed_forward.experts.down_proj [E, I, H] (x @ W). Read into per-expert [out, in] Linears.
#include <string>

#include "ctcal/io/checkpoint.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/model_config.h"

namespace ctcal {

// Checks both tensors' shapes and dtypes against config.json (InputError naming the tensor).
void check_llama4_experts(const Checkpoint& ckpt, const ModelConfig& c, const std::string& layer_prefix);

// Fills x->gate/up/down ([I, H], [I, H], [H, I] per expert), bf16-packed when `bf16`.
void load_llama4_experts(const Checkpoint& ckpt, const ModelConfig& c, const std::string& layer_prefix, bool bf16,
                         ExpertWeights* x);

}  // namespace ctcal
