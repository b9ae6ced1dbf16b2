// The gated DeltaNet layer (model/gated_deltanet.h) alone, fp32, on random weights: the whole
// forward, its projection GEMMs alone (in_proj_qkv, in_proj_z, in_proj_b, in_proj_a, out_proj, the
// same linear() calls), the steps between them, and a dense attention layer of the same width
// (q/k/v/o GEMMs + blocked causal attention, as model/layer.cpp runs them) for the issue-28 bound
// (a hybrid at least half as fast as a dense model of the same shape). Best of --reps runs after
// one warm-up, all in one process on the same machine load.
//
//   gated_deltanet_bench [--tokens 2048] [--samples 1] [--hidden 1024] [--k-heads 16] [--v-heads 16]
//                        [--head-k-dim 128] [--head-v-dim 128] [--conv 4] [--reps 5]
//                        [--heads 16 --kv-heads 4 --head-dim 64]   (the dense attention layer)
//   Qwen3-Next-80B's linear attention: --hidden 2048 --k-heads 16 --v-heads 32
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include <omp.h>

#include "bench_args.h"
#include "ctcal/model/attention.h"
#include "ctcal/model/gated_deltanet.h"

namespace {

using bench::arg;
using namespace ctcal;

double best_s(int reps, const std::function<void()>& f) {
  f();  // warm-up: first-touch page faults, thread start
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

RowMatrix random_matrix(int64_t rows, int64_t cols, float scale, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, scale);
  RowMatrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = nd(rng);
  return m;
}

Linear random_linear(int64_t out, int64_t in, std::mt19937& rng) {
  Linear l;
  l.w = random_matrix(out, in, 1.0f / std::sqrt(static_cast<float>(in)), rng);
  return l;
}

}  // namespace

