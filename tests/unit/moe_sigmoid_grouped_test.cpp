// GLM-4.5's routing (MoeKind::kSigmoidGrouped, model/moe.h) on hand-worked logits: sigmoid scores,
// the choice on scores + e_score_correction_bias within the best group (ranked by its top-2 sum),
// weights the unbiased scores renormalised and scaled (Glm4MoeTopkRouter.forward).
#include <cmath>

#include <gtest/gtest.h>

#include "ctcal/model/family.h"
#include "ctcal/model/moe.h"

namespace ctcal {
namespace {

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

ModelConfig glm(int64_t groups, bool norm) {
  ModelConfig c;
  c.family = find_family("Glm4MoeForCausalLM");
  c.num_experts = 4;
  c.num_experts_per_tok = 2;
  c.n_group = groups;
  c.topk_group = 1;
  c.norm_topk_prob = norm;
  c.routed_scaling_factor = 2.0;
  return c;
}

TEST(MoeSigmoidGrouped, ChoosesWithTheBiasWithinTheBestGroupAndWeighsWithoutIt) {
  RowMatrix logits(1, 4);  // [tokens, experts]
  logits << 0.0f, 1.0f, -1.0f, 2.0f;
  Vector bias(4);  // [experts]
  bias << 0.5f, 0.0f, 0.0f, 0.0f;
  const double s0 = sigmoid(0), s1 = sigmoid(1), s3 = sigmoid(2);
  // choice = [1.0, 0.731, 0.269, 0.881]; group {0, 1} sums 1.731 > {2, 3} 1.150: experts 0 then 1
  Routing r = route_logits(glm(2, true), logits, &bias);
  ASSERT_EQ(r.expert, (std::vector<int32_t>{0, 1}));
  EXPECT_NEAR(r.weight[0], 2.0 * s0 / (s0 + s1), 1e-6);
  EXPECT_NEAR(r.weight[1], 2.0 * s1 / (s0 + s1), 1e-6);
  // one group: the top 2 of the choice overall, expert 0 (1.0) then 3 (0.881); not renormalised
  r = route_logits(glm(1, false), logits, &bias);
  ASSERT_EQ(r.expert, (std::vector<int32_t>{0, 3}));
  EXPECT_NEAR(r.weight[0], 2.0 * s0, 1e-6);
  EXPECT_NEAR(r.weight[1], 2.0 * s3, 1e-6);
  // without the bias: experts 3 then 1 by score
  r = route_logits(glm(1, false), logits, nullptr);
  ASSERT_EQ(r.expert, (std::vector<int32_t>{3, 1}));
}

}  // namespace
}  // namespace ctcal
