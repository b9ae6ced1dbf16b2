// libFuzzer target: the safetensors header parser on arbitrary bytes.
#include <cstdint>
#include <map>

#include "ctcal/error.h"
#include "ctcal/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::size_t start = 0;
  std::map<std::string, ctcal::TensorInfo> tensors;
  std::map<std::string, std::string> meta;
  try {
    ctcal::parse_safetensors_header(data, size, "fuzz", &start, &tensors, &meta);
    // Everything accepted must lie inside the buffer.
    for (const auto& [_, t] : tensors)
      if (start + t.end > size || t.begin > t.end) __builtin_trap();
  } catch (const ctcal::Error&) {
  }
  return 0;
}
