#include "ctcal/util/progress_line.h"

#include <cstdio>

#include <spdlog/spdlog.h>

namespace ctcal {

ProgressLine::ProgressLine(bool tty) : tty_(tty), t0_(std::chrono::steady_clock::now()) {}

// Erases a transient line: an error or a Ctrl-C notice that follows starts on a clean line.
ProgressLine::~ProgressLine() { clear(); }

void ProgressLine::draw(const std::string& line) {
  // \r + erase-line: rewrite in place; one fprintf keeps the line whole.
  std::fprintf(stderr, "\r\033[K%s", line.c_str());
  std::fflush(stderr);
  open_ = true;
}

void ProgressLine::status(const std::string& text) {
  if (!tty_) return;
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  draw(fmt::format("{}  ({:.1f}s)", text, el));
}

void ProgressLine::update(const std::string& what, double done, double total, int64_t tokens_done, bool milestone) {
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const double frac = total > 0 ? std::min(1.0, done / total) : 0.0;
  const double tps = el > 0 ? static_cast<double>(tokens_done) / el : 0.0;
  const std::string eta = frac > 0 ? fmt::format("ETA {:.1f}s", el * (1 - frac) / frac) : std::string("ETA -");
  const std::string line = fmt::format("{:3.0f}%  {}  {:.0f} tokens/s  {:.1f}s elapsed  {}", 100 * frac, what, tps, el, eta);
  if (tty_) draw(line);
  else if (milestone) spdlog::info("{}", line);
}

void ProgressLine::clear() {
  if (!open_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  open_ = false;
}

void ProgressLine::finish() {
  if (!open_) return;
  std::fprintf(stderr, "\n");
  std::fflush(stderr);
  open_ = false;
}

}  // namespace ctcal
