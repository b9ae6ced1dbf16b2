#include "ctcal/model/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "ctcal/model/layer_ops.h"
#include "ctcal/util/uninit_buffer.h"

namespace ctcal {

namespace {

// The k largest of v [e] by index, descending; equal values by lower index first (torch.topk's
// choice on the CPU). Values of -inf (masked) are never among them while k finite ones remain.
void top_k(const float* v, int64_t e, int64_t k, std::vector<int32_t>* idx) {
  idx->resize(static_cast<std::size_t>(e));
  std::iota(idx->begin(), idx->end(), 0);
  std::partial_sort(idx->begin(), idx->begin() + k, idx->end(), [&](int32_t a, int32_t b) {
    return v[a] != v[b] ? v[a] > v[b] : a < b;
  });
}

// Glm4MoeTopkRouter.forward, per token, in fp32: scores = sigmoid(logits); choice = scores + bias;
// each group's rank = the sum of its 2 largest choice values; the topk_group best groups stay, the
// other experts' choice is -inf; the top k of choice are the experts, their weights the unbiased
// scores, / (sum + 1e-20) when norm_topk_prob, times routed_scaling_factor.
void route_sigmoid_grouped(const ModelConfig& c, const Eigen::Ref<const RowMatrix>& logits, const Vector& bias,
                           Routing* r) {
  const int64_t n = logits.rows(), e = c.num_experts, k = c.num_experts_per_tok;
  const int64_t groups = c.n_group, per_group = e / groups;
  const auto scale = static_cast<float>(c.routed_scaling_factor);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> score(static_cast<std::size_t>(e)), choice(static_cast<std::size_t>(e));  // [e]
    for (int64_t j = 0; j < e; ++j) {
      score[static_cast<std::size_t>(j)] = 1.0f / (1.0f + std::exp(-logits(t, j)));
      choice[static_cast<std::size_t>(j)] = score[static_cast<std::size_t>(j)] + (bias.size() ? bias(j) : 0.0f);
    }
    if (groups > 1) {
      std::vector<float> group_score(static_cast<std::size_t>(groups));  // [groups]
      std::vector<int32_t> idx;
      for (int64_t g = 0; g < groups; ++g) {
        top_k(choice.data() + g * per_group, per_group, 2, &idx);
        group_score[static_cast<std::size_t>(g)] = choice[static_cast<std::size_t>(g * per_group + idx[0])] +
                                                   choice[static_cast<std::size_t>(g * per_group + idx[1])];
      }
      top_k(group_score.data(), groups, c.topk_group, &idx);
      std::vector<bool> kept(static_cast<std::size_t>(groups), false);
      for (int64_t g = 0; g < c.topk_group; ++g) kept[static_cast<std::size_t>(idx[static_cast<std::size_t>(g)])] = true;
      for (int64_t j = 0; j < e; ++j)
        if (!kept[static_cast<std::size_t>(j / per_group)]) choice[static_cast<std::size_t>(j)] = -INFINITY;
    }
    std::vector<int32_t> idx;
    top_k(choice.data(), e, k, &idx);
    float sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += score[static_cast<std::size_t>(idx[static_cast<std::size_t>(j)])];
    for (int64_t j = 0; j < k; ++j) {
      const auto at = static_cast<std::size_t>(t * k + j);
      r->expert[at] = idx[static_cast<std::size_t>(j)];
      const float v = score[static_cast<std::size_t>(r->expert[at])];
      r->weight[at] = (c.norm_topk_prob ? v / (sum + 1e-20f) : v) * scale;
    }
  }
}

}  // namespace

Routing route_tokens(const ExpertWeights& w, const ModelConfig& c, const Eigen::Ref<const RowMatrix>& x) {
  RowMatrix logits;  // [n, num_experts], fp32 router (F.linear)
  linear(x, w.router, &logits);
  return route_logits(c, logits, &w.correction_bias);
}

