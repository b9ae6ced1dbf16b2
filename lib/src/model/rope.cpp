#include "ctcal/model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "ctcal/error.h"

namespace ctcal {

namespace {

// YaRN (transformers 5.17 _compute_yarn_parameters): each frequency blends the plain one
// (extrapolation) with the one divided by `factor` (interpolation) along a linear ramp over the
// dimension indices whose wavelengths make between beta_fast and beta_slow rotations in the
// original context. The ramp's ends are computed in double (Python floats), the blend in fp32
// (torch float tensors). *inv holds the plain fp32 frequencies 1 / base^(2i / dim) on entry.
void yarn_blend(const RopeConfig& r, int64_t dim, double base, std::vector<float>* inv) {
  const auto d = static_cast<double>(dim);
  const auto orig = static_cast<double>(r.original_max_position_embeddings);
  auto correction_dim = [&](double rotations) {
    return d * std::log(orig / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(base));
  };
  double low = correction_dim(r.beta_fast), high = correction_dim(r.beta_slow);
  if (r.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, d - 1.0);
  if (low == high) high += 0.001;  // avoids a zero-width ramp
  const auto low_f = static_cast<float>(low), width_f = static_cast<float>(high - low);
  const auto factor_f = static_cast<float>(r.factor);
  const auto base_f = static_cast<float>(base);
  for (std::size_t i = 0; i < inv->size(); ++i) {
    // pos_freqs = base ** (arange(0, dim, 2).float() / dim), fp32; inv holds 1 / pos_freqs.
    const float pos_freq = std::pow(base_f, static_cast<float>(2 * i) / static_cast<float>(dim));
    const float interpolation = 1.0f / (factor_f * pos_freq);
    const float ramp = std::clamp((static_cast<float>(i) - low_f) / width_f, 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    float& f = (*inv)[i];
    f = interpolation * (1.0f - extrapolation_factor) + f * extrapolation_factor;
  }
}

}  // namespace

std::vector<float> rope_inv_freq(const ModelConfig& cfg, int64_t seq_len) {
  return rope_inv_freq(cfg.rope, cfg.head_dim, cfg.max_position_embeddings, seq_len);
}

std::vector<float> rope_inv_freq(const RopeConfig& r, int64_t dim, int64_t max_position_embeddings,
                                 int64_t seq_len) {
  double base = r.theta;
  if (r.type == RopeType::kDynamic && seq_len > max_position_embeddings) {
    // Dynamic NTK: the base grows once the sequence is longer than the trained context
    // (transformers recomputes it for the longest sequence seen in the forward call).
    double ratio = r.factor * static_cast<double>(seq_len) /
                       static_cast<double>(max_position_embeddings) - (r.factor - 1.0);
    base = base * std::pow(ratio, static_cast<double>(dim) / static_cast<double>(dim - 2));
  }
  const int64_t rot = r.rotary_dim(dim);  // = dim unless RoPE is partial
  std::vector<float> inv(static_cast<std::size_t>(rot / 2));
  const auto base_f = static_cast<float>(base);
  // longrope: the long factors once the sequence is longer than the original context.
  const std::vector<double>& ext = seq_len > r.original_max_position_embeddings ? r.long_factor : r.short_factor;
  for (int64_t i = 0; i < rot / 2; ++i) {
    // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), in fp32 (dim: the rotary dim);
    // longrope: 1.0 / (ext_factors * base ** (...)).
    float expo = static_cast<float>(2 * i) / static_cast<float>(rot);
    const float p = std::pow(base_f, expo);
    inv[static_cast<std::size_t>(i)] = r.type == RopeType::kLongRope
                                           ? 1.0f / (static_cast<float>(ext[static_cast<std::size_t>(i)]) * p)
                                           : 1.0f / p;
  }
  if (r.type == RopeType::kYarn) {
    yarn_blend(r, rot, base, &inv);
  } else if (r.type == RopeType::kProportional) {
    // _compute_proportional_rope_parameters: the first int(proportion * head_dim // 2) angles keep
    // 1 / base^(2i / head_dim), the others are 0 (cos 1, sin 0: those pairs pass through); all / factor.
    const auto angles = static_cast<std::size_t>(std::floor(r.rope_proportion * static_cast<double>(dim) / 2.0));
    for (std::size_t i = angles; i < inv.size(); ++i) inv[i] = 0.0f;
    for (auto& f : inv) f = f / static_cast<float>(r.factor);
  } else if (r.type == RopeType::kLinear) {
    for (auto& f : inv) f = f / static_cast<float>(r.factor);
  } else if (r.type == RopeType::kLlama3) {
    const auto factor = static_cast<float>(r.factor);
    const auto low = static_cast<float>(r.low_freq_factor);
    const auto high = static_cast<float>(r.high_freq_factor);
    const auto old_ctx = static_cast<float>(r.original_max_position_embeddings);
    const float low_wavelen = old_ctx / low;
    const float high_wavelen = old_ctx / high;
    for (auto& f : inv) {
      const float wavelen = 2.0f * std::numbers::pi_v<float> / f;
      if (wavelen > low_wavelen) {
        f = f / factor;                        // low frequencies: scaled
      } else if (wavelen >= high_wavelen) {    // medium: interpolate
        const float smooth = (old_ctx / wavelen - low) / (high - low);
        f = (1.0f - smooth) * f / factor + smooth * f;
      }                                        // high frequencies: unchanged
    }
  }
  return inv;
}

RopeTable make_rope_table(const ModelConfig& cfg, int64_t seq_len) {
  return make_rope_table(cfg.rope, cfg.head_dim, cfg.max_position_embeddings, seq_len);
}

RopeTable make_rope_table(const RopeConfig& rope, int64_t head_dim, int64_t max_position_embeddings,
                          int64_t seq_len) {
  RopeTable t;
  t.seq_len = seq_len;
  t.half = rope.rotary_dim(head_dim) / 2;
  std::vector<float> inv = rope_inv_freq(rope, head_dim, max_position_embeddings, seq_len);
  // longrope and yarn scale cos and sin (emb.cos() * attention_scaling in fp32); 1 for the other types.
  const bool scaled = rope.type == RopeType::kLongRope || rope.type == RopeType::kYarn;
  const auto att = static_cast<float>(scaled ? rope.attention_factor : 1.0);
  t.cos.resize(static_cast<std::size_t>(seq_len * t.half));
  t.sin.resize(t.cos.size());
  for (int64_t p = 0; p < seq_len; ++p)
    for (int64_t i = 0; i < t.half; ++i) {
      const float angle = static_cast<float>(p) * inv[static_cast<std::size_t>(i)];  // fp32, as torch
      t.cos[static_cast<std::size_t>(p * t.half + i)] = att == 1.0f ? std::cos(angle) : std::cos(angle) * att;
      t.sin[static_cast<std::size_t>(p * t.half + i)] = att == 1.0f ? std::sin(angle) : std::sin(angle) * att;
    }
  return t;
}

void apply_rope(const RopeTable& table, float* x, int64_t seq, int64_t heads, int64_t head_dim,
                int64_t row_stride) {
  const int64_t half = table.half;
  CTCAL_ASSERT(2 * half <= head_dim, "rotary dims exceed head_dim");
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < seq; ++t) {
    const float* c = table.cos.data() + t * half;
    const float* s = table.sin.data() + t * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + t * row_stride + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        // cos/sin repeat over both halves; rotate_half gives (-b, a).
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

int64_t RopeTableCache::key_of(int64_t len) const {
  // longrope switches factor sets past the original context: by length too.
  return rope_.type == RopeType::kDynamic || rope_.type == RopeType::kLongRope ? len : 0;
}

const RopeTable& RopeTableCache::for_length(int64_t len) {
  const int64_t key = key_of(len);
  auto it = tables_.find(key);
  if (it == tables_.end()) {
    int64_t n = len;
    if (key == 0)
      for (const auto& s : spans_) n = std::max(n, s.length);
    // Positions [offset, offset + n): the table of offset + n positions without its first rows
    // (dynamic and longrope see the whole length, as transformers does).
    RopeTable t = make_rope_table(rope_, c_.head_dim, c_.max_position_embeddings, offset_ + n);
    t.cos.erase(t.cos.begin(), t.cos.begin() + offset_ * t.half);
    t.sin.erase(t.sin.begin(), t.sin.begin() + offset_ * t.half);
    t.seq_len = n;
    it = tables_.emplace(key, std::move(t)).first;
  }
  return it->second;
}

}  // namespace ctcal
