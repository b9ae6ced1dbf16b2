#include "ctcal/model/gated_deltanet.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <fmt/format.h>

#include "ctcal/error.h"

namespace ctcal {

namespace {

// A thread's copy of one row or head (Eigen-aligned storage). Vectorised Eigen reductions and
// transcendental functions treat the elements before the first aligned address with scalar code
// (another exp, another summation order); computed on an aligned copy, a row's bits do not depend
// on where the caller's buffer or the row lies (which sample, chunk or MPI rank it came with).
using RowArray = Eigen::Array<float, 1, Eigen::Dynamic>;

void check_linear(const Linear& l, int64_t out, int64_t in, const std::string& module, const char* name) {
  if (l.w.rows() != out || l.w.cols() != in)
    throw InputError(fmt::format("{}.{}.weight: wrong shape; expected [{}, {}], got [{}, {}]", module, name, out, in,
                                 l.w.rows(), l.w.cols()));
  if (l.b.size() != 0) throw InputError(fmt::format("{}.{}: has a bias; the module's Linear has none", module, name));
}

void check_vector(const Vector& v, int64_t n, const std::string& module, const char* name) {
  if (v.size() != n)
    throw InputError(fmt::format("{}.{}: wrong shape; expected [{}], got [{}]", module, name, n, v.size()));
}

// One thread's buffers for the delta rule of one (sample, value head) task, sized once for the
// largest chunk (C = kGatedDeltaChunk) and reused chunk after chunk.
struct DeltaBuffers {
  RowMatrix state;          // [head_k_dim, head_v_dim] S, the recurrent state at the chunk's start
  RowMatrix decay;          // [C, C] exp(cum_i - cum_j) for j <= i (pairwise_decay)
  RowMatrix k_beta;         // [C, head_k_dim] k * beta
  RowMatrix ut;             // [C, C] (k_beta k^T) * decay: its strict lower triangle is the UT system
  RowMatrix rhs;            // [C, head_v_dim + head_k_dim] [v * beta | k_beta * exp(cum)], solved in
                            // place into [new_values | k_cumdecay]
  RowMatrix intra;          // [C, C] (q k^T) * decay, zero above the diagonal (intra_chunk_attn)
  RowMatrix q_decayed;      // [C, head_k_dim] q * exp(cum)
  RowMatrix k_decayed;      // [C, head_k_dim] k * exp(cum_last - cum)
  RowMatrix v_new;          // [C, head_v_dim] new_values - k_cumdecay S
  std::vector<double> cum;  // [C] cumulative log decay within the chunk
  std::vector<float> ecum;  // [C] exp(cum)