Routing route_logits(const ModelConfig& c, const Eigen::Ref<const RowMatrix>& logits, const Vector* correction_bias) {
  const int64_t n = logits.rows(), e = c.num_experts, k = c.num_experts_per_tok;
  Routing r;
  r.expert.resize(static_cast<std::size_t>(n * k));
  r.weight.resize(static_cast<std::size_t>(n * k));
  if (c.family && c.family->moe_kind == MoeKind::kSigmoidGrouped) {
    route_sigmoid_grouped(c, logits, correction_bias ? *correction_bias : Vector(), &r);
    return r;
  }
  if (c.family && c.family->moe_kind == MoeKind::kLlama4) {
    // Llama4Router: torch.topk of the logits, the chosen ones' sigmoid in fp32 (the others' -inf
    // gives 0: those experts see a zero input and add nothing).
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; ++t) {
      std::vector<int32_t> idx;
      top_k(logits.data() + t * logits.outerStride(), e, k, &idx);  // row t [e]
      for (int64_t j = 0; j < k; ++j) {
        const auto at = static_cast<std::size_t>(t * k + j);
        r.expert[at] = idx[static_cast<std::size_t>(j)];
        r.weight[at] = 1.0f / (1.0f + std::exp(-logits(t, r.expert[at])));
      }
    }
    return r;
  }
  if (c.family && (c.family->moe_kind == MoeKind::kGptOss || c.family->moe_kind == MoeKind::kGranite)) {
    // GptOssTopKRouter: torch.topk of the biased logits, then a softmax over those k values;
    // GraniteMoeSharedTopKRouter the same without a bias.
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; ++t) {
      std::vector<int32_t> idx(static_cast<std::size_t>(e));
      std::iota(idx.begin(), idx.end(), 0);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
        const float la = logits(t, a), lb = logits(t, b);
        return la != lb ? la > lb : a < b;
      });
      const float mx = logits(t, idx[0]);  // the largest: topk is descending
      float sum = 0;
      for (int64_t j = 0; j < k; ++j) sum += std::exp(logits(t, idx[static_cast<std::size_t>(j)]) - mx);
      for (int64_t j = 0; j < k; ++j) {
        const auto at = static_cast<std::size_t>(t * k + j);
        r.expert[at] = idx[static_cast<std::size_t>(j)];
        r.weight[at] = std::exp(logits(t, r.expert[at]) - mx) / sum;
      }
    }
    return r;
  }
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    // softmax(logits, dtype=float32): exp(l - max) / sum.
    std::vector<float> p(static_cast<std::size_t>(e));
    const float mx = logits.row(t).maxCoeff();
    float sum = 0;
    for (int64_t j = 0; j < e; ++j) sum += (p[static_cast<std::size_t>(j)] = std::exp(logits(t, j) - mx));
    for (float& v : p) v /= sum;
    // torch.topk: the k largest, descending; equal values by lower index first.
    std::vector<int32_t> idx(static_cast<std::size_t>(e));
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
      const float pa = p[static_cast<std::size_t>(a)], pb = p[static_cast<std::size_t>(b)];
      return pa != pb ? pa > pb : a < b;
    });
    float top = 0;
    for (int64_t j = 0; j < k; ++j) top += p[static_cast<std::size_t>(idx[static_cast<std::size_t>(j)])];
    for (int64_t j = 0; j < k; ++j) {
      const auto at = static_cast<std::size_t>(t * k + j);
      r.expert[at] = idx[static_cast<std::size_t>(j)];
      const float v = p[static_cast<std::size_t>(r.expert[at])];
      r.weight[at] = c.norm_topk_prob ? v / top : v;
    }
  }
  return r;
}

