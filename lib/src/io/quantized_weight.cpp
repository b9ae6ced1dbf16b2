#include "ctcal/io/quantized_weight.h"

#include <cmath>
#include <cstring>

#include "ctcal/io/checkpoint.h"
#include "ctcal/io/packed_int.h"

namespace ctcal {

namespace {

struct FormatName {
  WeightFormat format;
  const char* name;
};
constexpr FormatName kFormats[] = {
    {WeightFormat::kDense, "dense"},
    {WeightFormat::kNaiveQuantized, "naive-quantized"},
    {WeightFormat::kIntQuantized, "int-quantized"},
    {WeightFormat::kFloatQuantized, "float-quantized"},
    {WeightFormat::kPackQuantized, "pack-quantized"},
    {WeightFormat::kNvfp4PackQuantized, "nvfp4-pack-quantized"},
};

// E2M1 magnitudes by code (compressors/nvfp4/helpers.py kE2M1ToFloat); bit 3 is the sign.
constexpr float kE2M1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

RawTensor need(const TensorGetter& get, const std::string& name, const std::string& why) {
  auto t = get(name);
  if (!t) throw InputError(fmt::format("tensor '{}' is missing; expected it for {}", name, why));
  return *t;
}

void expect_dtype(const RawTensor& t, std::initializer_list<DType> ok, const std::string& what) {
  for (DType d : ok)
    if (t.info->dtype == d) return;
  std::vector<std::string> names;
  for (DType d : ok) names.emplace_back(dtype_name(d));
  throw InputError(fmt::format("{}: tensor '{}' has dtype {}; expected {} ({})", t.file, t.info->name,
                               dtype_name(t.info->dtype), fmt::join(names, " or "), what));
}

[[noreturn]] void bad_shape(const RawTensor& t, const std::string& expected) {
  throw InputError(fmt::format("{}: tensor '{}' has shape {}; expected {}", t.file, t.info->name,
                               shape_str(t.info->shape), expected));
}

int64_t load_int(const RawTensor& t, std::size_t i) {
  const unsigned char* p = t.data;
  switch (t.info->dtype) {
    case DType::kI8: return static_cast<int8_t>(p[i]);
    case DType::kU8: return p[i];
    case DType::kI16: { int16_t v; std::memcpy(&v, p + 2 * i, 2); return v; }
    case DType::kI32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); return v; }
    case DType::kI64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); return v; }
    default: CTCAL_ASSERT(false, "load_int needs an integer dtype");
  }
}

// Which scale (column) covers each column, and rows per scale row: compressed-tensors'
// dequantize inference from the scale's shape, with blocks from block_structure.
struct Tiling {
  int64_t rows_per_scale = 1;
  int64_t scale_rows = 1, scale_cols = 1;
  std::vector<int64_t> col_to_scale;  // [cols]
};

Tiling tiling(const RawTensor& scale, int64_t rows, int64_t cols, const QuantizedWeightSpec& spec,
              const std::optional<RawTensor>& g_idx) {
  const auto& s = scale.info->shape;
  Tiling t;
  t.col_to_scale.assign(static_cast<std::size_t>(cols), 0);
  if (s.size() <= 1) {  // tensor
    if (scale.info->numel() != 1) bad_shape(scale, "[1] for a per-tensor scale");
    t.rows_per_scale = rows;
    return t;
  }
  if (s.size() != 2) bad_shape(scale, "[1], [rows, 1], [rows, groups] or [row_blocks, col_blocks]");
  t.scale_rows = s[0];
  t.scale_cols = s[1];
  if (spec.strategy == "block") {
    if (!spec.block_structure) bad_shape(scale, "a block_structure in the config group");
    const auto [bh, bw] = *spec.block_structure;
    if (s[0] != (rows + bh - 1) / bh || s[1] != (cols + bw - 1) / bw)
      bad_shape(scale, fmt::format("[{}, {}] for {}x{} blocks of a [{}, {}] weight", (rows + bh - 1) / bh,
                                   (cols + bw - 1) / bw, bh, bw, rows, cols));
    t.rows_per_scale = bh;
    for (int64_t c = 0; c < cols; ++c) t.col_to_scale[static_cast<std::size_t>(c)] = c / bw;
    return t;
  }
  if (s[0] != rows) bad_shape(scale, fmt::format("[{}, 1] or [{}, groups]", rows, rows));
  if (s[1] == 1) return t;  // channel
  if (g_idx) {  // activation order: column c uses group g_idx[c]
    if (g_idx->info->numel() != static_cast<std::size_t>(cols)) bad_shape(*g_idx, fmt::format("[{}]", cols));
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g = load_int(*g_idx, static_cast<std::size_t>(c));
      if (g < 0 || g >= s[1])
        throw InputError(fmt::format("{}: tensor '{}'[{}] = {} is not a group index in [0, {})",
                                     g_idx->file, g_idx->info->name, c, g, s[1]));
      t.col_to_scale[static_cast<std::size_t>(c)] = g;
    }
    return t;
  }
  if (cols % s[1] != 0)
    bad_shape(scale, fmt::format("groups that divide the {} columns", cols));
  const int64_t group = cols / s[1];
  for (int64_t c = 0; c < cols; ++c) t.col_to_scale[static_cast<std::size_t>(c)] = c / group;
  return t;
}

