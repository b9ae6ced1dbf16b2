// libFuzzer target: the dataset reader (.jsonl/.json/.txt chosen by the first byte) and sample
// selection with a vocabulary of 512.
#include <cstdint>
#include <string>

#include "ctcal/data/dataset.h"
#include "ctcal/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const char* kExt[] = {".jsonl", ".json", ".txt"};
  const std::string ext = kExt[data[0] % 3];
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    auto rows = ctcal::parse_dataset_rows(text, ext, "fuzz" + ext);
    ctcal::SamplingOptions o;
    o.vocab_size = 512;
    o.num_samples = 8;
    o.max_seq_length = 64;
    auto s = ctcal::make_calibration_samples("fuzz" + ext, rows, nullptr, o);
    for (const auto& sample : s.samples)
      if (sample.empty() || sample.size() > 64) __builtin_trap();
  } catch (const ctcal::Error&) {
  }
  return 0;
}
