// The hybrid mixers of the CUDA backend (lib/src/model/cuda/cuda_hybrid.h, hybrid_kernels.h)
// against the CPU's (model/gated_deltanet.h, model/mamba2.h; those are checked against
// transformers in float64 by tests/golden and tests/unit), on the weights of every golden hybrid
// case's mixer layers and random inputs of two samples longer than the CPU's chunks (DeltaNet 64,
// the cases' Mamba2 chunk_size). The golden GPU tests (cuda_golden_test.cpp) then hold whole
// models against transformers. Skips without a GPU.
#include <cmath>
#include <random>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "require_gpu.h"

#include "ctcal/dtype.h"
#include "ctcal/model/deltanet_shape.h"
#include "ctcal/model/gated_deltanet.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/mamba2.h"
#include "cuda_hybrid.h"
#include "golden_capture.h"
#include "hybrid_kernels.h"
#include "test_util.h"

namespace ctcal {
namespace {

// The recurrences alone, GPU token by token against the CPU's chunked GEMM form, both fp32 on the
// same inputs: the same sums in other orders (a chunk's UT solve / SSD decay mask against one
// state update per token): ~1e-6 of the output's absmax measured on CPU-side checks of the two
// forms (tests/unit's per-token references); 1e-4 still flags a wrong decay, gate or head map (O(1)).
constexpr double kFp32RecurrenceTol = 1e-4;
// The whole mixer against the CPU with the same bf16-rounded weights and input: the GPU also rounds
// the out_proj input to bf16 (2^-9 relative per element) and, where the CPU keeps fp32, in_proj's
// input too (already bf16 here): the bf16 bound of the GPU tests (cuda_golden_test.cpp kBf16HeadRelTol),
// relative to the output's absmax.
constexpr double kBf16MixerTol = 0.02;

const std::vector<int64_t> kLengths = {70, 131};  // two samples, each longer than a 64-token chunk

// Every golden case with layers of the given kind: (case name, layer).
std::vector<std::pair<std::string, int64_t>> mixer_layers(bool mamba) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const std::string& name : test::case_names()) {
    test::GoldenCase c;
    if (test::load_golden_case(name, &c)) continue;
    for (int64_t l = 0; l < c.cfg.num_hidden_layers; ++l)
      if (mamba ? c.cfg.is_mamba(l) : c.cfg.is_linear_attention(l)) {
        out.emplace_back(name, l);
        break;  // one layer per case
      }
  }
  return out;
}

