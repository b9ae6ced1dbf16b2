// Readers of compressed-tensors' quantized weights: packing invariants, activation-order groups
// (g_idx, which compressed-tensors 0.20 no longer reads, so no golden exists), refused formats and
// malformed tensors. The values against compressed-tensors itself are in
// tests/golden/quantized_weight_golden_test.cpp.
#include <random>

#include <gtest/gtest.h>

#include "ctcal/io/packed_int.h"
#include "ctcal/io/quantized_weight.h"
#include "ctcal/io/safetensors.h"
#include "test_util.h"

namespace ctcal {
namespace {

TEST(PackedInt, RoundTripsEveryWidthAlongBothDims) {
  const unsigned seed = 1234;  // fixed: the test is exhaustive over widths, not random in spirit
  std::mt19937 rng(seed);
  for (int bits = 1; bits <= 8; ++bits) {
    const int64_t rows = 7, cols = 45;  // 45 values: words end mid-value for odd widths
    std::uniform_int_distribution<int> d(-(1 << (bits - 1)), (1 << (bits - 1)) - 1);
    std::vector<int8_t> v(static_cast<std::size_t>(rows * cols));  // [rows, cols]
    for (auto& x : v) x = static_cast<int8_t>(d(rng));
    for (int dim : {0, 1}) {
      const auto packed = pack_to_int32(v, rows, cols, bits, dim);
      const int64_t expect_words = dim == 1 ? rows * packed_words(cols, bits) : packed_words(rows, bits) * cols;
      ASSERT_EQ(static_cast<int64_t>(packed.size()), expect_words) << "bits " << bits;
      EXPECT_EQ(unpack_from_int32(packed.data(), rows, cols, bits, dim), v) << "bits " << bits << " dim " << dim;
    }
  }
}

TEST(PackedInt, FourBitLayoutIsLowNibbleFirst) {
  // Values -8..7 are stored offset by +8; element i sits at bits [4i, 4i+4).
  const std::vector<int8_t> v = {-8, -7, 0, 7, 1, 2, 3, 4};  // [1, 8]
  const auto p = pack_to_int32(v, 1, 8, 4);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(static_cast<uint32_t>(p[0]), 0xCBA9F810u);
}

TEST(QuantizedWeight, UnknownFormatIsExit4NamingIt) {
  try {
    weight_format_from_name("marlin-24", "config.json: quantization_config.format");
    FAIL() << "no error";
  } catch (const UnsupportedFormatError& e) {
    EXPECT_EQ(e.code(), ExitCode::kBadInput);
    EXPECT_NE(std::string(e.what()).find("'marlin-24'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("quantization_config.format"), std::string::npos) << e.what();
  }
}

TEST(QuantizedWeight, FormatThatCannotHoldTheArgsIsRefused) {
  const auto w = nlohmann::json::parse(R"({"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16})");
  EXPECT_THROW(quantized_weight_spec(w, WeightFormat::kPackQuantized, "group_0.weights"), UnsupportedFormatError);
  EXPECT_THROW(quantized_weight_spec(nlohmann::json::object(), WeightFormat::kFloatQuantized, "group_0.weights"),
               InputError);
}

// Writes `tensors` to a temporary file and dequantizes module "m".
DequantizedWeight dequant(const std::map<std::string, TensorBlob>& tensors, const QuantizedWeightSpec& spec) {
  test::TempDir tmp;
  write_safetensors(tmp.path() / "m.safetensors", tensors);
  SafetensorsFile f(tmp.path() / "m.safetensors");
  return dequantize_weight(tensor_getter(f), "m", spec);
}

TensorBlob int_blob(DType t, std::vector<int64_t> shape, const std::vector<int32_t>& v) {
  TensorBlob b{t, std::move(shape), {}};
  for (int32_t x : v) {
    const auto* p = reinterpret_cast<const unsigned char*>(&x);
    b.bytes.insert(b.bytes.end(), p, p + dtype_size(t));  // little-endian low bytes
  }
  return b;
}

TEST(QuantizedWeight, GIdxSelectsEachColumnsGroup) {
  // [1, 4] int8 codes, two groups of two columns assigned out of order by g_idx.
  QuantizedWeightSpec spec;
  spec.format = WeightFormat::kNaiveQuantized;
  spec.num_bits = 8;
  spec.strategy = "group";
  std::map<std::string, TensorBlob> t;
  t["m.weight"] = int_blob(DType::kI8, {1, 4}, {1, 2, 3, 4});
  t["m.weight_scale"] = make_blob_f32({0.5f, 2.0f}, {1, 2}, DType::kF32);  // [rows, groups]
  t["m.weight_g_idx"] = int_blob(DType::kI32, {4}, {1, 0, 0, 1});
  const auto d = dequant(t, spec);
  EXPECT_EQ(d.values, (std::vector<float>{2.0f, 1.0f, 1.5f, 8.0f}));
}

TEST(QuantizedWeight, MissingScaleNamesTheTensor) {
  QuantizedWeightSpec spec;
  spec.format = WeightFormat::kFloatQuantized;
  spec.is_float = true;
  std::map<std::string, TensorBlob> t;
  t["m.weight"] = int_blob(DType::kF8E4M3, {1, 2}, {0x38, 0x40});
  try {
    dequant(t, spec);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("m.weight_scale"), std::string::npos) << e.what();
  }
}

TEST(QuantizedWeight, ScaleThatDoesNotTileTheWeightIsAnError) {
  QuantizedWeightSpec spec;
  spec.format = WeightFormat::kFloatQuantized;
  spec.is_float = true;
  spec.strategy = "channel";
  std::map<std::string, TensorBlob> t;
  t["m.weight"] = int_blob(DType::kF8E4M3, {2, 2}, {0x38, 0x40, 0x38, 0x40});
  t["m.weight_scale"] = make_blob_f32({1.0f, 1.0f, 1.0f}, {3, 1}, DType::kF32);
  try {
    dequant(t, spec);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("shape [3, 1]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ctcal
