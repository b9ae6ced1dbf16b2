#include "ctcal/eval/nvfp4_fake_quant.h"

#include <cmath>
#include <limits>

#include "ctcal/error.h"
#include "ctcal/quant/nvfp4.h"

namespace ctcal {

Nvfp4KvFakeQuant::Nvfp4KvFakeQuant(std::vector<std::map<Site, double>> s) : s_(std::move(s)) {
  for (const auto& layer : s_)
    for (const auto& [site, v] : layer) {
      CTCAL_ASSERT(site == Site::kKey || site == Site::kValue, "NVFP4 quantizes K and V only");
      CTCAL_ASSERT(v > 0 && std::isfinite(static_cast<float>(v)), "NVFP4 decode scale positive and finite in fp32");
    }
}

bool Nvfp4KvFakeQuant::quantizes(int64_t layer, Site site) const {
  if (layer < 0 || layer >= static_cast<int64_t>(s_.size())) return false;
  return s_[static_cast<std::size_t>(layer)].count(site) != 0;
}

void Nvfp4KvFakeQuant::apply(int64_t layer, Site site, float* data, int64_t seq, int64_t heads, int64_t head_dim,
                             int64_t row_stride) {
  CTCAL_ASSERT(head_dim % nvfp4::kBlockSize == 0, "NVFP4 head_dim a multiple of 16 (checked by eval)");
  // The kernel receives s as an fp32 scalar (layer._k_scale).
  const auto s = static_cast<float>(s_[static_cast<std::size_t>(layer)].at(site));
  double signal = 0, noise = 0;
  Nvfp4BlockCounts c;
  for (int64_t t = 0; t < seq; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t d = 0; d < head_dim; d += nvfp4::kBlockSize) {
        float* x = data + t * row_stride + h * head_dim + d;  // [16] of one (token, head)
        float q[nvfp4::kBlockSize];                              // [16] decoded values
        const nvfp4::BlockResult r = nvfp4::quantize_block(x, s, nullptr, q);
        for (int i = 0; i < nvfp4::kBlockSize; ++i) {
          const double v = x[i], e = v - static_cast<double>(q[i]);
          signal += v * v;
          noise += e * e;
          x[i] = q[i];
        }
        ++c.blocks;
        c.saturated += r.saturated;
        c.flushed += r.flushed;
      }
  auto& en = energy_[{layer, site}];
  en.first += signal;
  en.second += noise;
  auto& total = counts_[{layer, site}];
  total.blocks += c.blocks;
  total.saturated += c.saturated;
  total.flushed += c.flushed;
}

double Nvfp4KvFakeQuant::sqnr_db(int64_t layer, Site site) const {
  auto it = energy_.find({layer, site});
  if (it == energy_.end()) return std::numeric_limits<double>::quiet_NaN();
  if (it->second.second == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(it->second.first / it->second.second);
}

Nvfp4BlockCounts Nvfp4KvFakeQuant::counts(int64_t layer, Site site) const {
  auto it = counts_.find({layer, site});
  return it == counts_.end() ? Nvfp4BlockCounts{} : it->second;
}

}  // namespace ctcal
