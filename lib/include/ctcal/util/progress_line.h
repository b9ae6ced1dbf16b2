#pragma once
// Progress of long work (calibrate, eval) where the user looks: on a terminal, one status line
// rewritten in place (percentage, what is running, tokens/s, elapsed, ETA); otherwise plain log
// lines at milestones only (one per layer), so logs stay readable.
#include <chrono>
#include <cstdint>
#include <string>

namespace ctcal {

class ProgressLine {
 public:
  // `tty`: stderr is a terminal and logging is not quiet/JSON.
  explicit ProgressLine(bool tty);
  ~ProgressLine();  // erases an unfinished line so later output starts on a clean one

  // A phase with no measurable fraction yet ("reading weights of layer 1", "embedding").
  // Shown on a terminal only.
  void status(const std::string& text);

  // `done` of `total` work units (tokens x layers, over every pass); `tokens_done` counts the
  // tokens that went through a layer, for tokens/s. `milestone`: also log a plain line when
  // stderr is not a terminal.
  void update(const std::string& what, double done, double total, int64_t tokens_done, bool milestone);

  // Restarts the clock behind tokens/s, elapsed and ETA (when the measured work begins).
  void start_clock() { t0_ = std::chrono::steady_clock::now(); }

  // Ends the terminal line (the next output starts on a new line).
  void finish();

  // Erases the terminal line (before printing results to stdout on the same terminal).
  void clear();

 private:
  void draw(const std::string& line);
  bool tty_;
  bool open_ = false;  // a terminal line is on screen without its newline
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace ctcal
