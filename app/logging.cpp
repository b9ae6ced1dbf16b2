#include "logging.h"

#include <cstdlib>
#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace ctcal::app {

void setup_logging(int verbosity, bool json_lines) {
  auto logger = spdlog::stderr_color_mt("ctcal");
  if (json_lines)
    logger->set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%e","level":"%l","message":"%v"})");
  else
    logger->set_pattern("%^%l%$: %v");
  spdlog::level::level_enum level = verbosity < 0 ? spdlog::level::warn
                                   : verbosity == 0 ? spdlog::level::info : spdlog::level::debug;
  if (const char* env = std::getenv("CTCAL_LOG_LEVEL")) level = spdlog::level::from_str(env);
  logger->set_level(level);
  spdlog::set_default_logger(logger);
}

}  // namespace ctcal::app
