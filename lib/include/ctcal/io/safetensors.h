#pragma once
// safetensors: an 8-byte little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data.
// The reader validates every field the way the reference Rust implementation does (offsets
// contiguous and covering the whole data section, shape x dtype size = byte range) so that a
// corrupt or hostile file is an error naming the file and tensor, never a crash.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ctcal/dtype.h"
#include "ctcal/io/mapped_file.h"

namespace ctcal {

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::size_t begin = 0;  // byte offsets relative to the data section
  std::size_t end = 0;
  std::size_t numel() const;
  std::size_t nbytes() const { return end - begin; }
};

std::string shape_str(const std::vector<int64_t>& shape);  // "[4, 1, 1]"

// Largest header ctcal accepts; the Rust reference uses 100 MB as well.
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);  // throws InputError

  const std::filesystem::path& path() const { return file_->path(); }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws InputError when absent
  const unsigned char* data(const TensorInfo& t) const { return file_->data() + data_start_ + t.begin; }
  // Reads a float tensor into fp32 (any of F64/F32/F16/BF16/F8_E4M3).
  std::vector<float> read_f32(const std::string& name) const;
  void release(const TensorInfo& t) const { file_->release(data_start_ + t.begin, t.nbytes()); }
  void prefetch(const TensorInfo& t) const { file_->prefetch(data_start_ + t.begin, t.nbytes()); }

 private:
  std::unique_ptr<MappedFile> file_;
  std::size_t data_start_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Parses and validates a header. Separate from the file so the fuzzer and the hostile-input
// tests can drive it on bytes. `file_size` is the whole file's size.
void parse_safetensors_header(const unsigned char* bytes, std::size_t file_size,
                              const std::string& where, std::size_t* data_start,
                              std::map<std::string, TensorInfo>* tensors,
                              std::map<std::string, std::string>* metadata);

// One tensor to write: raw little-endian bytes of `dtype`, row-major.
struct TensorBlob {
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<unsigned char> bytes;
};

TensorBlob make_blob_f32(const std::vector<float>& values, std::vector<int64_t> shape, DType dtype);

// Writes tensors (sorted by name) with header metadata {"format": "pt"} as transformers does.
void write_safetensors(const std::filesystem::path& path,
                       const std::map<std::string, TensorBlob>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace ctcal
