// The CUDA backend (--device cuda) against transformers' float64 golden data and against ctcal's
// own CPU path, on every golden case (tests/golden/data), MoE (Qwen3-MoE, Mixtral, gpt-oss with
// its sinks) included. Runs where a GPU is; skips, saying so, elsewhere (label `gpu`;
// scripts/gpu_remote.sh runs it on the GPU machine).
//
// Tolerances: the GPU multiplies bf16 operands (projections, and Q K^T / P V in attention) with fp32
// accumulation, as --compute-dtype bf16 does on the CPU for the projections; its scales are held to
// the bf16 mode's bound against float64 (kBf16ScaleRelTol, forward_golden_test.cpp).
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include <gtest/gtest.h>

#include "ctcal/eval/evaluate.h"
#include "ctcal/eval/eval_run.h"
#include "ctcal/io/checkpoint.h"
#include "ctcal/model/cuda_backend.h"
#include "ctcal/model/decoder.h"
#include "ctcal/pipeline/calibrate.h"
#include "ctcal/pipeline/plan.h"
#include "ctcal/recipe/recipe.h"
#include "ctcal/transform/hadamard.h"
#include "golden_capture.h"
#include "require_gpu.h"
#include "scoped_env.h"
#include "test_util.h"

namespace ctcal {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Worst k/v scale error of the CPU bf16 mode against float64 is 0.84 % (stories260K); the GPU also
// rounds attention's operands to bf16: the same 2 % bound.
constexpr double kBf16ScaleRelTol = 0.02;
// Per-head min/max, relative to the head's absmax: the same bound as the scales they become.
constexpr double kBf16HeadRelTol = 0.02;
// The same after R3: the rotation spreads a head's outliers over head_dim, shrinking its absmax
// while the bf16 error of the projections stays: on qwen3_head_dim_bf16 (layer 1, k head 1) the
// CPU's --compute-dtype bf16 is 2.7 % off float64 and the GPU 4.0 %.
constexpr double kBf16RotatedHeadRelTol = 0.05;
// Logits NMSE: bf16 operands carry 2^-9 relative error each; through a few layers and the head,
// NMSE 2e-6..1.3e-3 measured (qwen2_sliding_fp32 worst, planted outliers); 1e-2 still flags a real
// bug (a wrong mask, table or head mapping gives NMSE ~1).
constexpr double kBf16LogitsNmse = 1e-2;
// eval's NLL, relative: bf16 attention operands move the NLL of stories260K's golden samples
// (random ids, NLL ~18.6) by 0.03 % (baseline) to 0.3 % (fake-quantized: FP8 codes flip).
constexpr double kBf16NllRelTol = 0.01;


ForwardOptions on_gpu() {
  ForwardOptions o;
  o.device = ComputeDevice::parse("cuda:0");
  return o;
}

class CudaGolden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    CTCAL_REQUIRE_GPU();
    test::GoldenCase c;
    if (auto why = test::load_golden_case(GetParam(), &c)) GTEST_SKIP() << *why;
    golden_ = std::move(c.golden);
    ckpt_ = std::move(c.ckpt);
    cfg_ = std::move(c.cfg);
    samples_ = std::move(c.samples);
    // A family the CUDA backend refuses by name is skipped here; the CudaRefusals tests check the
    // refusals themselves.
    try {
      check_cuda_supports(cfg_, on_gpu());
    } catch (const InputError& e) {
      GTEST_SKIP() << "the CUDA backend refuses this model: " << e.what();
    }
  }

  CalibrationResult calibrate(const std::string& yaml, const ForwardOptions& fwd) {
    CalibrationPlan plan = make_plan(parse_recipe(yaml, "r.yaml"), cfg_, DType::kF32);
    CalibrateOptions opt;
    opt.forward = fwd;
    return run_calibration(*ckpt_, plan, samples_, opt);
  }

  // A hybrid's golden data lists its attention layers and holds null for the others (linear
  // attention, Mamba2, MLP blocks: no Q/K/V, no scales); SpinQuant is refused for hybrids (no rot_ keys).
  bool hybrid() const { return golden_.contains("attention_layers"); }

  json golden_;
  std::unique_ptr<Checkpoint> ckpt_;
  ModelConfig cfg_;
  std::vector<std::vector<int32_t>> samples_;
};

const char* kTensorRecipe = "q_stage:\n  q_modifiers:\n    QuantizationModifier: {kv_cache_scheme: {type: float}}\n";
const char* kHeadRecipe =
    "q_stage:\n  q_modifiers:\n    QuantizationModifier: {kv_cache_scheme: {type: float, strategy: attn_head}}\n";

