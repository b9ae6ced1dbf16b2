#pragma once
// The sparse mixture-of-experts MLP of Qwen3-MoE, Mixtral and gpt-oss, as transformers 5.17
// computes it: router logits x W_r^T (+ b_r: gpt-oss), softmax over experts in fp32, the top
// num_experts_per_tok experts per token (renormalised to sum 1 when norm_topk_prob / always for
// Mixtral; gpt-oss instead takes the top k logits first and softmaxes over those k), and
//   out[t] = sum over the token's experts e of weight[t, e] * down_e(act(gate_e(x[t])) * up_e(x[t]))
// (gpt-oss: biased projections and the clamped SwiGLU of layer_ops.h). GLM-4.5 routes by sigmoid
// scores with a correction bias and grouped top-k (MoeKind::kSigmoidGrouped).
// Each expert runs once, as one GEMM over the tokens routed to it (never token by token), and
// experts are added in ascending order, as transformers' index_add_: the result does not depend
// on the thread count.
#include <cstdint>

#include "ctcal/model/layer_weights.h"
#include "ctcal/model/model_config.h"
#include "ctcal/model/observation.h"
#include "ctcal/model/tensor_types.h"

namespace ctcal {

// x: [n, hidden] (the normed hidden state) -> out: [n, hidden], overwritten. Each expert's
// inputs go to observer->observe_expert (kExpertGateUpInput, kExpertDownInput) when it wants
// them; observer may be null. router_x [n, hidden]: what the router reads when it is not x
// (Gemma 4 routes on its own normed, scaled input); null: x.
void moe_mlp_into(const ExpertWeights& w, const ModelConfig& c, const Eigen::Ref<const RowMatrix>& x,
                  Eigen::Ref<RowMatrix> out, ActivationObserver* observer = nullptr, int64_t layer = 0,
                  const RowMatrix* router_x = nullptr);

// The routing alone, for tests: per token its experts (descending weight) and their weights.
struct Routing {
  std::vector<int32_t> expert;  // [n, top_k]
  std::vector<float> weight;    // [n, top_k]
};
Routing route_tokens(const ExpertWeights& w, const ModelConfig& c, const Eigen::Ref<const RowMatrix>& x);
// The same from router logits already computed: logits [n, num_experts] = x W_r^T (+ b_r), fp32.
// The CUDA backend computes the logits on the GPU and routes here, so its decisions are the CPU's.
// correction_bias [num_experts]: e_score_correction_bias of MoeKind::kSigmoidGrouped (null: none).
Routing route_logits(const ModelConfig& c, const Eigen::Ref<const RowMatrix>& logits,
                     const Vector* correction_bias = nullptr);

// The routed rows grouped by expert, the order moe_mlp_into runs them in: expert e's rows are
// [first[e], first[e] + count[e]) of `token` and `weight`, tokens ascending.
struct ExpertBatches {
  std::vector<int64_t> first, count;  // [num_experts]
  std::vector<int32_t> token;         // [n * top_k] the token (row of x) of each routed row
  std::vector<float> weight;          // [n * top_k] its routing weight
};
ExpertBatches group_by_expert(const Routing& r, int64_t n, int64_t num_experts, int64_t top_k);

}  // namespace ctcal
