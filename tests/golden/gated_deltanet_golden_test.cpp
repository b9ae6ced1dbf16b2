// The gated DeltaNet layer (model/gated_deltanet.h) against transformers 5.17's own modules in
// float64 (tests/golden/make_gated_deltanet_golden.py): Qwen3NextGatedDeltaNet (fused, interleaved
// in-projections, split here by split_qwen3_next_in_proj), Qwen3_5GatedDeltaNet and
// Qwen3_5MoeGatedDeltaNet, one 150-token sample each (three chunks of the delta rule, two of them
// full). Checked: the module's output, the delta rule's output (the gated norm's input), and the
// test's own token-by-token double reference (gated_deltanet_reference.h) against the same data,
// which pins that reference to transformers for the unit tests that use it.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ctcal/io/safetensors.h"
#include "ctcal/model/gated_deltanet.h"
#include "gated_deltanet_reference.h"
#include "test_util.h"

namespace ctcal {
namespace {

// The reference's float64 module still computes the delta rule and the gated norm's
// normalisation in float32 (torch_chunk_gated_delta_rule and RMSNormGated cast to float32), so
// the golden itself carries ~1e-7 relative noise; ctcal's fp32 chain (five GEMMs of width <= 128,
// a 64 x 64 triangular solve per chunk, three chunks) adds ~1e-6. kAbsmaxRelTol (1e-4 of the
// output's largest magnitude, the golden tests' fp32 bound) keeps a 10x margin over both.
constexpr double kTol = test::kAbsmaxRelTol;

struct GoldenCase {
  SafetensorsFile file;
  GatedDeltaNetShape shape;
  GatedDeltaNetWeights w;
  bool fused = false;  // Qwen3-Next's in_proj_qkvz / in_proj_ba

  explicit GoldenCase(const std::string& name)
      : file(test::golden_dir() / "gated_deltanet" / (name + ".safetensors")) {
    const auto& m = file.metadata();
    shape.hidden = std::stoll(m.at("hidden_size"));
    shape.num_k_heads = std::stoll(m.at("linear_num_key_heads"));
    shape.num_v_heads = std::stoll(m.at("linear_num_value_heads"));
    shape.head_k_dim = std::stoll(m.at("linear_key_head_dim"));
    shape.head_v_dim = std::stoll(m.at("linear_value_head_dim"));
    shape.conv_kernel = std::stoll(m.at("linear_conv_kernel_dim"));
    shape.eps = std::stod(m.at("rms_norm_eps"));
    fused = file.has("in_proj_qkvz.weight");
    if (fused) {
      split_qwen3_next_in_proj(matrix("in_proj_qkvz.weight"), matrix("in_proj_ba.weight"), shape, &w);
    } else {
      w.in_proj_qkv.w = matrix("in_proj_qkv.weight");
      w.in_proj_z.w = matrix("in_proj_z.weight");
      w.in_proj_b.w = matrix("in_proj_b.weight");
      w.in_proj_a.w = matrix("in_proj_a.weight");
    }
    const TensorInfo& conv = file.info("conv1d.weight");  // [conv_dim, 1, K]
    w.conv1d = Eigen::Map<const RowMatrix>(file.read_f32("conv1d.weight").data(), conv.shape[0], conv.shape[2]);
    w.dt_bias = vector("dt_bias");
    w.A_log = vector("A_log");
    w.norm = vector("norm.weight");
    w.out_proj.w = matrix("out_proj.weight");
    check_gated_deltanet(w, shape, "linear_attn");
  }
  RowMatrix matrix(const std::string& name) const {
    const TensorInfo& t = file.info(name);
    return Eigen::Map<const RowMatrix>(file.read_f32(name).data(), t.shape[0], t.shape[1]);
  }
  Vector vector(const std::string& name) const {
    const std::vector<float> v = file.read_f32(name);
    return Eigen::Map<const Vector>(v.data(), static_cast<Eigen::Index>(v.size()));
  }
  // A float64 tensor [rows, cols] as stored (no rounding to fp32).
  RowMatrixD exact(const std::string& name) const {
    const TensorInfo& t = file.info(name);
    EXPECT_EQ(t.dtype, DType::kF64) << name;
    RowMatrixD m(t.shape[0], t.shape[1]);
    std::memcpy(m.data(), file.data(t), t.nbytes());
    return m;
  }
};

// max |got - want| / max |want|.
double rel_to_absmax(const RowMatrixD& got, const RowMatrixD& want) {
  EXPECT_EQ(got.rows(), want.rows());
  EXPECT_EQ(got.cols(), want.cols());
  return (got - want).cwiseAbs().maxCoeff() / want.cwiseAbs().maxCoeff();
}

class GatedDeltaNetGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(GatedDeltaNetGolden, MatchesTransformers) {
  const GoldenCase c(GetParam());
  const RowMatrixD x = c.exact("x");        // [T, hidden]
  const RowMatrixD want = c.exact("y");     // [T, hidden]
  const RowMatrixD want_core = c.exact("core");  // [T, value_dim]
  const int64_t n = x.rows();
  ASSERT_GT(n, 2 * kGatedDeltaChunk) << "the sample must span more than two chunks";
  const RowMatrix xf = x.cast<float>();  // [T, hidden]
  const std::vector<SampleSpan> one{{0, n}};

