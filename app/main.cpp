// ctcal: calibrate KV-cache quantization for Llama checkpoints. This file only maps outcomes to
// exit codes (SPEC §1); everything else is in cli.cpp and the library.
#include <cstdio>
#include <exception>

#include <spdlog/spdlog.h>

#include "cli.h"
#include "ctcal/error.h"
#include "ctcal/util/ranks.h"

int main(int argc, char** argv) {
  ctcal::Ranks::init(&argc, &argv);  // MPI only when started by mpirun
  int code = 0;
  try {
    code = ctcal::app::run_cli(argc, argv);
  } catch (const ctcal::Error& e) {
    spdlog::error("{}", e.what());
    code = static_cast<int>(e.code());
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    code = static_cast<int>(ctcal::ExitCode::kOther);
  }
  // A failed rank ends every rank: the others would wait in the next all-reduce forever.
  if (code != 0 && ctcal::Ranks::size() > 1) ctcal::Ranks::abort(code);
  ctcal::Ranks::finalize();
  return code;
}
