// The Mamba2 mixer alone (model/mamba2.h), fp32: the whole forward against its two projection
// GEMMs (in_proj, out_proj through linear(), as the mixer runs them) and the SSD scan alone, and
// for scale the attention block it stands in for in a dense model of the same width (q/k/v/o
// projections + the blocked causal attention, as the layer runs them), best of --reps
// interleaved runs. By default a Nemotron-H-like shape at hidden 1024: 32 heads of 64 (I = 2048),
// state 128, 8 groups, chunk 128, conv 4; attention 16 heads of 64, 4 kv heads.
//
//   mamba2_bench [--seq 2048] [--samples 1] [--hidden 1024] [--heads 32 --head-dim 64]
//                [--state 128 --groups 8 --chunk 128] [--attn-heads 16 --kv-heads 4] [--reps 5]
//   Granite-4-like: --groups 1 --chunk 256
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <vector>

#include <omp.h>

#include "bench_args.h"
#include "ctcal/model/attention.h"
#include "ctcal/model/layer_ops.h"
#include "ctcal/model/mamba2.h"

using bench::arg;

namespace {
ctcal::RowMatrix random_matrix(int64_t rows, int64_t cols, float scale, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, scale);
  ctcal::RowMatrix m(rows, cols);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = nd(rng);
  return m;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int main(int argc, char** argv) {
  ctcal::Mamba2Config c;
  c.hidden_size = arg(argc, argv, "--hidden", 1024);
  c.num_heads = arg(argc, argv, "--heads", 32);
  c.head_dim = arg(argc, argv, "--head-dim", 64);
  c.state_size = arg(argc, argv, "--state", 128);
  c.n_groups = arg(argc, argv, "--groups", 8);
  c.chunk_size = arg(argc, argv, "--chunk", 128);
  c.conv_kernel = 4;
  c.norm_group_size = c.intermediate_size() / c.n_groups;
  c.norm_eps = 1e-5;
  c.time_step_min = 1e-3;
  const int64_t seq = arg(argc, argv, "--seq", 2048), n_samples = arg(argc, argv, "--samples", 1);
  const int64_t reps = arg(argc, argv, "--reps", 5), rows = seq * n_samples;
  const int64_t I = c.intermediate_size(), GN = c.n_groups * c.state_size;

  std::mt19937 rng(1);
  ctcal::Mamba2Weights w;
  w.in_proj.w = random_matrix(c.in_proj_dim(), c.hidden_size, 0.03f, rng);  // [2I + 2GN + H, hidden]
  w.conv_w = random_matrix(c.conv_dim(), c.conv_kernel, 0.5f, rng);          // [conv_dim, K]
  w.conv_b = ctcal::Vector::Zero(c.conv_dim());                              // [conv_dim]
  w.dt_bias = ctcal::Vector::Constant(c.num_heads, -2.0f);                   // [H]
  w.A_log = ctcal::Vector::LinSpaced(c.num_heads, -3.0f, 2.0f);              // [H]
  w.D = ctcal::Vector::Ones(c.num_heads);                                    // [H]
  w.norm_w = ctcal::Vector::Ones(I);                                         // [I]
  w.out_proj.w = random_matrix(c.hidden_size, I, 0.02f, rng);                // [hidden, I]
  ctcal::check_mamba2(c, w, "bench");
  const ctcal::RowMatrix x = random_matrix(rows, c.hidden_size, 1.0f, rng);  // [rows, hidden]
  std::vector<ctcal::SampleSpan> spans;
  for (int64_t s = 0; s < n_samples; ++s) spans.push_back({s * seq, seq});
  // The scan's inputs alone, per sample: xs [seq, I], dt [seq, H], B|C [seq, 2 G N].
  const ctcal::RowMatrix xs = random_matrix(seq, I, 1.0f, rng);
  const ctcal::RowMatrix dt = ctcal::RowMatrix::Constant(seq, c.num_heads, 0.05f);
  const ctcal::RowMatrix bc = random_matrix(seq, 2 * GN, 0.3f, rng);

  // The attention block of a dense model of the same width.
  const int64_t attn_heads = arg(argc, argv, "--attn-heads", 16), kv_heads = arg(argc, argv, "--kv-heads", 4);
  const int64_t d = c.hidden_size / attn_heads;
  const auto shape = ctcal::AttentionShape::plain(attn_heads, kv_heads, d, std::nullopt);
  ctcal::Linear wq, wk, wv, wo;
  wq.w = random_matrix(attn_heads * d, c.hidden_size, 0.03f, rng);  // [heads * d, hidden]
  wk.w = random_matrix(kv_heads * d, c.hidden_size, 0.03f, rng);    // [kv_heads * d, hidden]
  wv.w = random_matrix(kv_heads * d, c.hidden_size, 0.03f, rng);    // [kv_heads * d, hidden]
  wo.w = random_matrix(c.hidden_size, attn_heads * d, 0.03f, rng);  // [hidden, heads * d]
  ctcal::RowMatrix q(rows, attn_heads * d), k(rows, kv_heads * d), v(rows, kv_heads * d), attn(rows, attn_heads * d);

  ctcal::RowMatrix y(rows, c.hidden_size), zxbcdt(rows, c.in_proj_dim()), mid(rows, I), out(rows, c.hidden_size),
      ys(seq, I);
  ctcal::Mamba2Buffers buffers;  // reused across calls, as the layer loop would
  double best[4] = {1e9, 1e9, 1e9, 1e9};  // forward, in_proj + out_proj, scan (all samples), attention block
  for (int64_t rep = 0; rep < reps; ++rep) {  // interleaved: all three see the same machine load
    auto t0 = std::chrono::steady_clock::now();
    ctcal::mamba2_forward(c, w, x, spans, y, &buffers);
    best[0] = std::min(best[0], seconds_since(t0));
    t0 = std::chrono::steady_clock::now();
    ctcal::ProjectionInput in(x, nullptr);
    ctcal::linear(in, w.in_proj, zxbcdt);
    ctcal::ProjectionInput in2(mid, nullptr);
    ctcal::linear(in2, w.out_proj, out);
    best[1] = std::min(best[1], seconds_since(t0));
    t0 = std::chrono::steady_clock::now();
    for (int64_t s = 0; s < n_samples; ++s)
      ctcal::mamba2_chunk_scan(c, w.A_log, w.D, xs, dt, bc.leftCols(GN), bc.rightCols(GN), ys);
    best[2] = std::min(best[2], seconds_since(t0));
    t0 = std::chrono::steady_clock::now();
    ctcal::ProjectionInput xa(x, nullptr);
    ctcal::linear(xa, wq, q);
    ctcal::linear(xa, wk, k);
    ctcal::linear(xa, wv, v);
    ctcal::causal_attention(q.data(), k.data(), v.data(), attn.data(), spans, shape, 64, 256);
    ctcal::ProjectionInput xo(attn, nullptr);
    ctcal::linear(xo, wo, out);
    best[3] = std::min(best[3], seconds_since(t0));
  }
  const double proj_flops = 2.0 * static_cast<double>(rows) *
                            static_cast<double>(c.hidden_size) * static_cast<double>(c.in_proj_dim() + I);
  std::printf("mamba2 %ld x %ld tokens, hidden %ld, %ld heads x %ld, state %ld, groups %ld, chunk %ld, %d threads\n",
              static_cast<long>(n_samples), static_cast<long>(seq), static_cast<long>(c.hidden_size),
              static_cast<long>(c.num_heads), static_cast<long>(c.head_dim), static_cast<long>(c.state_size),
              static_cast<long>(c.n_groups), static_cast<long>(c.chunk_size), omp_get_max_threads());
  std::printf("forward %.1f ms (%.0f tokens/s); in_proj + out_proj alone %.1f ms (%.1f GFLOP/s); scan alone %.1f ms; "
              "forward / projections %.2fx\n",
              best[0] * 1e3, static_cast<double>(rows) / best[0], best[1] * 1e3, proj_flops / best[1] / 1e9,
              best[2] * 1e3, best[0] / best[1]);
  std::printf("attention block of the same width (%ld heads x %ld, %ld kv heads: q/k/v/o + causal attention) %.1f ms; "
              "mixer / attention block %.2fx\n",
              static_cast<long>(attn_heads), static_cast<long>(d), static_cast<long>(kv_heads), best[3] * 1e3,
              best[0] / best[3]);
  return 0;
}
