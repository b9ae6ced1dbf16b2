#include "ctcal/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "ctcal/error.h"

namespace ctcal {

using nlohmann::json;

std::size_t TensorInfo::numel() const {
  std::size_t n = 1;
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

namespace {

TensorInfo parse_entry(const std::string& where, const std::string& name, const json& entry,
                       std::size_t data_len) {
  auto fail = [&](const std::string& what) {
    return InputError(fmt::format("{}: tensor '{}': {}", where, name, what));
  };
  if (!entry.is_object()) throw fail("header entry is not a JSON object");
  for (const auto& [key, _] : entry.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      throw fail(fmt::format("unknown header field '{}'; expected dtype, shape, data_offsets", key));
  TensorInfo t;
  t.name = name;
  if (!entry.contains("dtype") || !entry["dtype"].is_string())
    throw fail("field 'dtype' missing or not a string");
  auto dt = dtype_from_name(entry["dtype"].get<std::string>());
  if (!dt)
    throw fail(fmt::format("unknown dtype '{}'; expected one of F64, F32, F16, BF16, F8_E4M3, "
                           "I64, I32, I16, I8, U8, BOOL",
                           entry["dtype"].get<std::string>()));
  t.dtype = *dt;
  if (!entry.contains("shape") || !entry["shape"].is_array())
    throw fail("field 'shape' missing or not an array");
  // Element count with overflow checks: a header claiming 2^62 elements must fail here,
  // before anything is allocated.
  std::size_t numel = 1;
  for (const auto& d : entry["shape"]) {
    if (!d.is_number_unsigned())
      throw fail(fmt::format("shape {} has a non-integer or negative dimension", entry["shape"].dump()));
    auto v = d.get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(std::numeric_limits<int64_t>::max()) ||
        (v != 0 && numel > std::numeric_limits<std::size_t>::max() / v))
      throw fail(fmt::format("shape {} overflows", entry["shape"].dump()));
    numel *= static_cast<std::size_t>(v);
    t.shape.push_back(static_cast<int64_t>(v));
  }
  if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
      entry["data_offsets"].size() != 2 || !entry["data_offsets"][0].is_number_unsigned() ||
      !entry["data_offsets"][1].is_number_unsigned())
    throw fail("field 'data_offsets' must be [begin, end] with non-negative integers");
  auto b = entry["data_offsets"][0].get<std::uint64_t>();
  auto e = entry["data_offsets"][1].get<std::uint64_t>();
  if (b > e) throw fail(fmt::format("data_offsets [{}, {}] has begin > end", b, e));
  if (e > data_len)
    throw fail(fmt::format("data_offsets [{}, {}] run past the data section of {} bytes "
                           "(truncated file?)", b, e, data_len));
  t.begin = static_cast<std::size_t>(b);
  t.end = static_cast<std::size_t>(e);
  std::size_t esize = dtype_size(t.dtype);
  if (numel > std::numeric_limits<std::size_t>::max() / esize || numel * esize != t.nbytes())
    throw fail(fmt::format("shape {} x {} ({} bytes each) does not match data_offsets [{}, {}] "
                           "({} bytes)", entry["shape"].dump(), dtype_name(t.dtype), esize, b, e,
                           e - b));
  return t;
}

}  // namespace

void parse_safetensors_header(const unsigned char* bytes, std::size_t file_size,
                              const std::string& where, std::size_t* data_start,
                              std::map<std::string, TensorInfo>* tensors,
                              std::map<std::string, std::string>* metadata) {
  if (file_size < 8)
    throw InputError(fmt::format("{}: file of {} bytes is too short for a safetensors header "
                                 "(expected at least 8)", where, file_size));
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > kMaxHeaderBytes || n > file_size - 8)
    throw InputError(fmt::format("{}: header length {} is larger than the file ({} bytes) or the "
                                 "{} byte limit (truncated or not a safetensors file)",
                                 where, n, file_size, kMaxHeaderBytes));
  const char* text = reinterpret_cast<const char*>(bytes + 8);
  json header = json::parse(text, text + n, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object())
    throw InputError(fmt::format("{}: header is not a JSON object", where));
  *data_start = 8 + static_cast<std::size_t>(n);
  std::size_t data_len = file_size - *data_start;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object())
        throw InputError(fmt::format("{}: __metadata__ must be a string-to-string object", where));
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          throw InputError(fmt::format("{}: __metadata__['{}'] must be a string", where, mk));
        (*metadata)[mk] = mv.get<std::string>();
      }
      continue;
    }
    (*tensors)[key] = parse_entry(where, key, value, data_len);
  }
  // Offsets must tile the data section exactly: no overlap, no hole, nothing after the end.
  std::vector<const TensorInfo*> order;
  for (const auto& [_, t] : *tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  std::size_t expected = 0;
  for (const TensorInfo* t : order) {
    if (t->begin < expected)
      throw InputError(fmt::format("{}: tensor '{}' data_offsets [{}, {}] overlap the previous "
                                   "tensor", where, t->name, t->begin, t->end));
    if (t->begin > expected)
      throw InputError(fmt::format("{}: tensor '{}' data_offsets [{}, {}] leave a hole at byte {}",
                                   where, t->name, t->begin, t->end, expected));
    expected = t->end;
  }
  if (expected != data_len)
    throw InputError(fmt::format("{}: tensors cover {} bytes of a {} byte data section; expected "
                                 "them to cover it exactly", where, expected, data_len));
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path)
    : file_(std::make_unique<MappedFile>(path)) {
  parse_safetensors_header(file_->data(), file_->size(), path.string(), &data_start_, &tensors_,
                           &metadata_);
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    throw InputError(fmt::format("{}: no tensor named '{}'", path().string(), name));
  return it->second;
}

