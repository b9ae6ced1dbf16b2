#pragma once
// A calibration run's settings when neither a flag nor the recipe's `ctcal:` block sets them, in
// one place: the flags' help text, the sampling options, `calibrate`'s resolution (and so its
// dry-run plan and the recipe.yaml it writes) and `validate`'s run block all read them here.
#include <cstdint>

namespace ctcal {

inline constexpr int64_t kDefaultNumSamples = 512;
inline constexpr int64_t kDefaultMaxSeqLength = 2048;
inline constexpr uint64_t kDefaultSeed = 42;
inline constexpr bool kDefaultShuffle = true;
// K's range: post-RoPE keys as observed (llm-compressor's behaviour), or "envelope".
inline constexpr const char* kDefaultKeyRange = "observed";
// The calibration forward's Linear weights: as stored (llm-compressor 0.14), or "quantized".
inline constexpr const char* kDefaultPropagate = "unquantized";

}  // namespace ctcal
