// ctcal's Mamba2 mixer (model/mamba2.h) against transformers 5.17's NemotronHMamba2Mixer and
// GraniteMoeHybridMambaLayer in float64 (tests/golden/make_mamba2_golden.py): T = 150 tokens,
// chunk_size 32 (four full chunks and a partial one), both time-step clamps biting.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ctcal/io/safetensors.h"
#include "ctcal/model/mamba2.h"
#include "test_util.h"

namespace ctcal {
namespace {

// fp32 against float64, as max |got - want| / max |want| over the whole output. One mixer is
// ~5 fp32 stages (in_proj K=64, conv K=4, a scan summing <= 32 terms per chunk and a state
// carried over 5 chunks, the norm, out_proj K<=128); each adds a few fp32 ulps (6e-8) of the
// output scale, so the expected error is ~1e-6 (measured: see the test's output). 1e-5 leaves a
// ~10x margin and is still 10x tighter than the model-level kRowRelTol (1e-4) that the layer
// loop's golden tests will apply after many such layers.
constexpr double kMamba2RelTol = 1e-5;

struct Golden {
  Mamba2Config cfg;
  Mamba2Weights w;
  RowMatrix x;   // [T, hidden]
  RowMatrixD y;  // [T, hidden] float64
};

Vector read_vec(const SafetensorsFile& f, const std::string& name) {
  const std::vector<float> v = f.read_f32(name);
  return Eigen::Map<const Vector>(v.data(), static_cast<Eigen::Index>(v.size()));
}

RowMatrix read_mat(const SafetensorsFile& f, const std::string& name, int64_t rows, int64_t cols) {
  const std::vector<float> v = f.read_f32(name);
  EXPECT_EQ(static_cast<int64_t>(v.size()), rows * cols) << name;
  return Eigen::Map<const RowMatrix>(v.data(), rows, cols);
}

Golden load(const std::string& family) {
  const SafetensorsFile f(test::golden_dir() / "mamba2" / (family + ".safetensors"));
  const nlohmann::json m = nlohmann::json::parse(f.metadata().at("mixer"));
  Golden g;
  Mamba2Config& c = g.cfg;
  c.hidden_size = m.at("hidden_size");
  c.num_heads = m.at("num_heads");
  c.head_dim = m.at("head_dim");
  c.state_size = m.at("state_size");
  c.n_groups = m.at("n_groups");
  c.conv_kernel = m.at("conv_kernel");
  c.chunk_size = m.at("chunk_size");
  c.norm_group_size = m.at("norm_group_size");
  c.norm_eps = m.at("norm_eps");
  c.time_step_min = m.at("time_step_min");
  c.time_step_max = m.at("time_step_max").is_null() ? std::numeric_limits<double>::infinity()
                                                     : m.at("time_step_max").get<double>();
  EXPECT_EQ(c.intermediate_size(), m.at("intermediate_size").get<int64_t>());
  const auto& t = f.tensors();
  g.w.in_proj.w = read_mat(f, "in_proj.weight", c.in_proj_dim(), c.hidden_size);
  if (t.count("in_proj.bias")) g.w.in_proj.b = read_vec(f, "in_proj.bias");
  EXPECT_EQ(f.info("conv1d.weight").shape, (std::vector<int64_t>{c.conv_dim(), 1, c.conv_kernel}));
  g.w.conv_w = read_mat(f, "conv1d.weight", c.conv_dim(), c.conv_kernel);
  if (t.count("conv1d.bias")) g.w.conv_b = read_vec(f, "conv1d.bias");
  g.w.dt_bias = read_vec(f, "dt_bias");
  g.w.A_log = read_vec(f, "A_log");
  g.w.D = read_vec(f, "D");
  g.w.norm_w = read_vec(f, "norm.weight");
  g.w.out_proj.w = read_mat(f, "out_proj.weight", c.hidden_size, c.intermediate_size());
  if (t.count("out_proj.bias")) g.w.out_proj.b = read_vec(f, "out_proj.bias");
  const TensorInfo& xi = f.info("x");
  g.x = read_mat(f, "x", xi.shape[0], xi.shape[1]);
  const TensorInfo& yi = f.info("y");
  EXPECT_EQ(yi.dtype, DType::kF64);
  g.y.resize(yi.shape[0], yi.shape[1]);
  std::memcpy(g.y.data(), f.data(yi), yi.nbytes());
  return g;
}

// max |got - want| / max |want| over rows [0, got.rows()).
double rel_err(const RowMatrix& got, const RowMatrixD& want) {
  const RowMatrixD w = want.topRows(got.rows());
  return (got.cast<double>() - w).cwiseAbs().maxCoeff() / w.cwiseAbs().maxCoeff();
}

class Mamba2Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Mamba2Golden, MatchesTransformersFloat64) {
  const Golden g = load(GetParam());
  check_mamba2(g.cfg, g.w, GetParam().c_str());
  const RowMatrix y = mamba2_forward(g.cfg, g.w, g.x);  // [T, hidden]
  const double err = rel_err(y, g.y);
  std::printf("%s: T=%lld max rel err %.3g (tolerance %.0e)\n", GetParam().c_str(),
              static_cast<long long>(g.x.rows()), err, kMamba2RelTol);
  EXPECT_LE(err, kMamba2RelTol);
}

// A prefix of the sample is a sample of its own: its outputs are the golden's first rows
// (causality), whatever the length: shorter than the convolution, within the first chunk, on a
// chunk boundary, one past it.
TEST_P(Mamba2Golden, PrefixesMatchTheirRows) {
  const Golden g = load(GetParam());
  for (int64_t t : {1, 3, 31, 32, 33, 64, 100}) {
    const RowMatrix y = mamba2_forward(g.cfg, g.w, g.x.topRows(t));  // [t, hidden]
    EXPECT_LE(rel_err(y, g.y), kMamba2RelTol) << "prefix of " << t << " tokens";
  }
}

// Several samples in one call: each from its own zero state (no convolution or state leaks
// across the boundary), bit for bit as if run alone (the fixed-order projection GEMM does not
// depend on the rows per call, and nothing else looks across rows), so MPI ranks holding other
// samples agree. The first sample starts at a row that is not a multiple of the chunk size.
// Rows outside every span are left untouched.
TEST_P(Mamba2Golden, SamplesInOneCallAreIndependent) {
  const Golden g = load(GetParam());
  const int64_t T = g.x.rows(), hidden = g.cfg.hidden_size, a = 41;
  RowMatrix x(a + 1 + T, hidden);  // [a | one unused row | T]
  x.topRows(a) = g.x.bottomRows(a);
  x.row(a).setConstant(1e3f);
  x.bottomRows(T) = g.x;
  RowMatrix y = RowMatrix::Constant(x.rows(), hidden, -7.0f);  // [a + 1 + T, hidden]
  mamba2_forward(g.cfg, g.w, x, {SampleSpan{a + 1, T}, SampleSpan{0, a}}, y);
  EXPECT_LE(rel_err(y.bottomRows(T), g.y), kMamba2RelTol);
  EXPECT_TRUE((y.row(a).array() == -7.0f).all());
  const RowMatrix alone_a = mamba2_forward(g.cfg, g.w, g.x.bottomRows(a));  // [a, hidden]
  const RowMatrix alone_t = mamba2_forward(g.cfg, g.w, g.x);                 // [T, hidden]
  EXPECT_TRUE(y.topRows(a) == alone_a) << "the short sample differs from itself run alone";
  EXPECT_TRUE(y.bottomRows(T) == alone_t) << "the long sample differs from itself run alone";
}

INSTANTIATE_TEST_SUITE_P(Families, Mamba2Golden, ::testing::Values("nemotron_h", "granitemoehybrid"));

}  // namespace
}  // namespace ctcal