std::vector<float> SafetensorsFile::read_f32(const std::string& name) const {
  const TensorInfo& t = info(name);
  if (!dtype_is_float(t.dtype))
    throw InputError(fmt::format("{}: tensor '{}' has dtype {}; expected a float dtype",
                                 path().string(), name, dtype_name(t.dtype)));
  std::vector<float> out(t.numel());
  convert_to_f32(data(t), t.dtype, out.size(), out.data());
  return out;
}

TensorBlob make_blob_f32(const std::vector<float>& values, std::vector<int64_t> shape, DType dtype) {
  TensorBlob blob{dtype, std::move(shape), {}};
  blob.bytes.resize(values.size() * dtype_size(dtype));
  unsigned char* p = blob.bytes.data();
  for (std::size_t i = 0; i < values.size(); ++i) {
    float v = values[i];
    switch (dtype) {
      case DType::kF32: std::memcpy(p + 4 * i, &v, 4); break;
      case DType::kF64: { double d = v; std::memcpy(p + 8 * i, &d, 8); break; }
      case DType::kBF16: { uint16_t h = f32_to_bf16(v); std::memcpy(p + 2 * i, &h, 2); break; }
      case DType::kF16: { uint16_t h = f32_to_f16(v); std::memcpy(p + 2 * i, &h, 2); break; }
      case DType::kF8E4M3: p[i] = f32_to_f8e4m3(v); break;
      case DType::kI8: p[i] = static_cast<unsigned char>(static_cast<int8_t>(v)); break;
      case DType::kI32: { auto x = static_cast<int32_t>(v); std::memcpy(p + 4 * i, &x, 4); break; }
      default: CTCAL_ASSERT(false, "make_blob_f32: unsupported dtype");
    }
  }
  return blob;
}

void write_safetensors(const std::filesystem::path& path,
                       const std::map<std::string, TensorBlob>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  std::size_t offset = 0;
  for (const auto& [name, blob] : tensors) {
    std::size_t numel = 1;
    for (auto d : blob.shape) numel *= static_cast<std::size_t>(d);
    CTCAL_ASSERT(numel * dtype_size(blob.dtype) == blob.bytes.size(), "blob size mismatch: " + name);
    header[name] = {{"dtype", dtype_name(blob.dtype)},
                    {"shape", blob.shape},
                    {"data_offsets", {offset, offset + blob.bytes.size()}}};
    offset += blob.bytes.size();
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw InputError(fmt::format("{}: cannot create file", path.string()));
  std::uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xFF);
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [_, blob] : tensors)
    out.write(reinterpret_cast<const char*>(blob.bytes.data()),
              static_cast<std::streamsize>(blob.bytes.size()));
  out.close();
  if (!out) throw InputError(fmt::format("{}: write failed (disk full?)", path.string()));
}

}  // namespace ctcal
