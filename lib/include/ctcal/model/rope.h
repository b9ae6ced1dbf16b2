#pragma once
// Rotary position embedding as transformers computes it (rotate_half / NeoX convention):
// inverse frequencies in fp32 per rope type, angles pos * inv_freq in fp32, then
// x' = x * cos + rotate_half(x) * sin with rotate_half(x) = concat(-x[D/2:], x[:D/2]).
#include <cstdint>
#include <map>
#include <vector>

#include "ctcal/model/model_config.h"
#include "ctcal/model/sample_span.h"

namespace ctcal {

// Inverse frequencies, length head_dim / 2, for a sequence of `seq_len` tokens (only the
// dynamic type depends on it).
std::vector<float> rope_inv_freq(const RopeConfig& rope, int64_t head_dim, int64_t max_position_embeddings,
                                 int64_t seq_len);
// The same for the config's global RoPE (cfg.rope).
std::vector<float> rope_inv_freq(const ModelConfig& cfg, int64_t seq_len);

// cos/sin tables for positions 0..seq_len-1.
struct RopeTable {
  int64_t seq_len = 0;
  int64_t half = 0;         // rotary_dim / 2 (head_dim / 2 unless RoPE is partial)
  std::vector<float> cos;   // [seq_len, half]
  std::vector<float> sin;   // [seq_len, half]
};
RopeTable make_rope_table(const RopeConfig& rope, int64_t head_dim, int64_t max_position_embeddings,
                          int64_t seq_len);
RopeTable make_rope_table(const ModelConfig& cfg, int64_t seq_len);  // cfg.rope

// Rotates every head of x in place: its first 2 * table.half dims (all of them unless RoPE is
// partial; the rest pass through). x: [seq, heads, head_dim] with row stride `row_stride`.
void apply_rope(const RopeTable& table, float* x, int64_t seq, int64_t heads, int64_t head_dim,
                int64_t row_stride);

// The cos/sin tables one layer's samples need, by sequence length (only dynamic RoPE and
// longrope depend on it: every other type has one table, of the longest sample). Shared by the
// CPU layer and the CUDA backend, which uploads each table once.
class RopeTableCache {
 public:
  // `offset`: every sample's first token sits at this position (eval at long positions).
  RopeTableCache(const ModelConfig& c, int64_t layer, const std::vector<SampleSpan>& spans, int64_t offset)
      : c_(c), rope_(c.rope_of(layer)), spans_(spans), offset_(offset) {}
  // The table whose row t holds position offset + t, for a sample of `len` tokens.
  const RopeTable& for_length(int64_t len);
  // The key for_length() files a length under (0 for every length-independent type).
  int64_t key_of(int64_t len) const;

 private:
  const ModelConfig& c_;
  const RopeConfig& rope_;
  const std::vector<SampleSpan>& spans_;
  int64_t offset_;
  std::map<int64_t, RopeTable> tables_;
};

}  // namespace ctcal
