// The one-pass kernels of the CUDA backend (lib/src/model/cuda/cuda_kernels.cu) against the
// step-by-step kernels they replace, which the golden GPU tests check against transformers: the
// same bits are required (the same per-element arithmetic; min/max are exact in any order). Random
// fp32 inputs; head_dims that fill the block's threads (64, 128) and ones that leave some idle (96:
// Phi-3; 8: stories260K); samples shorter than the 16 row splits and longer. Skips without a GPU.
#include <cmath>
#include <random>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "ctcal/dtype.h"
#include "cuda_kernels.h"
#include "require_gpu.h"

namespace ctcal {
namespace {

// A device copy of a host vector, freed on scope exit.
template <typename T>
class DeviceVector {
 public:
  explicit DeviceVector(const std::vector<T>& host) : n_(host.size()) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p_), n_ * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  explicit DeviceVector(std::size_t n, T fill = T{}) : DeviceVector(std::vector<T>(n, fill)) {}
  DeviceVector(const DeviceVector&) = delete;
  DeviceVector& operator=(const DeviceVector&) = delete;
  ~DeviceVector() { cudaFree(p_); }
  T* get() const { return p_; }
  std::vector<T> host() const {
    std::vector<T> out(n_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(out.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }

 private:
  T* p_ = nullptr;
  std::size_t n_;
};

struct QkvCase {
  int64_t heads, kv_heads, head_dim;
  std::vector<int64_t> lengths;  // samples of one chunk
  bool nope = false;             // a layer without RoPE (SmolLM3's NoPE layers): an empty table, null cos/sin
};

class RopeQkvOnePass : public ::testing::TestWithParam<QkvCase> {};

// rope_qkv_to_bf16 + fold_head_ranges against rope, head_min_max and to_bf16_rows, as the layer
// runs them (cuda_layers.cpp: rope_qkv_in_steps).
TEST_P(RopeQkvOnePass, SameBitsAsTheSteps) {
  CTCAL_REQUIRE_GPU();
  const QkvCase c = GetParam();
  const int64_t d = c.head_dim, half = d / 2, nh = c.heads, nkv = c.kv_heads;
  const int64_t qd = nh * d, kvd = nkv * d, ld = qd + 2 * kvd;
  const int64_t table_half = c.nope ? 0 : half;  // the RoPE table's half (0: NoPE, nothing rotated)
  ASSERT_TRUE(cuda::rope_qkv_supports(d, table_half));
  std::vector<int64_t> offsets;
  int64_t rows = 0;
  for (int64_t len : c.lengths) offsets.push_back(rows), rows += len;
  const auto samples = static_cast<int64_t>(c.lengths.size());
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(static_cast<std::size_t>(rows * ld));  // q|k|v [rows, ld]
  for (auto& e : x) e = normal(rng);
  // Per sample, its RoPE table [len, half]: Llama's angles t * theta^(-2i/d).
  std::vector<std::vector<float>> cos_h, sin_h;
  for (int64_t len : c.lengths) {
    std::vector<float> cs(static_cast<std::size_t>(len * half)), sn(cs.size());
    for (int64_t t = 0; t < len; ++t)
      for (int64_t i = 0; i < half; ++i) {
        const double a = static_cast<double>(t) * std::pow(10000.0, -2.0 * static_cast<double>(i) / static_cast<double>(d));
        cs[static_cast<std::size_t>(t * half + i)] = static_cast<float>(std::cos(a));
        sn[static_cast<std::size_t>(t * half + i)] = static_cast<float>(std::sin(a));
      }
    cos_h.push_back(std::move(cs));
    sin_h.push_back(std::move(sn));
  }
  std::vector<std::unique_ptr<DeviceVector<float>>> cos_d, sin_d;
  for (std::size_t j = 0; j < c.lengths.size(); ++j) {
    cos_d.push_back(std::make_unique<DeviceVector<float>>(cos_h[j]));
    sin_d.push_back(std::make_unique<DeviceVector<float>>(sin_h[j]));
  }
  const std::vector<int64_t> lengths = c.lengths;
  DeviceVector<int64_t> offsets_d(offsets), lengths_d(lengths);
  const std::size_t part_floats = static_cast<std::size_t>(2 * samples * nh * cuda::kMinMaxSplits);
  const int kSites = 4;  // key before RoPE, query, key, value
  const int64_t site_heads[kSites] = {nkv, nh, nkv, nkv};

  // The steps: x is rotated in place, ranges observed, then rounded to bf16.
  DeviceVector<float> xs(x), part(part_floats);
  const auto n_ranges = static_cast<std::size_t>(kSites * samples * nh);  // [site, sample, heads]
  DeviceVector<float> mins_a(n_ranges), maxs_a(n_ranges);
  auto range = [&](int site, const float* view) {
    const std::size_t at = static_cast<std::size_t>(site * samples * nh);
    cuda::head_min_max(view, ld, site_heads[site], d, offsets_d.get(), lengths_d.get(), samples, mins_a.get() + at,
                       maxs_a.get() + at, nh, part.get(), nullptr);
  };
  range(0, xs.get() + qd);
  for (std::size_t j = 0; j < c.lengths.size(); ++j) {
    float* base = xs.get() + offsets[j] * ld;
    cuda::rope(base, c.lengths[j], nh, d, ld, cos_d[j]->get(), sin_d[j]->get(), table_half, nullptr);
    cuda::rope(base + qd, c.lengths[j], nkv, d, ld, cos_d[j]->get(), sin_d[j]->get(), table_half, nullptr);
  }
  range(1, xs.get());
  range(2, xs.get() + qd);
  range(3, xs.get() + qd + kvd);
  DeviceVector<uint16_t> qa(static_cast<std::size_t>(rows * qd)), ka(static_cast<std::size_t>(rows * kvd)),
      va(static_cast<std::size_t>(rows * kvd));
  cuda::to_bf16_rows(xs.get(), ld, qa.get(), rows, qd, nullptr);
  cuda::to_bf16_rows(xs.get() + qd, ld, ka.get(), rows, kvd, nullptr);
  cuda::to_bf16_rows(xs.get() + qd + kvd, ld, va.get(), rows, kvd, nullptr);

  // One pass: x only read.
  DeviceVector<float> xo(x), parts(static_cast<std::size_t>(kSites) * part_floats);
  DeviceVector<float> mins_b(n_ranges, NAN), maxs_b(n_ranges, NAN);
  DeviceVector<uint16_t> qb(static_cast<std::size_t>(rows * qd)), kb(static_cast<std::size_t>(rows * kvd)),
      vb(static_cast<std::size_t>(rows * kvd));
  cuda::QkvRanges r{parts.get(), parts.get() + part_floats, parts.get() + 2 * part_floats,
                    parts.get() + 3 * part_floats, samples, 0};
  for (std::size_t j = 0; j < c.lengths.size(); ++j) {
    r.sample = static_cast<int64_t>(j);
    const int64_t o = offsets[j];
    cuda::rope_qkv_to_bf16(xo.get() + o * ld, c.lengths[j], ld, nh, nkv, d, c.nope ? nullptr : cos_d[j]->get(),
                           c.nope ? nullptr : sin_d[j]->get(),
                           qb.get() + o * qd, kb.get() + o * kvd, vb.get() + o * kvd, r, nullptr);
  }
  for (int site = 0; site < kSites; ++site) {
    const std::size_t at = static_cast<std::size_t>(site * samples * nh);
    cuda::fold_head_ranges(parts.get() + static_cast<std::size_t>(site) * part_floats, samples, site_heads[site],
                           mins_b.get() + at, maxs_b.get() + at, nh, nullptr);
  }

  EXPECT_EQ(xo.host(), x) << "the one-pass kernel wrote its input";
  EXPECT_EQ(qb.host(), qa.host()) << "q bf16";
  EXPECT_EQ(kb.host(), ka.host()) << "k bf16";
  EXPECT_EQ(vb.host(), va.host()) << "v bf16";
  const std::vector<float> lo_a = mins_a.host(), hi_a = maxs_a.host(), lo_b = mins_b.host(), hi_b = maxs_b.host();
  for (int site = 0; site < kSites; ++site)
    for (int64_t s = 0; s < samples; ++s)
      for (int64_t h = 0; h < site_heads[site]; ++h) {
        const auto i = static_cast<std::size_t>((site * samples + s) * nh + h);
        EXPECT_EQ(lo_b[i], lo_a[i]) << "site " << site << " sample " << s << " head " << h;
        EXPECT_EQ(hi_b[i], hi_a[i]) << "site " << site << " sample " << s << " head " << h;
      }
  // And the value ranges (no arithmetic on the way) against the host directly.
  for (int64_t s = 0; s < samples; ++s)
    for (int64_t h = 0; h < nkv; ++h) {
      float lo = INFINITY, hi = -INFINITY;
      for (int64_t t = offsets[s]; t < offsets[s] + c.lengths[s]; ++t)
        for (int64_t e = 0; e < d; ++e) {
          const float v = x[static_cast<std::size_t>(t * ld + qd + kvd + h * d + e)];
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
      const auto i = static_cast<std::size_t>((3 * samples + s) * nh + h);
      EXPECT_EQ(lo_b[i], lo);
      EXPECT_EQ(hi_b[i], hi);
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeQkvOnePass,
                         ::testing::Values(QkvCase{32, 8, 128, {2048, 300}},  // Llama-3 8B's heads
                                           QkvCase{4, 4, 96, {150, 7}},       // Phi-3's head_dim: 240 of 256 threads
                                           QkvCase{6, 2, 64, {1, 40, 64}},    // a sample shorter than the 16 splits
                                           QkvCase{8, 4, 8, {33}},            // stories260K's head_dim
                                           QkvCase{4, 2, 128, {70, 3}, true}));  // a NoPE layer (SmolLM3)

// rms_norm without its fp32 output writes the same bf16 copy as with it.
TEST(RmsNorm, Bf16CopyAloneIsTheSame) {
  CTCAL_REQUIRE_GPU();
  const int64_t rows = 37, width = 4096;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> x(static_cast<std::size_t>(rows * width)), w(static_cast<std::size_t>(width));
  for (auto& e : x) e = normal(rng);
  for (auto& e : w) e = 1.0f + 0.1f * normal(rng);
  DeviceVector<float> xd(x), wd(w), y(x.size());
  DeviceVector<uint16_t> both(x.size()), alone(x.size(), 0xffff);
  cuda::rms_norm(xd.get(), width, wd.get(), 1e-5, y.get(), width, both.get(), rows, width, nullptr);
  cuda::rms_norm(xd.get(), width, wd.get(), 1e-5, nullptr, width, alone.get(), rows, width, nullptr);
  EXPECT_EQ(alone.host(), both.host());
  const std::vector<float> yh = y.host();
  const std::vector<uint16_t> bh = both.host();
  for (std::size_t i = 0; i < yh.size(); ++i) ASSERT_EQ(bh[i], f32_to_bf16(yh[i])) << i;  // the copy is bf16(y)
}

}  // namespace
}  // namespace ctcal
