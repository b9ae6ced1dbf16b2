#pragma once
// NVFP4 KV-cache quantization as vLLM 0.34 stores it on Hopper (FlashInfer's FA2 path): per
// (token, head) and each 16 contiguous head-dim elements, an FP8 E4M3 block scale `sf` and 16 FP4
// E2M1 codes, under a per-tensor decode multiplier `s` (the checkpoint's k_scale / v_scale, copied
// unchanged at load). The operations, in the kernel's order and fp32 rounding, read from
// flashinfer-ai/flashinfer include/flashinfer/page.cuh (nvfp4_append_quantize_block and
// nvfp4_append_quantize_e2m1, commit 457a0ae0), which vLLM calls from
// v1/attention/backends/flashinfer.py do_kv_cache_update (nvfp4_quantize_append_paged_kv_cache_
// with_slot_mapping(key, value, ..., layer._k_scale, layer._v_scale): `s` passed as it is):
//
//   amax      = max |x_i|                                 (fmaxf over the 16 values)
//   sf_value  = amax / (6.0f * s)      if amax > 0 and s > 0, else 0     (fp32: 6*s rounded first)
//   sf        = e4m3_satfinite(sf_value)                  (__nv_fp8_e4m3(float): RNE, satfinite)
//   out_scale = 1.0f / (sf * s)        if amax > 0, sf > 0 and s > 0, else 0
//   code_i    = e2m1(x_i * out_scale)  (a reciprocal, then a multiply: not x / (sf * s))
//   decoded   = e2m1_value(code_i) * sf * s   (the attention kernel folds s into its scales)
//
// A block whose sf rounds to 0 gets out_scale 0, so every code is (signed) zero: the block is
// stored as 0. Here every fp32 operation is IEEE round-to-nearest; FlashInfer builds its kernels
// with -use_fast_math (flashinfer/jit/core.py), so on the GPU `/` and `1.0f / y` are the
// approximate div.full / rcp.approx (within 2 ulp). The two agree except where an exact quotient
// lies within a few fp32 ulps (relative 2^-22) of an E4M3 or E2M1 rounding midpoint; at powers of
// two (s = 1.0 with sf = 2^k) both are exact. vLLM's own SM100 writer (csrc/libtorch_stable/
// nvfp4_kv_cache_kernels.cu, reshape_and_cache_nvfp4_kernel via cvt_warp_fp16_to_fp4) computes
// the same quantities in another order: global = 1.0f / s, sf_value = global * (amax *
// rcp(6.0f)), out_scale = rcp(sf * rcp(global)), so it also differs only at those boundaries.
#include <cstdint>

namespace ctcal::nvfp4 {

inline constexpr int kBlockSize = 16;      // elements sharing one E4M3 block scale
inline constexpr float kE2M1Max = 6.0f;    // largest FP4 E2M1 magnitude
inline constexpr float kE4M3Max = 448.0f;  // largest FP8 E4M3 (fn) magnitude

// FP8 E4M3 (fn) code of v, round to nearest even, saturating to ±448 (CUDA's __NV_SATFINITE:
// |v| >= 464 and ±inf give ±448 too); NaN gives 0x7F.
uint8_t e4m3_satfinite(float v);
// The value of an E4M3 (fn) code (0x7F / 0xFF: NaN).
float e4m3_value(uint8_t code);

// FP4 E2M1 code (sign << 3 | magnitude index into {0, 0.5, 1, 1.5, 2, 3, 4, 6}) of v, round to
// nearest with ties to the even index (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2,
// 3.5 -> 4, 5 -> 4), saturating at ±6; the sign bit is v's (so -0.0 and -0.1 give 0x8). NaN gives
// a signed zero code, as FlashInfer's !(mag > 0.25f) test does.
uint8_t e2m1_rn_satfinite(float v);
// The value of an E2M1 code (0x8: -0.0).
float e2m1_value(uint8_t code);

struct BlockResult {
  uint8_t sf = 0;          // E4M3 code of the block scale
  bool saturated = false;  // sf_value > 448: the block's amax is clipped (to 6 * 448 * s)
  bool flushed = false;    // amax > 0 but sf rounded to 0: the whole block is stored as 0
};

// One block: x [16] -> codes [16] (E2M1 codes; may be null) and decoded [16] (the values the
// attention kernel reads back, e2m1_value(code) * sf * s rounded once to fp32; may be null, may
// alias x). s: the per-tensor decode multiplier, positive and finite (vLLM refuses others).
BlockResult quantize_block(const float* x, float s, uint8_t* codes, float* decoded);

}  // namespace ctcal::nvfp4