  void fit(int64_t dk, int64_t dv) {
    constexpr int64_t c = kGatedDeltaChunk;
    state.resize(dk, dv);
    decay.resize(c, c);
    k_beta.resize(c, dk);
    ut.resize(c, c);
    rhs.resize(c, dv + dk);
    intra.resize(c, c);
    q_decayed.resize(c, dk);
    k_decayed.resize(c, dk);
    v_new.resize(c, dv);
    cum.resize(c);
    ecum.resize(c);
  }
};

// torch_chunk_gated_delta_rule for one sample's rows [r0, r0 + len) and value head h, zero initial
// state, in its order of operations. Padding the last chunk to 64 rows with zeros (as torch does)
// changes nothing for the real rows (zero k, v, beta and g add exact zeros), so the last chunk
// is simply shorter. Eigen's products run single-threaded here (inside the task loop's parallel
// region), with blocking that depends only on the shapes: the same bits for any thread count.
void delta_rule_head(const StridedConstRef& q, const StridedConstRef& k, const StridedConstRef& v,
                     const StridedConstRef& g, const StridedConstRef& beta, int64_t r0, int64_t len, int64_t h,
                     const GatedDeltaNetShape& s, StridedRef& out, DeltaBuffers& b) {
  const int64_t dk = s.head_k_dim, dv = s.head_v_dim;
  const int64_t kh = h / (s.num_v_heads / s.num_k_heads);  // repeat_interleave: key head of value head h
  b.fit(dk, dv);
  for (int64_t t0 = 0; t0 < len; t0 += kGatedDeltaChunk) {
    const int64_t n = std::min(kGatedDeltaChunk, len - t0), row = r0 + t0;
    const auto qc = q.block(row, kh * dk, n, dk);  // [n, head_k_dim]
    const auto kc = k.block(row, kh * dk, n, dk);  // [n, head_k_dim]
    const auto vc = v.block(row, h * dv, n, dv);   // [n, head_v_dim]
    // cum_decay = g.cumsum() (PyTorch's CPU cumsum of fp32 accumulates in double) and the decays
    // exp(cum_i - cum_j), exp(cum_i), exp(cum_last - cum_i) from it. The sums stay in double here:
    // rounded to fp32 as torch stores them, |cum| reaches ~1000 in a chunk of a fast-decaying
    // head, where an fp32 ulp (6e-5) would put a 3e-5 relative error on every decay; in double
    // each decay is its fp32 exp's rounding, nearer the float64 reference.
    double acc = 0;
    for (int64_t i = 0; i < n; ++i) {
      acc += static_cast<double>(g(row + i, h));
      b.cum[static_cast<std::size_t>(i)] = acc;
      b.ecum[static_cast<std::size_t>(i)] = std::exp(static_cast<float>(acc));
    }
    // pairwise_decay[i, j] = exp(cum_i - cum_j) for j <= i (above the diagonal torch masks to -inf
    // before exp, i.e. 0; only the lower triangle is read below).
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= i; ++j)
        b.decay(i, j) = std::exp(static_cast<float>(b.cum[static_cast<std::size_t>(i)] - b.cum[static_cast<std::size_t>(j)]));
    // k_beta = k * beta; the right-hand sides v_beta = v * beta and decayed_k_beta = k_beta * exp(cum).
    for (int64_t i = 0; i < n; ++i) {
      const float bt = beta(row + i, h);
      b.k_beta.row(i) = kc.row(i) * bt;
      b.rhs.row(i).head(dv) = vc.row(i) * bt;
      b.rhs.row(i).tail(dk) = b.k_beta.row(i) * b.ecum[static_cast<std::size_t>(i)];
    }
    // ut_system = (k_beta k^T) * pairwise_decay; solve_triangular(ut_system, ., upper=False,
    // unitriangular=True): forward substitution with the strict lower triangle and a unit diagonal.
    auto ut = b.ut.topLeftCorner(n, n);  // [n, n]
    ut.noalias() = b.k_beta.topRows(n) * kc.transpose();
    for (int64_t i = 1; i < n; ++i) ut.row(i).head(i).array() *= b.decay.row(i).head(i).array();
    auto rhs = b.rhs.topRows(n);  // [n, head_v_dim + head_k_dim]
    ut.triangularView<Eigen::UnitLower>().solveInPlace(rhs);
    const auto new_values = rhs.leftCols(dv);   // [n, head_v_dim]
    const auto k_cumdecay = rhs.rightCols(dk);  // [n, head_k_dim]
    // intra_chunk_attn = (q k^T) * pairwise_decay, causal (the diagonal's decay is exp(0) = 1).
    auto intra = b.intra.topLeftCorner(n, n);  // [n, n]
    intra.noalias() = qc * kc.transpose();
    for (int64_t i = 0; i < n; ++i) {
      intra.row(i).head(i + 1).array() *= b.decay.row(i).head(i + 1).array();
      intra.row(i).tail(n - i - 1).setZero();
    }
    auto o = out.block(row, h * dv, n, dv);  // [n, head_v_dim]
    auto v_new = b.v_new.topRows(n);         // [n, head_v_dim]
    if (t0 == 0) {
      // The state is still zero: v_new = new_values and no inter-chunk term (both exact).
      v_new = new_values;
      o.noalias() = intra * v_new;
    } else {
      // v_new = new_values - k_cumdecay S; out = (q * exp(cum)) S + intra v_new.
      v_new = new_values;
      v_new.noalias() -= k_cumdecay * b.state;
      for (int64_t i = 0; i < n; ++i) b.q_decayed.row(i) = qc.row(i) * b.ecum[static_cast<std::size_t>(i)];
      o.noalias() = b.q_decayed.topRows(n) * b.state;
      o.noalias() += intra * v_new;
    }
    if (t0 + n == len) break;  // the final state is not needed (calibration keeps no cache)
    // S = S * exp(cum_last) + (k * exp(cum_last - cum))^T v_new.
    const double last = b.cum[static_cast<std::size_t>(n - 1)];
    for (int64_t i = 0; i < n; ++i)
      b.k_decayed.row(i) = kc.row(i) * std::exp(static_cast<float>(last - b.cum[static_cast<std::size_t>(i)]));
    if (t0 == 0) {
      b.state.noalias() = b.k_decayed.topRows(n).transpose() * v_new;
    } else {
      b.state *= std::exp(static_cast<float>(last));
      b.state.noalias() += b.k_decayed.topRows(n).transpose() * v_new;
    }
  }
}

}  // namespace