// Device memory for a test: a slot the weights are copied into, bump-allocated, 256-byte aligned.
class DeviceSlot {
 public:
  explicit DeviceSlot(std::size_t bytes) : size_(bytes) { EXPECT_EQ(cudaMalloc(&base_, bytes), cudaSuccess); }
  ~DeviceSlot() { cudaFree(base_); }
  DeviceSlot(const DeviceSlot&) = delete;
  DeviceSlot& operator=(const DeviceSlot&) = delete;
  const void* put(const void* src, std::size_t bytes) {
    if (bytes == 0) return nullptr;
    EXPECT_LE(off_ + bytes, size_) << "the slot bound (hybrid_extra_bytes) is too small";
    auto* at = static_cast<unsigned char*>(base_) + off_;
    EXPECT_EQ(cudaMemcpy(at, src, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    off_ = (off_ + bytes + 255) / 256 * 256;
    return at;
  }
  template <typename T>
  T* alloc(std::size_t count) {
    return static_cast<T*>(const_cast<void*>(put(std::vector<T>(count).data(), count * sizeof(T))));
  }

 private:
  void* base_ = nullptr;
  std::size_t size_, off_ = 0;
};

template <typename T>
std::vector<T> download(const T* d, std::size_t n) {
  std::vector<T> out(n);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(out.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

void round_to_bf16(RowMatrix* m) {
  for (Eigen::Index i = 0; i < m->size(); ++i) m->data()[i] = bf16_to_f32(f32_to_bf16(m->data()[i]));
}

// Worst |got - want| over want's absmax, and where.
std::pair<double, std::string> worst_rel(const float* got, const float* want, int64_t rows, int64_t cols) {
  double absmax = 0, worst = 0;
  std::string at;
  for (int64_t i = 0; i < rows * cols; ++i) absmax = std::max(absmax, std::fabs(static_cast<double>(want[i])));
  for (int64_t i = 0; i < rows * cols; ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (e > worst) worst = e, at = fmt::format("row {} col {} (got {:.6g}, want {:.6g})", i / cols, i % cols, got[i], want[i]);
  }
  return {absmax > 0 ? worst / absmax : worst, at};
}

struct Chunk {
  SampleChunk ch;
  std::vector<int64_t> offsets;
  int64_t rows = 0;
};

Chunk two_samples() {
  Chunk c;
  for (int64_t len : kLengths) {
    c.ch.spans.push_back({c.rows, len});
    c.offsets.push_back(c.rows);
    c.rows += len;
  }
  c.ch.first = 0;
  c.ch.last = kLengths.size();
  c.ch.r0 = 0;
  c.ch.n = c.rows;
  return c;
}

RowMatrix random_rows(int64_t rows, int64_t cols, float scale, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  RowMatrix x(rows, cols);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  return x;
}

class Blas {
 public:
  Blas() {
    EXPECT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    EXPECT_EQ(cublasCreate(&h_), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasSetStream(h_, stream_), CUBLAS_STATUS_SUCCESS);
  }
  ~Blas() {
    cublasDestroy(h_);
    cudaStreamDestroy(stream_);
  }
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  cublasHandle_t h_{};
  cudaStream_t stream_{};
};

// The gated DeltaNet mixer of every golden Qwen3.5 / Qwen3-Next case against gated_deltanet_forward.
TEST(CudaHybrid, DeltaNetMixerMatchesTheCpu) {
  CTCAL_REQUIRE_GPU();
  const auto layers = mixer_layers(false);
  ASSERT_FALSE(layers.empty()) << "no golden case has a gated DeltaNet layer";
  for (const auto& [name, layer] : layers) {
    SCOPED_TRACE(fmt::format("{} layer {} (linear_attn)", name, layer));
    test::GoldenCase c;
    ASSERT_FALSE(test::load_golden_case(name, &c));
    const ModelConfig& cfg = c.cfg;
    const GatedDeltaNetShape s = deltanet_shape(cfg);
    LayerWeights w = load_layer_weights(*c.ckpt, cfg, layer, false);
    ASSERT_TRUE(w.linear_attn);
    GatedDeltaNetWeights& dw = *w.linear_attn;
    for (Linear* l : {&dw.in_proj_qkv, &dw.in_proj_z, &dw.in_proj_b, &dw.in_proj_a, &dw.out_proj}) round_to_bf16(&l->w);
    const Chunk ck = two_samples();
    RowMatrix x = random_rows(ck.rows, s.hidden, 1.0f, 7);  // [rows, hidden], the normed input
    round_to_bf16(&x);
    RowMatrix want(ck.rows, s.hidden);  // [rows, hidden]
    gated_deltanet_forward(x, ck.ch.spans, dw, s, want);

    Blas blas;
    DeviceSlot slot(cuda::hybrid_extra_bytes(cfg) + (std::size_t{64} << 20));
    const cuda::DeviceMixer dev = cuda::upload_mixer(w, cfg, [&](const void* p, std::size_t b) { return slot.put(p, b); });
    std::vector<uint16_t> xb_host(static_cast<std::size_t>(x.size()));
    for (Eigen::Index i = 0; i < x.size(); ++i) xb_host[static_cast<std::size_t>(i)] = f32_to_bf16(x.data()[i]);
    const auto* xb = static_cast<const uint16_t*>(slot.put(xb_host.data(), 2 * xb_host.size()));
    const std::vector<int64_t> lens(kLengths);
    const auto* offsets = static_cast<const int64_t*>(slot.put(ck.offsets.data(), 8 * ck.offsets.size()));
    const auto* lengths = static_cast<const int64_t*>(slot.put(lens.data(), 8 * lens.size()));
    float* y = slot.alloc<float>(static_cast<std::size_t>(ck.rows * s.hidden));  // [rows, hidden]
    cuda::HybridMixers mixers(cfg, ck.rows, blas.h_, blas.stream_);
    mixers.deltanet(dev.deltanet, xb, ck.ch, offsets, lengths, y);
    const std::vector<float> got = download(y, static_cast<std::size_t>(ck.rows * s.hidden));
    const auto [err, at] = worst_rel(got.data(), want.data(), ck.rows, s.hidden);
    std::printf("[ %s layer %lld ] GPU gated DeltaNet vs CPU (bf16 weights): worst %.3g of absmax at %s\n", name.c_str(),
                static_cast<long long>(layer), err, at.c_str());
    EXPECT_LE(err, kBf16MixerTol) << at;

    // The recurrence alone, fp32 on both sides: the CPU's l2-normed q/k, v and gates as inputs.
    const int64_t kd = s.key_dim(), vd = s.value_dim(), nv = s.num_v_heads, cd = s.conv_dim();
    RowMatrix qkv = random_rows(ck.rows, cd, 1.0f, 11);  // [rows, conv_dim]
    l2norm_qk(qkv, s);
    RowMatrix a = random_rows(ck.rows, nv, 1.0f, 12), b = random_rows(ck.rows, nv, 1.0f, 13);  // [rows, num_v_heads]
    gated_delta_gates(a, b, dw.dt_bias, dw.A_log, a, b);  // a: g, b: beta
    RowMatrix core(ck.rows, vd);                           // [rows, value_dim]
    gated_delta_rule_chunked(qkv.leftCols(kd), qkv.middleCols(kd, kd), qkv.rightCols(vd), a, b, ck.ch.spans, s, core);
    const auto* qkv_d = static_cast<const float*>(slot.put(qkv.data(), 4 * static_cast<std::size_t>(qkv.size())));
    const auto* g_d = static_cast<const float*>(slot.put(a.data(), 4 * static_cast<std::size_t>(a.size())));
    const auto* beta_d = static_cast<const float*>(slot.put(b.data(), 4 * static_cast<std::size_t>(b.size())));
    float* out_d = slot.alloc<float>(static_cast<std::size_t>(ck.rows * vd));
    ASSERT_EQ(cuda::deltanet_recurrence(qkv_d, cd, g_d, beta_d, offsets, lengths, 2, s.num_k_heads, nv, s.head_k_dim,
                                        s.head_v_dim, out_d, blas.stream_),
              cudaSuccess);
    const std::vector<float> rec = download(out_d, static_cast<std::size_t>(ck.rows * vd));
    const auto [rerr, rat] = worst_rel(rec.data(), core.data(), ck.rows, vd);
    std::printf("[ %s layer %lld ] GPU delta rule (per token) vs CPU chunked, fp32: worst %.3g of absmax at %s\n",
                name.c_str(), static_cast<long long>(layer), rerr, rat.c_str());
    EXPECT_LE(rerr, kFp32RecurrenceTol) << rat;
  }
}

// The Mamba2 mixer of every golden Nemotron-H / Granite 4 case against mamba2_forward.
TEST(CudaHybrid, Mamba2MixerMatchesTheCpu) {
  CTCAL_REQUIRE_GPU();
  const auto layers = mixer_layers(true);
  ASSERT_FALSE(layers.empty()) << "no golden case has a Mamba2 layer";
  for (const auto& [name, layer] : layers) {
    SCOPED_TRACE(fmt::format("{} layer {} (Mamba2 mixer)", name, layer));
    test::GoldenCase c;
    ASSERT_FALSE(test::load_golden_case(name, &c));
    const ModelConfig& cfg = c.cfg;
    const Mamba2Config& m = cfg.mamba;
    LayerWeights w = load_layer_weights(*c.ckpt, cfg, layer, false);
    ASSERT_TRUE(w.mamba);
    Mamba2Weights& mw = *w.mamba;
    round_to_bf16(&mw.in_proj.w);
    round_to_bf16(&mw.out_proj.w);
    const Chunk ck = two_samples();
    RowMatrix x = random_rows(ck.rows, m.hidden_size, 1.0f, 17);  // [rows, hidden]
    round_to_bf16(&x);
    RowMatrix want(ck.rows, m.hidden_size);  // [rows, hidden]
    mamba2_forward(m, mw, x, ck.ch.spans, want);

    Blas blas;
    DeviceSlot slot(cuda::hybrid_extra_bytes(cfg) + (std::size_t{64} << 20));
    const cuda::DeviceMixer dev = cuda::upload_mixer(w, cfg, [&](const void* p, std::size_t b) { return slot.put(p, b); });
    std::vector<uint16_t> xb_host(static_cast<std::size_t>(x.size()));
    for (Eigen::Index i = 0; i < x.size(); ++i) xb_host[static_cast<std::size_t>(i)] = f32_to_bf16(x.data()[i]);
    const auto* xb = static_cast<const uint16_t*>(slot.put(xb_host.data(), 2 * xb_host.size()));
    const std::vector<int64_t> lens(kLengths);
    const auto* offsets = static_cast<const int64_t*>(slot.put(ck.offsets.data(), 8 * ck.offsets.size()));
    const auto* lengths = static_cast<const int64_t*>(slot.put(lens.data(), 8 * lens.size()));
    float* y = slot.alloc<float>(static_cast<std::size_t>(ck.rows * m.hidden_size));  // [rows, hidden]
    cuda::HybridMixers mixers(cfg, ck.rows, blas.h_, blas.stream_);
    // With the out_proj hook asked for (the fp32 path) and without (bf16 only): the same output.
    for (bool hook : {false, true}) {
      int calls = 0;
      mixers.mamba2(dev.mamba, xb, ck.ch, offsets, lengths, hook, [&](float*) { return ++calls, false; }, y);
      const std::vector<float> got = download(y, static_cast<std::size_t>(ck.rows * m.hidden_size));
      const auto [err, at] = worst_rel(got.data(), want.data(), ck.rows, m.hidden_size);
      std::printf("[ %s layer %lld ] GPU Mamba2 mixer vs CPU (bf16 weights, hook %d): worst %.3g of absmax at %s\n",
                  name.c_str(), static_cast<long long>(layer), hook ? 1 : 0, err, at.c_str());
      EXPECT_LE(err, kBf16MixerTol) << at;
      EXPECT_EQ(calls, hook ? 1 : 0);
    }

    // The scan alone, fp32 both sides, one sample (mamba2_chunk_scan's contract), longer than a chunk.
    const int64_t T = std::max<int64_t>(kLengths[1], 2 * m.chunk_size + 3), I = m.intermediate_size();
    const int64_t GN = m.n_groups * m.state_size, H = m.num_heads;
    RowMatrix xs = random_rows(T, I, 1.0f, 21), Bm = random_rows(T, GN, 1.0f, 22), Cm = random_rows(T, GN, 1.0f, 23);
    RowMatrix dt = random_rows(T, H, 0.3f, 24).array().abs().matrix();  // [T, H] positive, as after softplus
    RowMatrix ys(T, I);                                                  // [T, I]
    mamba2_chunk_scan(m, mw.A_log, mw.D, xs, dt, Bm, Cm, ys);
    RowMatrix xbc(T, m.conv_dim());  // [T, conv_dim] = [xs | B | C]
    xbc << xs, Bm, Cm;
    const std::vector<int64_t> one_off = {0}, one_len = {T};
    const auto* xbc_d = static_cast<const float*>(slot.put(xbc.data(), 4 * static_cast<std::size_t>(xbc.size())));
    const auto* dt_d = static_cast<const float*>(slot.put(dt.data(), 4 * static_cast<std::size_t>(dt.size())));
    const auto* off_d = static_cast<const int64_t*>(slot.put(one_off.data(), 8));
    const auto* len_d = static_cast<const int64_t*>(slot.put(one_len.data(), 8));
    float* y_d = slot.alloc<float>(static_cast<std::size_t>(T * I));
    ASSERT_EQ(cuda::mamba2_recurrence(xbc_d, m.conv_dim(), dt_d, dev.mamba.A_log, dev.mamba.D, off_d, len_d, 1, H,
                                      m.head_dim, m.n_groups, m.state_size, y_d, blas.stream_),
              cudaSuccess);
    const std::vector<float> rec = download(y_d, static_cast<std::size_t>(T * I));
    const auto [rerr, rat] = worst_rel(rec.data(), ys.data(), T, I);
    std::printf("[ %s layer %lld ] GPU Mamba2 recurrence (per token) vs CPU SSD scan, fp32, T=%lld: worst %.3g of "
                "absmax at %s\n", name.c_str(), static_cast<long long>(layer), static_cast<long long>(T), rerr,
                rat.c_str());
    EXPECT_LE(rerr, kFp32RecurrenceTol) << rat;
  }
}

// Gated attention's two kernels against their formulas: the split is a copy (exact); the gate is
// 1 / (1 + exp(-g)) in fp32 (expf's ulps: 1e-6 relative).
TEST(CudaHybrid, GatedAttentionKernels) {
  CTCAL_REQUIRE_GPU();
  const int64_t n = 37, heads = 3, d = 24;
  const RowMatrix qg = random_rows(n, heads * 2 * d, 2.0f, 31);  // [n, heads, 2 d]
  const RowMatrix attn = random_rows(n, heads * d, 1.0f, 32);    // [n, heads * d]
  DeviceSlot slot(std::size_t{1} << 20);
  const auto* qg_d = static_cast<const float*>(slot.put(qg.data(), 4 * static_cast<std::size_t>(qg.size())));
  float* q_d = slot.alloc<float>(static_cast<std::size_t>(n * heads * d));
  float* gate_d = slot.alloc<float>(static_cast<std::size_t>(n * heads * d));
  auto* attn_d = static_cast<float*>(const_cast<void*>(slot.put(attn.data(), 4 * static_cast<std::size_t>(attn.size()))));
  cuda::split_query_gate(qg_d, n, heads, d, q_d, gate_d, nullptr);
  cuda::sigmoid_gate_mul(attn_d, gate_d, n * heads * d, nullptr);
  const std::vector<float> q = download(q_d, static_cast<std::size_t>(n * heads * d));
  const std::vector<float> gated = download(attn_d, static_cast<std::size_t>(n * heads * d));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t e = 0; e < d; ++e) {
        const auto i = static_cast<std::size_t>((t * heads + h) * d + e);
        ASSERT_EQ(q[i], qg(t, h * 2 * d + e)) << "query t " << t << " head " << h << " dim " << e;
        const double g = qg(t, h * 2 * d + d + e);
        const double want = attn(t, h * d + e) / (1.0 + std::exp(-g));
        ASSERT_NEAR(gated[i], want, 1e-6 * std::max(1.0, std::fabs(want))) << "gate t " << t << " head " << h;
      }
}

}  // namespace
}  // namespace ctcal
