// Observers (reference §3.7): reduction per strategy and the update rule of each observer.
#include <cmath>

#include <gtest/gtest.h>

#include "ctcal/quant/observer.h"

namespace ctcal {
namespace {

QuantArgs make(const std::string& observer, Strategy s, nlohmann::json kwargs = nlohmann::json::object()) {
  QuantArgs a;
  a.type = QuantType::kFloat;
  a.strategy = s;
  a.observer = observer;
  a.observer_kwargs = kwargs;
  finalize_quant_args(&a, "t");
  return a;
}

// values: [seq, heads, head_dim] row-major.
HeadsView view(const std::vector<float>& v, int64_t seq, int64_t heads, int64_t d) {
  return {v.data(), seq, heads, d, heads * d};
}

TEST(Observer, TensorAndPerHeadReductions) {
  // 2 tokens, 2 heads, 2 dims.
  const std::vector<float> x = {1, -2, 3, 0.5f,   // token 0: head0 {1,-2}, head1 {3,0.5}
                                4, 0, -6, 1};     // token 1: head0 {4,0},  head1 {-6,1}
  Observer t(make("static_minmax", Strategy::kTensor), 2);
  t.observe(view(x, 2, 2, 2));
  EXPECT_EQ(t.min_vals(), (std::vector<double>{-6}));
  EXPECT_EQ(t.max_vals(), (std::vector<double>{4}));
  Observer h(make("static_minmax", Strategy::kAttnHead), 2);
  h.observe(view(x, 2, 2, 2));
  EXPECT_EQ(h.min_vals(), (std::vector<double>{-2, -6}));
  EXPECT_EQ(h.max_vals(), (std::vector<double>{4, 3}));
}

TEST(Observer, UpdateRules) {
  const std::vector<float> a = {-1, 2}, b = {-4, 1}, c = {-0.5f, 0.5f};
  auto run = [&](const std::string& obs, nlohmann::json kw = nlohmann::json::object()) {
    Observer o(make(obs, Strategy::kTensor, kw), 1);
    for (const auto* s : {&a, &b, &c}) o.observe(view(*s, 1, 1, 2));
    return std::make_pair(o.min_vals()[0], o.max_vals()[0]);
  };
  EXPECT_EQ(run("static_minmax"), std::make_pair(-4.0, 2.0));
  EXPECT_EQ(run("memoryless_minmax"), std::make_pair(-0.5, 0.5));
  // EMA with c = 0.5: min: -1 -> -2.5 -> -1.5; max: 2 -> 1.5 -> 1.0.
  EXPECT_EQ(run("minmax", {{"averaging_constant", 0.5}}), std::make_pair(-1.5, 1.0));
  // Default c = 0.01: min = (-1*0.99 - 4*0.01)*0.99 + (-0.5)*0.01.
  const auto d = run("minmax");
  EXPECT_NEAR(d.first, (-1 * 0.99 - 4 * 0.01) * 0.99 - 0.5 * 0.01, 1e-15);
}

TEST(Observer, MseShrinksAnOutlierRange) {
  // int4 symmetric: many small values and one outlier; the MSE-optimal range clips the outlier.
  QuantArgs a;
  a.num_bits = 4;
  a.strategy = Strategy::kTensor;
  a.observer = "memoryless_mse";
  a.observer_kwargs = {{"maxshrink", 0.5}, {"patience", 100}};
  finalize_quant_args(&a, "t");
  std::vector<float> x;
  for (int i = 0; i < 200; ++i) x.push_back(static_cast<float>((i % 21) - 10) / 10.0f);
  x.push_back(1.6f);
  Observer o(a, 1);
  o.observe(view(x, static_cast<int64_t>(x.size()), 1, 1));
  EXPECT_LT(o.max_vals()[0], 1.6);
  EXPECT_GE(o.max_vals()[0], 1.6 * 0.5);
  // Brute force over the same grid must not find a lower error.
  const QuantRange r = calculate_range(a);
  auto err = [&](double p) {
    auto qp = calculate_qparams({p * -1.0}, {p * 1.6}, a, DType::kF32);
    double e = 0;
    for (float v : x) e += std::pow(std::fabs(fake_quantize(v, qp.scale[0], 0, a, r) - v), 2.4);
    return e;
  };
  const double chosen = err(o.max_vals()[0] / 1.6);
  for (int i = 0; i < 50; ++i) EXPECT_LE(chosen, err(1.0 - i / 100.0) + 1e-12) << i;
}

}  // namespace
}  // namespace ctcal