void check_gated_deltanet(const GatedDeltaNetWeights& w, const GatedDeltaNetShape& s, const std::string& module) {
  if (s.hidden <= 0 || s.num_k_heads <= 0 || s.num_v_heads <= 0 || s.head_k_dim <= 0 || s.head_v_dim <= 0 ||
      s.conv_kernel <= 0)
    throw InputError(fmt::format("{}: hidden_size {}, linear_num_key_heads {}, linear_num_value_heads {}, "
                                 "linear_key_head_dim {}, linear_value_head_dim {}, linear_conv_kernel_dim {}: "
                                 "each must be positive", module, s.hidden, s.num_k_heads, s.num_v_heads,
                                 s.head_k_dim, s.head_v_dim, s.conv_kernel));
  if (s.num_v_heads % s.num_k_heads != 0)
    throw InputError(fmt::format("{}: linear_num_value_heads {} is not a multiple of linear_num_key_heads {}",
                                 module, s.num_v_heads, s.num_k_heads));
  check_linear(w.in_proj_qkv, s.conv_dim(), s.hidden, module, "in_proj_qkv");
  check_linear(w.in_proj_z, s.value_dim(), s.hidden, module, "in_proj_z");
  check_linear(w.in_proj_b, s.num_v_heads, s.hidden, module, "in_proj_b");
  check_linear(w.in_proj_a, s.num_v_heads, s.hidden, module, "in_proj_a");
  check_linear(w.out_proj, s.hidden, s.value_dim(), module, "out_proj");
  if (w.conv1d.rows() != s.conv_dim() || w.conv1d.cols() != s.conv_kernel)
    throw InputError(fmt::format("{}.conv1d.weight: wrong shape; expected [{}, 1, {}], got [{}, 1, {}]", module,
                                 s.conv_dim(), s.conv_kernel, w.conv1d.rows(), w.conv1d.cols()));
  check_vector(w.dt_bias, s.num_v_heads, module, "dt_bias");
  check_vector(w.A_log, s.num_v_heads, module, "A_log");
  check_vector(w.norm, s.head_v_dim, module, "norm.weight");
}

