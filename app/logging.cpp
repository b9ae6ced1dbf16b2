#include "logging.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>
#include <spdlog/details/fmt_helper.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "ctcal/error.h"
#include "ctcal/util/ranks.h"

namespace ctcal::app {

namespace {

// --log-json: one JSON object per line, built by a JSON library so that quotes, backslashes and
// the newlines of multi-line errors are escaped (a pattern string would write them raw).
// Under mpirun, ranks other than 0 add a "rank" field.
class JsonLinesSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit JsonLinesSink(int rank) : rank_(rank) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const auto t = spdlog::log_clock::to_time_t(msg.time);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
    nlohmann::json line = {
        {"time", stamp},
        {"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                              spdlog::level::to_string_view(msg.level).size())},
        {"message", std::string(msg.payload.data(), msg.payload.size())}};
    if (rank_ > 0) line["rank"] = rank_;
    // error_handler_t::replace: a message with invalid UTF-8 still gives valid JSON.
    const std::string s = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    std::fwrite(s.data(), 1, s.size(), stderr);
  }
  void flush_() override { std::fflush(stderr); }

 private:
  int rank_;
};

// CTCAL_LOG_LEVEL must name a level: spdlog's from_str turns any unknown word into "off", which
// would silence every error.
spdlog::level::level_enum level_from_env(const char* env) {
  static const std::pair<const char*, spdlog::level::level_enum> kNames[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},   {"info", spdlog::level::info},
      {"warn", spdlog::level::warn},   {"warning", spdlog::level::warn},  {"error", spdlog::level::err},
      {"err", spdlog::level::err},     {"critical", spdlog::level::critical}, {"off", spdlog::level::off}};
  for (const auto& [name, level] : kNames)
    if (std::string(env) == name) return level;
  throw UsageError(fmt::format("CTCAL_LOG_LEVEL={}: expected one of trace, debug, info, warn, error, "
                               "critical, off", env));
}

}  // namespace

void setup_logging(int verbosity, bool json_lines) {
  // Under mpirun every rank runs the same plan on the same inputs, so rank 0 alone says what
  // happens (info, progress); the other ranks speak only of their own trouble (warnings and
  // errors), naming their rank. That holds under CTCAL_LOG_LEVEL too, which mpirun hands to
  // every rank.
  const int rank = Ranks::rank();
  std::shared_ptr<spdlog::logger> logger;
  if (json_lines) {
    logger = std::make_shared<spdlog::logger>("ctcal", std::make_shared<JsonLinesSink>(rank));
  } else {
    logger = spdlog::stderr_color_mt("ctcal");
    const std::string who = rank > 0 ? fmt::format("rank {}: ", rank) : std::string();
    // On a terminal a log line first erases the line it lands on: a live progress line
    // (util/progress_line.h) is replaced, not continued, and is redrawn at its next update.
    logger->set_pattern((::isatty(STDERR_FILENO) ? "\r\033[K%^%l%$: " : "%^%l%$: ") + who + "%v");
  }
  spdlog::level::level_enum level = verbosity < 0 ? spdlog::level::warn
                                   : verbosity == 0 ? spdlog::level::info : spdlog::level::debug;
  spdlog::set_default_logger(logger);
  if (const char* env = std::getenv("CTCAL_LOG_LEVEL")) level = level_from_env(env);
  if (rank > 0) level = std::max(level, spdlog::level::warn);
  logger->set_level(level);
}

}  // namespace ctcal::app
