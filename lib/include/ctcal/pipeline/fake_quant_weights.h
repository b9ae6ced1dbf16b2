#pragma once
// FP8 weights in the forward pass: each planned FP8 Linear layer's fp32 weight replaced by
// dequantize(quantize(W)), the values the written checkpoint holds once read back (compressed-
// tensors' decompress, transformers' and ctcal's read of float-quantized weights).
//
// Used by `calibrate --propagate quantized` (the KV scales of the model with its FP8 weights)
// and by `eval` (the cost of FP8 weights). Same functions as the writer (quant/fp8_weight.h), on
// the same checkpoint values, so the forward sees exactly the written weights.
#include <cstdint>
#include <string>
#include <vector>

#include "ctcal/io/checkpoint.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/pipeline/plan.h"

namespace ctcal {

// Fake-quantizes, in place, the fp32 weights of the plan's FP8 Linear layers of `layer`
// (weights loaded in fp32, not packed bf16). `ckpt` gives each weight's stored dtype, which the
// scale is rounded into (as the writer does).
void fake_quantize_fp8_weights(const Checkpoint& ckpt, const CalibrationPlan& plan, int64_t layer, LayerWeights* w);

}  // namespace ctcal