int main(int argc, char** argv) {
  GatedDeltaNetShape s;
  s.hidden = arg(argc, argv, "--hidden", 1024);
  s.num_k_heads = arg(argc, argv, "--k-heads", 16);
  s.num_v_heads = arg(argc, argv, "--v-heads", 16);
  s.head_k_dim = arg(argc, argv, "--head-k-dim", 128);
  s.head_v_dim = arg(argc, argv, "--head-v-dim", 128);
  s.conv_kernel = arg(argc, argv, "--conv", 4);
  const int64_t tokens = arg(argc, argv, "--tokens", 2048), n_samples = arg(argc, argv, "--samples", 1);
  const int reps = static_cast<int>(arg(argc, argv, "--reps", 5));
  const int64_t rows = tokens * n_samples;
  std::vector<SampleSpan> spans;
  for (int64_t i = 0; i < n_samples; ++i) spans.push_back({i * tokens, tokens});

  std::mt19937 rng(1);
  GatedDeltaNetWeights w;
  w.in_proj_qkv = random_linear(s.conv_dim(), s.hidden, rng);
  w.in_proj_z = random_linear(s.value_dim(), s.hidden, rng);
  w.in_proj_b = random_linear(s.num_v_heads, s.hidden, rng);
  w.in_proj_a = random_linear(s.num_v_heads, s.hidden, rng);
  w.out_proj = random_linear(s.hidden, s.value_dim(), rng);
  w.conv1d = random_matrix(s.conv_dim(), s.conv_kernel, 0.5f, rng);
  w.dt_bias = random_matrix(s.num_v_heads, 1, 1.0f, rng);
  w.A_log = Vector::LinSpaced(s.num_v_heads, -3.0f, 2.5f);  // A from 0.05 to 12: slow to fast decay
  w.norm = Vector::Ones(s.head_v_dim);
  check_gated_deltanet(w, s, "bench");
  const RowMatrix x = random_matrix(rows, s.hidden, 1.0f, rng);  // [rows, hidden]

  std::printf("gated DeltaNet, fp32, %d threads: %ld x %ld tokens, hidden %ld, %ld key / %ld value heads of %ld / %ld, "
              "conv %ld, chunk %ld\n", omp_get_max_threads(), static_cast<long>(n_samples), static_cast<long>(tokens),
              static_cast<long>(s.hidden), static_cast<long>(s.num_k_heads), static_cast<long>(s.num_v_heads),
              static_cast<long>(s.head_k_dim), static_cast<long>(s.head_v_dim), static_cast<long>(s.conv_kernel),
              static_cast<long>(kGatedDeltaChunk));

  // The forward's buffers, allocated once for the step timings (the forward allocates its own).
  RowMatrix y(rows, s.hidden);                                // [rows, hidden]
  RowMatrix proj(rows, s.conv_dim()), qkv(rows, s.conv_dim());  // [rows, conv_dim]
  RowMatrix z(rows, s.value_dim()), core(rows, s.value_dim()), gated(rows, s.value_dim());  // [rows, value_dim]
  RowMatrix b(rows, s.num_v_heads), a(rows, s.num_v_heads);   // [rows, num_v_heads]

  // The forward as the layer loop would run it (buffers kept across calls), and allocating its own.
  GatedDeltaNetScratch scratch;
  const double t_forward = best_s(reps, [&] { gated_deltanet_forward(x, spans, w, s, y, nullptr, &scratch); });
  const double t_forward_alloc = best_s(reps, [&] { gated_deltanet_forward(x, spans, w, s, y); });
  const double t_proj = best_s(reps, [&] {
    ProjectionInput in(x, nullptr);
    linear(in, w.in_proj_qkv, proj);
    linear(in, w.in_proj_z, z);
    linear(in, w.in_proj_b, b);
    linear(in, w.in_proj_a, a);
    ProjectionInput in_out(gated, nullptr);
    linear(in_out, w.out_proj, y);
  });
  const double t_conv = best_s(reps, [&] {
    causal_conv1d_silu(proj, w.conv1d, spans, qkv);
    l2norm_qk(qkv, s);
  });
  RowMatrix g(rows, s.num_v_heads), beta(rows, s.num_v_heads);  // [rows, num_v_heads]
  const double t_gates = best_s(reps, [&] { gated_delta_gates(a, b, w.dt_bias, w.A_log, g, beta); });
  const int64_t kd = s.key_dim(), vd = s.value_dim();
  const double t_rule = best_s(reps, [&] {
    gated_delta_rule_chunked(qkv.leftCols(kd), qkv.middleCols(kd, kd), qkv.rightCols(vd), g, beta, spans, s, core);
  });
  const double t_norm = best_s(reps, [&] { gated_rms_norm(core, z, w.norm, s, gated); });

  const double proj_flop = 2.0 * static_cast<double>(rows) * static_cast<double>(s.hidden) *
                           static_cast<double>(s.conv_dim() + 2 * s.value_dim() + 2 * s.num_v_heads);
  // The chunked rule's GEMM work per chunk of C rows and value head: k_beta k^T, q k^T (C^2 dk
  // each), the UT solve (C^2 / 2 (dv + dk)), k_cumdecay S, q S (C dk dv each), intra v_new
  // (C^2 dv), the state update (C dk dv); multiply-adds, times 2.
  const double c = static_cast<double>(kGatedDeltaChunk), dk = static_cast<double>(s.head_k_dim),
               dv = static_cast<double>(s.head_v_dim);
  const double rule_flop = 2.0 * static_cast<double>(rows) / c * static_cast<double>(s.num_v_heads) *
                           (2 * c * c * dk + c * c / 2 * (dv + dk) + 3 * c * dk * dv + c * c * dv);
  std::printf("  whole forward                 %8.2f ms  (%.0f tokens/s); %.2f ms allocating its buffers\n",
              t_forward * 1e3, static_cast<double>(rows) / t_forward, t_forward_alloc * 1e3);
  std::printf("  projection GEMMs alone        %8.2f ms  %6.1f GFLOP/s  (%.0f%% of the forward)\n", t_proj * 1e3,
              proj_flop / t_proj / 1e9, 100 * t_proj / t_forward);
  std::printf("  conv1d + SiLU + l2norm        %8.2f ms\n", t_conv * 1e3);
  std::printf("  beta, g                       %8.2f ms\n", t_gates * 1e3);
  std::printf("  chunked delta rule            %8.2f ms  %6.1f GFLOP/s\n", t_rule * 1e3, rule_flop / t_rule / 1e9);
  std::printf("  gated RMSNorm                 %8.2f ms\n", t_norm * 1e3);

  // A dense attention layer of the same width (the attention half of a decoder layer).
  const int64_t heads = arg(argc, argv, "--heads", 16), kv_heads = arg(argc, argv, "--kv-heads", 4),
                head_dim = arg(argc, argv, "--head-dim", 64);
  const auto shape = AttentionShape::plain(heads, kv_heads, head_dim, std::nullopt);
  Linear wq = random_linear(shape.q_dim(), s.hidden, rng), wk = random_linear(shape.kv_dim(), s.hidden, rng),
         wv = random_linear(shape.kv_dim(), s.hidden, rng), wo = random_linear(s.hidden, shape.q_dim(), rng);
  RowMatrix q(rows, shape.q_dim()), attn(rows, shape.q_dim());  // [rows, q_dim]
  RowMatrix k(rows, shape.kv_dim()), v(rows, shape.kv_dim());   // [rows, kv_dim]
  auto dense_proj = [&] {
    ProjectionInput in(x, nullptr);
    linear(in, wq, q);
    linear(in, wk, k);
    linear(in, wv, v);
    ProjectionInput in_o(attn, nullptr);
    linear(in_o, wo, y);
  };
  const double t_dense_proj = best_s(reps, dense_proj);
  const double t_dense = best_s(reps, [&] {
    dense_proj();
    causal_attention(q.data(), k.data(), v.data(), attn.data(), spans, shape, 64, 256);  // DecodeOptions' blocks
  });
  // The projections' widths differ (a DeltaNet layer's are ~4x a 16 x 64 attention layer's, at the
  // GEMMs' common rate), so the part each layer adds to its GEMMs is compared on its own too.
  std::printf("dense attention layer, %ld query / %ld kv heads of %ld: q/k/v/o GEMMs %.2f ms, with causal attention "
              "%.2f ms\n", static_cast<long>(heads), static_cast<long>(kv_heads), static_cast<long>(head_dim),
              t_dense_proj * 1e3, t_dense * 1e3);
  std::printf("beyond the projection GEMMs: gated DeltaNet %.2f ms (steps %.2f ms), causal attention %.2f ms; "
              "layer time DeltaNet / attention %.2f\n", (t_forward - t_proj) * 1e3,
              (t_conv + t_gates + t_rule + t_norm) * 1e3, (t_dense - t_dense_proj) * 1e3, t_forward / t_dense);
  return 0;
}