QwenNextInProjRows qwen3_next_in_proj_rows(const GatedDeltaNetShape& s) {
  const int64_t r = s.num_v_heads / s.num_k_heads, dk = s.head_k_dim, dv = s.head_v_dim;
  const int64_t per_head = 2 * dk + 2 * r * dv;  // in_proj_qkvz rows per key head
  QwenNextInProjRows m;
  m.qkv.resize(static_cast<std::size_t>(s.conv_dim()));
  m.z.resize(static_cast<std::size_t>(s.value_dim()));
  m.b.resize(static_cast<std::size_t>(s.num_v_heads));
  m.a.resize(static_cast<std::size_t>(s.num_v_heads));
  for (int64_t g = 0; g < s.num_k_heads; ++g) {
    const int64_t base = g * per_head;
    for (int64_t i = 0; i < dk; ++i) {
      m.qkv[static_cast<std::size_t>(g * dk + i)] = base + i;                       // q of key head g
      m.qkv[static_cast<std::size_t>(s.key_dim() + g * dk + i)] = base + dk + i;    // k of key head g
    }
    for (int64_t i = 0; i < r * dv; ++i) {  // value heads g r .. g r + r - 1, head after head
      m.qkv[static_cast<std::size_t>(2 * s.key_dim() + g * r * dv + i)] = base + 2 * dk + i;
      m.z[static_cast<std::size_t>(g * r * dv + i)] = base + 2 * dk + r * dv + i;
    }
    for (int64_t j = 0; j < r; ++j) {
      m.b[static_cast<std::size_t>(g * r + j)] = g * 2 * r + j;
      m.a[static_cast<std::size_t>(g * r + j)] = g * 2 * r + r + j;
    }
  }
  return m;
}

void split_qwen3_next_in_proj(const RowMatrix& qkvz, const RowMatrix& ba, const GatedDeltaNetShape& s,
                              GatedDeltaNetWeights* w) {
  CTCAL_ASSERT(qkvz.rows() == s.conv_dim() + s.value_dim() && ba.rows() == 2 * s.num_v_heads &&
                   qkvz.cols() == ba.cols() && s.num_v_heads % s.num_k_heads == 0,
               "split_qwen3_next_in_proj: shapes");
  const QwenNextInProjRows m = qwen3_next_in_proj_rows(s);
  auto gather = [](const RowMatrix& src, const std::vector<int64_t>& rows, Linear* dst) {
    dst->w.resize(static_cast<Eigen::Index>(rows.size()), src.cols());
    for (std::size_t i = 0; i < rows.size(); ++i) dst->w.row(static_cast<Eigen::Index>(i)) = src.row(rows[i]);
    dst->b.resize(0);
  };
  gather(qkvz, m.qkv, &w->in_proj_qkv);
  gather(qkvz, m.z, &w->in_proj_z);
  gather(ba, m.b, &w->in_proj_b);
  gather(ba, m.a, &w->in_proj_a);
}

void causal_conv1d_silu(const StridedConstRef& x, const RowMatrix& weight, const std::vector<SampleSpan>& samples,
                        StridedRef out) {
  const int64_t taps = weight.cols();
  const RowMatrix wt = weight.transpose();  // [K, conv_dim]: one tap's weights contiguous
#pragma omp parallel
  {
    RowArray acc(weight.rows());  // [conv_dim]
    for (const SampleSpan& sp : samples) {
#pragma omp for schedule(static)
      for (int64_t t = 0; t < sp.length; ++t) {
        // F.conv1d(padding=K-1)[:T]: output t reads inputs t - K + 1 .. t; taps before the
        // sample's first row read the zero padding and are skipped.
        const int64_t j0 = std::max<int64_t>(0, taps - 1 - t);
        acc = wt.row(j0).array() * x.row(sp.offset + t - taps + 1 + j0).array();
        for (int64_t j = j0 + 1; j < taps; ++j) acc += wt.row(j).array() * x.row(sp.offset + t - taps + 1 + j).array();
        acc = acc / (1.0f + (-acc).exp());  // SiLU, as PyTorch's CPU kernel: x / (1 + exp(-x))
        out.row(sp.offset + t) = acc.matrix();
      }
    }
  }
}