void moe_mlp_into(const ExpertWeights& w, const ModelConfig& c, const Eigen::Ref<const RowMatrix>& x,
                  Eigen::Ref<RowMatrix> out, ActivationObserver* observer, int64_t layer, const RowMatrix* router_x) {
  const bool want_in = observer && observer->wants(layer, Site::kExpertGateUpInput);
  const bool want_down = observer && observer->wants(layer, Site::kExpertDownInput);
  const int64_t n = x.rows(), k = c.num_experts_per_tok, f = c.moe_intermediate_size, h = c.hidden_size;
  Routing routing = router_x ? route_tokens(w, c, *router_x) : route_tokens(w, c, x);
  // Gemma4TextRouter: each chosen expert's (renormalised) weight times its per_expert_scale.
  if (w.per_expert_scale.size() > 0)
    for (std::size_t i = 0; i < routing.weight.size(); ++i) routing.weight[i] *= w.per_expert_scale[routing.expert[i]];
  const ExpertBatches b = group_by_expert(routing, n, c.num_experts, k);
  out.setZero();
  RowMatrix xe, gate, up, down;       // [m, hidden], [m, f], [m, f], [m, hidden] for the current expert
  UninitBuffer<uint16_t> bf16;        // the expert's bf16 GEMM inputs (bf16 compute mode)
  for (std::size_t e = 0; e < b.count.size(); ++e) {
    const int64_t m = b.count[e];
    if (m == 0) continue;
    const int32_t* tokens = b.token.data() + b.first[e];  // [m], ascending
    const float* weights = b.weight.data() + b.first[e];  // [m]
    xe.resize(m, h);
    // Llama4TextMoe scales each routed row BEFORE its expert (routed_in = x * score) and sums the
    // outputs unweighted; the others weight the expert's output.
    const bool weight_on_input = c.family && c.family->moe_kind == MoeKind::kLlama4;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; ++i) {
      if (weight_on_input) xe.row(i) = weights[i] * x.row(tokens[i]);
      else xe.row(i) = x.row(tokens[i]);
    }
    gate.resize(m, f);
    up.resize(m, f);
    down.resize(m, h);
    const auto expert = static_cast<int64_t>(e);
    if (want_in) observer->observe_expert(layer, Site::kExpertGateUpInput, expert, {xe.data(), m, 1, h, h});
    // Nemotron-H's experts are ungated: relu(up(x))^2 (NemotronHExperts), in gate's buffer.
    const bool ungated = c.family && c.family->act == MlpAct::kRelu2;
    uint16_t* scratch = w.up[e].w_bf16 ? bf16.fit(m * std::max(h, f)) : nullptr;
    {
      ProjectionInput in(xe, scratch);
      if (!ungated) linear(in, w.gate[e], gate);
      linear(in, w.up[e], ungated ? gate : up);
    }
    if (ungated) {
      relu2_into(gate);
    } else if (c.family && c.family->act == MlpAct::kClampedSwiglu) {
      clamped_swiglu_into(gate, up, static_cast<float>(c.swiglu_limit));  // gpt-oss (gate/up carry biases)
    } else {
      // SwiGLU; Gemma 4's experts GELU-tanh (Gemma4TextExperts' act_fn = hidden_activation)
      gated_act_into(c.family && c.family->act == MlpAct::kGeluTanh ? MlpAct::kGeluTanh : MlpAct::kSilu, gate, up);
    }
    if (want_down) observer->observe_expert(layer, Site::kExpertDownInput, expert, {gate.data(), m, 1, f, f});
    ProjectionInput in(gate, scratch);
    linear(in, w.down[e], down);
    // index_add_ in expert order; within one expert every token is distinct.
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; ++i) out.row(tokens[i]) += (weight_on_input ? 1.0f : weights[i]) * down.row(i);
  }
}

ExpertBatches group_by_expert(const Routing& r, int64_t n, int64_t num_experts, int64_t top_k) {
  ExpertBatches b;
  b.first.assign(static_cast<std::size_t>(num_experts), 0);
  b.count.assign(static_cast<std::size_t>(num_experts), 0);
  for (int32_t e : r.expert) ++b.count[static_cast<std::size_t>(e)];
  for (std::size_t e = 1; e < b.count.size(); ++e) b.first[e] = b.first[e - 1] + b.count[e - 1];
  b.token.resize(static_cast<std::size_t>(n * top_k));
  b.weight.resize(b.token.size());
  std::vector<int64_t> next = b.first;  // [num_experts] the next free row of each expert
  // Tokens in ascending order, so each expert's rows are ascending (a token picks an expert once).
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < top_k; ++j) {
      const auto at = static_cast<std::size_t>(t * top_k + j);
      const auto row = static_cast<std::size_t>(next[static_cast<std::size_t>(r.expert[at])]++);
      b.token[row] = static_cast<int32_t>(t);
      b.weight[row] = r.weight[at];
    }
  return b;
}

}  // namespace ctcal
