// The safetensors reader on real files written by the writer, and on hostile headers: each
// violation must be an InputError naming the file and the tensor, never a crash.
#include <cstring>
#include <fstream>

#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/io/safetensors.h"
#include "test_util.h"

namespace ctcal {
namespace {

using test::TempDir;

std::string raw_file(const std::string& header, std::size_t data_bytes, std::optional<uint64_t> len = {}) {
  std::string out(8, '\0');
  uint64_t n = len.value_or(header.size());
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + std::string(data_bytes, '\0');
}

void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

void expect_error(const std::string& bytes, const std::string& needle) {
  TempDir dir;
  const auto p = dir.path() / "bad.safetensors";
  write_file(p, bytes);
  try {
    SafetensorsFile f(p);
    FAIL() << "accepted a bad file; expected an error containing '" << needle << "'";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.safetensors"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, WriteReadRoundTrip) {
  TempDir dir;
  std::map<std::string, TensorBlob> t;
  t["a"] = make_blob_f32({1.0f, -2.5f, 3.25f, 448.0f}, {2, 2}, DType::kBF16);
  t["b"] = make_blob_f32({0.5f}, {1}, DType::kF32);
  t["z"] = make_blob_f32({0.0f, 0.0f}, {2, 1, 1}, DType::kF8E4M3);
  t["i"] = make_blob_f32({-3.0f, 7.0f}, {2}, DType::kI8);
  write_safetensors(dir.path() / "x.safetensors", t);
  SafetensorsFile f(dir.path() / "x.safetensors");
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.info("a").shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(f.read_f32("a"), (std::vector<float>{1.0f, -2.5f, 3.25f, 448.0f}));
  EXPECT_EQ(f.info("z").dtype, DType::kF8E4M3);
  EXPECT_EQ(f.info("i").dtype, DType::kI8);
  EXPECT_EQ(reinterpret_cast<const int8_t*>(f.data(f.info("i")))[0], -3);
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

TEST(Safetensors, ReadsAllFloatDtypes) {
  TempDir dir;
  std::map<std::string, TensorBlob> t;
  for (auto d : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16})
    t[std::string(dtype_name(d))] = make_blob_f32({1.5f, -0.25f}, {2}, d);
  write_safetensors(dir.path() / "x.safetensors", t);
  SafetensorsFile f(dir.path() / "x.safetensors");
  for (const auto& [name, _] : t) EXPECT_EQ(f.read_f32(name), (std::vector<float>{1.5f, -0.25f})) << name;
}

TEST(SafetensorsHostile, TooShort) { expect_error("abc", "too short"); }
TEST(SafetensorsHostile, HeaderLongerThanFile) { expect_error(raw_file("{}", 0, 1000), "header length 1000"); }
TEST(SafetensorsHostile, AbsurdHeaderLength) { expect_error(raw_file("{}", 0, uint64_t{1} << 62), "header length"); }
TEST(SafetensorsHostile, NotJson) { expect_error(raw_file("{not json", 0), "not a JSON object"); }
TEST(SafetensorsHostile, UnknownDtype) {
  expect_error(raw_file(R"({"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", 4), "unknown dtype 'F12'");
}
TEST(SafetensorsHostile, ShapeDoesNotMatchBytes) {
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8]}})", 8), "does not match");
}
TEST(SafetensorsHostile, OffsetsOutsideFile) {
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8), "truncated");
}
TEST(SafetensorsHostile, Overlap) {
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
               "overlap");
}
TEST(SafetensorsHostile, Hole) {
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "hole");
}
TEST(SafetensorsHostile, TrailingBytes) {
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8), "cover");
}
TEST(SafetensorsHostile, HugeElementCountRejectedBeforeAllocating) {
  // 2^40 elements claimed: fails on the byte-range check, nothing allocated.
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4]}})", 4), "does not match");
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}})", 4), "overflows");
}
TEST(SafetensorsHostile, NegativeDimension) {
  expect_error(raw_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "negative");
}
TEST(SafetensorsHostile, BadMetadata) {
  expect_error(raw_file(R"({"__metadata__":{"format":1}})", 0), "__metadata__");
}

}  // namespace
}  // namespace ctcal