// Calibrated scales (observers reduced on the device) against absmax/448 of the float64 golden
// activations, and against the CPU fp32 path.
TEST_P(CudaGolden, ScalesMatchGoldenAndCpu) {
  const CalibrationResult gpu = calibrate(kHeadRecipe, on_gpu());
  const CalibrationResult cpu = calibrate(kHeadRecipe, {});
  double worst_golden = 0, worst_cpu = 0;
  for (std::size_t l = 0; l < golden_["layers"].size(); ++l)
    for (auto [site, name] : {std::pair{Site::kKey, "k"}, {Site::kValue, "v"}}) {
      if (golden_["layers"][l].is_null()) continue;  // a hybrid's layer without a KV cache
      const json& g = golden_["layers"][l][name];
      const auto& got = gpu.layers[l].find(site)->qparams.scale;
      const auto& ref = cpu.layers[l].find(site)->qparams.scale;
      ASSERT_EQ(got.size(), g["head_min"].size());
      for (std::size_t h = 0; h < got.size(); ++h) {
        const double want =
            std::max(std::fabs(g["head_min"][h].get<double>()), std::fabs(g["head_max"][h].get<double>())) / 448;
        worst_golden = std::max(worst_golden, test::rel_err(got[h], want));
        worst_cpu = std::max(worst_cpu, test::rel_err(got[h], ref[h]));
      }
    }
  std::printf("[ %s ] GPU per-head k/v scales: worst relative error %.3g vs float64, %.3g vs CPU fp32\n",
              GetParam().c_str(), worst_golden, worst_cpu);
  EXPECT_LE(worst_golden, kBf16ScaleRelTol);
  EXPECT_LE(worst_cpu, kBf16ScaleRelTol);
}

// Every reduction has a fixed order (cuBLAS is bitwise reproducible for one configuration on one
// GPU; the kernels' trees are fixed; min/max are exact): two runs give the same bits.
TEST_P(CudaGolden, RunsAreBitwiseIdentical) {
  const CalibrationResult a = calibrate(kTensorRecipe, on_gpu());
  const CalibrationResult b = calibrate(kTensorRecipe, on_gpu());
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (std::size_t l = 0; l < a.layers.size(); ++l)
    for (std::size_t s = 0; s < a.layers[l].sites.size(); ++s) {
      EXPECT_EQ(a.layers[l].sites[s].qparams.scale, b.layers[l].sites[s].qparams.scale) << "layer " << l;
      EXPECT_EQ(a.layers[l].sites[s].obs_max, b.layers[l].sites[s].obs_max) << "layer " << l;
    }
}

// The values path (an observer that asks for the values: copied back per chunk), per-head
// statistics and logits against transformers, plain and with R3 on the device.
TEST_P(CudaGolden, ActivationsAndLogits) {
  for (bool r3_on : {false, true}) {
    if (r3_on && (!is_power_of_two(cfg_.head_dim) || hybrid())) continue;
    SCOPED_TRACE(r3_on ? "R3" : "plain");
    RowMatrix r3 = (sylvester_hadamard(cfg_.head_dim) / std::sqrt(double(cfg_.head_dim))).cast<float>();
    ForwardOptions opt = on_gpu();
    if (r3_on) opt.qk_rotation = &r3;
    test::Capture cap;
    Decoder model(*ckpt_, cfg_);
    double worst_nmse = 0, worst_head = 0;
    std::string worst_at;
    for (std::size_t s = 0; s < samples_.size(); ++s) {
      const RowMatrix logits = model.forward(samples_[s], &cap, opt);  // [seq, vocab]
      cap.next_sample();
      worst_nmse = std::max(worst_nmse, test::logits_nmse(logits, golden_["logits"][s]));
    }
    const std::string prefix = r3_on ? "rot_" : "";
    for (std::size_t l = 0; l < golden_["layers"].size(); ++l)
      for (auto [site, name] : {std::pair{Site::kQuery, "q"}, {Site::kKey, "k"}, {Site::kValue, "v"}}) {
        if (golden_["layers"][l].is_null()) continue;  // a hybrid's layer without a KV cache
        const json& g = golden_["layers"][l][name];
        const std::string p = site == Site::kValue ? "" : prefix;
        const auto wmin = g[p + "head_min"].get<std::vector<double>>(), wmax = g[p + "head_max"].get<std::vector<double>>();
        const auto& got = cap.stats_.at({static_cast<int64_t>(l), site});
        for (std::size_t h = 0; h < wmin.size(); ++h) {
          const double absmax = std::max(std::fabs(wmin[h]), std::fabs(wmax[h]));
          const double e = std::max(std::fabs(got.first[h] - wmin[h]), std::fabs(got.second[h] - wmax[h])) / absmax;
          if (e > worst_head) worst_at = fmt::format("layer {} {} head {} (absmax {:.3g})", l, name, h, absmax);
          worst_head = std::max(worst_head, e);
        }
      }
    std::printf("[ %s ] GPU %s: per-head min/max worst relative error %.3g at %s; logits worst NMSE %.3g\n",
                GetParam().c_str(), r3_on ? "R3" : "plain", worst_head, worst_at.c_str(), worst_nmse);
    EXPECT_LE(worst_head, r3_on ? kBf16RotatedHeadRelTol : kBf16HeadRelTol);
    EXPECT_LE(worst_nmse, kBf16LogitsNmse);
  }
}

