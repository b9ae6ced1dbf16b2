#pragma once
// GPU time from CUDA events, for the layer loop's report (cuda_layers.cpp): the compute span of
// each layer, and with CTCAL_CUDA_PROFILE=1 the time of each phase of a layer.
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "cuda_support.h"

namespace ctcal::cuda {

// Seconds from event a to event b, both recorded and completed (negative when b came first).
inline double seconds_between(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  return ms / 1000.0;
}

// Accumulated GPU time of a series of intervals on one stream (CUDA events).
class EventTimer {
 public:
  void start(cudaStream_t s) {
    pairs_.emplace_back(std::make_unique<Event>(), std::make_unique<Event>());
    check(cudaEventRecord(pairs_.back().first->get(), s), "cudaEventRecord");
  }
  void stop(cudaStream_t s) { check(cudaEventRecord(pairs_.back().second->get(), s), "cudaEventRecord"); }
  double seconds() const {  // after the stream finished
    double total = 0;
    for (std::size_t i = 0; i < pairs_.size(); ++i) total += seconds_of(i);
    return total;
  }
  double seconds_of(std::size_t i) const { return seconds_between(start_of(i), end_of(i)); }  // interval i
  cudaEvent_t start_of(std::size_t i) const { return pairs_[i].first->get(); }
  cudaEvent_t end_of(std::size_t i) const { return pairs_[i].second->get(); }

 private:
  std::vector<std::pair<std::unique_ptr<Event>, std::unique_ptr<Event>>> pairs_;
};

// GPU time per phase of the layer (CTCAL_CUDA_PROFILE=1 only: each phase's events cost a little).
class PhaseTimers {
 public:
  PhaseTimers() : on_(std::getenv("CTCAL_CUDA_PROFILE") != nullptr) {}
  // Ends the phase running (if any) and starts `phase`.
  void next(const char* phase, cudaStream_t s) {
    end(s);
    if (on_) timers_[phase].start(s);
    current_ = phase;
  }
  void end(cudaStream_t s) {
    if (on_ && current_) timers_[current_].stop(s);
    current_ = nullptr;
  }
  std::string summary() const {  // "attention 0.81 s, mlp 1.9 s, ..." after the stream finished
    std::string out;
    for (const auto& [name, t] : timers_) out += fmt::format("{}{} {:.3f} s", out.empty() ? "" : ", ", name, t.seconds());
    return out;
  }

 private:
  bool on_;
  const char* current_ = nullptr;
  std::map<std::string, EventTimer> timers_;  // by name: phases are numbered in layer order
};

}  // namespace ctcal::cuda