void gated_delta_gates(const StridedConstRef& a, const StridedConstRef& b, const Vector& dt_bias, const Vector& A_log,
                       StridedRef g, StridedRef beta) {
#pragma omp parallel for schedule(static)
  for (Eigen::Index r = 0; r < a.rows(); ++r)
    for (Eigen::Index h = 0; h < a.cols(); ++h) {
      // F.softplus(x) (beta 1, threshold 20): x above 20, else log1p(exp(x)).
      const double x = static_cast<double>(a(r, h)) + static_cast<double>(dt_bias[h]);
      const double softplus = x > 20.0 ? x : std::log1p(std::exp(x));
      const double bv = static_cast<double>(b(r, h));
      g(r, h) = static_cast<float>(-std::exp(static_cast<double>(A_log[h])) * softplus);
      beta(r, h) = static_cast<float>(1.0 / (1.0 + std::exp(-bv)));
    }
}

void l2norm_qk(StridedRef qkv, const GatedDeltaNetShape& s) {
  const int64_t dk = s.head_k_dim;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dk)));  // head_k_dim ** -0.5
#pragma omp parallel
  {
    RowArray head(dk);  // [head_k_dim]
#pragma omp for schedule(static)
    for (Eigen::Index r = 0; r < qkv.rows(); ++r)
      for (int64_t part = 0; part < 2; ++part)  // q, then k
        for (int64_t h = 0; h < s.num_k_heads; ++h) {
          auto x = qkv.row(r).segment(part * s.key_dim() + h * dk, dk);
          // x * rsqrt(sum(x^2) + 1e-6), the sum in double (the golden reference is float64).
          head = x.array();
          const double ss = head.cast<double>().square().sum();
          x *= static_cast<float>(1.0 / std::sqrt(ss + kGatedDeltaL2Eps));
          if (part == 0) x *= scale;  // query = l2norm(query) * scaling: two roundings, as torch
        }
  }
}

void gated_delta_rule_chunked(const StridedConstRef& q, const StridedConstRef& k, const StridedConstRef& v,
                              const StridedConstRef& g, const StridedConstRef& beta,
                              const std::vector<SampleSpan>& samples, const GatedDeltaNetShape& s, StridedRef out) {
  CTCAL_ASSERT(s.num_k_heads > 0 && s.num_v_heads % s.num_k_heads == 0, "gated_delta_rule_chunked: heads");
  CTCAL_ASSERT(q.cols() == s.key_dim() && k.cols() == s.key_dim() && v.cols() == s.value_dim() &&
                   g.cols() == s.num_v_heads && beta.cols() == s.num_v_heads && out.cols() == s.value_dim(),
               "gated_delta_rule_chunked: shapes");
  // One task per (sample, value head), longest samples first: a task's chunks are sequential.
  struct Task {
    int64_t offset, length, head;
  };
  std::vector<Task> tasks;
  for (const SampleSpan& sp : samples)
    for (int64_t h = 0; h < s.num_v_heads; ++h) tasks.push_back({sp.offset, sp.length, h});
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.length > b.length; });
  const auto n_tasks = static_cast<int64_t>(tasks.size());
#pragma omp parallel
  {
    DeltaBuffers buf;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < n_tasks; ++t) {
      const Task& task = tasks[static_cast<std::size_t>(t)];
      delta_rule_head(q, k, v, g, beta, task.offset, task.length, task.head, s, out, buf);
    }
  }
}

void gated_rms_norm(const StridedConstRef& o, const StridedConstRef& z, const Vector& weight, const GatedDeltaNetShape& s,
                    StridedRef out) {
  const int64_t dv = s.head_v_dim;
#pragma omp parallel
  {
    RowArray x(dv), gate(dv);  // [head_v_dim] each
#pragma omp for schedule(static)
    for (Eigen::Index r = 0; r < o.rows(); ++r)
      for (int64_t h = 0; h < s.num_v_heads; ++h) {
        x = o.row(r).segment(h * dv, dv).array();
        gate = z.row(r).segment(h * dv, dv).array();
        // variance in double (the golden reference is float64), then weight * normed, then * silu(z).
        const double var = x.cast<double>().square().sum() / static_cast<double>(dv);
        const auto inv = static_cast<float>(1.0 / std::sqrt(var + s.eps));
        x = (weight.array().transpose() * (x * inv)) * (gate / (1.0f + (-gate).exp()));
        out.row(r).segment(h * dv, dv) = x.matrix();
      }
  }
}

