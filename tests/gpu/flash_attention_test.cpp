// The fused attention kernel (lib/src/model/cuda/flash_attention.cu) against the CPU's
// causal_attention (model/attention.cpp, itself checked against transformers' float64 golden data
// in tests/golden), on random bf16 inputs: head_dims that fill the kernel's tiles and ones it
// pads, GQA, sliding windows, attention sinks, samples shorter than a tile and spanning several.
// Skips without a GPU.
#include <cmath>
#include <cstring>
#include <random>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "ctcal/model/attention.h"
#include "ctcal/model/cuda_backend.h"
#include "flash_attention.h"
#include "require_gpu.h"

namespace ctcal {
namespace {

// Both sides multiply the same bf16-valued q, k, v with fp32 accumulation; the kernel also rounds
// each probability to bf16 before P V (relative error <= 2^-9), so an output element, a convex
// combination of V's column, moves by at most 2^-9 * max|v|. Twice that allows for the fp32
// summation order and exp2f against expf.
constexpr double kProbabilityRoundingTol = 1.0 / 256;

uint16_t bf16_bits(float x) {  // round to nearest even (no NaN here)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float bf16_value(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

template <typename T>
T* to_device(const std::vector<T>& host) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), host.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

struct Case {
  int64_t head_dim, heads, kv_heads;
  std::vector<int64_t> lengths;
  std::optional<int64_t> window;
  bool sinks;
};

class FlashAttention : public ::testing::TestWithParam<Case> {};

TEST_P(FlashAttention, MatchesCpuAttention) {
  CTCAL_REQUIRE_GPU();
  const Case c = GetParam();
  AttentionShape shape = AttentionShape::plain(c.heads, c.kv_heads, c.head_dim, c.window);
  std::vector<SampleSpan> spans;
  int64_t rows = 0;
  for (int64_t len : c.lengths) {
    spans.push_back({rows, len});
    rows += len;
  }
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // q, k: [rows, heads * d] / [rows, kv_heads * d], scaled so that softmax rows are neither flat
  // nor one-hot; v: [rows, kv_heads * d].
  auto make = [&](int64_t cols, float scale, std::vector<float>* vals, std::vector<uint16_t>* bits) {
    for (int64_t i = 0; i < rows * cols; ++i) {
      bits->push_back(bf16_bits(normal(rng) * scale));
      vals->push_back(bf16_value(bits->back()));
    }
  };
  std::vector<float> q, k, v;
  std::vector<uint16_t> qb, kb, vb;
  make(shape.q_dim(), 1.5f, &q, &qb);
  make(shape.kv_dim(), 1.5f, &k, &kb);
  make(shape.kv_dim(), 1.0f, &v, &vb);
  std::vector<float> sinks(static_cast<std::size_t>(c.heads));
  for (auto& s : sinks) s = normal(rng) * 2.0f;
  if (c.sinks) shape.sinks = sinks.data();

  std::vector<float> want(static_cast<std::size_t>(rows * shape.q_dim()));
  causal_attention(q.data(), k.data(), v.data(), want.data(), spans, shape, 64, 64);

  float v_max = 0;
  for (float x : v) v_max = std::max(v_max, std::fabs(x));
  uint16_t *dq = to_device(qb), *dk = to_device(kb), *dv = to_device(vb);
  float* dsinks = c.sinks ? to_device(sinks) : nullptr;
  for (int block_rows : {64, 128}) {  // both block heights the kernel has
    const std::vector<cuda::FlashItem> items = cuda::flash_items(spans, block_rows);
    cuda::FlashItem* ditems = to_device(items);
    std::vector<float> got(want.size(), std::nanf(""));
    float* dout = to_device(got);  // NaN wherever the kernel does not write
    auto run = [&](cuda::FlashOutput out) {
      cuda::flash_attention(dq, dk, dv, out, shape.q_dim(), shape.kv_dim(), c.heads, c.kv_heads, c.head_dim,
                            c.window.value_or(INT64_MAX), shape.scale, dsinks, ditems,
                            static_cast<int64_t>(items.size()), block_rows, nullptr);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    };
    run({dout, nullptr});
    ASSERT_EQ(cudaMemcpy(got.data(), dout, got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    // The bf16 output (what o_proj reads when nothing else does) is the fp32 output rounded to
    // nearest even, bit for bit: the same accumulators, rounded once at the store.
    std::vector<uint16_t> got_bf16(want.size(), 0xffff);  // a NaN pattern where nothing is written
    uint16_t* dout_bf16 = to_device(got_bf16);
    run({nullptr, dout_bf16});
    ASSERT_EQ(cudaMemcpy(got_bf16.data(), dout_bf16, got_bf16.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    cudaFree(ditems);
    cudaFree(dout);
    cudaFree(dout_bf16);
    int64_t bf16_mismatches = 0;
    for (std::size_t i = 0; i < want.size(); ++i) bf16_mismatches += got_bf16[i] != bf16_bits(got[i]) ? 1 : 0;
    EXPECT_EQ(bf16_mismatches, 0) << "bf16 output differs from bf16(fp32 output), " << block_rows << "-row blocks";
    double worst = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      ASSERT_TRUE(std::isfinite(got[i])) << "element " << i << " not written or not finite (" << block_rows << " rows)";
      worst = std::max(worst, static_cast<double>(std::fabs(got[i] - want[i])));
    }
    std::printf("flash attention d=%lld heads=%lld/%lld, %d-row blocks: worst |gpu - cpu| %.3g (max|v| %.3g, bound %.3g)\n",
                static_cast<long long>(c.head_dim), static_cast<long long>(c.heads),
                static_cast<long long>(c.kv_heads), block_rows, worst, v_max, kProbabilityRoundingTol * v_max);
    EXPECT_LE(worst, kProbabilityRoundingTol * v_max) << block_rows << "-row blocks";
  }
  for (void* p : {static_cast<void*>(dq), static_cast<void*>(dk), static_cast<void*>(dv), static_cast<void*>(dsinks)})
    cudaFree(p);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, FlashAttention,
    ::testing::Values(Case{8, 4, 2, {1, 37, 130}, std::nullopt, false},    // stories260K's head_dim, padded to 16
                      Case{64, 8, 2, {200, 64, 1}, 48, true},              // gpt-oss: head_dim 64, window, sinks
                      Case{96, 4, 4, {150}, std::nullopt, true},           // Phi-3's head_dim
                      Case{128, 8, 1, {300, 5}, 100, false},               // Llama/Qwen head_dim, window
                      Case{128, 4, 4, {1000}, std::nullopt, false},        // many key tiles
                      Case{256, 2, 1, {97, 129}, 70, false},               // Gemma 3's head_dim
                      Case{40, 2, 2, {77}, std::nullopt, true}));          // padded to 64

}  // namespace
}  // namespace ctcal
