// The GPU MoE MLP (lib/src/model/cuda/cuda_moe.h) against the CPU's moe_mlp_into (model/moe.h,
// itself checked against a double-precision formula in tests/unit/moe_test.cpp and against
// transformers in tests/golden), and the MoE layers of the CUDA backend against transformers'
// float64 expert inputs (tests/golden/data/expert_inputs). Skips without a GPU.
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <tuple>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "require_gpu.h"

#include "ctcal/dtype.h"
#include "ctcal/io/checkpoint.h"
#include "ctcal/model/cuda_backend.h"
#include "ctcal/model/decoder.h"
#include "ctcal/model/family.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/moe.h"
#include "ctcal/quant/observer.h"
#include "cuda_moe.h"
#include "moe_kernels.h"
#include "test_util.h"

namespace ctcal {
namespace {

using nlohmann::json;

// Against the CPU's bf16 mode (the same bf16 operands, fp32 accumulation): the outputs differ by
// fp32 summation order and expf ulps, and where those flip the bf16 rounding of an element of
// act(gate) * up (2^-8 relative on that element, one of moe_intermediate terms of a down output):
// ~6e-4 of the output's absmax for one flip. 2e-3 allows a few.
constexpr double kBf16MoeOutputTol = 2e-3;
// The GPU's Q/K/V and Linear inputs against float64 (cuda_golden_test.cpp's kBf16HeadRelTol):
// bf16 operands in attention and in every projection.
constexpr double kBf16ExpertInputRelTol = 0.02;
// Routed rows that may move to another expert against float64: bf16 noise (~1e-3 relative on the
// router's input) flips a token's choice where its k-th and (k+1)-th logits are that close.
constexpr double kBf16MovedRowsShare = 0.02;


void ok(cudaError_t e) { ASSERT_EQ(e, cudaSuccess) << cudaGetErrorString(e); }

template <typename T>
T* to_device(const T* host, std::size_t count, std::vector<void*>* owned) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), count * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, host, count * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  owned->push_back(d);
  return d;
}

// Rows per (site, expert), in the order they came.
class ExpertRows : public ActivationObserver {
 public:
  bool wants(int64_t, Site s) const override { return s == Site::kExpertGateUpInput || s == Site::kExpertDownInput; }
  void observe(int64_t, Site, const HeadsView&) override { ADD_FAILURE() << "expert sites come through observe_expert"; }
  void observe_expert(int64_t, Site site, int64_t expert, const HeadsView& v) override {
    EXPECT_EQ(v.heads, 1);
    std::vector<float>& rows = rows_[{site, expert}];
    for (int64_t t = 0; t < v.seq; ++t)
      for (int64_t d = 0; d < v.head_dim; ++d) rows.push_back(v.at(t, 0, d));
  }
  std::map<std::pair<Site, int64_t>, std::vector<float>> rows_;
};

struct MoeCase {
  const char* name;
  const char* architecture;  // the family: its routing and expert activation
  int64_t experts, top_k;
  bool biases;               // gpt-oss: router and expert biases
  // MoeKind::kSigmoidGrouped (GLM-4.5, MiniMax-M2): n_group, topk_group, routed_scaling_factor and
  // an e_score_correction_bias [E] (on the host: the routing runs there)
  int64_t groups = 1, topk_group = 1;
  double routed_scale = 1.0;
  bool correction_bias = false;
};

class CudaMoeMlp : public ::testing::TestWithParam<MoeCase> {};

