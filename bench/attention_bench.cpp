// Blocked flash-style attention alone (model/attention.h), fp32 and bf16 products side by side,
// by default on the issue-6 bench model's shape (16 query / 4 kv heads of 64): milliseconds and
// causal GFLOP/s (QK^T and PV over the lower triangle) for a grid of block sizes.
//
//   attention_bench [--seq 512] [--samples 1] [--heads 16 --kv-heads 4 --head-dim 64]
//                   [--block B --key-block K]   (default: a grid of blocks)
//   Llama-3.1-8B's attention: --heads 32 --kv-heads 8 --head-dim 128
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_args.h"
#include "ctcal/model/attention.h"

using bench::arg;

int main(int argc, char** argv) {
  ctcal::ModelConfig c;
  c.num_attention_heads = arg(argc, argv, "--heads", 16);
  c.num_key_value_heads = arg(argc, argv, "--kv-heads", 4);
  c.head_dim = arg(argc, argv, "--head-dim", 64);
  const int64_t seq = arg(argc, argv, "--seq", 512), n_samples = arg(argc, argv, "--samples", 1);
  const int64_t rows = seq * n_samples;
  std::vector<ctcal::SampleSpan> spans;
  for (int64_t s = 0; s < n_samples; ++s) spans.push_back({s * seq, seq});
  std::vector<float> q(static_cast<std::size_t>(rows * c.q_dim())), k(static_cast<std::size_t>(rows * c.kv_dim())),
      v(k.size()), out(q.size());  // q, out: [rows, q_dim]; k, v: [rows, kv_dim]
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto* b : {&q, &k, &v})
    for (float& x : *b) x = nd(rng);
  std::vector<std::pair<int64_t, int64_t>> grid;
  if (arg(argc, argv, "--block", 0) > 0) grid.push_back({arg(argc, argv, "--block", 0), arg(argc, argv, "--key-block", 256)});
  else
    for (int64_t b : {32, 64, 128})
      for (int64_t kb : {128, 256, 512}) grid.push_back({b, kb});
  const double flops = 4.0 * static_cast<double>(c.num_attention_heads) * static_cast<double>(seq) * static_cast<double>(seq + 1) / 2.0 *
                       static_cast<double>(c.head_dim) * static_cast<double>(n_samples);
  const auto shape = ctcal::AttentionShape::plain(c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.sliding_window);
  for (auto [block, key_block] : grid) {
    double best[2] = {1e9, 1e9};  // fp32, bf16
    std::vector<uint16_t> scratch(static_cast<std::size_t>(ctcal::attention_bf16_scratch(shape, rows, key_block)));
    for (int rep = 0; rep < 10; ++rep)
      for (int bf16 = 0; bf16 < 2; ++bf16) {  // interleaved: both see the same machine load
        const auto t0 = std::chrono::steady_clock::now();
        if (bf16)
          ctcal::causal_attention_bf16(q.data(), k.data(), v.data(), out.data(), spans, shape, block, key_block, scratch.data());
        else
          ctcal::causal_attention(q.data(), k.data(), v.data(), out.data(), spans, shape, block, key_block);
        best[bf16] = std::min(best[bf16], std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
    std::printf("%ld x %ld tokens, block %ld x %ld keys: fp32 %.3f ms (%.1f causal GFLOP/s), bf16 %.3f ms (%.1f), %.2fx\n",
                static_cast<long>(n_samples), static_cast<long>(seq), static_cast<long>(block), static_cast<long>(key_block),
                best[0] * 1e3, flops / best[0] / 1e9, best[1] * 1e3, flops / best[1] / 1e9, best[0] / best[1]);
  }
  return 0;
}
