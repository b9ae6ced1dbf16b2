// What the element-wise kernel files share (cuda_kernels.cu, moe_kernels.cu, hybrid_kernels.cu):
// the block size, a 1-D grid for n elements, and the bf16 bits of a float rounded to nearest.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace ctcal::cuda {

constexpr int kThreads = 256;

// Blocks of `per` threads for n elements, capped (kernels loop over what a capped grid leaves).
inline unsigned blocks_for(int64_t n, int per = kThreads) {
  const int64_t b = (n + per - 1) / per;
  return static_cast<unsigned>(b < 65535LL * 16 ? b : 65535LL * 16);
}

__device__ inline uint16_t bf16_bits(float v) {
  const __nv_bfloat16 b = __float2bfloat16_rn(v);
  return *reinterpret_cast<const uint16_t*>(&b);
}

}  // namespace ctcal::cuda
