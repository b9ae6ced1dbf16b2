#pragma once
// Fake quantization of K/V (and Q) as vLLM applies the scales (reference §3.3, §4.4): FP8 E4M3
// of x / scale with saturation and round-to-nearest-even, int with the zero point; per tensor
// or per head. Also accumulates per-layer SQNR (signal over quantization noise).
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "ctcal/model/observation.h"
#include "ctcal/quant/quant_args.h"

namespace ctcal {

struct SiteScales {
  std::vector<double> scale;       // [1] or [heads]
  std::vector<double> zero_point;  // same length (zeros when symmetric)
};

struct LayerScales {
  std::map<Site, SiteScales> sites;
};

class KvFakeQuant : public ActivationQuantizer {
 public:
  // query_args: set when the run quantizes queries too.
  KvFakeQuant(QuantArgs kv_args, std::optional<QuantArgs> query_args, std::vector<LayerScales> layers);
  bool quantizes(int64_t layer, Site site) const override;
  void apply(int64_t layer, Site site, float* data, int64_t seq, int64_t heads, int64_t head_dim,
             int64_t row_stride) override;
  // 10 log10(sum x^2 / sum (x - q(x))^2) over everything seen, per layer; +inf when lossless.
  double sqnr_db(int64_t layer, Site site) const;
  // Share of the values seen that saturation changed: code x / scale (+ zero point) beyond the
  // last code by more than half a step (FP8 E4M3: |x / scale| > 448 + 16; int: by 0.5), where
  // plain rounding would no longer land on the last code. NaN when nothing was seen.
  double clipped_fraction(int64_t layer, Site site) const;

 private:
  QuantArgs kv_args_;
  std::optional<QuantArgs> query_args_;
  std::vector<LayerScales> layers_;
  std::map<std::pair<int64_t, Site>, std::pair<double, double>> energy_;  // signal, noise
  std::map<std::pair<int64_t, Site>, std::pair<int64_t, int64_t>> clipped_;  // clipped, seen
};

}  // namespace ctcal
