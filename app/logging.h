#pragma once
// One stderr logger for the whole program (stdout is for results and --json).
namespace ctcal::app {
// verbosity: -1 quiet (warnings and errors), 0 info, 1+ debug. CTCAL_LOG_LEVEL overrides. Under
// mpirun, ranks other than 0 log warnings and errors only, each line naming its rank.
void setup_logging(int verbosity, bool json_lines);
}  // namespace ctcal::app
