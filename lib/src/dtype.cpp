#include "ctcal/dtype.h"

#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "ctcal/error.h"

namespace ctcal {
namespace {

struct DTypeInfo {
  DType type;
  std::string_view name;
  std::string_view torch;
  std::size_t size;
  bool is_float;
};

constexpr std::array<DTypeInfo, 11> kInfo = {{
    {DType::kF64, "F64", "float64", 8, true},
    {DType::kF32, "F32", "float32", 4, true},
    {DType::kF16, "F16", "float16", 2, true},
    {DType::kBF16, "BF16", "bfloat16", 2, true},
    {DType::kF8E4M3, "F8_E4M3", "float8_e4m3fn", 1, true},
    {DType::kI64, "I64", "int64", 8, false},
    {DType::kI32, "I32", "int32", 4, false},
    {DType::kI16, "I16", "int16", 2, false},
    {DType::kI8, "I8", "int8", 1, false},
    {DType::kU8, "U8", "uint8", 1, false},
    {DType::kBool, "BOOL", "bool", 1, false},
}};

const DTypeInfo& info(DType t) {
  for (const auto& i : kInfo)
    if (i.type == t) return i;
  CTCAL_ASSERT(false, "unknown dtype");
}

}  // namespace

std::string_view dtype_name(DType t) { return info(t).name; }
std::size_t dtype_size(DType t) { return info(t).size; }
bool dtype_is_float(DType t) { return info(t).is_float; }

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& i : kInfo)
    if (i.name == name) return i.type;
  return std::nullopt;
}

std::optional<DType> dtype_from_torch_name(std::string_view name) {
  if (name.starts_with("torch.")) name.remove_prefix(6);
  // Aliases torch accepts for the same dtypes.
  if (name == "float" ) return DType::kF32;
  if (name == "half") return DType::kF16;
  if (name == "double") return DType::kF64;
  for (const auto& i : kInfo)
    if (i.torch == name) return i.type;
  return std::nullopt;
}

std::string torch_dtype_name(DType t) { return "torch." + std::string(info(t).torch); }

float bf16_to_f32(uint16_t v) { return std::bit_cast<float>(static_cast<uint32_t>(v) << 16); }

uint16_t f32_to_bf16(float v) {
  uint32_t bits = std::bit_cast<uint32_t>(v);
  if (std::isnan(v)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // keep it a NaN
  uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);  // ties to even
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24.
    float f = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -f : f;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t f32_to_f16(float v) {
  uint32_t bits = std::bit_cast<uint32_t>(v);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  float a = std::fabs(v);
  if (std::isnan(v)) return static_cast<uint16_t>(sign | 0x7E00);
  if (a >= 65520.0f) return static_cast<uint16_t>(sign | 0x7C00);  // rounds to inf
  if (a < 6.103515625e-05f) {
    // Subnormal range: quantum 2^-24; nearbyint rounds ties to even.
    auto m = static_cast<uint16_t>(std::nearbyint(std::ldexp(a, 24)));
    return static_cast<uint16_t>(sign | m);  // m == 1024 carries into the smallest normal
  }
  uint32_t abits = std::bit_cast<uint32_t>(a);
  uint32_t rounding = 0xFFF + ((abits >> 13) & 1);
  abits += rounding;
  uint32_t exp = (abits >> 23) - 112;
  uint32_t mant = (abits >> 13) & 0x3FF;
  return static_cast<uint16_t>(sign | (exp << 10) | mant);
}

namespace {

float decode_f8e4m3(uint8_t v) {
  uint32_t sign = v & 0x80;
  uint32_t exp = (v >> 3) & 0xF;
  uint32_t mant = v & 0x7;
  float f;
  if (exp == 0xF && mant == 0x7) {
    f = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    f = std::ldexp(static_cast<float>(mant), -9);
  } else {
    f = std::ldexp(1.0f + static_cast<float>(mant) / 8.0f, static_cast<int>(exp) - 7);
  }
  return sign ? -f : f;
}

}  // namespace

float f8e4m3_to_f32(uint8_t v) {
  // 256 codes: decoded once (every FP8 weight element of a checkpoint goes through here).
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[static_cast<std::size_t>(c)] = decode_f8e4m3(static_cast<uint8_t>(c));
    return t;
  }();
  return table[v];
}

