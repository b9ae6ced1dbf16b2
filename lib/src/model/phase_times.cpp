#include "ctcal/model/phase_times.h"

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

namespace ctcal {

PhaseTimes::PhaseTimes() : on_(std::getenv("CTCAL_CPU_PROFILE") != nullptr) {}

void PhaseTimes::add(const char* phase, double seconds) {
  for (auto& [name, total] : totals_)
    if (std::strcmp(name, phase) == 0) {
      total += seconds;
      return;
    }
  totals_.emplace_back(phase, seconds);
}

std::string PhaseTimes::summary() const {
  std::string out;
  double sum = 0;
  for (const auto& [name, total] : totals_) {
    out += fmt::format("{}{} {:.3f} s", out.empty() ? "" : ", ", name, total);
    sum += total;
  }
  return fmt::format("{} (sum {:.3f} s)", out, sum);
}

}  // namespace ctcal
