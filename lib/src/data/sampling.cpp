#include "ctcal/data/sampling.h"

#include <numeric>

namespace ctcal {

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::bounded(uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  for (;;) {
    const uint64_t r = next();
    if (r >= threshold) return r % bound;
  }
}

std::vector<std::size_t> select_samples(std::size_t n, std::size_t count, bool shuffle, uint64_t seed) {
  std::vector<std::size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  if (shuffle && n > 1) {
    SplitMix64 rng(seed);
    for (std::size_t i = n - 1; i > 0; --i) std::swap(idx[i], idx[rng.bounded(i + 1)]);
  }
  if (count < idx.size()) idx.resize(count);
  return idx;
}

}  // namespace ctcal
