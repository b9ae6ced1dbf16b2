#pragma once
// The platform-independent sample selection of SPEC §4: SplitMix64 seeded with --seed and a
// Fisher-Yates shuffle with explicit unbiased bounded draws (rejection sampling), so the same
// seed selects the same samples with every compiler and standard library (std::shuffle and
// std::uniform_int_distribution give different results between libraries).
#include <cstdint>
#include <vector>

namespace ctcal {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [0, bound), bound > 0: rejects draws below 2^64 mod bound (Lemire's threshold).
  uint64_t bounded(uint64_t bound);

 private:
  uint64_t state_;
};

// Indices 0..n-1, shuffled with `seed` when `shuffle`, then the first `count` of them.
std::vector<std::size_t> select_samples(std::size_t n, std::size_t count, bool shuffle, uint64_t seed);

}  // namespace ctcal