void gated_deltanet_mix(ProjectionInput& x, const std::vector<SampleSpan>& samples, const GatedDeltaNetWeights& w,
                        const GatedDeltaNetShape& s, Eigen::Ref<RowMatrix> gated, GatedDeltaNetScratch* scratch) {
  const int64_t rows = x.f32().rows();
  int64_t next = 0;  // the spans tile the rows in order (make_chunks' spans do): no row is left unset
  for (const SampleSpan& sp : samples) {
    CTCAL_ASSERT(sp.offset == next && sp.length >= 0, "gated_deltanet_mix: the spans must tile the rows in order");
    next += sp.length;
  }
  CTCAL_ASSERT(next == rows && gated.rows() == rows && gated.cols() == s.value_dim(), "gated_deltanet_mix: shapes");
  GatedDeltaNetScratch own;
  GatedDeltaNetScratch& sc = scratch ? *scratch : own;
  const int64_t cd = s.conv_dim(), vd = s.value_dim(), kd = s.key_dim(), nv = s.num_v_heads;
  Eigen::Map<RowMatrix> proj(sc.proj.fit(rows * cd), rows, cd);  // [rows, conv_dim] in_proj_qkv(x)
  Eigen::Map<RowMatrix> z(sc.z.fit(rows * vd), rows, vd);         // [rows, value_dim] in_proj_z(x)
  Eigen::Map<RowMatrix> b(sc.b.fit(rows * nv), rows, nv);         // [rows, num_v_heads] in_proj_b(x), then beta
  Eigen::Map<RowMatrix> a(sc.a.fit(rows * nv), rows, nv);         // [rows, num_v_heads] in_proj_a(x), then g
  linear(x, w.in_proj_qkv, proj);
  linear(x, w.in_proj_z, z);
  linear(x, w.in_proj_b, b);
  linear(x, w.in_proj_a, a);
  Eigen::Map<RowMatrix> qkv(sc.qkv.fit(rows * cd), rows, cd);  // [rows, conv_dim] silu(conv1d(q|k|v)), q, k l2-normed
  causal_conv1d_silu(proj, w.conv1d, samples, qkv);
  l2norm_qk(qkv, s);
  gated_delta_gates(a, b, w.dt_bias, w.A_log, a, b);
  StridedRef core = proj.leftCols(vd);  // [rows, value_dim]: proj is free once the conv has read it
  gated_delta_rule_chunked(qkv.leftCols(kd), qkv.middleCols(kd, kd), qkv.rightCols(vd), a, b, samples, s, core);
  gated_rms_norm(core, z, w.norm, s, gated);
}

void gated_deltanet_forward(const Eigen::Ref<const RowMatrix>& x, const std::vector<SampleSpan>& samples,
                            const GatedDeltaNetWeights& w, const GatedDeltaNetShape& s, Eigen::Ref<RowMatrix> y,
                            uint16_t* bf16_scratch, GatedDeltaNetScratch* scratch) {
  GatedDeltaNetScratch own;
  GatedDeltaNetScratch& sc = scratch ? *scratch : own;
  Eigen::Map<RowMatrix> gated(sc.gated.fit(x.rows() * s.value_dim()), x.rows(), s.value_dim());  // [rows, value_dim]
  ProjectionInput in(x, bf16_scratch);
  gated_deltanet_mix(in, samples, w, s, gated, &sc);
  ProjectionInput in_out(gated, bf16_scratch);
  linear(in_out, w.out_proj, y);
}

}  // namespace ctcal
