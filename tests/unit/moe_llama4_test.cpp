// Llama 4's MoE (MoeKind::kLlama4, model/moe.h) against the formulas of Llama4Router and
// Llama4TextMoe written out by hand: the top-k router logits, each weight sigmoid(logit), and the
// weight applied to the expert's INPUT (routed_in = x * score), the outputs summed unweighted:
//   out[t] = sum over t's experts e of down_e(silu(gate_e(s x)) * up_e(s x)),  s = sigmoid(logit_e).
// (Weighting the output instead would give s * down_e(...), a different number: SiLU is not linear.)
#include <algorithm>
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "ctcal/model/family.h"
#include "ctcal/model/moe.h"

namespace ctcal {
namespace {

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

ModelConfig llama4(int64_t top_k) {
  ModelConfig c;
  c.family = find_family("Llama4ForCausalLM");
  c.num_experts = 3;
  c.num_experts_per_tok = top_k;
  c.hidden_size = 4;
  c.moe_intermediate_size = 5;
  return c;
}

TEST(MoeLlama4, TopKLogitsWeighedBySigmoid) {
  RowMatrix logits(2, 3);  // [tokens, experts]
  logits << 0.5f, -1.0f, 2.0f,
            1.0f, 1.0f, -3.0f;  // a tie: the lower index first, as torch.topk on the CPU
  Routing r = route_logits(llama4(1), logits);
  ASSERT_EQ(r.expert, (std::vector<int32_t>{2, 0}));
  EXPECT_NEAR(r.weight[0], sigmoid(2.0), 1e-6);
  EXPECT_NEAR(r.weight[1], sigmoid(1.0), 1e-6);
  r = route_logits(llama4(2), logits);
  ASSERT_EQ(r.expert, (std::vector<int32_t>{2, 0, 0, 1}));
  EXPECT_NEAR(r.weight[1], sigmoid(0.5), 1e-6);  // not renormalised
  EXPECT_NEAR(r.weight[3], sigmoid(1.0), 1e-6);
}

TEST(MoeLlama4, RouterWeightScalesTheExpertInput) {
  const ModelConfig c = llama4(2);
  const int64_t h = c.hidden_size, f = c.moe_intermediate_size, n = 3;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto linear_of = [](RowMatrix m) {
    Linear l;
    l.w = std::move(m);
    return l;
  };
  auto random = [&](int64_t rows, int64_t cols) {
    RowMatrix m(rows, cols);
    for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = nd(rng);
    return m;
  };
  ExpertWeights w;
  w.router.w = random(c.num_experts, h);  // [E, H]
  for (int64_t e = 0; e < c.num_experts; ++e) {
    w.gate.push_back(linear_of(random(f, h)));  // [I, H]
    w.up.push_back(linear_of(random(f, h)));    // [I, H]
    w.down.push_back(linear_of(random(h, f)));  // [H, I]
  }
  const RowMatrix x = random(n, h);  // [tokens, hidden]
  RowMatrix out(n, h);
  moe_mlp_into(w, c, x, out);
  double worst = 0;
  for (int64_t t = 0; t < n; ++t) {
    // logits in double, the top 2 by hand
    std::vector<double> l(static_cast<std::size_t>(c.num_experts));
    for (int64_t e = 0; e < c.num_experts; ++e) l[static_cast<std::size_t>(e)] = (w.router.w.row(e).cast<double>() * x.row(t).cast<double>().transpose())(0, 0);
    std::vector<int64_t> order = {0, 1, 2};
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return l[static_cast<std::size_t>(a)] > l[static_cast<std::size_t>(b)]; });
    Eigen::VectorXd want = Eigen::VectorXd::Zero(h);
    for (int j = 0; j < 2; ++j) {
      const int64_t e = order[static_cast<std::size_t>(j)];
      const Eigen::VectorXd xin = sigmoid(l[static_cast<std::size_t>(e)]) * x.row(t).cast<double>().transpose();  // [H]
      const Eigen::VectorXd g = w.gate[static_cast<std::size_t>(e)].w.cast<double>() * xin;  // [I]
      const Eigen::VectorXd u = w.up[static_cast<std::size_t>(e)].w.cast<double>() * xin;    // [I]
      Eigen::VectorXd a(f);
      for (int64_t i = 0; i < f; ++i) a(i) = g(i) * sigmoid(g(i)) * u(i);  // silu(gate) * up
      want += w.down[static_cast<std::size_t>(e)].w.cast<double>() * a;
    }
    for (int64_t i = 0; i < h; ++i) worst = std::max(worst, std::fabs(out(t, i) - want(i)) / (1.0 + std::fabs(want(i))));
  }
  EXPECT_LE(worst, 1e-5);  // fp32 GEMMs of 4-5 terms of O(1) values against double
}

}  // namespace
}  // namespace ctcal
