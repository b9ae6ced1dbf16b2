// Blocked flash-style attention alone (model/attention.h), on the issue-6 bench model's shape
// (16 query / 4 kv heads of 64), one sample: milliseconds and causal GFLOP/s (QK^T and PV over
// the lower triangle) for a grid of block sizes.
//
//   attention_bench [--seq 512] [--block B --key-block K]   (default: a grid of blocks)
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ctcal/model/attention.h"

namespace {

int64_t arg(int argc, char** argv, const char* name, int64_t def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::stoll(argv[i + 1]);
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  ctcal::ModelConfig c;
  c.num_attention_heads = 16;
  c.num_key_value_heads = 4;
  c.head_dim = 64;
  c.hidden_size = 1024;
  const int64_t seq = arg(argc, argv, "--seq", 512);
  std::vector<float> q(static_cast<std::size_t>(seq * c.q_dim())), k(static_cast<std::size_t>(seq * c.kv_dim())),
      v(k.size()), out(q.size());  // [seq, 1024], [seq, 256], [seq, 256], [seq, 1024]
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
                       static_cast<double>(c.head_dim);
  for (auto [block, key_block] : grid) {
    double best = 1e9;
    for (int rep = 0; rep < 10; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      ctcal::causal_attention(q.data(), k.data(), v.data(), out.data(), {{0, seq}}, ctcal::AttentionShape::plain(c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.sliding_window), block, key_block);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("seq %ld, block %ld x %ld keys: %.3f ms, %.1f causal GFLOP/s\n", static_cast<long>(seq),
                static_cast<long>(block), static_cast<long>(key_block), best * 1e3, flops / best / 1e9);
  }
  return 0;
}
