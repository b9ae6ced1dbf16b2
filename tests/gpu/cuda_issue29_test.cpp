// Issue 29's families on the CUDA backend, beyond what CudaGolden holds (the default path against
// transformers' float64): the other attention and GEMM paths on the same golden cases, and eval's
// FP8 fake quantization (host round trips of Linear inputs, the shared expert's included) against
// the CPU. A failure names the case, the path, the layer, the site and the error. Skips without a GPU.
//
// Tolerances are cuda_golden_test.cpp's, for the same reasons: bf16 operands in every projection and
// in attention (kBf16HeadRelTol, kBf16LogitsNmse), and eval's NLL through them (kBf16NllRelTol).
#include <cctype>
#include <cmath>
#include <cstdlib>

#include <gtest/gtest.h>

#include "ctcal/eval/eval_run.h"
#include "ctcal/eval/evaluate.h"
#include "ctcal/model/cuda_backend.h"
#include "ctcal/model/decoder.h"
#include "ctcal/pipeline/calibrate.h"
#include "ctcal/pipeline/plan.h"
#include "ctcal/recipe/recipe.h"
#include "golden_capture.h"
#include "require_gpu.h"
#include "scoped_env.h"
#include "test_util.h"

namespace ctcal {
namespace {

using nlohmann::json;

constexpr double kBf16HeadRelTol = 0.02;   // per-head min/max relative to the head's absmax
constexpr double kBf16LogitsNmse = 1e-2;   // logits NMSE against float64
constexpr double kBf16NllRelTol = 0.01;    // eval NLL, GPU against CPU

ForwardOptions on_gpu() {
  ForwardOptions o;
  o.device = ComputeDevice::parse("cuda:0");
  return o;
}

using test::ScopedEnv;

struct PathCase {
  const char* golden;
  const char* path;  // what the environment switches to
  const char* name;  // the environment variable ("" for none) and its value
  const char* value;
};

class CudaIssue29Paths : public ::testing::TestWithParam<PathCase> {};

// The blocked attention (Llama 4: the chunked pieces as its spans) and three q/k/v GEMMs instead of
// one (OLMo 3, MiniMax-M2: whole-projection norms at a dense stride) against float64.
TEST_P(CudaIssue29Paths, MatchGolden) {
  CTCAL_REQUIRE_GPU();
  const PathCase p = GetParam();
  test::GoldenCase c;
  if (auto why = test::load_golden_case(p.golden, &c)) GTEST_SKIP() << *why;
  ScopedEnv env(p.name, p.value);
  check_cuda_supports(c.cfg, on_gpu());  // a refusal fails the test here, naming why
  Decoder model(*c.ckpt, c.cfg);
  test::Capture cap;
  double worst_nmse = 0;
  for (std::size_t s = 0; s < c.samples.size(); ++s) {
    const RowMatrix logits = model.forward(c.samples[s], &cap, on_gpu());  // [seq, vocab]
    cap.next_sample();
    worst_nmse = std::max(worst_nmse, test::logits_nmse(logits, c.golden["logits"][s]));
  }
  double worst = 0;
  std::string at;
  for (std::size_t l = 0; l < c.golden["layers"].size(); ++l)
    for (auto [site, name] : {std::pair{Site::kQuery, "q"}, {Site::kKey, "k"}, {Site::kValue, "v"}}) {
      const json& g = c.golden["layers"][l][name];
      if (g.is_null()) continue;  // a layer without a KV cache
      const auto wmin = g["head_min"].get<std::vector<double>>(), wmax = g["head_max"].get<std::vector<double>>();
      const auto& got = cap.stats_.at({static_cast<int64_t>(l), site});
      for (std::size_t h = 0; h < wmin.size(); ++h) {
        const double absmax = std::max(std::fabs(wmin[h]), std::fabs(wmax[h]));
        const double e = std::max(std::fabs(got.first[h] - wmin[h]), std::fabs(got.second[h] - wmax[h])) / absmax;
        if (e > worst) at = fmt::format("layer {} {} head {} (absmax {:.3g})", l, name, h, absmax);
        worst = std::max(worst, e);
      }
    }
  std::printf("[ %s ] GPU, %s: per-head min/max worst relative error %.3g at %s; logits worst NMSE %.3g\n", p.golden,
              p.path, worst, at.c_str(), worst_nmse);
  EXPECT_LE(worst, kBf16HeadRelTol) << p.golden << ", " << p.path << ": " << at;
  EXPECT_LE(worst_nmse, kBf16LogitsNmse) << p.golden << ", " << p.path;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CudaIssue29Paths,
    ::testing::Values(PathCase{"llama4_text_fp32", "blocked attention", "CTCAL_CUDA_ATTENTION", "blocked"},
                      PathCase{"llama4_text_bf16", "blocked attention", "CTCAL_CUDA_ATTENTION", "blocked"},
                      PathCase{"llama4_text_fp32", "one sample per chunk", "CTCAL_CUDA_CHUNK_TOKENS", "1"},
                      PathCase{"smollm3_nope_sliding_fp32", "blocked attention", "CTCAL_CUDA_ATTENTION", "blocked"},
                      PathCase{"olmo3_sliding_fp32", "three q/k/v GEMMs", "CTCAL_CUDA_FUSED_GEMMS", "0"},
                      PathCase{"minimax_m2_fp32", "three q/k/v GEMMs", "CTCAL_CUDA_FUSED_GEMMS", "0"},
                      PathCase{"glm4_moe_qk_norm_fused_bf16", "blocked attention", "CTCAL_CUDA_ATTENTION",
                               "blocked"}),
    [](const auto& i) {
      std::string n = std::string(i.param.golden) + "_" + i.param.name;
      for (char& ch : n)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return n;
    });

struct EvalCase {
  const char* golden;
  const char* ignore;  // the recipe's ignore list: what vLLM 0.34 builds without a quant config
};

class CudaIssue29Eval : public ::testing::TestWithParam<EvalCase> {};

// eval with FP8 W8A8 + FP8 KV on the GPU against the CPU, the same scales (calibrated on the CPU):
// the Linear inputs go down to the host, are fake-quantized and come back (OLMo 3's un-normed block
// inputs, GLM-4.5's and Llama 4's shared expert inputs after the router read them, the down_proj
// inputs), and the baseline runs the plain path.
TEST_P(CudaIssue29Eval, Fp8NllMatchesCpu) {
  CTCAL_REQUIRE_GPU();
  const EvalCase p = GetParam();
  test::GoldenCase c;
  if (auto why = test::load_golden_case(p.golden, &c)) GTEST_SKIP() << *why;
  const std::string yaml = fmt::format(
      "q_stage:\n  q_modifiers:\n    QuantizationModifier:\n      ignore: {}\n      config_groups:\n"
      "        group_0:\n          weights: {{num_bits: 8, type: float, strategy: tensor, dynamic: false, "
      "symmetric: true}}\n          input_activations: {{num_bits: 8, type: float, strategy: tensor, dynamic: "
      "false, symmetric: true}}\n          targets: [\"Linear\"]\n      kv_cache_scheme: {{num_bits: 8, type: "
      "float, strategy: tensor, dynamic: false, symmetric: true}}\n",
      p.ignore);
  CalibrationPlan plan = make_plan(parse_recipe(yaml, "r.yaml"), c.cfg, DType::kF32);
  std::vector<EvalRun> cpu_runs, gpu_runs;
  cpu_runs.push_back(make_recipe_run("r", *c.ckpt, plan, run_calibration(*c.ckpt, plan, c.samples, {})));
  gpu_runs.push_back(make_recipe_run("r", *c.ckpt, plan, run_calibration(*c.ckpt, plan, c.samples, {})));
  const json cpu = evaluate_runs(*c.ckpt, c.cfg, c.samples, cpu_runs);
  const json gpu = evaluate_runs(*c.ckpt, c.cfg, c.samples, gpu_runs, nullptr, on_gpu());
  const double base_cpu = cpu["baseline"]["nll"], base_gpu = gpu["baseline"]["nll"];
  const double q_cpu = cpu["quantized"][0]["nll"], q_gpu = gpu["quantized"][0]["nll"];
  std::printf("[ %s ] eval NLL: baseline CPU %.6f GPU %.6f; FP8 W8A8 + KV CPU %.6f GPU %.6f\n", p.golden, base_cpu,
              base_gpu, q_cpu, q_gpu);
  EXPECT_LE(test::rel_err(base_gpu, base_cpu), kBf16NllRelTol) << p.golden << ": baseline";
  EXPECT_LE(test::rel_err(q_gpu, q_cpu), kBf16NllRelTol) << p.golden << ": FP8 W8A8 + KV";
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaIssue29Eval,
                         ::testing::Values(EvalCase{"olmo3_sliding_fp32", "[\"lm_head\"]"},
                                           EvalCase{"smollm3_nope_sliding_fp32", "[\"lm_head\"]"},
                                           EvalCase{"glm4_moe_grouped_fp32", "[\"lm_head\", \"re:.*mlp.gate$\"]"},
                                           EvalCase{"llama4_text_fp32", "[\"lm_head\", \"re:.*router\", \"re:.*feed_forward.experts.*\"]"}),
                         [](const auto& i) { return std::string(i.param.golden); });

}  // namespace
}  // namespace ctcal
