#pragma once
// Where the decoder layers run: the CPU (oneDNN/Eigen, the reference path) or one CUDA GPU
// (model/cuda_backend.h), chosen with --device cpu | cuda | cuda:N.
#include <string>
#include <string_view>

namespace ctcal {

struct ComputeDevice {
  enum class Kind { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = 0;  // the CUDA device ordinal (cuda:N)

  bool is_cuda() const { return kind == Kind::kCuda; }
  std::string name() const;  // "cpu", "cuda:0"
  // "cpu", "cuda", "cuda:N"; anything else throws UsageError naming `flag` and what is expected.
  static ComputeDevice parse(std::string_view text, std::string_view flag = "--device");
};

}  // namespace ctcal
