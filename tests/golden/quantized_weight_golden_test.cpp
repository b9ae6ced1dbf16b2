// ctcal's FP8 weight quantization and its readers of compressed-tensors' quantized formats against
// compressed-tensors itself (tests/golden/make_quantized_golden.py, compressed-tensors 0.20.1,
// torch 2.15, CPU). Every comparison here is bit-exact by design (EXPECT_EQ on floats is
// intended):
//  - FP8 scales: absmax / 448 rounded once into the weight's dtype equals torch's division in that
//    dtype (a single IEEE rounding of the same quotient; fp32/fp16/bf16 hold >= 2p+2 bits of the
//    fp8 quotient, so there is no double-rounding gap);
//  - FP8 codes: ctcal rounds the quotient to the weight's dtype first, as torch does;
//  - dequantized weights: dtype((q - zp) * scale) is one rounding of an exact product.
#include <cstring>

#include <gtest/gtest.h>

#include "ctcal/io/packed_int.h"
#include "ctcal/io/quantized_weight.h"
#include "ctcal/io/safetensors.h"
#include "ctcal/quant/fp8_weight.h"
#include "ctcal/recipe/recipe.h"
#include "test_util.h"

namespace ctcal {
namespace {

namespace fs = std::filesystem;

fs::path case_dir() { return test::golden_dir() / "quantized"; }

nlohmann::json cases() { return test::load_json(case_dir() / "cases.json")["cases"]; }

// Case names whose entry satisfies `keep` (all of them by default).
template <typename Keep>
std::vector<std::string> case_names(Keep keep) {
  std::vector<std::string> out;
  const nlohmann::json all = cases();  // kept alive: items() refers into it
  for (const auto& [k, c] : all.items())
    if (keep(c)) out.push_back(k);
  return out;
}
bool any_case(const nlohmann::json&) { return true; }
bool pack_case(const nlohmann::json& c) { return c["format"] == "pack-quantized"; }
bool fp8_case(const nlohmann::json& c) { return c["weights"]["type"] == "float" && c["weights"]["num_bits"] == 8; }

class QuantizedGolden : public ::testing::TestWithParam<std::string> {};
class PackedGolden : public ::testing::TestWithParam<std::string> {};
class Fp8Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(QuantizedGolden, DequantizesLikeCompressedTensors) {
  const auto c = cases()[GetParam()];
  SafetensorsFile f(case_dir() / (GetParam() + ".safetensors"));
  const auto format = weight_format_from_name(c["format"].get<std::string>(), "cases.json");
  const auto spec = quantized_weight_spec(c["weights"], format, GetParam());
  const DequantizedWeight got = dequantize_weight(tensor_getter(f), "layer", spec);
  const std::string want_name = f.has("expected.weight_with_args") ? "expected.weight_with_args" : "expected.weight";
  const auto want = f.read_f32(want_name);  // [rows, cols]
  ASSERT_EQ(got.shape, f.info(want_name).shape);
  EXPECT_EQ(got.dtype, f.info(want_name).dtype);
  ASSERT_EQ(got.values.size(), want.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < want.size(); ++i)
    if (got.values[i] != want[i] && bad++ < 5)
      ADD_FAILURE() << GetParam() << " element " << i << ": got " << got.values[i] << ", want " << want[i];
  EXPECT_EQ(bad, 0u) << "elements that differ";
}

TEST_P(PackedGolden, PackingReproducesTheStoredWords) {
  const auto c = cases()[GetParam()];
  SafetensorsFile f(case_dir() / (GetParam() + ".safetensors"));
  const auto& packed = f.info("layer.weight_packed");  // [rows, words]
  const auto& orig = f.info("orig");                   // [rows, cols]
  const int bits = c["weights"]["num_bits"].get<int>();
  const int64_t rows = orig.shape[0], cols = orig.shape[1];
  std::vector<int32_t> word_copy(packed.numel());  // [rows, words]; the data need not be aligned
  std::memcpy(word_copy.data(), f.data(packed), packed.nbytes());
  const int32_t* words = word_copy.data();
  const auto ints = unpack_from_int32(words, rows, cols, bits);
  const auto again = pack_to_int32(ints, rows, cols, bits);
  ASSERT_EQ(again.size(), packed.numel());
  EXPECT_EQ(0, std::memcmp(again.data(), words, packed.nbytes()));
  if (f.has("layer.weight_zero_point") && f.info("layer.weight_zero_point").dtype == DType::kI32) {
    const auto& zp = f.info("layer.weight_zero_point");  // [ceil(rows*bits/32), groups]
    const int64_t groups = zp.shape[1];
    std::vector<int32_t> zcopy(zp.numel());  // [ceil(rows*bits/32), groups]
    std::memcpy(zcopy.data(), f.data(zp), zp.nbytes());
    const int32_t* zw = zcopy.data();
    const auto z = unpack_from_int32(zw, rows, groups, bits, /*packed_dim=*/0);
    const auto zagain = pack_to_int32(z, rows, groups, bits, /*packed_dim=*/0);
    EXPECT_EQ(0, std::memcmp(zagain.data(), zw, zp.nbytes()));
  }
}

TEST_P(Fp8Golden, WeightsBitExact) {
  const auto c = cases()[GetParam()];
  SafetensorsFile f(case_dir() / (GetParam() + ".safetensors"));
  const QuantArgs args = parse_quant_args(c["weights"].dump(), GetParam());
  const auto& orig = f.info("orig");  // [rows, cols]
  const int64_t rows = orig.shape[0], cols = orig.shape[1];
  const auto w = f.read_f32("orig");  // [rows, cols]
  const Fp8WeightScales s = fp8_weight_scales(w.data(), rows, cols, args, orig.dtype);
  EXPECT_EQ(s.shape, f.info("layer.weight_scale").shape);
  EXPECT_EQ(s.dtype, f.info("layer.weight_scale").dtype);
  const auto want_scale = f.read_f32("layer.weight_scale");
  ASSERT_EQ(s.scale.size(), want_scale.size());
  for (std::size_t i = 0; i < want_scale.size(); ++i)
    EXPECT_EQ(s.scale[i], static_cast<double>(want_scale[i])) << "scale " << i;
  const auto codes = fp8_quantize_weight(w.data(), rows, cols, s, orig.dtype);
  const auto& want = f.info("layer.weight");  // [rows, cols] F8_E4M3
  ASSERT_EQ(codes.size(), want.numel());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < codes.size(); ++i)
    if (codes[i] != f.data(want)[i] && bad++ < 5)
      ADD_FAILURE() << "code " << i << ": got 0x" << std::hex << int{codes[i]} << ", want 0x"
                    << int{f.data(want)[i]} << std::dec << " (w = " << w[i] << ")";
  EXPECT_EQ(bad, 0u) << "codes that differ";
  // ctcal's own dequantization equals compressed-tensors' decompress.
  const auto deq = fp8_dequantize_weight(codes.data(), rows, cols, s);
  const auto want_deq = f.read_f32(f.has("expected.weight_with_args") ? "expected.weight_with_args" : "expected.weight");
  EXPECT_EQ(deq, want_deq);
}

const auto kName = [](const auto& p) { return p.param; };
INSTANTIATE_TEST_SUITE_P(CompressedTensors, QuantizedGolden, ::testing::ValuesIn(case_names(any_case)), kName);
INSTANTIATE_TEST_SUITE_P(CompressedTensors, PackedGolden, ::testing::ValuesIn(case_names(pack_case)), kName);
INSTANTIATE_TEST_SUITE_P(CompressedTensors, Fp8Golden, ::testing::ValuesIn(case_names(fp8_case)), kName);

}  // namespace
}  // namespace ctcal