// Random bf16-valued weights: the CPU in bf16 mode and the GPU multiply the same operands.
TEST_P(CudaMoeMlp, MatchesCpuMoeMlp) {
  CTCAL_REQUIRE_GPU();
  const MoeCase p = GetParam();
  const char* seed_env = std::getenv("CTCAL_TEST_SEED");
  const unsigned seed = seed_env ? static_cast<unsigned>(std::stoul(seed_env)) : 11u;
  std::printf("seed %u (CTCAL_TEST_SEED)\n", seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ModelConfig c;
  c.family = find_family(p.architecture);
  ASSERT_NE(c.family, nullptr);
  c.hidden_size = 64;
  c.num_experts = p.experts;
  c.num_experts_per_tok = p.top_k;
  c.moe_intermediate_size = 40;
  c.norm_topk_prob = true;
  c.n_group = p.groups;
  c.topk_group = p.topk_group;
  c.routed_scaling_factor = p.routed_scale;
  const int64_t h = c.hidden_size, f = c.moe_intermediate_size, ne = c.num_experts, n = 77;
  auto bf16_round = [](float v) { return bf16_to_f32(f32_to_bf16(v)); };
  auto random_linear = [&](int64_t out, int64_t in, float sd, bool bias, bool bf16) {
    Linear l;
    l.w.resize(out, in);  // [out, in]
    for (Eigen::Index i = 0; i < l.w.size(); ++i) l.w.data()[i] = bf16 ? bf16_round(sd * normal(rng)) : sd * normal(rng);
    if (bias) {
      l.b.resize(out);  // [out]
      for (Eigen::Index i = 0; i < out; ++i) l.b[i] = 0.5f * normal(rng);
    }
    return l;
  };
  LayerWeights lw;
  ExpertWeights& w = lw.experts;
  w.router = random_linear(ne, h, 0.5f, p.biases, false);  // fp32 on both sides
  if (p.correction_bias) {  // of the size of the sigmoid scores' spread, so that it changes choices
    w.correction_bias.resize(ne);  // [E]
    for (Eigen::Index i = 0; i < ne; ++i) w.correction_bias[i] = 0.2f * normal(rng);
  }
  for (int64_t e = 0; e < ne; ++e) {
    w.gate.push_back(random_linear(f, h, 0.3f, p.biases, true));  // gpt-oss: values past swiglu_limit too
    w.up.push_back(random_linear(f, h, 0.3f, p.biases, true));
    w.down.push_back(random_linear(h, f, 0.3f, p.biases, true));
  }
  RowMatrix x(n, h);  // [n, hidden], the normed hidden state
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = 2.0f * normal(rng);

  // The GPU's slot layout (cuda_weight_stream.h): experts at a stride, biases [E, out] dense.
  std::vector<uint16_t> gate_bits, up_bits, down_bits;  // [E, f, h], [E, f, h], [E, h, f]
  std::vector<float> gate_b, up_b, down_b;              // [E, f], [E, f], [E, h]
  for (int64_t e = 0; e < ne; ++e) {
    const auto i = static_cast<std::size_t>(e);
    for (auto [l, bits, b] : {std::tuple{&w.gate[i], &gate_bits, &gate_b}, {&w.up[i], &up_bits, &up_b},
                              {&w.down[i], &down_bits, &down_b}}) {
      for (Eigen::Index j = 0; j < l->w.size(); ++j) bits->push_back(f32_to_bf16(l->w.data()[j]));
      b->insert(b->end(), l->b.data(), l->b.data() + l->b.size());
    }
  }
  std::vector<uint16_t> xb(static_cast<std::size_t>(x.size()));  // [n, hidden] bf16
  for (Eigen::Index i = 0; i < x.size(); ++i) xb[static_cast<std::size_t>(i)] = f32_to_bf16(x.data()[i]);
  std::vector<void*> owned;
  cuda::DeviceExperts d;
  d.router = to_device(w.router.w.data(), static_cast<std::size_t>(w.router.w.size()), &owned);
  d.router_b = p.biases ? to_device(w.router.b.data(), static_cast<std::size_t>(ne), &owned) : nullptr;
  d.gate = to_device(gate_bits.data(), gate_bits.size(), &owned);
  d.up = to_device(up_bits.data(), up_bits.size(), &owned);
  d.down = to_device(down_bits.data(), down_bits.size(), &owned);
  d.gate_b = p.biases ? to_device(gate_b.data(), gate_b.size(), &owned) : nullptr;
  d.up_b = p.biases ? to_device(up_b.data(), up_b.size(), &owned) : nullptr;
  d.down_b = p.biases ? to_device(down_b.data(), down_b.size(), &owned) : nullptr;
  d.gate_up_stride = f * h;
  d.down_stride = h * f;
  d.correction_bias = w.correction_bias;
  const float* dx = to_device(x.data(), static_cast<std::size_t>(x.size()), &owned);
  const uint16_t* dxb = to_device(xb.data(), xb.size(), &owned);
  float* dout = nullptr;  // [n, hidden]
  ok(cudaMalloc(reinterpret_cast<void**>(&dout), static_cast<std::size_t>(n * h) * 4));
  owned.push_back(dout);
  ok(cudaDeviceSynchronize());  // the uploads ran on the legacy stream

  cuda::Stream stream;
  cublasHandle_t blas = nullptr;
  ASSERT_EQ(cublasCreate(&blas), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasSetStream(blas, stream.get()), CUBLAS_STATUS_SUCCESS);
  ExpertRows gpu_rows, cpu_rows;
  RowMatrix got(n, h);  // [n, hidden]
  {
    cuda::MoeMlp moe(c, n, blas, stream.get());
    moe.run(d, 0, dx, dxb, n, &gpu_rows, dout);
    ok(cudaStreamSynchronize(stream.get()));
    ok(cudaMemcpy(got.data(), dout, static_cast<std::size_t>(n * h) * 4, cudaMemcpyDeviceToHost));
  }
  cublasDestroy(blas);
  for (void* ptr : owned) cudaFree(ptr);

  // The CPU in bf16 mode: the experts' weights packed as bf16 (exact: they are bf16 values), the
  // router fp32, the inputs rounded to bf16 as the GPU's.
  to_bf16_weights(&lw);
  RowMatrix want(n, h);  // [n, hidden]
  moe_mlp_into(w, c, x, want, &cpu_rows, 0);

  double absmax = 0, worst = 0, num = 0, den = 0;
  for (Eigen::Index i = 0; i < want.size(); ++i) absmax = std::max(absmax, std::fabs(double(want.data()[i])));
  for (Eigen::Index i = 0; i < want.size(); ++i) {
    const double e = double(got.data()[i]) - want.data()[i];
    worst = std::max(worst, std::fabs(e) / absmax);
    num += e * e;
    den += double(want.data()[i]) * want.data()[i];
  }
  std::printf("[ %s ] GPU MoE vs CPU bf16: worst |diff| %.3g of absmax %.3g, NMSE %.3g\n", p.name, worst,
              absmax, num / den);
  EXPECT_LE(worst, kBf16MoeOutputTol);

  // The same routing (identical decisions: the CPU's code on the GPU's fp32 logits), so the same
  // rows per expert; the gate/up inputs are the fp32 input rows themselves: bit for bit.
  ASSERT_EQ(gpu_rows.rows_.size(), cpu_rows.rows_.size());
  for (const auto& [key, rows] : cpu_rows.rows_) {
    const auto it = gpu_rows.rows_.find(key);
    ASSERT_NE(it, gpu_rows.rows_.end()) << site_name(key.first) << " expert " << key.second;
    ASSERT_EQ(it->second.size(), rows.size()) << site_name(key.first) << " expert " << key.second;
    if (key.first == Site::kExpertGateUpInput) {
      EXPECT_EQ(it->second, rows) << "expert " << key.second;
      continue;
    }
    double in_max = 0, in_worst = 0;  // act(gate) * up: bf16 GEMM outputs as on the CPU
    for (float v : rows) in_max = std::max(in_max, std::fabs(double(v)));
    for (std::size_t i = 0; i < rows.size(); ++i) in_worst = std::max(in_worst, std::fabs(double(it->second[i]) - rows[i]));
    EXPECT_LE(in_worst, kBf16MoeOutputTol * in_max) << "down input of expert " << key.second;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, CudaMoeMlp,
                         ::testing::Values(MoeCase{"qwen3_moe_8x2", "Qwen3MoeForCausalLM", 8, 2, false},
                                           MoeCase{"mixtral_6x3", "MixtralForCausalLM", 6, 3, false},
                                           MoeCase{"gpt_oss_8x4", "GptOssForCausalLM", 8, 4, true},
                                           // every token to every expert
                                           MoeCase{"gpt_oss_5x5", "GptOssForCausalLM", 5, 5, true},
                                           // sigmoid scores, correction bias, top-2 of 4 groups, x 2.5
                                           MoeCase{"glm4_moe_16x4_grouped", "Glm4MoeForCausalLM", 16, 4, false, 4, 2,
                                                   2.5, true},
                                           // one group, scale 1 (MiniMaxM2TopKRouter)
                                           MoeCase{"minimax_m2_8x2", "MiniMaxM2ForCausalLM", 8, 2, false, 1, 1, 1.0,
                                                   true},
                                           // sigmoid weights on the experts' inputs, outputs summed unweighted
                                           MoeCase{"llama4_8x1", "Llama4ForCausalLM", 8, 1, false},
                                           MoeCase{"llama4_6x2", "Llama4ForCausalLM", 6, 2, false}),
                         [](const auto& i) { return std::string(i.param.name); });

// The shared expert's add (add_shared_expert) against the CPU's layer.cpp formula, out += s * y with
// s = 1 / (1 + exp(-g)) in fp32 (Qwen3-Next's gated shared expert) or 1 (GLM-4.5, Llama 4): the
// ungated add is exact (the same two fp32 operations); the gated one differs only by expf against
// std::exp (1-2 ulp of s), so within 4 fp32 ulps of the result's scale.
TEST(CudaSharedExpert, AddMatchesCpuFormula) {
  CTCAL_REQUIRE_GPU();
  const int64_t n = 37, cols = 72;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> out(static_cast<std::size_t>(n * cols)), y(out.size()), g(static_cast<std::size_t>(n));
  for (auto& v : out) v = normal(rng);
  for (auto& v : y) v = normal(rng);
  for (auto& v : g) v = normal(rng);
  for (bool gated : {false, true}) {
    SCOPED_TRACE(gated ? "gated (Qwen3-Next)" : "ungated (GLM-4.5, Llama 4)");
    std::vector<void*> owned;
    float* d_out = to_device(out.data(), out.size(), &owned);
    const float* d_y = to_device(y.data(), y.size(), &owned);
    const float* d_g = gated ? to_device(g.data(), g.size(), &owned) : nullptr;
    cuda::add_shared_expert(d_out, d_y, d_g, n, cols, nullptr);
    std::vector<float> got(out.size());  // [n, cols]
    ok(cudaMemcpy(got.data(), d_out, got.size() * 4, cudaMemcpyDeviceToHost));
    for (void* ptr : owned) cudaFree(ptr);
    for (int64_t t = 0; t < n; ++t) {
      const float sg = gated ? 1.0f / (1.0f + std::exp(-g[static_cast<std::size_t>(t)])) : 1.0f;
      for (int64_t c = 0; c < cols; ++c) {
        const auto i = static_cast<std::size_t>(t * cols + c);
        const float want = out[i] + sg * y[i];
        if (!gated) ASSERT_EQ(got[i], want) << "token " << t << " column " << c;
        else ASSERT_NEAR(got[i], want, 4 * 1.2e-7 * (std::fabs(out[i]) + std::fabs(y[i]))) << "token " << t << " column " << c;
      }
    }
  }
}

// Per-expert running min/max and row count, as tests/golden/expert_input_golden_test.cpp.
class ExpertRanges : public ActivationObserver {
 public:
  struct Seen {
    double min = INFINITY, max = -INFINITY;
    int64_t rows = 0;
  };
  bool wants(int64_t, Site s) const override { return s == Site::kExpertGateUpInput || s == Site::kExpertDownInput; }
  void observe(int64_t, Site, const HeadsView&) override { ADD_FAILURE() << "expert sites come through observe_expert"; }
  void observe_expert(int64_t layer, Site site, int64_t expert, const HeadsView& v) override {
    Seen& s = seen_[{layer, site, expert}];
    for (int64_t t = 0; t < v.seq; ++t)
      for (int64_t d = 0; d < v.head_dim; ++d) {
        s.min = std::min(s.min, double(v.at(t, 0, d)));
        s.max = std::max(s.max, double(v.at(t, 0, d)));
      }
    s.rows += v.seq;
  }
  std::map<std::tuple<int64_t, Site, int64_t>, Seen> seen_;
};

class CudaMoeGolden : public ::testing::TestWithParam<std::string> {};

// The MoE layers end to end on the GPU (weights streamed from the checkpoint, routing, experts,
// observers) against transformers' float64 expert inputs.
TEST_P(CudaMoeGolden, ExpertInputsMatchGolden) {
  CTCAL_REQUIRE_GPU();
  const json forward = test::load_json(test::golden_dir() / (GetParam() + ".json"));
  const json want = test::load_json(test::golden_dir() / "expert_inputs" / (GetParam() + ".json"));
  Checkpoint ckpt(test::golden_dir() / forward["model_dir"].get<std::string>());
  const ModelConfig cfg = load_model_config(ckpt);
  Decoder model(ckpt, cfg);
  ForwardOptions opt;
  opt.device = ComputeDevice::parse("cuda:0");
  ExpertRanges cap;
  for (const auto& s : forward["samples"]) model.forward(s.get<std::vector<int32_t>>(), &cap, opt);
  double worst = 0;
  int64_t moved = 0, routed = 0;
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    if (!cfg.is_moe(l)) continue;
    const json& layer = want["layers"][static_cast<std::size_t>(l)];
    for (const auto& [name, site] : {std::pair{"gate_up", Site::kExpertGateUpInput}, std::pair{"down", Site::kExpertDownInput}})
      for (int64_t e = 0; e < cfg.num_experts; ++e) {
        const auto it = cap.seen_.find({l, site, e});
        const int64_t got_rows = it == cap.seen_.end() ? 0 : it->second.rows;
        const std::string key = std::to_string(e);
        const int64_t want_rows = layer[name].contains(key) ? layer[name][key]["rows"].get<int64_t>() : 0;
        if (site == Site::kExpertGateUpInput) {  // rows per expert: the routing (the down site has the same)
          moved += std::abs(got_rows - want_rows);
          routed += want_rows;
        }
        if (want_rows == 0 || got_rows == 0) continue;
        const json& w = layer[name][key];
        const double wmin = w["min"], wmax = w["max"];
        const double absmax = std::max(std::fabs(wmin), std::fabs(wmax));
        const double err = std::max(std::fabs(it->second.min - wmin), std::fabs(it->second.max - wmax)) / absmax;
        worst = std::max(worst, err);
        EXPECT_LE(err, kBf16ExpertInputRelTol) << "layer " << l << " " << name << " expert " << e;
      }
  }
  moved /= 2;  // a row that moved is missing from one expert and extra in another
  std::printf("[ %s ] GPU expert inputs: min/max worst relative error %.3g; %ld of %ld routed rows moved\n",
              GetParam().c_str(), worst, static_cast<long>(moved), static_cast<long>(routed));
  EXPECT_GT(routed, 0);
  EXPECT_LE(static_cast<double>(moved), kBf16MovedRowsShare * static_cast<double>(routed));
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaMoeGolden, ::testing::Values("qwen3_moe_fp32", "mixtral_sliding_fp32"),
                         [](const auto& p) { return p.param; });

}  // namespace
}  // namespace ctcal