uint8_t f32_to_f8e4m3(float v) {
  // On the float's bits (the weight writer calls this for every element): the same code as
  // round_to_dtype(v, kF8E4M3) encoded (round to nearest even, saturating at 448; NaN -> 0x7F).
  const uint32_t all = std::bit_cast<uint32_t>(v);
  const auto sign = static_cast<uint8_t>((all >> 24) & 0x80u);
  const uint32_t bits = all & 0x7FFFFFFFu;
  if (bits > 0x7F800000u) return 0x7F;               // NaN
  if (bits >= 0x43E00000u) return sign | 0x7E;       // |v| >= 448 (and inf): saturates
  if (bits < 0x3C800000u) {                           // |v| < 2^-6: subnormal quantum 2^-9
    const float q = std::nearbyint(std::bit_cast<float>(bits) * 512.0f);  // exact scaling; ties to even
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(q));          // 8 is 2^-6, the first normal code
  }
  // Normal: keep 3 of the 23 mantissa bits, rounding the other 20 to nearest even (a carry moves
  // into the exponent, as it should); below 448 the result is at most 448.
  const uint32_t r = (bits + 0x7FFFFu + ((bits >> 20) & 1u)) & 0xFFF00000u;
  const uint32_t exponent = (r >> 23) - 127 + 7, mant = (r >> 20) & 7u;
  return static_cast<uint8_t>(sign | (exponent << 3) | mant);
}

double round_to_dtype(double x, DType t) {
  if (std::isnan(x) || std::isinf(x)) return x;
  switch (t) {
    case DType::kF64:
      return x;
    case DType::kF32:
      return static_cast<double>(static_cast<float>(x));
    case DType::kBF16:
      return bf16_to_f32(f32_to_bf16(static_cast<float>(x)));  // x in f32 first: exact for
                                                               // every value ctcal rounds
    case DType::kF16:
      return f16_to_f32(f32_to_f16(static_cast<float>(x)));
    case DType::kF8E4M3: {
      // E4M3FN: 3 mantissa bits, min normal 2^-6, subnormal quantum 2^-9, saturating at 448.
      double a = std::fabs(x);
      double quantum;
      if (a < std::ldexp(1.0, -6)) {
        quantum = std::ldexp(1.0, -9);
      } else {
        int e;
        std::frexp(a, &e);                  // a in [2^(e-1), 2^e)
        quantum = std::ldexp(1.0, e - 1 - 3);
      }
      double q = std::nearbyint(a / quantum) * quantum;  // ties to even (default FE_TONEAREST)
      q = std::min(q, 448.0);
      return std::copysign(q, x);
    }
    default:
      CTCAL_ASSERT(false, "round_to_dtype needs a float dtype");
  }
}

double dtype_finite_max(DType t) {
  switch (t) {
    case DType::kF64: return std::numeric_limits<double>::max();
    case DType::kF32: return std::numeric_limits<float>::max();
    case DType::kBF16: return 3.3895313892515355e38;
    case DType::kF16: return 65504.0;
    case DType::kF8E4M3: return 448.0;
    default: CTCAL_ASSERT(false, "dtype_finite_max needs a float dtype");
  }
}

double dtype_eps(DType t) {
  switch (t) {
    case DType::kF64: return std::numeric_limits<double>::epsilon();
    case DType::kF32: return std::numeric_limits<float>::epsilon();
    case DType::kBF16: return 0.0078125;       // 2^-7
    case DType::kF16: return 0.0009765625;     // 2^-10
    case DType::kF8E4M3: return 0.125;         // torch.finfo(float8_e4m3fn).eps
    default: CTCAL_ASSERT(false, "dtype_eps needs a float dtype");
  }
}

float load_as_f32(const void* data, DType t, std::size_t i) {
  const auto* p = static_cast<const unsigned char*>(data);
  switch (t) {
    case DType::kF32: { float v; std::memcpy(&v, p + 4 * i, 4); return v; }
    case DType::kF64: { double v; std::memcpy(&v, p + 8 * i, 8); return static_cast<float>(v); }
    case DType::kBF16: { uint16_t v; std::memcpy(&v, p + 2 * i, 2); return bf16_to_f32(v); }
    case DType::kF16: { uint16_t v; std::memcpy(&v, p + 2 * i, 2); return f16_to_f32(v); }
    case DType::kF8E4M3: return f8e4m3_to_f32(p[i]);
    default: CTCAL_ASSERT(false, "load_as_f32 needs a float dtype");
  }
}

void convert_to_f32(const void* src, DType t, std::size_t n, float* dst) {
  const auto* p = static_cast<const unsigned char*>(src);
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, p, n * 4);
      return;
    case DType::kBF16:
      // Plain loop: the compiler vectorises the shift (bf16 is the top half of an fp32).
      for (std::size_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        dst[i] = bf16_to_f32(v);
      }
      return;
    default:
      for (std::size_t i = 0; i < n; ++i) dst[i] = load_as_f32(src, t, i);
  }
}

}  // namespace ctcal
