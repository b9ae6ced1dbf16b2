#pragma once
#include <cstdint>

namespace ctcal {

// Rows [offset, offset + length) of an activation matrix belong to one sample.
struct SampleSpan {
  int64_t offset = 0;
  int64_t length = 0;
};

}  // namespace ctcal
