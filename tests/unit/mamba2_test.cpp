// The Mamba2 mixer's invariants (model/mamba2.h): the chunked SSD scan equals the plain per-token
// recurrence for any chunk size; the thread count never changes a bit; impossible shapes are
// refused by name. Its agreement with transformers is mamba2_golden_test.cpp.
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/model/mamba2.h"
#include "test_util.h"

namespace ctcal {
namespace {

unsigned seed_for_test() {
  const char* s = std::getenv("CTCAL_TEST_SEED");
  const unsigned seed = s ? static_cast<unsigned>(std::strtoul(s, nullptr, 10)) : 2801u;
  std::printf("seed %u (CTCAL_TEST_SEED)\n", seed);
  return seed;
}

RowMatrix random_matrix(int64_t rows, int64_t cols, float scale, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, scale);
  RowMatrix m(rows, cols);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = nd(rng);
  return m;
}

Vector random_vector(int64_t n, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> ud(lo, hi);
  Vector v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = ud(rng);
  return v;
}

Mamba2Config small_config(int64_t heads, int64_t groups, int64_t chunk) {
  Mamba2Config c;
  c.hidden_size = 48;
  c.num_heads = heads;
  c.head_dim = 8;
  c.state_size = 12;
  c.n_groups = groups;
  c.conv_kernel = 4;
  c.chunk_size = chunk;
  c.norm_group_size = c.intermediate_size() / groups;
  c.norm_eps = 1e-5;
  c.time_step_min = 0.01;
  return c;
}

// The scan's inputs for one sample of T tokens: xs [T, I], dt [T, H] in (0.001, 1.5), and B|C
// side by side in one [T, 2 G N] matrix (so that the scan reads strided views).
struct ScanInputs {
  RowMatrix xs, dt, bc;
  Vector A_log, D;
};

ScanInputs random_scan_inputs(const Mamba2Config& c, int64_t T, std::mt19937& rng) {
  ScanInputs in;
  const int64_t GN = c.n_groups * c.state_size;
  in.xs = random_matrix(T, c.intermediate_size(), 1.0f, rng);
  in.dt = random_vector(T * c.num_heads, 0.001f, 1.5f, rng).reshaped<Eigen::RowMajor>(T, c.num_heads);
  in.bc = random_matrix(T, 2 * GN, 0.5f, rng);
  // A in [-4, -0.01]: from forgetting within a few tokens to carrying state over every chunk.
  in.A_log = random_vector(c.num_heads, std::log(0.01f), std::log(4.0f), rng);
  in.D = random_vector(c.num_heads, -1.0f, 1.0f, rng);
  return in;
}

RowMatrix run_scan(const Mamba2Config& c, const ScanInputs& in) {
  const int64_t GN = c.n_groups * c.state_size;
  RowMatrix y(in.xs.rows(), c.intermediate_size());  // [T, I]
  mamba2_chunk_scan(c, in.A_log, in.D, in.xs, in.dt, in.bc.leftCols(GN), in.bc.rightCols(GN), y);
  return y;
}

// The recurrence of model/mamba2.h, token by token, in double:
//   S = exp(A dt) S + dt x B^T,  y = S C + D x   (S: [P, N] per head, from zero)
RowMatrixD sequential_scan(const Mamba2Config& c, const ScanInputs& in) {
  const int64_t T = in.xs.rows(), P = c.head_dim, N = c.state_size, GN = c.n_groups * N;
  RowMatrixD y(T, c.intermediate_size());  // [T, I]
  for (int64_t h = 0; h < c.num_heads; ++h) {
    const int64_t g = h / (c.num_heads / c.n_groups);
    const double A = -std::exp(static_cast<double>(in.A_log[h]));
    RowMatrixD S = RowMatrixD::Zero(P, N);  // [P, N]
    for (int64_t t = 0; t < T; ++t) {
      const double dt = in.dt(t, h);
      const Eigen::VectorXd x = in.xs.row(t).segment(h * P, P).cast<double>().transpose();   // [P]
      const Eigen::VectorXd b = in.bc.row(t).segment(g * N, N).cast<double>().transpose();    // [N]
      const Eigen::VectorXd cc = in.bc.row(t).segment(GN + g * N, N).cast<double>().transpose();  // [N]
      S = std::exp(A * dt) * S + dt * x * b.transpose();
      y.row(t).segment(h * P, P) = (S * cc + static_cast<double>(in.D[h]) * x).transpose();
    }
  }
  return y;
}

// Chunk sizes from 1 (the recurrence itself) through ones that split T unevenly to one longer
// than the sample: the result is the recurrence's within kTolFp32Op (an fp32 op chain against
// its double formula), relative to the output's largest value.
TEST(Mamba2, ChunkedScanEqualsSequentialRecurrence) {
  std::mt19937 rng(seed_for_test());
  const int64_t T = 137;
  const ScanInputs in = random_scan_inputs(small_config(6, 3, 16), T, rng);
  for (int64_t chunk : {1, 7, 16, 64, 137, 256}) {
    const Mamba2Config c = small_config(6, 3, chunk);
    const RowMatrixD want = sequential_scan(c, in);
    const RowMatrix got = run_scan(c, in);
    const double err = (got.cast<double>() - want).cwiseAbs().maxCoeff() / want.cwiseAbs().maxCoeff();
    EXPECT_LE(err, test::kTolFp32Op) << "chunk size " << chunk;
  }
}

// Every head of the sample in a chunk far from the first: a state carried over several chunks
// by slow-decaying heads shows in the output (the test above would pass vacuously if every head
// forgot within a chunk).
TEST(Mamba2, StateCarriesAcrossChunks) {
  std::mt19937 rng(seed_for_test());
  Mamba2Config c = small_config(2, 1, 8);
  ScanInputs in = random_scan_inputs(c, 40, rng);
  in.A_log.setConstant(std::log(0.001f));  // decay exp(-0.001 dt): the state lives on
  const RowMatrix full = run_scan(c, in);
  ScanInputs tail = in;  // the same tokens 32..39 without the 32 before them
  tail.xs = in.xs.bottomRows(8);
  tail.dt = in.dt.bottomRows(8);
  tail.bc = in.bc.bottomRows(8);
  const RowMatrix alone = run_scan(c, tail);
  EXPECT_GT((full.bottomRows(8) - alone).cwiseAbs().maxCoeff(), 0.1f * alone.cwiseAbs().maxCoeff());
}

Mamba2Weights random_weights(const Mamba2Config& c, std::mt19937& rng) {
  Mamba2Weights w;
  w.in_proj.w = random_matrix(c.in_proj_dim(), c.hidden_size, 0.15f, rng);
  w.in_proj.b = random_vector(c.in_proj_dim(), -0.1f, 0.1f, rng);
  w.conv_w = random_matrix(c.conv_dim(), c.conv_kernel, 0.5f, rng);
  w.conv_b = random_vector(c.conv_dim(), -0.2f, 0.2f, rng);
  w.dt_bias = random_vector(c.num_heads, -4.0f, 1.0f, rng);
  w.A_log = random_vector(c.num_heads, std::log(0.02f), std::log(8.0f), rng);
  w.D = random_vector(c.num_heads, -1.0f, 1.0f, rng);
  w.norm_w = random_vector(c.intermediate_size(), 0.8f, 1.2f, rng);
  w.out_proj.w = random_matrix(c.hidden_size, c.intermediate_size(), 0.1f, rng);
  return w;
}

// 1, 2 and 4 threads give the same bits, for the scan alone and for the whole mixer over two
// samples (each thread count schedules the (sample, head block) tasks differently: 32 heads in
// 2 groups are 4 blocks of 8 per sample).
TEST(Mamba2, ThreadCountDoesNotChangeBits) {
  std::mt19937 rng(seed_for_test());
  const Mamba2Config c = small_config(32, 2, 32);
  const ScanInputs in = random_scan_inputs(c, 100, rng);
  const Mamba2Weights w = random_weights(c, rng);
  const RowMatrix x = random_matrix(230, c.hidden_size, 1.0f, rng);  // [230, hidden]: samples of 130 and 100
  const std::vector<SampleSpan> spans = {{0, 130}, {130, 100}};
  const int saved = omp_get_max_threads();
  RowMatrix scan1, fwd1;
  for (int threads : {1, 2, 4}) {
    omp_set_num_threads(threads);
    const RowMatrix scan = run_scan(c, in);
    RowMatrix fwd(x.rows(), c.hidden_size);  // [230, hidden]
    mamba2_forward(c, w, x, spans, fwd);
    if (threads == 1) {
      scan1 = scan;
      fwd1 = fwd;
      continue;
    }
    EXPECT_EQ(std::memcmp(scan.data(), scan1.data(), sizeof(float) * static_cast<std::size_t>(scan.size())), 0)
        << "scan, " << threads << " threads";
    EXPECT_EQ(std::memcmp(fwd.data(), fwd1.data(), sizeof(float) * static_cast<std::size_t>(fwd.size())), 0)
        << "mixer, " << threads << " threads";
  }
  omp_set_num_threads(saved);
}

TEST(Mamba2, ImpossibleShapesAreRefusedByName) {
  std::mt19937 rng(seed_for_test());
  const Mamba2Config good = small_config(6, 3, 16);
  const Mamba2Weights w = random_weights(good, rng);
  EXPECT_NO_THROW(check_mamba2(good, w, "backbone.layers.0.mixer"));
  const auto refused = [&](const Mamba2Config& c, const Mamba2Weights& ww, const std::string& needle) {
    try {
      check_mamba2(c, ww, "backbone.layers.0.mixer");
      ADD_FAILURE() << "not refused: " << needle;
    } catch (const InputError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("backbone.layers.0.mixer"), std::string::npos) << what;
      EXPECT_NE(what.find(needle), std::string::npos) << what;
    }
  };
  Mamba2Config c = good;
  c.n_groups = 4;  // 6 heads
  c.norm_group_size = 12;
  refused(c, w, "not divisible by n_groups 4");
  c = good;
  c.norm_group_size = 7;
  refused(c, w, "norm group size 7");
  c = good;
  c.time_step_min = 1.0;
  c.time_step_max = 0.5;
  refused(c, w, "min > max");
  Mamba2Weights bad = w;
  bad.conv_w = RowMatrix::Zero(good.conv_dim(), 3);
  refused(good, bad, "conv1d.weight: expected [");
  bad = w;
  bad.in_proj.w = RowMatrix::Zero(good.in_proj_dim() - 1, good.hidden_size);
  refused(good, bad, "in_proj.weight: expected [");
  bad = w;
  bad.D = Vector::Zero(5);
  refused(good, bad, "D: expected [6]");
  bad = w;
  bad.norm_w = Vector::Zero(good.intermediate_size() - 1);
  refused(good, bad, "norm.weight");
}

}  // namespace
}  // namespace ctcal
