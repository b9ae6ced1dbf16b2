#pragma once
// Fake quantization of the KV cache as vLLM 0.34 stores it with --kv-cache-dtype nvfp4 on Hopper
// (FlashInfer's FA2 path; quant/nvfp4.h has the block math and its sources): K and V of every
// (token, head) in 16-element blocks, each with an E4M3 block scale, under one per-tensor decode
// multiplier `s` per layer and site. Q is not quantized (the FA2 path keeps it in the model dtype).
// Counts, per layer and site, the blocks whose scale saturated at 448 and the non-zero blocks
// flushed to zero, and accumulates SQNR.
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "ctcal/model/observation.h"

namespace ctcal {

struct Nvfp4BlockCounts {
  int64_t blocks = 0;     // 16-element blocks quantized
  int64_t saturated = 0;  // block scale amax / (6 s) beyond 448: the block's largest values clipped
  int64_t flushed = 0;    // non-zero blocks whose block scale rounded to 0: stored as all zeros
};

class Nvfp4KvFakeQuant : public ActivationQuantizer {
 public:
  // s: [layers] {Site::kKey: s, Site::kValue: s}; a layer without entries is left unquantized.
  // Every s must be positive and finite (asserted: vLLM refuses others). head_dim must be a
  // multiple of 16 (checked by the caller, which can name the model).
  explicit Nvfp4KvFakeQuant(std::vector<std::map<Site, double>> s);
  bool quantizes(int64_t layer, Site site) const override;
  void apply(int64_t layer, Site site, float* data, int64_t seq, int64_t heads, int64_t head_dim,
             int64_t row_stride) override;
  // 10 log10(sum x^2 / sum (x - q(x))^2) over everything seen; +inf when lossless, NaN when unseen.
  double sqnr_db(int64_t layer, Site site) const;
  Nvfp4BlockCounts counts(int64_t layer, Site site) const;  // zeros when unseen

 private:
  std::vector<std::map<Site, double>> s_;
  std::map<std::pair<int64_t, Site>, std::pair<double, double>> energy_;  // signal, noise
  std::map<std::pair<int64_t, Site>, Nvfp4BlockCounts> counts_;
};

}  // namespace ctcal
