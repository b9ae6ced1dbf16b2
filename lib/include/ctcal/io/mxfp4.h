#pragma once
// MXFP4 (OCP microscaling FP4) weights as the published gpt-oss checkpoints store their experts
// (`quantization_config.quant_method: mxfp4`): `<name>_blocks` uint8 [..., G, 16] holds two FP4
// E2M1 codes per byte (low nibble first), `<name>_scales` uint8 [..., G] one E8M0 exponent
// (biased by 127) per block of 32 values. Dequantized as transformers 5.17's
// integrations/mxfp4.py convert_moe_packed_tensors does, before its final transpose.
#include <cstdint>

namespace ctcal {

// blocks: [rows, bytes] (rows = every dimension before the last, flattened), scales: [rows] ->
// out: [rows, 2 * bytes]: out[r, 2 b] = fp4(blocks[r, b] & 15) * 2^(scales[r] - 127),
// out[r, 2 b + 1] = fp4(blocks[r, b] >> 4) * 2^(scales[r] - 127). Exact in fp32 (transformers
// computes it in bf16, where every such value is exact too, short of 2^128 overflowing).
void dequantize_mxfp4(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t bytes, float* out);

// The FP4 E2M1 value of a 4-bit code: sign bit 3, then {0, 0.5, 1, 1.5, 2, 3, 4, 6}.
float fp4_e2m1_value(uint8_t code);

}  // namespace ctcal
