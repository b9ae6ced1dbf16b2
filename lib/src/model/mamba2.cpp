#include "ctcal/model/mamba2.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <fmt/format.h>

#include "ctcal/error.h"
#include "ctcal/model/layer_ops.h"

namespace ctcal {

namespace {
using StridedMap = Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>>;
using ConstStridedMap = Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>>;
using RowArrayF = Eigen::Array<float, 1, Eigen::Dynamic>;
using RowArrayD = Eigen::Array<double, 1, Eigen::Dynamic>;

// Heads of one group scanned by one task: they share the chunk's C B^T product (computed once
// per task and chunk), and H / kHeadsPerTask tasks per sample keep the cores busy. Results do
// not depend on it (each head's arithmetic is the same whichever task runs it).
constexpr int64_t kHeadsPerTask = 8;

// torch.nn.functional.softplus (beta 1, threshold 20): x above 20 is returned as is.
double softplus(double v) { return v > 20.0 ? v : std::log1p(std::exp(v)); }

// One sample's scan inputs and output, as row views of the whole batch.
struct ScanViews {
  const float* xs;  // [T, I], row stride ld_xs
  int64_t ld_xs;
  const float* dt;  // [T, H], row stride ld_dt
  int64_t ld_dt;
  const float* B;   // [T, G * N], row stride ld_bc
  const float* C;   // [T, G * N], row stride ld_bc
  int64_t ld_bc;
  float* y;         // [T, I], row stride ld_y
  int64_t ld_y;
  int64_t T;
};

// A task's working memory, reused across its chunks.
struct ScanBuffers {
  RowMatrix cb;     // [L, L] C B^T of the chunk (the group's "attention scores")
  RowMatrix m;      // [L, L] cb under one head's decay mask (lower triangle used)
  RowMatrix xdt;    // [L, nh * P] x * dt of the chunk's tokens, the task's nh heads side by side
  RowMatrix xdec;   // [L, nh * P] xdt scaled by each token's decay to the chunk's end
  RowMatrix off;    // [L, nh * P] C S: the states carried in from earlier chunks, read out
  RowMatrix state;  // [N, nh * P] each head's state S^T, carried across chunks
  RowMatrixD cum;   // [nh, L] cumulative log-decay sum_{k <= i} A dt_k within the chunk (double)
  RowArrayF decay;  // [L] one row of a decay mask
};

// Heads [h0, h1) (one group, so one B and C) of one sample, chunk by chunk: the SSD form of
// transformers' mamba2_chunk_scan (its segment_sum is cum_i - cum_j here, in double):
//   y_diag = (C B^T o exp(cum_i - cum_j) [j <= i]) (x dt)      within the chunk, per head
//   y_off  = exp(cum_i) C S_in                                   states from earlier chunks
//   S_out  = exp(cum_last) S_in + B^T (exp(cum_last - cum_j) x dt)
// The heads share C and B, so y_off and S_out are one GEMM for all of them ([Lc, N] x
// [N, nh * P] and [N, Lc] x [Lc, nh * P]) instead of nh narrow ones.
void scan_heads(const Mamba2Config& c, const Vector& A_log, const Vector& D, const ScanViews& v, int64_t h0, int64_t h1,
                ScanBuffers& buf) {
  const int64_t N = c.state_size, P = c.head_dim, L = c.chunk_size, nh = h1 - h0, W = nh * P;
  const int64_t g = h0 / (c.num_heads / c.n_groups);
  buf.state.setZero(N, W);
  buf.cum.resize(nh, L);
  buf.decay.resize(L);
  for (int64_t t0 = 0; t0 < v.T; t0 += L) {
    const int64_t Lc = std::min(L, v.T - t0);
    ConstStridedMap Bc(v.B + t0 * v.ld_bc + g * N, Lc, N, Eigen::OuterStride<>(v.ld_bc));  // [Lc, N]
    ConstStridedMap Cc(v.C + t0 * v.ld_bc + g * N, Lc, N, Eigen::OuterStride<>(v.ld_bc));  // [Lc, N]
    ConstStridedMap xs(v.xs + t0 * v.ld_xs + h0 * P, Lc, W, Eigen::OuterStride<>(v.ld_xs)); // [Lc, nh * P]
    StridedMap y(v.y + t0 * v.ld_y + h0 * P, Lc, W, Eigen::OuterStride<>(v.ld_y));           // [Lc, nh * P]
    buf.cb.resize(Lc, Lc);
    buf.cb.noalias() = Cc * Bc.transpose();  // [Lc, Lc]
    buf.xdt.resize(Lc, W);
    for (int64_t k = 0; k < nh; ++k) {
      const double A = -std::exp(static_cast<double>(A_log[h0 + k]));
      double run = 0.0;
      for (int64_t i = 0; i < Lc; ++i) {
        const float dt = v.dt[(t0 + i) * v.ld_dt + h0 + k];
        run += A * static_cast<double>(dt);
        buf.cum(k, i) = run;
        buf.xdt.row(i).segment(k * P, P) = xs.row(i).segment(k * P, P) * dt;
      }
    }
    // Within the chunk, head by head. The decay mask row by row: exp in fp32 (vectorised) of a
    // difference taken in double, so a long chunk's large |cum| loses no digits (transformers'
    // segment_sum avoids the subtraction for the same reason).
    buf.m.resize(Lc, Lc);
    for (int64_t k = 0; k < nh; ++k) {
      for (int64_t i = 0; i < Lc; ++i) {
        // Two statements: Eigen does not vectorise a double->float cast, and with it in the same
        // expression the exp fell back to scalar expf (perf: 3 % of a Granite-shaped forward).
        buf.decay.head(i + 1) = (buf.cum(k, i) - buf.cum.row(k).head(i + 1).array()).cast<float>();
        buf.decay.head(i + 1) = buf.decay.head(i + 1).exp();
        buf.m.row(i).head(i + 1) = (buf.cb.row(i).head(i + 1).array() * buf.decay.head(i + 1)).matrix();
      }
      y.middleCols(k * P, P).noalias() = buf.m.triangularView<Eigen::Lower>() * buf.xdt.middleCols(k * P, P);
    }
    // The states from earlier chunks, decayed to each token.
    if (t0 > 0) {
      buf.off.resize(Lc, W);
      buf.off.noalias() = Cc * buf.state;
      for (int64_t k = 0; k < nh; ++k)
        for (int64_t i = 0; i < Lc; ++i)
          y.row(i).segment(k * P, P) += buf.off.row(i).segment(k * P, P) * static_cast<float>(std::exp(buf.cum(k, i)));
    }
    for (int64_t k = 0; k < nh; ++k) y.middleCols(k * P, P) += static_cast<float>(D[h0 + k]) * xs.middleCols(k * P, P);
    if (t0 + Lc == v.T) break;
    // The states at the chunk's end.
    buf.xdec.resize(Lc, W);
    for (int64_t k = 0; k < nh; ++k) {
      const double cum_last = buf.cum(k, Lc - 1);
      for (int64_t i = 0; i < Lc; ++i)
        buf.xdec.row(i).segment(k * P, P) =
            buf.xdt.row(i).segment(k * P, P) * static_cast<float>(std::exp(cum_last - buf.cum(k, i)));
      buf.state.middleCols(k * P, P) *= static_cast<float>(std::exp(cum_last));
    }
    buf.state.noalias() += Bc.transpose() * buf.xdec;
  }
}

// Runs scan_heads over every (sample, head block) in one parallel loop, each task writing its
// heads' columns of y: disjoint outputs, so any thread count gives the same bits.
void scan_all(const Mamba2Config& c, const Vector& A_log, const Vector& D, const std::vector<ScanViews>& samples) {
  const int64_t heads_per_group = c.num_heads / c.n_groups;
  const int64_t per_task = std::min(kHeadsPerTask, heads_per_group);
  const int64_t blocks_per_group = (heads_per_group + per_task - 1) / per_task;
  const int64_t blocks = c.n_groups * blocks_per_group;
  const auto n_tasks = static_cast<int64_t>(samples.size()) * blocks;
#pragma omp parallel
  {
    ScanBuffers buf;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const ScanViews& v = samples[static_cast<std::size_t>(task / blocks)];
      const int64_t b = task % blocks, g = b / blocks_per_group, k = b % blocks_per_group;
      const int64_t h0 = g * heads_per_group + k * per_task;
      scan_heads(c, A_log, D, v, h0, std::min(h0 + per_task, (g + 1) * heads_per_group), buf);
    }
  }
}

void check_vector(const Vector& v, int64_t n, const char* module, const char* name) {
  if (v.size() != n)
    throw InputError(fmt::format("{}.{}: expected [{}], got [{}]", module, name, n, v.size()));
}

void check_linear(const Linear& l, int64_t out, int64_t in, const char* module, const char* name) {
  const int64_t got_in = l.w_bf16 ? l.w_bf16->in() : l.w.cols();
  if (l.out_features() != out || got_in != in)
    throw InputError(fmt::format("{}.{}.weight: expected [{}, {}], got [{}, {}]", module, name, out, in,
                                 l.out_features(), got_in));
  if (l.b.size() != 0 && l.b.size() != out)
    throw InputError(fmt::format("{}.{}.bias: expected [{}], got [{}]", module, name, out, l.b.size()));
}
}  // namespace

