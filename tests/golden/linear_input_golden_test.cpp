// The Linear-input hook points (Site::kQkvInput, kOProjInput, kGateUpInput, kDownInput, and the
// Mamba2 mixers' kMambaInProjInput, kMambaOutProjInput: what FP8 static input scales are observed on)
// against transformers in float64 (tests/golden/make_linear_input_golden.py: a forward pre-hook on
// every nn.Linear; for the Mamba2 hybrids only the mixers' in_proj / out_proj, listed as "modules"). Each case of
// the forward golden data, same samples, each run alone. The reference runs the unquantized
// model, as llm-compressor >= 0.11 calibrates (quantization disabled while observing, reference
// §9.2), so every layer sees unquantized inputs here too.
// Tolerance: test::kAbsmaxRelTol (fp32 forward against a float64 reference) on min and max,
// relative to the tensor's absmax.
#include <cmath>
#include <map>

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

// Running min/max over all samples for the Linear-input sites.
class InputCapture : public ActivationObserver {
 public:
  bool wants(int64_t, Site s) const override {
    return s == Site::kQkvInput || s == Site::kOProjInput || s == Site::kGateUpInput || s == Site::kDownInput ||
           s == Site::kMambaInProjInput || s == Site::kMambaOutProjInput;
  }
  void observe(int64_t layer, Site site, const HeadsView& v) override {
    EXPECT_EQ(v.heads, 1);
    std::vector<double> mn, mx;
    head_min_max(v, &mn, &mx);
    auto [it, fresh] = stats_.try_emplace({layer, site}, mn[0], mx[0]);
    it->second.first = std::min(it->second.first, mn[0]);
    it->second.second = std::max(it->second.second, mx[0]);
    ++calls_[{layer, site}];
  }
  std::map<std::pair<int64_t, Site>, std::pair<double, double>> stats_;
  std::map<std::pair<int64_t, Site>, int> calls_;
};

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(test::golden_dir() / "linear_inputs"))
    if (e.path().extension() == ".json") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

class LinearInputGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(LinearInputGolden, InputsOfEveryLinearLayer) {
  const json forward = test::load_json(test::golden_dir() / (GetParam() + ".json"));
  const json want = test::load_json(test::golden_dir() / "linear_inputs" / (GetParam() + ".json"));
  std::string dir = forward["model_dir"];
  fs::path model_dir = test::golden_dir() / dir;
  if (dir.starts_with("$CTCAL_DATA/")) {
    CTCAL_REQUIRE_DATA();
    model_dir = test::data_dir() / dir.substr(12);
  }
  Checkpoint ckpt(model_dir);
  const ModelConfig cfg = load_model_config(ckpt);
  Decoder model(ckpt, cfg);
  InputCapture cap;
  for (const auto& s : forward["samples"]) model.forward(s.get<std::vector<int32_t>>(), &cap, {});
  const std::map<std::string, Site> site_of = {
      {"q_proj", Site::kQkvInput}, {"k_proj", Site::kQkvInput},  {"v_proj", Site::kQkvInput},
      {"o_proj", Site::kOProjInput}, {"gate_proj", Site::kGateUpInput}, {"up_proj", Site::kGateUpInput},
      {"down_proj", Site::kDownInput}};
  const std::map<std::string, Site> mamba_site_of = {{"in_proj", Site::kMambaInProjInput},
                                                     {"out_proj", Site::kMambaOutProjInput}};
  const bool mamba = want.contains("modules");  // a Mamba2 hybrid: only the mixers' Linears recorded
  double worst = 0;
  ASSERT_EQ(want["layers"].size(), static_cast<std::size_t>(cfg.num_hidden_layers));
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const json& layer = want["layers"][static_cast<std::size_t>(l)];
    const std::map<std::string, Site> none;
    const auto& sites = !mamba ? site_of : cfg.is_mamba(l) ? mamba_site_of : none;
    ASSERT_EQ(layer.size(), sites.size()) << "layer " << l;
    if (mamba && !cfg.is_mamba(l)) {  // no mixer: nothing announced there
      for (Site s : {Site::kMambaInProjInput, Site::kMambaOutProjInput}) {
        EXPECT_EQ(cap.calls_.count({l, s}), 0u);
      }
    }
    for (const auto& [module, site] : sites) {
      const auto& got = cap.stats_.at({l, site});
      // Shared inputs are announced once per sample, not once per Linear layer.
      EXPECT_EQ(cap.calls_.at({l, site}), static_cast<int>(forward["samples"].size()));
      const double wmin = layer[module]["min"], wmax = layer[module]["max"];
      const double absmax = std::max(std::fabs(wmin), std::fabs(wmax));
      const double e = std::max(std::fabs(got.first - wmin), std::fabs(got.second - wmax)) / absmax;
      worst = std::max(worst, e);
      EXPECT_LE(e, test::kAbsmaxRelTol) << "layer " << l << " " << module;
    }
  }
  std::printf("[ %s ] Linear inputs: min/max worst relative error %.3g\n", GetParam().c_str(), worst);
}

INSTANTIATE_TEST_SUITE_P(Cases, LinearInputGolden, ::testing::ValuesIn(case_names()),
                         [](const auto& p) { return p.param; });

}  // namespace
}  // namespace ctcal
