#pragma once
// Fake quantization of Linear inputs for FP8 W8A8 (compressed-tensors' forward_quantize on the
// `input` of a quantized Linear, as vLLM's W8A8 FP8 kernels quantize it): x -> fp8(f32(x / s)) * s,
// round to nearest even, saturating at +-448, with
//   static:  s = the checkpoint's input_scale (one per shared input: q/k/v, gate/up; where
//            modules sharing an input hold different scales, their max, as vLLM's fused
//            QKVParallelLinear / MergedColumnParallelLinear take);
//   dynamic: s = absmax / 448 of each token's row (strategy token), of each group of
//            `group_size` columns of a row (strategy group), or of the whole input (tensor),
//            computed in fp32 (an all-zero row: float32 eps).
// Other sites (Q/K/V) go to `inner` (the KV fake quantizer), so one ActivationQuantizer serves
// the forward.
#include <cstdint>
#include <map>
#include <optional>
#include <utility>

#include "ctcal/model/observation.h"
#include "ctcal/quant/quant_args.h"

namespace ctcal {

struct InputQuantSpec {
  std::optional<double> static_scale;     // static per-tensor input_scale; nullopt: dynamic
  Strategy strategy = Strategy::kToken;   // dynamic: token, group or tensor
  int64_t group_size = 0;                 // strategy group
};

class LinearInputFakeQuant : public ActivationQuantizer {
 public:
  // inputs: per (layer, Linear-input site) what to do; inner: Q/K/V (may be null).
  LinearInputFakeQuant(std::map<std::pair<int64_t, Site>, InputQuantSpec> inputs, ActivationQuantizer* inner);
  bool quantizes(int64_t layer, Site site) const override;
  void apply(int64_t layer, Site site, float* data, int64_t seq, int64_t heads, int64_t head_dim,
             int64_t row_stride) override;

 private:
  std::map<std::pair<int64_t, Site>, InputQuantSpec> inputs_;
  ActivationQuantizer* inner_;
};

// One FP8 value: fp8(f32(x / s)) * s, saturating (x / s already rounded to fp32 by the caller).
float fp8_fake_quant(float x, float scale);

}  // namespace ctcal
