#pragma once
namespace ctcal::app {
// Parses the command line and runs a subcommand; returns the exit code. Throws ctcal::Error.
int run_cli(int argc, char** argv);
}  // namespace ctcal::app
