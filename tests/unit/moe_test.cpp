// The sparse MoE MLP (model/moe.h) against a token-by-token double-precision formula: routing
// (softmax, top-k with renormalisation or not) and the weighted sum of the chosen experts.
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "ctcal/model/moe.h"
#include "test_util.h"

namespace ctcal {
namespace {

Linear random_linear(std::mt19937& rng, int64_t out, int64_t in, float sd) {
  std::normal_distribution<float> n(0.0f, sd);
  Linear l;
  l.w.resize(out, in);  // [out, in]
  for (Eigen::Index i = 0; i < l.w.size(); ++i) l.w.data()[i] = n(rng);
  return l;
}

struct Moe {
  ModelConfig c;
  ExpertWeights w;
  RowMatrix x;  // [tokens, hidden]
  Moe(bool norm, int64_t experts, int64_t top_k) {
    std::mt19937 rng(7);
    c.hidden_size = 12;
    c.num_experts = experts;
    c.num_experts_per_tok = top_k;
    c.moe_intermediate_size = 8;
    c.norm_topk_prob = norm;
    w.router = random_linear(rng, experts, c.hidden_size, 1.0f);
    for (int64_t e = 0; e < experts; ++e) {
      w.gate.push_back(random_linear(rng, 8, c.hidden_size, 0.3f));
      w.up.push_back(random_linear(rng, 8, c.hidden_size, 0.3f));
      w.down.push_back(random_linear(rng, c.hidden_size, 8, 0.3f));
    }
    x.resize(37, c.hidden_size);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = n(rng);
  }
  // Token t through the formula in double.
  Eigen::VectorXd reference(int64_t t) const {
    const Eigen::VectorXd xt = x.row(t).transpose().cast<double>();
    Eigen::VectorXd logits = w.router.w.cast<double>() * xt;  // [experts]
    Eigen::VectorXd p = (logits.array() - logits.maxCoeff()).exp();
    p /= p.sum();
    std::vector<int> idx(static_cast<std::size_t>(c.num_experts));
    for (int i = 0; i < static_cast<int>(idx.size()); ++i) idx[static_cast<std::size_t>(i)] = i;
    std::sort(idx.begin(), idx.end(), [&](int a, int b) { return p[a] > p[b]; });
    double top = 0;
    for (int64_t j = 0; j < c.num_experts_per_tok; ++j) top += p[idx[static_cast<std::size_t>(j)]];
    Eigen::VectorXd out = Eigen::VectorXd::Zero(c.hidden_size);
    for (int64_t j = 0; j < c.num_experts_per_tok; ++j) {
      const auto e = static_cast<std::size_t>(idx[static_cast<std::size_t>(j)]);
      const Eigen::VectorXd g = w.gate[e].w.cast<double>() * xt, u = w.up[e].w.cast<double>() * xt;
      const Eigen::VectorXd a = (g.array() / (1.0 + (-g.array()).exp()) * u.array()).matrix();
      const double weight = c.norm_topk_prob ? p[static_cast<Eigen::Index>(e)] / top : p[static_cast<Eigen::Index>(e)];
      out += weight * (w.down[e].w.cast<double>() * a);
    }
    return out;
  }
};

TEST(Moe, MatchesTokenByTokenFormula) {
  for (bool norm : {true, false})
    for (auto [experts, k] : {std::pair<int64_t, int64_t>{8, 2}, {6, 3}, {4, 4}}) {
      SCOPED_TRACE(::testing::Message() << "norm " << norm << " experts " << experts << " top-k " << k);
      Moe m(norm, experts, k);
      RowMatrix out(m.x.rows(), m.c.hidden_size);  // [tokens, hidden]
      moe_mlp_into(m.w, m.c, m.x, out);
      for (int64_t t = 0; t < m.x.rows(); ++t) {
        const Eigen::VectorXd want = m.reference(t);
        for (int64_t d = 0; d < m.c.hidden_size; ++d)
          EXPECT_NEAR(out(t, d), want[d], test::kTolFp32Op * (1.0 + std::fabs(want[d]))) << "token " << t << " dim " << d;
      }
    }
}

TEST(Moe, RoutingWeightsSumToOneWhenRenormalised) {
  Moe m(true, 8, 2);
  const Routing r = route_tokens(m.w, m.c, m.x);
  for (int64_t t = 0; t < m.x.rows(); ++t) {
    EXPECT_NEAR(r.weight[static_cast<std::size_t>(2 * t)] + r.weight[static_cast<std::size_t>(2 * t + 1)], 1.0f, 1e-6f);
    EXPECT_GE(r.weight[static_cast<std::size_t>(2 * t)], r.weight[static_cast<std::size_t>(2 * t + 1)]);  // descending
    EXPECT_NE(r.expert[static_cast<std::size_t>(2 * t)], r.expert[static_cast<std::size_t>(2 * t + 1)]);
  }
}

}  // namespace
}  // namespace ctcal
