#include "ctcal/eval/kv_fake_quant.h"

#include <cmath>
#include <limits>

#include "ctcal/error.h"
#include "ctcal/quant/qparams.h"

namespace ctcal {

KvFakeQuant::KvFakeQuant(QuantArgs kv_args, std::optional<QuantArgs> query_args,
                         std::vector<LayerScales> layers)
    : kv_args_(std::move(kv_args)), query_args_(std::move(query_args)), layers_(std::move(layers)) {}

bool KvFakeQuant::quantizes(int64_t layer, Site site) const {
  if (layer < 0 || layer >= static_cast<int64_t>(layers_.size())) return false;
  if (site != Site::kKey && site != Site::kValue && site != Site::kQuery) return false;
  if (site == Site::kQuery && !query_args_) return false;
  return layers_[static_cast<std::size_t>(layer)].sites.count(site) != 0;
}

void KvFakeQuant::apply(int64_t layer, Site site, float* data, int64_t seq, int64_t heads,
                        int64_t head_dim, int64_t row_stride) {
  const QuantArgs& a = site == Site::kQuery ? *query_args_ : kv_args_;
  const QuantRange r = calculate_range(a);
  const SiteScales& s = layers_[static_cast<std::size_t>(layer)].sites.at(site);
  CTCAL_ASSERT(s.scale.size() == 1 || static_cast<int64_t>(s.scale.size()) == heads, "scale count");
  double signal = 0, noise = 0;
  int64_t clipped = 0;
  // A value is clipped only when saturation changes its code: up to half a step past the last
  // code, rounding alone lands there (int: 0.5; FP8 E4M3: the top step 448 - 416 = 32, so 16).
  // Without the slack, the extreme value itself counts whenever the stored scale rounded down.
  const double slack = a.type == QuantType::kInt ? 0.5 : 16.0;
  for (int64_t t = 0; t < seq; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      const std::size_t g = s.scale.size() == 1 ? 0 : static_cast<std::size_t>(h);
      float* x = data + t * row_stride + h * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) {
        const double v = x[d];
        // vLLM divides in fp32: fp8(float32(x) / scale).
        const double scaled = static_cast<float>(v / s.scale[g]);
        const double q = fake_quantize(scaled, 1.0, s.zero_point[g], a, r) * s.scale[g];
        const double code = scaled + s.zero_point[g];
        clipped += (code > r.q_max + slack || code < r.q_min - slack) ? 1 : 0;
        signal += v * v;
        noise += (v - q) * (v - q);
        x[d] = static_cast<float>(q);
      }
    }
  auto& e = energy_[{layer, site}];
  e.first += signal;
  e.second += noise;
  auto& c = clipped_[{layer, site}];
  c.first += clipped;
  c.second += seq * heads * head_dim;
}

double KvFakeQuant::clipped_fraction(int64_t layer, Site site) const {
  auto it = clipped_.find({layer, site});
  if (it == clipped_.end() || it->second.second == 0) return std::numeric_limits<double>::quiet_NaN();
  return static_cast<double>(it->second.first) / static_cast<double>(it->second.second);
}

double KvFakeQuant::sqnr_db(int64_t layer, Site site) const {
  auto it = energy_.find({layer, site});
  if (it == energy_.end()) return std::numeric_limits<double>::quiet_NaN();
  if (it->second.second == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(it->second.first / it->second.second);
}

}  // namespace ctcal
