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

float silu(float v) { return v / (1.0f + std::exp(-v)); }

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

// A task's working memory, reused across its chunks and heads.
struct ScanBuffers {
  RowMatrix cb;      // [L, L] C B^T of the chunk (the group's "attention scores")
  RowMatrix m;       // [L, L] cb under the decay mask (lower triangle used)
  RowMatrix xdt;     // [L, P] x * dt of the chunk's tokens
  RowMatrix off;     // [L, P] C S: the state carried in from earlier chunks, read out
  RowMatrix bdecay;  // [L, N] B scaled by each token's decay to the chunk's end
  RowMatrix state;   // [heads_in_task * N, P] each head's state S^T, carried across chunks
  RowArrayD cum;     // [L] cumulative log-decay sum_{k <= i} A dt_k within the chunk (double)
  RowArrayF decay;   // [L] one row of the decay mask
};

// Heads [h0, h1) (one group) of one sample, chunk by chunk (the SSD form of
// transformers' mamba2_chunk_scan; its segment_sum is cum_i - cum_j here, in double):
//   y_diag = (C B^T o exp(cum_i - cum_j) [j <= i]) (x dt)      within the chunk
//   y_off  = exp(cum_i) C S_in                                   state from earlier chunks
//   S_out  = exp(cum_last) S_in + (B o exp(cum_last - cum_j))^T (x dt)
void scan_heads(const Mamba2Config& c, const Vector& A_log, const Vector& D, const ScanViews& v, int64_t h0, int64_t h1,
                ScanBuffers& buf) {
  const int64_t N = c.state_size, P = c.head_dim, L = c.chunk_size;
  const int64_t g = h0 / (c.num_heads / c.n_groups);
  buf.state.setZero((h1 - h0) * N, P);
  buf.cum.resize(L);
  buf.decay.resize(L);
  for (int64_t t0 = 0; t0 < v.T; t0 += L) {
    const int64_t Lc = std::min(L, v.T - t0);
    const bool last_chunk = t0 + Lc == v.T;
    ConstStridedMap Bc(v.B + t0 * v.ld_bc + g * N, Lc, N, Eigen::OuterStride<>(v.ld_bc));  // [Lc, N]
    ConstStridedMap Cc(v.C + t0 * v.ld_bc + g * N, Lc, N, Eigen::OuterStride<>(v.ld_bc));  // [Lc, N]
    buf.cb.resize(Lc, Lc);
    buf.cb.noalias() = Cc * Bc.transpose();  // [Lc, Lc]
    for (int64_t h = h0; h < h1; ++h) {
      const double A = -std::exp(static_cast<double>(A_log[h]));
      ConstStridedMap xs(v.xs + t0 * v.ld_xs + h * P, Lc, P, Eigen::OuterStride<>(v.ld_xs));  // [Lc, P]
      StridedMap y(v.y + t0 * v.ld_y + h * P, Lc, P, Eigen::OuterStride<>(v.ld_y));            // [Lc, P]
      auto S = buf.state.middleRows((h - h0) * N, N);                                          // [N, P]
      buf.xdt.resize(Lc, P);
      double run = 0.0;
      for (int64_t i = 0; i < Lc; ++i) {
        const float dt = v.dt[(t0 + i) * v.ld_dt + h];
        run += A * static_cast<double>(dt);
        buf.cum[i] = run;
        buf.xdt.row(i) = xs.row(i) * dt;
      }
      // The decay mask row by row; exp in fp32 (vectorised) of a difference taken in double,
      // so a long chunk's large |cum| loses no digits (transformers' segment_sum avoids the
      // subtraction for the same reason).
      buf.m.resize(Lc, Lc);
      for (int64_t i = 0; i < Lc; ++i) {
        buf.decay.head(i + 1) = (buf.cum[i] - buf.cum.head(i + 1)).cast<float>().exp();
        buf.m.row(i).head(i + 1) = (buf.cb.row(i).head(i + 1).array() * buf.decay.head(i + 1)).matrix();
      }
      y.noalias() = buf.m.triangularView<Eigen::Lower>() * buf.xdt;
      if (t0 > 0) {
        buf.off.resize(Lc, P);
        buf.off.noalias() = Cc * S;
        for (int64_t i = 0; i < Lc; ++i) y.row(i) += buf.off.row(i) * static_cast<float>(std::exp(buf.cum[i]));
      }
      y += static_cast<float>(D[h]) * xs;
      if (last_chunk) continue;
      const double cum_last = buf.cum[Lc - 1];
      buf.bdecay.resize(Lc, N);
      for (int64_t i = 0; i < Lc; ++i)
        buf.bdecay.row(i) = Bc.row(i) * static_cast<float>(std::exp(cum_last - buf.cum[i]));
      S *= static_cast<float>(std::exp(cum_last));
      S.noalias() += buf.bdecay.transpose() * buf.xdt;
    }
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
                    const std::vector<SampleSpan>& samples, Eigen::Ref<RowMatrix> y) {
  const int64_t rows = x.rows(), I = c.intermediate_size(), H = c.num_heads, K = c.conv_kernel;
  const int64_t GN = c.n_groups * c.state_size, conv_dim = c.conv_dim();
  CTCAL_ASSERT(x.cols() == c.hidden_size && y.rows() == rows && y.cols() == c.hidden_size, "mamba2_forward: shapes");

  // 1. in_proj: [z | xBC | dt] for every row at once (one GEMM across samples).
  RowMatrix zxbcdt(rows, c.in_proj_dim());  // [rows, I + conv_dim + H]
  std::vector<uint16_t> bf16_in(w.in_proj.w_bf16 ? static_cast<std::size_t>(rows * c.hidden_size) : 0);
  ProjectionInput in(x, bf16_in.empty() ? nullptr : bf16_in.data());
  linear(in, w.in_proj, zxbcdt);

  // 2. The depthwise causal convolution over each sample's own past (zero before its first
  // token), + bias, SiLU; and dt = clamp(softplus(dt + dt_bias)). Rows in parallel, each output
  // summed over k in order. The kernel taps transposed so that a tap is one contiguous row.
  const RowMatrix taps = w.conv_w.transpose();  // [K, conv_dim]
  RowMatrix xbc(rows, conv_dim);                // [rows, conv_dim] = [xs | B | C] after the conv
  RowMatrix dt(rows, H);                        // [rows, H]
  std::vector<int64_t> first(static_cast<std::size_t>(rows), -1);  // the row's sample's first row
  for (const SampleSpan& s : samples)
    for (int64_t r = s.offset; r < s.offset + s.length; ++r) first[static_cast<std::size_t>(r)] = s.offset;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t f = first[static_cast<std::size_t>(r)];
    if (f < 0) continue;
    auto out = xbc.row(r);  // [conv_dim]
    out.setZero();
    for (int64_t k = 0; k < K; ++k) {
      const int64_t src = r - (K - 1) + k;
      if (src >= f) out += zxbcdt.row(src).segment(I, conv_dim).cwiseProduct(taps.row(k));
    }
    if (w.conv_b.size() > 0) out += w.conv_b.transpose();
    for (int64_t j = 0; j < conv_dim; ++j) out[j] = silu(out[j]);
    for (int64_t h = 0; h < H; ++h) {
      const double v = softplus(static_cast<double>(zxbcdt(r, I + conv_dim + h)) + static_cast<double>(w.dt_bias[h]));
      dt(r, h) = static_cast<float>(std::clamp(v, c.time_step_min, c.time_step_max));
    }
  }

  // 3. The SSD scan, every (sample, head block) in one parallel loop.
  RowMatrix ys(rows, I);  // [rows, I] scan output, then the gated norm's, in place
  std::vector<ScanViews> views;
  for (const SampleSpan& s : samples)
    views.push_back({xbc.data() + s.offset * conv_dim, conv_dim, dt.data() + s.offset * H, H,
                     xbc.data() + s.offset * conv_dim + I, xbc.data() + s.offset * conv_dim + I + GN, conv_dim,
                     ys.data() + s.offset * I, I, s.length});
  scan_all(c, w.A_log, w.D, views);

  // 4. Gated RMSNorm (norm_before_gate=False): y * silu(z), then each group of norm_group_size
  // scaled by rsqrt(mean of squares + eps) (sum in double), times the weight.
  const int64_t gs = c.norm_group_size;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = ys.data() + r * I;                      // [I]
    if (first[static_cast<std::size_t>(r)] < 0) {
      std::fill(row, row + I, 0.0f);  // out_proj reads every row; these are not copied out
      continue;
    }
    const float* z = zxbcdt.data() + r * zxbcdt.cols();  // [I]
    for (int64_t j = 0; j < I; ++j) row[j] *= silu(z[j]);
    for (int64_t g0 = 0; g0 < I; g0 += gs) {
      double ss = 0.0;
      for (int64_t j = g0; j < g0 + gs; ++j) ss += static_cast<double>(row[j]) * static_cast<double>(row[j]);
      const auto inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(gs) + c.norm_eps));
      for (int64_t j = g0; j < g0 + gs; ++j) row[j] = w.norm_w[j] * (row[j] * inv);
    }
  }

  // 5. out_proj, row by row of the samples (rows outside every span keep y's values).
  std::vector<uint16_t> bf16_out(w.out_proj.w_bf16 ? static_cast<std::size_t>(rows * I) : 0);
  RowMatrix out(rows, c.hidden_size);  // [rows, hidden]
  ProjectionInput mid(ys, bf16_out.empty() ? nullptr : bf16_out.data());
  linear(mid, w.out_proj, out);
  for (const SampleSpan& s : samples) y.middleRows(s.offset, s.length) = out.middleRows(s.offset, s.length);
}

RowMatrix mamba2_forward(const Mamba2Config& c, const Mamba2Weights& w, const Eigen::Ref<const RowMatrix>& x) {
  RowMatrix y(x.rows(), c.hidden_size);  // [T, hidden]
  mamba2_forward(c, w, x, {SampleSpan{0, x.rows()}}, y);
  return y;
}

}  // namespace ctcal
