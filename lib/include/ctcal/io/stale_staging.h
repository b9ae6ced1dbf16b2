#pragma once
// A run killed with SIGKILL (or a crash, or a power loss) cannot remove its staging directory
// `.NAME.ctcal-tmp-PID/` beside the output (io/output_dir.h); with FP8 weights of a large model it
// holds tens of GB. The next run for the same output removes the ones whose process is gone.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace ctcal {

// The PID in `name` when it is exactly `.<output_filename>.ctcal-tmp-<digits>` with a PID a
// process can have (1 .. the largest pid_t); nullopt for anything else, which is not ours.
std::optional<pid_t> staging_dir_pid(const std::string& name, const std::string& output_filename);

// Whether a process with this PID exists: kill(pid, 0) succeeds or fails with EPERM (someone
// else's process). Only ESRCH means gone. A reused PID reads as alive: its directory is kept.
bool process_alive(pid_t pid);

struct RemovedStaging {
  std::filesystem::path dir;
  pid_t pid = 0;
  std::uintmax_t bytes = 0;
};

// Removes every staging directory for `dest` (an absolute path) in its parent whose process is
// gone, logging one info line for each (directory, PID, size); a directory that cannot be
// removed is a warning, not an error (the run does not need it gone). Real directories only:
// a symbolic link with such a name is left alone. Returns what was removed.
std::vector<RemovedStaging> remove_stale_staging_dirs(const std::filesystem::path& dest);

}  // namespace ctcal