void check_mamba2(const Mamba2Config& c, const Mamba2Weights& w, const char* module) {
  const auto bad = [&](const std::string& what) {
    throw InputError(fmt::format("{}: Mamba2 mixer {}", module, what));
  };
  if (c.hidden_size < 1 || c.num_heads < 1 || c.head_dim < 1 || c.state_size < 1 || c.n_groups < 1 ||
      c.conv_kernel < 1 || c.chunk_size < 1 || c.norm_group_size < 1)
    bad(fmt::format("sizes must be positive (hidden {}, heads {}, head_dim {}, state {}, groups {}, conv kernel {}, "
                    "chunk {}, norm group {})",
                    c.hidden_size, c.num_heads, c.head_dim, c.state_size, c.n_groups, c.conv_kernel, c.chunk_size,
                    c.norm_group_size));
  if (c.num_heads % c.n_groups != 0) bad(fmt::format("heads {} not divisible by n_groups {}", c.num_heads, c.n_groups));
  if (c.intermediate_size() % c.norm_group_size != 0)
    bad(fmt::format("intermediate size {} not divisible by the norm group size {}", c.intermediate_size(),
                    c.norm_group_size));
  if (!(c.time_step_min <= c.time_step_max))
    bad(fmt::format("time step limit ({}, {}) has min > max", c.time_step_min, c.time_step_max));
  check_linear(w.in_proj, c.in_proj_dim(), c.hidden_size, module, "in_proj");
  check_linear(w.out_proj, c.hidden_size, c.intermediate_size(), module, "out_proj");
  if (w.conv_w.rows() != c.conv_dim() || w.conv_w.cols() != c.conv_kernel)
    throw InputError(fmt::format("{}.conv1d.weight: expected [{}, 1, {}], got [{}, 1, {}]", module, c.conv_dim(),
                                 c.conv_kernel, w.conv_w.rows(), w.conv_w.cols()));
  if (w.conv_b.size() != 0) check_vector(w.conv_b, c.conv_dim(), module, "conv1d.bias");
  check_vector(w.dt_bias, c.num_heads, module, "dt_bias");
  check_vector(w.A_log, c.num_heads, module, "A_log");
  check_vector(w.D, c.num_heads, module, "D");
  check_vector(w.norm_w, c.intermediate_size(), module, "norm.weight");
}

