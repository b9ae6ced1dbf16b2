#pragma once
// Wall time per phase of the CPU layer loop (weight load and pack, projections, attention, the
// row-wise steps), summed over layers and chunks: where a run's time goes, for tuning on a
// machine one cannot profile. On with CTCAL_CPU_PROFILE=1 (run_layers logs the summary at the
// end); off, each phase costs one branch.
#include <chrono>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace ctcal {

class PhaseTimes {
 public:
  PhaseTimes();  // on when CTCAL_CPU_PROFILE is set
  bool on() const { return on_; }
  void add(const char* phase, double seconds);  // phase: a string literal
  void clear() { totals_.clear(); }
  // "load+pack 1.20 s, qkv_proj 0.41 s, ..." in the order phases first appeared, with the total.
  std::string summary() const;

 private:
  bool on_;
  std::vector<std::pair<const char*, double>> totals_;  // few phases: a linear scan is cheapest
};

// Adds the wall time from construction to destruction (or to stop()) to `phase`.
class PhaseScope {
 public:
  PhaseScope(PhaseTimes& times, const char* phase) : times_(times), phase_(phase) {
    if (times_.on()) start_ = Clock::now();
  }
  ~PhaseScope() { stop(); }
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;
  void stop() {
    if (!times_.on() || !phase_) return;
    times_.add(phase_, std::chrono::duration<double>(Clock::now() - start_).count());
    phase_ = nullptr;
  }

 private:
  using Clock = std::chrono::steady_clock;
  PhaseTimes& times_;
  const char* phase_;
  Clock::time_point start_{};
};

}  // namespace ctcal