// dtype((q - zp) * scale) over a [rows, cols] weight of integer or float codes.
DequantizedWeight apply_scales(const std::vector<float>& codes, int64_t rows, int64_t cols,
                               const std::vector<double>& scale, const std::vector<double>& zp,
                               const Tiling& t, DType out_dtype) {
  DequantizedWeight out;
  out.shape = {rows, cols};
  out.dtype = out_dtype;
  out.values.resize(static_cast<std::size_t>(rows * cols));  // [rows, cols]
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t sr = r / t.rows_per_scale;
    for (int64_t c = 0; c < cols; ++c) {
      const auto si = static_cast<std::size_t>(sr * t.scale_cols + t.col_to_scale[static_cast<std::size_t>(c)]);
      const double q = codes[static_cast<std::size_t>(r * cols + c)] - (zp.empty() ? 0.0 : zp[si]);
      out.values[static_cast<std::size_t>(r * cols + c)] =
          static_cast<float>(round_to_dtype(q * scale[si], out_dtype));
    }
  }
  return out;
}

std::vector<double> read_scale(const RawTensor& s) {
  if (!dtype_is_float(s.info->dtype))
    throw InputError(fmt::format("{}: tensor '{}' has dtype {}; expected a float scale", s.file,
                                 s.info->name, dtype_name(s.info->dtype)));
  std::vector<double> v(s.info->numel());  // [scales]
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = load_as_f32(s.data, s.info->dtype, i);
  return v;
}

std::pair<int64_t, int64_t> matrix_shape(const RawTensor& t) {
  if (t.info->shape.size() != 2) bad_shape(t, "[rows, cols] (a Linear weight)");
  return {t.info->shape[0], t.info->shape[1]};
}

// An I32 tensor's words, copied: a safetensors offset need not be 4-byte aligned.
std::vector<int32_t> int32_words(const RawTensor& t) {
  std::vector<int32_t> w(t.info->numel());  // [numel]
  std::memcpy(w.data(), t.data, w.size() * sizeof(int32_t));
  return w;
}

// Zero points: [scale shape] unpacked, or packed along rows (pack-quantized group/channel).
std::vector<double> read_zero_point(const TensorGetter& get, const std::string& module,
                                    const QuantizedWeightSpec& spec, int64_t scale_rows,
                                    int64_t scale_cols, bool packed) {
  if (spec.symmetric) return {};
  const auto zp = need(get, module + ".weight_zero_point", "an asymmetric weight");
  std::vector<double> out(static_cast<std::size_t>(scale_rows * scale_cols));  // [scale_rows, scale_cols]
  if (packed && (spec.strategy == "group" || spec.strategy == "channel")) {
    expect_dtype(zp, {DType::kI32}, "zero points packed into int32 along rows");
    const auto bits = static_cast<int>(spec.num_bits);
    if (zp.info->shape != std::vector<int64_t>{packed_words(scale_rows, bits), scale_cols})
      bad_shape(zp, shape_str({packed_words(scale_rows, bits), scale_cols}));
    const auto v = unpack_from_int32(int32_words(zp).data(), scale_rows, scale_cols, bits, /*packed_dim=*/0);
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = v[i];
    return out;
  }
  if (zp.info->numel() != out.size()) bad_shape(zp, shape_str({scale_rows, scale_cols}));
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i] = dtype_is_float(zp.info->dtype) ? load_as_f32(zp.data, zp.info->dtype, i)
                                            : static_cast<double>(load_int(zp, i));
  return out;
}