void mamba2_chunk_scan(const Mamba2Config& c, const Vector& A_log, const Vector& D, const Eigen::Ref<const RowMatrix>& xs,
                       const Eigen::Ref<const RowMatrix>& dt, const Eigen::Ref<const RowMatrix>& B,
                       const Eigen::Ref<const RowMatrix>& C, Eigen::Ref<RowMatrix> y) {
  const int64_t T = xs.rows(), GN = c.n_groups * c.state_size;
  CTCAL_ASSERT(xs.cols() == c.intermediate_size() && dt.rows() == T && dt.cols() == c.num_heads && B.rows() == T &&
                   B.cols() == GN && C.rows() == T && C.cols() == GN && y.rows() == T &&
                   y.cols() == c.intermediate_size() && B.outerStride() == C.outerStride(),
               "mamba2_chunk_scan: shapes");
  scan_all(c, A_log, D,
           {ScanViews{xs.data(), xs.outerStride(), dt.data(), dt.outerStride(), B.data(), C.data(), B.outerStride(),
                      y.data(), y.outerStride(), T}});
}

void mamba2_forward(const Mamba2Config& c, const Mamba2Weights& w, const Eigen::Ref<const RowMatrix>& x,
                    const std::vector<SampleSpan>& samples, Eigen::Ref<RowMatrix> y, Mamba2Buffers* buffers,
                    const Mamba2InputHook& out_proj_input) {
  const int64_t rows = x.rows(), I = c.intermediate_size(), H = c.num_heads, K = c.conv_kernel;
  const int64_t GN = c.n_groups * c.state_size, conv_dim = c.conv_dim();
  CTCAL_ASSERT(x.cols() == c.hidden_size && y.rows() == rows && y.cols() == c.hidden_size, "mamba2_forward: shapes");
  Mamba2Buffers local;
  Mamba2Buffers& b = buffers ? *buffers : local;

  // 1. in_proj: [z | xBC | dt] for every row at once (one GEMM across samples).
  RowMatrix& zxbcdt = b.zxbcdt;  // [rows, I + conv_dim + H]
  zxbcdt.resize(rows, c.in_proj_dim());
  const bool bf16 = w.in_proj.w_bf16 || w.out_proj.w_bf16;
  b.bf16.resize(bf16 ? static_cast<std::size_t>(rows * std::max(c.hidden_size, I)) : 0);
  {
    ProjectionInput in(x, bf16 ? b.bf16.data() : nullptr);
    linear(in, w.in_proj, zxbcdt);
  }

  // 2. The depthwise causal convolution over each sample's own past (zero before its first
  // token), + bias, SiLU; and dt = clamp(softplus(dt + dt_bias)). Rows in parallel, each output
  // summed over k in order, into an aligned row buffer (so that the vectorised exp splits the
  // row the same way wherever the sample sits). The taps transposed: one tap, one contiguous row.
  const RowMatrix taps = w.conv_w.transpose();  // [K, conv_dim]
  RowMatrix& xbc = b.xbc;                       // [rows, conv_dim] = [xs | B | C] after the conv
  RowMatrix& dt = b.dt;                         // [rows, H]
  xbc.resize(rows, conv_dim);
  dt.resize(rows, H);
  std::vector<int64_t> first(static_cast<std::size_t>(rows), -1);  // the row's sample's first row
  for (const SampleSpan& s : samples)
    for (int64_t r = s.offset; r < s.offset + s.length; ++r) first[static_cast<std::size_t>(r)] = s.offset;
  const int64_t ld = zxbcdt.cols();
#pragma omp parallel
  {
    Eigen::ArrayXf acc(conv_dim);  // [conv_dim]
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t f = first[static_cast<std::size_t>(r)];
      if (f < 0) continue;
      acc.setZero();
      for (int64_t k = 0; k < K; ++k) {
        const int64_t src = r - (K - 1) + k;
        if (src >= f)
          acc += Eigen::Map<const Eigen::ArrayXf>(zxbcdt.data() + src * ld + I, conv_dim) *
                 Eigen::Map<const Eigen::ArrayXf>(taps.data() + k * conv_dim, conv_dim);
      }
      if (w.conv_b.size() > 0) acc += w.conv_b.array();
      Eigen::Map<Eigen::ArrayXf>(xbc.data() + r * conv_dim, conv_dim) = acc / (1.0f + (-acc).exp());  // SiLU
      for (int64_t h = 0; h < H; ++h) {
        const double v = softplus(static_cast<double>(zxbcdt(r, I + conv_dim + h)) + static_cast<double>(w.dt_bias[h]));
        dt(r, h) = static_cast<float>(std::clamp(v, c.time_step_min, c.time_step_max));
      }
    }
  }

  // 3. The SSD scan, every (sample, head block) in one parallel loop.
  RowMatrix& ys = b.ys;  // [rows, I] scan output, then the gated norm's, in place
  ys.resize(rows, I);
  std::vector<ScanViews> views;
  for (const SampleSpan& s : samples)
    views.push_back({xbc.data() + s.offset * conv_dim, conv_dim, dt.data() + s.offset * H, H,
                     xbc.data() + s.offset * conv_dim + I, xbc.data() + s.offset * conv_dim + I + GN, conv_dim,
                     ys.data() + s.offset * I, I, s.length});
  scan_all(c, w.A_log, w.D, views);

  // 4. Gated RMSNorm (norm_before_gate=False): y * silu(z), then each group of norm_group_size
  // scaled by rsqrt(mean of squares + eps) (sum in double), times the weight.
  const int64_t gs = c.norm_group_size;