  RowMatrix y(n, c.shape.hidden);  // [T, hidden]
  gated_deltanet_forward(xf, one, c.w, c.shape, y);
  RowMatrix gated(n, c.shape.value_dim());  // [T, value_dim]
  ProjectionInput in(xf, nullptr);
  gated_deltanet_mix(in, one, c.w, c.shape, gated);
  const double err_y = rel_to_absmax(y.cast<double>(), want);
  // The delta rule's output (the gated norm's input), through the library's steps as
  // gated_deltanet_mix runs them.
  RowMatrix proj, z, b, a;  // [T, conv_dim], [T, value_dim], [T, num_v_heads] x 2
  linear(xf, c.w.in_proj_qkv, &proj);
  linear(xf, c.w.in_proj_z, &z);
  linear(xf, c.w.in_proj_b, &b);
  linear(xf, c.w.in_proj_a, &a);
  RowMatrix qkv(n, c.shape.conv_dim());  // [T, conv_dim]
  causal_conv1d_silu(proj, c.w.conv1d, one, qkv);
  l2norm_qk(qkv, c.shape);
  gated_delta_gates(a, b, c.w.dt_bias, c.w.A_log, a, b);
  const int64_t kd = c.shape.key_dim(), vd = c.shape.value_dim();
  RowMatrix core(n, vd);  // [T, value_dim]
  gated_delta_rule_chunked(qkv.leftCols(kd), qkv.middleCols(kd, kd), qkv.rightCols(vd), a, b, one, c.shape, core);
  const double err_core = rel_to_absmax(core.cast<double>(), want_core);
  RowMatrixD ref_core;
  const RowMatrixD ref = test::reference_gated_deltanet(x, c.w, c.shape, &ref_core);
  const double err_ref = rel_to_absmax(ref, want), err_ref_core = rel_to_absmax(ref_core, want_core);
  std::printf("%s: max |err| / max |want|: ctcal fp32 y %.3g, core %.3g; double reference y %.3g, core %.3g\n",
              GetParam().c_str(), err_y, err_core, err_ref, err_ref_core);
  EXPECT_LE(err_y, kTol);
  EXPECT_LE(err_core, kTol);
  EXPECT_LE(err_ref, kTol);
  EXPECT_LE(err_ref_core, kTol);
  // gated_deltanet_forward is mix + out_proj.
  RowMatrix y2;
  linear(gated, c.w.out_proj, &y2);
  EXPECT_TRUE(y2 == y) << "forward differs from mix + out_proj";
}

INSTANTIATE_TEST_SUITE_P(Cases, GatedDeltaNetGolden, ::testing::Values("qwen3_next", "qwen3_5", "qwen3_5_moe"));

// The Qwen3-Next row map against the module's own reading of the fused tensors: the golden's
// Qwen3-Next module ran on in_proj_qkvz, and the split weights reproduce its output above; here
// the map is also a permutation (every fused row used once).
TEST(GatedDeltaNetGolden, QwenNextRowMapIsAPermutation) {
  const GoldenCase c("qwen3_next");
  const QwenNextInProjRows m = qwen3_next_in_proj_rows(c.shape);
  std::vector<int> seen_qkvz(static_cast<std::size_t>(c.shape.conv_dim() + c.shape.value_dim()), 0);
  std::vector<int> seen_ba(static_cast<std::size_t>(2 * c.shape.num_v_heads), 0);
  for (int64_t r : m.qkv) ++seen_qkvz.at(static_cast<std::size_t>(r));
  for (int64_t r : m.z) ++seen_qkvz.at(static_cast<std::size_t>(r));
  for (int64_t r : m.b) ++seen_ba.at(static_cast<std::size_t>(r));
  for (int64_t r : m.a) ++seen_ba.at(static_cast<std::size_t>(r));
  for (int s : seen_qkvz) EXPECT_EQ(s, 1);
  for (int s : seen_ba) EXPECT_EQ(s, 1);
}

}  // namespace
}  // namespace ctcal
