#include "ctcal/pipeline/fake_quant_weights.h"

#include "ctcal/error.h"
#include "ctcal/model/linear_modules.h"
#include "ctcal/quant/fp8_weight.h"

namespace ctcal {

void fake_quantize_fp8_weights(const Checkpoint& ckpt, const CalibrationPlan& plan, int64_t layer, LayerWeights* w) {
  for (const auto& lp : plan.linear) {
    if (lp.layer != layer) continue;
    const bool mlp = lp.input_site == Site::kGateUpInput || lp.input_site == Site::kDownInput ||
                     lp.input_site == Site::kExpertGateUpInput || lp.input_site == Site::kExpertDownInput;
    if (mlp && !w->has_mlp) continue;  // the last layer's MLP, skipped by calibration
    // The projections the module fills, in its stored row order (a fused one: its parts' rows).
    const std::vector<Linear*> parts = linear_parts(w, lp.role, lp.expert);
    // The module's weight as stored: a fused one is its parts' rows stacked, [rows, cols].
    const int64_t cols = parts[0]->w.cols();
    int64_t rows = 0;
    for (const Linear* p : parts) {
      CTCAL_ASSERT(!p->w_bf16 && p->w.cols() == cols, "FP8 weights are fake-quantized from fp32, before bf16 packing");
      rows += p->w.rows();
    }
    std::vector<float> stored(static_cast<std::size_t>(rows * cols));  // [rows, cols]
    int64_t r0 = 0;
    for (const Linear* p : parts) {
      std::copy(p->w.data(), p->w.data() + p->w.size(), stored.begin() + r0 * cols);
      r0 += p->w.rows();
    }
    const DType dtype = ckpt.info(lp.module + ".weight").dtype;
    const Fp8WeightScales s = fp8_weight_scales(stored.data(), rows, cols, lp.weights, dtype);
    const std::vector<uint8_t> codes = fp8_quantize_weight(stored.data(), rows, cols, s, dtype);  // [rows, cols]
    const std::vector<float> deq = fp8_dequantize_weight(codes.data(), rows, cols, s);            // [rows, cols]
    r0 = 0;
    for (Linear* p : parts) {
      std::copy(deq.begin() + r0 * cols, deq.begin() + (r0 + p->w.rows()) * cols, p->w.data());
      r0 += p->w.rows();
    }
  }
}

}  // namespace ctcal
