// libFuzzer target: the tokenizer itself. The first byte picks the mode: even -> encode the rest
// with the real Llama-3 tokenizer.json ($CTCAL_DATA or ../shared/data); odd -> load the rest as
// a tokenizer.json and, if accepted, encode a fixed string with it.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "ctcal/data/tokenizer_json.h"
#include "ctcal/error.h"

namespace {
const ctcal::Tokenizer* llama3() {
  static std::unique_ptr<ctcal::Tokenizer> tok = [] {
    const char* d = std::getenv("CTCAL_DATA");
    std::string dir = d ? d : "../shared/data";
    try {
      return ctcal::load_tokenizer_json(dir + "/llama3-tokenizer/tokenizer.json");
    } catch (const ctcal::Error&) {
      return std::unique_ptr<ctcal::Tokenizer>();
    }
  }();
  return tok.get();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    if (data[0] % 2 == 0) {
      if (const auto* tok = llama3()) {
        for (int32_t id : tok->encode(rest, data[0] % 4 == 0))
          if (id < 0 || id >= tok->vocab_size()) __builtin_trap();
      }
    } else {
      auto tok = ctcal::parse_tokenizer_json(rest, "fuzz.json");
      tok->encode("Hello world <|begin_of_text|> 123 \xe2\x96\x81x", true);
    }
  } catch (const ctcal::Error&) {
  }
  return 0;
}
