#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ctcal {

// Rows [offset, offset + length) of an activation matrix belong to one sample.
struct SampleSpan {
  int64_t offset = 0;
  int64_t length = 0;
};

// Consecutive samples that go through a layer's GEMMs together (CPU and CUDA alike).
struct SampleChunk {
  std::size_t first = 0, last = 0;  // samples [first, last)
  int64_t r0 = 0, n = 0;            // rows [r0, r0 + n) of the hidden states
  std::vector<SampleSpan> spans;    // its samples, as rows of the chunk
};

// Splits `spans` into chunks of consecutive samples whose tokens fit in `chunk_tokens`, at least
// one sample per chunk (a longer sample is a chunk of its own).
std::vector<SampleChunk> make_chunks(const std::vector<SampleSpan>& spans, int64_t chunk_tokens);

}  // namespace ctcal