DequantizedWeight dequantize_naive(const TensorGetter& get, const std::string& module,
                                   const QuantizedWeightSpec& spec) {
  const auto w = need(get, module + ".weight", weight_format_name(spec.format) + " weights");
  if (spec.is_float) expect_dtype(w, {DType::kF8E4M3}, "FP8 E4M3 codes");
  else expect_dtype(w, {DType::kI8}, "int8 codes");
  const auto [rows, cols] = matrix_shape(w);
  const auto scale = need(get, module + ".weight_scale", "dequantization");
  const Tiling t = tiling(scale, rows, cols, spec, get(module + ".weight_g_idx"));
  std::vector<float> codes(static_cast<std::size_t>(rows * cols));  // [rows, cols]
  for (std::size_t i = 0; i < codes.size(); ++i)
    codes[i] = spec.is_float ? f8e4m3_to_f32(w.data[i]) : static_cast<float>(static_cast<int8_t>(w.data[i]));
  return apply_scales(codes, rows, cols, read_scale(scale),
                      read_zero_point(get, module, spec, t.scale_rows, t.scale_cols, false), t,
                      scale.info->dtype);
}

DequantizedWeight dequantize_packed(const TensorGetter& get, const std::string& module,
                                    const QuantizedWeightSpec& spec) {
  const auto packed = need(get, module + ".weight_packed", "pack-quantized weights");
  expect_dtype(packed, {DType::kI32}, "int32 words");
  const auto shape_t = need(get, module + ".weight_shape", "pack-quantized weights");
  if (dtype_is_float(shape_t.info->dtype) || shape_t.info->dtype == DType::kBool ||
      shape_t.info->numel() != 2)
    bad_shape(shape_t, "[2] integers (rows, cols)");
  const int64_t rows = load_int(shape_t, 0), cols = load_int(shape_t, 1);
  const auto bits = static_cast<int>(spec.num_bits);
  if (rows <= 0 || cols <= 0) bad_shape(shape_t, "positive rows and cols");
  if (packed.info->shape != std::vector<int64_t>{rows, packed_words(cols, bits)})
    bad_shape(packed, fmt::format("{} for a [{}, {}] weight of {}-bit values",
                                  shape_str({rows, packed_words(cols, bits)}), rows, cols, bits));
  const auto scale = need(get, module + ".weight_scale", "dequantization");
  const Tiling t = tiling(scale, rows, cols, spec, get(module + ".weight_g_idx"));
  const auto ints = unpack_from_int32(int32_words(packed).data(), rows, cols, bits);
  const std::vector<float> codes(ints.begin(), ints.end());  // [rows, cols]
  return apply_scales(codes, rows, cols, read_scale(scale),
                      read_zero_point(get, module, spec, t.scale_rows, t.scale_cols, true), t,
                      scale.info->dtype);
}