// One sample per chunk with the hidden states streamed chunk by chunk (a budget too small to keep
// them on the device) computes what the default run does; only the GEMMs' row counts differ, which
// may pick other cuBLAS kernels: equal within a few fp32 roundings, not bitwise.
TEST_P(CudaGolden, StreamedHiddenStatesAndSmallChunks) {
  ForwardOptions streamed = on_gpu();
  streamed.gpu_chunk_tokens = 1;
  streamed.gpu_memory_bytes = 1;
  const CalibrationResult a = calibrate(kHeadRecipe, on_gpu());
  const CalibrationResult b = calibrate(kHeadRecipe, streamed);
  double worst = 0;
  for (std::size_t l = 0; l < a.layers.size(); ++l)
    for (std::size_t s = 0; s < a.layers[l].sites.size(); ++s) {
      const auto& x = a.layers[l].sites[s].qparams.scale;
      const auto& y = b.layers[l].sites[s].qparams.scale;
      ASSERT_EQ(x.size(), y.size());
      for (std::size_t h = 0; h < x.size(); ++h) worst = std::max(worst, test::rel_err(y[h], x[h]));
    }
  std::printf("[ %s ] streamed, one sample per chunk vs default: worst scale difference %.3g\n", GetParam().c_str(),
              worst);
  EXPECT_LE(worst, 1e-3);  // bf16 roundings of GEMM outputs that moved by an fp32 ulp: ~2^-9 at worst
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaGolden, ::testing::ValuesIn(test::case_names()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

// eval on the GPU: the baseline NLL against transformers' loss (stories260K eval golden), and a
// fake-quantized run (copied to the host and back) against the same run on the CPU.
TEST(CudaEval, BaselineAndFakeQuantizedNll) {
  CTCAL_REQUIRE_GPU();
  CTCAL_REQUIRE_DATA();
  const json golden = test::load_json(test::golden_dir() / "stories260K_eval.json");
  std::vector<std::vector<int32_t>> samples;
  for (const auto& s : golden["samples"]) samples.push_back(s.get<std::vector<int32_t>>());
  const Checkpoint ckpt(test::data_dir() / "hf/stories260K");
  const ModelConfig cfg = load_model_config(ckpt);
  CalibrationPlan plan = make_plan(parse_recipe(kTensorRecipe, "r.yaml"), cfg, DType::kF32);
  std::vector<EvalRun> cpu_runs, gpu_runs;  // the same scales (calibrated on the CPU), evaluated on each device
  cpu_runs.push_back(make_recipe_run("r", ckpt, plan, run_calibration(ckpt, plan, samples, {})));
  gpu_runs.push_back(make_recipe_run("r", ckpt, plan, run_calibration(ckpt, plan, samples, {})));
  const json cpu = evaluate_runs(ckpt, cfg, samples, cpu_runs);
  const json gpu = evaluate_runs(ckpt, cfg, samples, gpu_runs, nullptr, on_gpu());
  const double base_cpu = cpu["baseline"]["nll"], base_gpu = gpu["baseline"]["nll"];
  const double q_cpu = cpu["quantized"][0]["nll"], q_gpu = gpu["quantized"][0]["nll"];
  std::printf("eval NLL: baseline CPU %.6f GPU %.6f; fake-quantized CPU %.6f GPU %.6f\n", base_cpu, base_gpu, q_cpu,
              q_gpu);
  EXPECT_LE(test::rel_err(base_gpu, base_cpu), kBf16NllRelTol);
  EXPECT_LE(test::rel_err(q_gpu, q_cpu), kBf16NllRelTol);
}

// Families the CUDA backend does not run are refused before any work, by name and with the way out
// (--device cpu). check_cuda_supports makes no CUDA call, so this runs (and can fail) without a
// GPU too, in CI's `make build-cuda`.
// check_cuda_supports' refusal of a golden case, or "" when it accepts it.
std::string refusal(const ModelConfig& cfg) {
  try {
    check_cuda_supports(cfg, on_gpu());
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

// The paths written for the hybrids and issue 29's families have not run on a GPU yet: refused by
// name unless CTCAL_CUDA_UNVERIFIED=1 (scripts/gpu_remote.sh sets it, so that CudaGolden runs their
// golden cases on the GPU machine). Without the switch (as in CI) each case is refused saying so;
// with it, nothing else refuses it.
void expect_written_not_yet_run(std::initializer_list<const char*> names) {
  for (const char* name : names) {
    test::GoldenCase c;
    if (auto why = test::load_golden_case(name, &c)) GTEST_SKIP() << *why;
    const char* set = std::getenv("CTCAL_CUDA_UNVERIFIED");
    if (!set || !*set) {
      const std::string what = refusal(c.cfg);
      EXPECT_NE(what.find("has not run on a GPU yet"), std::string::npos) << name << ": " << what;
      EXPECT_NE(what.find("--device cpu"), std::string::npos) << name << ": " << what;
    }
    test::ScopedEnv unverified("CTCAL_CUDA_UNVERIFIED", "1");
    EXPECT_EQ(refusal(c.cfg), "") << name << ": the CUDA backend refused it";
  }
}

// A case the CUDA backend has no path for (with CTCAL_CUDA_UNVERIFIED=1 too): refused by name,
// saying what, with the way out (--device cpu).
void expect_refused_saying(const char* name, const char* what_part) {
  test::GoldenCase c;
  if (auto why = test::load_golden_case(name, &c)) GTEST_SKIP() << *why;
  test::ScopedEnv unverified("CTCAL_CUDA_UNVERIFIED", "1");
  const std::string what = refusal(c.cfg);
  EXPECT_NE(what.find(c.cfg.architecture), std::string::npos) << name << ": " << what;
  EXPECT_NE(what.find(what_part), std::string::npos) << name << ": " << what;
  EXPECT_NE(what.find("--device cpu"), std::string::npos) << name << ": " << what;
}

// Qwen3.5 (dense and MoE) and Qwen3-Next: the gated DeltaNet, the gated attention and the gated
// shared-expert MoE (cuda_hybrid.h, add_shared_expert).
TEST(CudaRefusals, GatedDeltaNetWrittenNotYetRun) {
  expect_written_not_yet_run({"qwen3_5_text_fp32", "qwen3_5_mm_bf16", "qwen3_5_moe_text_fp32", "qwen3_5_moe_mm_bf16",
                              "qwen3_next_fp32", "qwen3_next_sparse_step_bf16"});
}

// Nemotron-H (the Mamba2 mixer, one-block layers, relu2 MLPs, attention without RoPE) and Granite 4
// hybrid (its multipliers, shared_mlp beside the experts, NoPE attention): cuda_hybrid.h.
TEST(CudaRefusals, Mamba2HybridsWrittenNotYetRun) {
  expect_written_not_yet_run({"nemotron_h_fp32", "nemotron_h_pattern_bf16", "granitemoehybrid_fp32",
                              "granitemoehybrid_dense_nope_bf16"});
}

// Issue 29's families (SmolLM3's NoPE layers, OLMo 3's and MiniMax-M2's whole-projection q/k norms,
// OLMo 3's post-norm-only blocks, GLM-4.5's and MiniMax-M2's sigmoid routing with the correction
// bias, GLM-4.5's shared expert and config-switched q/k norms, Llama 4's permuted q/k heads, L2 q/k
// norm, chunked attention, NoPE temperature and MoE).
TEST(CudaRefusals, Issue29FamiliesWrittenNotYetRun) {
  expect_written_not_yet_run({"smollm3_nope_sliding_fp32", "smollm3_classic_bf16", "olmo3_sliding_fp32",
                              "olmo3_classic_bias_bf16", "minimax_m2_fp32", "minimax_m2_fused_bf16",
                              "glm4_moe_grouped_fp32", "glm4_moe_qk_norm_fused_bf16", "llama4_text_fp32",
                              "llama4_text_bf16"});
}

// Nemotron-H's MoE blocks (ungated relu2 experts; cuda_moe.h runs gated SiLU / clamped SwiGLU experts
// only), so CudaGolden skips nemotron_h_moe_fp32; and Gemma 4's attention.
TEST(CudaRefusals, NoCudaPathSaysWhy) {
  expect_refused_saying("nemotron_h_moe_fp32", "ungated relu2 experts");
  expect_refused_saying("gemma4_text_fp32", "Gemma 4's attention");
}

}  // namespace
}  // namespace ctcal
