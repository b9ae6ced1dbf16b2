// The MoE expert-input hook points (Site::kExpertGateUpInput, kExpertDownInput: what the FP8
// static input scales of MoE experts are observed on) against transformers in float64
// (tests/golden/make_expert_input_golden.py: the rows routed to each expert, and act(gate) * up
// on them). Per-expert golden cases, same samples, each run alone; experts no token reached are
// absent from the reference and must see no rows here.
// Tolerance: test::kAbsmaxRelTol (fp32 forward against a float64 reference) on min and max,
// relative to the tensor's absmax; row counts exact.
#include <cmath>
#include <map>
#include <tuple>

#include <gtest/gtest.h>

#include "ctcal/io/checkpoint.h"
#include "ctcal/model/decoder.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/quant/observer.h"
#include "test_util.h"

namespace ctcal {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

struct Seen {
  double min = INFINITY, max = -INFINITY;
  int64_t rows = 0;
};

// Running min/max and row count per (layer, site, expert).
class ExpertCapture : public ActivationObserver {
 public:
  bool wants(int64_t, Site s) const override { return s == Site::kExpertGateUpInput || s == Site::kExpertDownInput; }
  void observe(int64_t, Site, const HeadsView&) override { ADD_FAILURE() << "expert sites come through observe_expert"; }
  void observe_expert(int64_t layer, Site site, int64_t expert, const HeadsView& v) override {
    EXPECT_EQ(v.heads, 1);
    std::vector<double> mn, mx;
    head_min_max(v, &mn, &mx);
    Seen& s = seen_[{layer, site, expert}];
    s.min = std::min(s.min, mn[0]);
    s.max = std::max(s.max, mx[0]);
    s.rows += v.seq;
  }
  std::map<std::tuple<int64_t, Site, int64_t>, Seen> seen_;
};

class ExpertInputGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ExpertInputGolden, InputsOfEveryExpert) {
  const json forward = test::load_json(test::golden_dir() / (GetParam() + ".json"));
  const json want = test::load_json(test::golden_dir() / "expert_inputs" / (GetParam() + ".json"));
  Checkpoint ckpt(test::golden_dir() / forward["model_dir"].get<std::string>());
  const ModelConfig cfg = load_model_config(ckpt);
  Decoder model(ckpt, cfg);
  ExpertCapture cap;
  for (const auto& s : forward["samples"]) model.forward(s.get<std::vector<int32_t>>(), &cap, {});
  ASSERT_EQ(want["layers"].size(), static_cast<std::size_t>(cfg.num_hidden_layers));
  double worst = 0;
  int64_t compared = 0;
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const json& layer = want["layers"][static_cast<std::size_t>(l)];
    EXPECT_EQ(!layer.empty(), cfg.is_moe(l)) << "layer " << l;
    for (const auto& [name, site] : {std::pair{"gate_up", Site::kExpertGateUpInput}, std::pair{"down", Site::kExpertDownInput}})
      for (int64_t e = 0; e < (cfg.is_moe(l) ? cfg.num_experts : 0); ++e) {
        const auto it = cap.seen_.find({l, site, e});
        const std::string key = std::to_string(e);
        if (!layer[name].contains(key)) {  // no token routed to this expert
          EXPECT_TRUE(it == cap.seen_.end() || it->second.rows == 0) << "layer " << l << " expert " << e;
          continue;
        }
        const json& w = layer[name][key];
        ASSERT_NE(it, cap.seen_.end()) << "layer " << l << " " << name << " expert " << e;
        EXPECT_EQ(it->second.rows, w["rows"].get<int64_t>()) << "layer " << l << " " << name << " expert " << e;
        const double wmin = w["min"], wmax = w["max"];
        const double absmax = std::max(std::fabs(wmin), std::fabs(wmax));
        const double err = std::max(std::fabs(it->second.min - wmin), std::fabs(it->second.max - wmax)) / absmax;
        worst = std::max(worst, err);
        ++compared;
        EXPECT_LE(err, test::kAbsmaxRelTol) << "layer " << l << " " << name << " expert " << e;
      }
  }
  EXPECT_GT(compared, 0);
  std::printf("[ %s ] expert inputs: %ld compared, min/max worst relative error %.3g\n", GetParam().c_str(),
              static_cast<long>(compared), worst);
}

INSTANTIATE_TEST_SUITE_P(Cases, ExpertInputGolden, ::testing::Values("qwen3_moe_fp32", "mixtral_sliding_fp32"),
                         [](const auto& p) { return p.param; });

}  // namespace
}  // namespace ctcal