DequantizedWeight dequantize_nvfp4(const TensorGetter& get, const std::string& module,
                                   const QuantizedWeightSpec& spec) {
  const auto packed = need(get, module + ".weight_packed", "nvfp4-pack-quantized weights");
  expect_dtype(packed, {DType::kU8}, "two E2M1 codes per byte");
  const auto [rows, half_cols] = matrix_shape(packed);
  const int64_t cols = 2 * half_cols;
  const auto scale = need(get, module + ".weight_scale", "dequantization");
  const auto global = need(get, module + ".weight_global_scale", "nvfp4 dequantization");
  if (global.info->numel() != 1) bad_shape(global, "[1]");
  const Tiling t = tiling(scale, rows, cols, spec, std::nullopt);
  std::vector<float> codes(static_cast<std::size_t>(rows * cols));  // [rows, cols]
  for (std::size_t i = 0; i < codes.size(); ++i) {
    const unsigned nibble = (packed.data[i / 2] >> (4 * (i % 2))) & 0xFu;  // low nibble first
    codes[i] = (nibble & 8u) ? -kE2M1[nibble & 7u] : kE2M1[nibble & 7u];
  }
  // compressed-tensors: scale.to(bf16) / global_scale in fp32, product in fp32, result in bf16.
  const auto gs = static_cast<float>(read_scale(global)[0]);
  std::vector<double> s = read_scale(scale);
  for (double& v : s)
    v = static_cast<double>(static_cast<float>(round_to_dtype(v, DType::kBF16)) / gs);
  DequantizedWeight out = apply_scales(codes, rows, cols, s, {}, t, DType::kF32);
  for (float& v : out.values) v = static_cast<float>(round_to_dtype(v, DType::kBF16));
  out.dtype = DType::kBF16;
  return out;
}

}  // namespace

WeightFormat weight_format_from_name(const std::string& name, const std::string& where) {
  for (const auto& f : kFormats)
    if (name == f.name) return f.format;
  throw UnsupportedFormatError(fmt::format(
      "{}: compressed-tensors format '{}' is not supported; ctcal reads dense, naive-quantized, "
      "int-quantized, float-quantized, pack-quantized and nvfp4-pack-quantized weights",
      where, name));
}

std::string weight_format_name(WeightFormat f) {
  for (const auto& k : kFormats)
    if (k.format == f) return k.name;
  CTCAL_ASSERT(false, "unknown weight format");
}

QuantizedWeightSpec quantized_weight_spec(const nlohmann::json& w, WeightFormat format,
                                          const std::string& where) {
  QuantizedWeightSpec s;
  s.format = format;
  if (!w.is_object()) throw InputError(fmt::format("{}: expected a QuantizationArgs object", where));
  auto field = [&](const char* k) -> const nlohmann::json& {
    if (!w.contains(k)) throw InputError(fmt::format("{}.{}: missing", where, k));
    return w[k];
  };
  const auto& bits = field("num_bits");
  const auto& type = field("type");
  if (!bits.is_number_integer() || !type.is_string())
    throw InputError(fmt::format("{}: expected num_bits an integer and type a string", where));
  s.num_bits = bits.get<int64_t>();
  s.is_float = type.get<std::string>() == "float";
  if (!s.is_float && type.get<std::string>() != "int")
    throw InputError(fmt::format("{}.type: expected 'int' or 'float', got '{}'", where, type.get<std::string>()));
  if (w.contains("symmetric") && w["symmetric"].is_boolean()) s.symmetric = w["symmetric"].get<bool>();
  if (w.contains("strategy") && w["strategy"].is_string()) s.strategy = w["strategy"].get<std::string>();
  if (w.contains("block_structure") && w["block_structure"].is_array() && w["block_structure"].size() == 2 &&
      w["block_structure"][0].is_number_integer() && w["block_structure"][1].is_number_integer())
    s.block_structure = std::array<int64_t, 2>{w["block_structure"][0].get<int64_t>(),
                                               w["block_structure"][1].get<int64_t>()};
  if (s.strategy == "block" && (!s.block_structure || (*s.block_structure)[0] <= 0 || (*s.block_structure)[1] <= 0))
    throw InputError(fmt::format("{}.block_structure: expected [rows, cols] of positive sizes for strategy 'block'", where));
  const std::string fname = weight_format_name(format);
  auto refuse = [&](const std::string& what) {
    return UnsupportedFormatError(fmt::format("{}: format '{}' with {}-bit {} weights: {}", where, fname,
                                              s.num_bits, s.is_float ? "float" : "int", what));
  };
  switch (format) {
    case WeightFormat::kDense: break;
    case WeightFormat::kNaiveQuantized:
    case WeightFormat::kIntQuantized:
    case WeightFormat::kFloatQuantized:
      if (s.is_float ? s.num_bits != 8 : (s.num_bits < 1 || s.num_bits > 8))
        throw refuse("expected FP8 E4M3 or int8-stored integers of 1..8 bits");
      break;
    case WeightFormat::kPackQuantized:
      if (s.is_float || s.num_bits < 1 || s.num_bits > 8) throw refuse("expected int weights of 1..8 bits");
      break;
    case WeightFormat::kNvfp4PackQuantized:
      if (!s.is_float || s.num_bits != 4 || !s.symmetric) throw refuse("expected symmetric FP4 (E2M1) weights");
      break;
  }
  return s;
}