#pragma omp parallel
  {
    Eigen::ArrayXf h(I);  // [I] aligned, as above
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* row = ys.data() + r * I;  // [I]
      if (first[static_cast<std::size_t>(r)] < 0) {
        std::fill(row, row + I, 0.0f);  // out_proj reads every row; these are not copied out
        continue;
      }
      const Eigen::Map<const Eigen::ArrayXf> z(zxbcdt.data() + r * ld, I);  // [I]
      h = Eigen::Map<const Eigen::ArrayXf>(row, I) * (z / (1.0f + (-z).exp()));
      for (int64_t g0 = 0; g0 < I; g0 += gs) {
        double ss = 0.0;
        for (int64_t j = g0; j < g0 + gs; ++j) ss += static_cast<double>(h[j]) * static_cast<double>(h[j]);
        const auto inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(gs) + c.norm_eps));
        for (int64_t j = g0; j < g0 + gs; ++j) row[j] = w.norm_w[j] * (h[j] * inv);
      }
    }
  }

  // 5. out_proj; only the samples' rows are copied out.
  if (out_proj_input) out_proj_input(ys);
  RowMatrix& out = b.out;  // [rows, hidden]
  out.resize(rows, c.hidden_size);
  {
    ProjectionInput mid(ys, bf16 ? b.bf16.data() : nullptr);
    linear(mid, w.out_proj, out);
  }
  for (const SampleSpan& s : samples) y.middleRows(s.offset, s.length) = out.middleRows(s.offset, s.length);
}

RowMatrix mamba2_forward(const Mamba2Config& c, const Mamba2Weights& w, const Eigen::Ref<const RowMatrix>& x) {
  RowMatrix y(x.rows(), c.hidden_size);  // [T, hidden]
  mamba2_forward(c, w, x, {SampleSpan{0, x.rows()}}, y);
  return y;
}

}  // namespace ctcal
