#pragma once
// Element types of safetensors files and the conversions ctcal needs between them and fp32.
// All conversions to narrower types round to nearest, ties to even (IEEE default, what
// PyTorch's .to() does).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ctcal {

enum class DType { kF64, kF32, kF16, kBF16, kF8E4M3, kI64, kI32, kI16, kI8, kU8, kBool };

// Name as written in a safetensors header ("F32", "BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType t);
std::optional<DType> dtype_from_name(std::string_view name);
std::size_t dtype_size(DType t);
bool dtype_is_float(DType t);

// Torch spelling ("bfloat16", "float32", ...) used in config.json `torch_dtype`/`dtype` and in
// QuantizationArgs `scale_dtype`/`zp_dtype` (with or without a "torch." prefix).
std::optional<DType> dtype_from_torch_name(std::string_view name);
std::string torch_dtype_name(DType t);  // "torch.bfloat16"

float bf16_to_f32(uint16_t v);
uint16_t f32_to_bf16(float v);
float f16_to_f32(uint16_t v);
uint16_t f32_to_f16(float v);
float f8e4m3_to_f32(uint8_t v);
uint8_t f32_to_f8e4m3(float v);  // saturating (|x| > 448 -> ±448), NaN -> NaN code

// Rounds x to the nearest value representable in `t` (a float type) and returns it as double.
double round_to_dtype(double x, DType t);
// Largest finite value and machine epsilon (torch.finfo(t).max / .eps) of a float type.
double dtype_finite_max(DType t);
double dtype_eps(DType t);

// Reads element i of a raw little-endian buffer of type t as float (float types only).
float load_as_f32(const void* data, DType t, std::size_t i);
// Converts n elements of a raw buffer of float type t into dst (fp32).
void convert_to_f32(const void* src, DType t, std::size_t n, float* dst);

}  // namespace ctcal