TensorGetter tensor_getter(const Checkpoint& ck) {
  return [&ck](const std::string& name) -> std::optional<RawTensor> {
    if (!ck.has(name)) return std::nullopt;
    const auto& f = ck.shard_of(name);
    const auto& info = f.info(name);
    return RawTensor{&info, f.data(info), f.path().string()};
  };
}

TensorGetter tensor_getter(const SafetensorsFile& f) {
  return [&f](const std::string& name) -> std::optional<RawTensor> {
    if (!f.has(name)) return std::nullopt;
    const auto& info = f.info(name);
    return RawTensor{&info, f.data(info), f.path().string()};
  };
}

bool has_quantized_weight(const TensorGetter& get, const std::string& module) {
  return get(module + ".weight_packed").has_value() || get(module + ".weight_scale").has_value();
}

DequantizedWeight dequantize_weight(const TensorGetter& get, const std::string& module,
                                    const QuantizedWeightSpec& spec) {
  switch (spec.format) {
    case WeightFormat::kNaiveQuantized:
    case WeightFormat::kIntQuantized:
    case WeightFormat::kFloatQuantized:
      return dequantize_naive(get, module, spec);
    case WeightFormat::kPackQuantized:
      return dequantize_packed(get, module, spec);
    case WeightFormat::kNvfp4PackQuantized:
      return dequantize_nvfp4(get, module, spec);
    case WeightFormat::kDense: {
      const auto w = need(get, module + ".weight", "a dense weight");
      expect_dtype(w, {DType::kF32, DType::kF16, DType::kBF16}, "a dense weight");
      const auto [rows, cols] = matrix_shape(w);
      DequantizedWeight out;
      out.shape = {rows, cols};
      out.dtype = w.info->dtype;
      out.values.resize(w.info->numel());  // [rows, cols]
      convert_to_f32(w.data, w.info->dtype, out.values.size(), out.values.data());
      return out;
    }
  }
  CTCAL_ASSERT(false, "unknown weight format");
}

std::vector<int64_t> quantized_weight_shape(const TensorGetter& get, const std::string& module,
                                            const QuantizedWeightSpec& spec) {
  switch (spec.format) {
    case WeightFormat::kPackQuantized: {
      const auto shape_t = need(get, module + ".weight_shape", "pack-quantized weights");
      if (dtype_is_float(shape_t.info->dtype) || shape_t.info->dtype == DType::kBool || shape_t.info->numel() != 2)
        bad_shape(shape_t, "[2] integers (rows, cols)");
      return {load_int(shape_t, 0), load_int(shape_t, 1)};
    }
    case WeightFormat::kNvfp4PackQuantized: {
      const auto [rows, half] = matrix_shape(need(get, module + ".weight_packed", "nvfp4-pack-quantized weights"));
      return {rows, 2 * half};
    }
    default: {
      const auto [rows, cols] = matrix_shape(need(get, module + ".weight", "a weight"));
      return {rows, cols};
    }
  }
}

std::vector<std::string> quantized_weight_tensor_names(WeightFormat format, const std::string& m) {
  switch (format) {
    case WeightFormat::kDense: return {m + ".weight"};
    case WeightFormat::kPackQuantized:
      return {m + ".weight_packed", m + ".weight_shape", m + ".weight_scale",
              m + ".weight_zero_point", m + ".weight_g_idx"};
    case WeightFormat::kNvfp4PackQuantized:
      return {m + ".weight_packed", m + ".weight_scale", m + ".weight_global_scale",
              m + ".input_global_scale"};
    default:
      return {m + ".weight", m + ".weight_scale", m + ".weight_zero_point", m + ".weight_g_idx"};
  }
}

}  // namespace ctcal
