// libFuzzer target: config.json parsing (JSON text -> ModelConfig).
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "ctcal/error.h"
#include "ctcal/model/model_config.h"
#include "ctcal/model/rope.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  try {
    ctcal::ModelConfig c = ctcal::parse_model_config(j, "fuzz");
    if (c.head_dim <= 4096) ctcal::rope_inv_freq(c, 16);  // accepted configs must give usable RoPE tables
  } catch (const ctcal::Error&) {
  }
  return 0;
}
