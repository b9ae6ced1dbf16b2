// ctcal: calibrate KV-cache quantization for Llama checkpoints. This file only maps outcomes to
// exit codes (SPEC §1); everything else is in cli.cpp and the library.
#include <cstdio>
#include <exception>

#include <spdlog/spdlog.h>

#include "cli.h"
#include "ctcal/error.h"

int main(int argc, char** argv) {
  try {
    return ctcal::app::run_cli(argc, argv);
  } catch (const ctcal::Error& e) {
    spdlog::error("{}", e.what());
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return static_cast<int>(ctcal::ExitCode::kOther);
  }
}
