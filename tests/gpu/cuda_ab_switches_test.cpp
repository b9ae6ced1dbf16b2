// The CUDA backend's A/B environment variables (docs/cuda.md): each takes the one
// value that switches it, or a positive count for CTCAL_CUDA_CHUNK_TOKENS, and refuses anything
// else with a UsageError (exit 2) naming the variable, before any work. check_cuda_supports makes
// no CUDA call, so this runs, and can fail, on a machine without a GPU (CI's `make build-cuda`).
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/model/cuda_backend.h"
#include "ctcal/model/model_config.h"
#include "scoped_env.h"

namespace ctcal {
namespace {

ModelConfig llama() {
  return parse_model_config(
      nlohmann::json::parse(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 64,
        "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2})"),
      "config.json");
}

using test::ScopedEnv;

// The UsageError's message, or "" when check_cuda_supports accepts the setting.
std::string refusal(const char* name, const char* value) {
  ScopedEnv env(name, value);
  try {
    check_cuda_supports(llama(), {});
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

TEST(CudaAbSwitches, AcceptTheirValuesAndRefuseOthers) {
  EXPECT_EQ(refusal("CTCAL_CUDA_ATTENTION", "blocked"), "");
  EXPECT_EQ(refusal("CTCAL_CUDA_ATTENTION", ""), "");  // empty: unset
  EXPECT_EQ(refusal("CTCAL_CUDA_FUSED_GEMMS", "0"), "");
  EXPECT_EQ(refusal("CTCAL_CUDA_CHUNK_TOKENS", "32768"), "");
  EXPECT_EQ(refusal("CTCAL_CUDA_CHUNK_TOKENS", "1"), "");
  for (auto [name, bad] : {std::pair{"CTCAL_CUDA_ATTENTION", "flash"}, {"CTCAL_CUDA_FUSED_GEMMS", "1"},
                           {"CTCAL_CUDA_CHUNK_TOKENS", "0"}, {"CTCAL_CUDA_CHUNK_TOKENS", "-5"},
                           {"CTCAL_CUDA_CHUNK_TOKENS", "16k"}, {"CTCAL_CUDA_CHUNK_TOKENS", "99999999999"}}) {
    const std::string why = refusal(name, bad);
    EXPECT_NE(why.find(std::string(name) + "=" + bad), std::string::npos) << name << "=" << bad << ": " << why;
  }
}

}  // namespace
}  // namespace ctcal
