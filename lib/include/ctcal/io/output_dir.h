#pragma once
// Writes a checkpoint directory atomically: everything goes to a temporary directory next to
// the destination, which is renamed into place only when complete. Any failure (or a signal,
// through the caller) removes the temporary directory; the input is never modified.
#include <cstdint>
#include <filesystem>
#include <string>

namespace ctcal {

// Every check on `--output` made before any work, creating nothing (so --dry-run makes them too):
// UsageError (exit 2) for a destination that is, holds or is inside the input; one that exists
// without `overwrite`; and, with `overwrite`, one that is `/`, $HOME, the current directory or
// one of its parents, not a directory, or a non-empty directory without ctcal_report.json (not
// a previous ctcal output). Nothing a user owns is replaced.
void check_output_destination(const std::filesystem::path& dest, const std::filesystem::path& input_dir,
                              bool overwrite);

// A file written beside the checkpoint (`option` names it in errors, e.g. "--report"): InputError
// (exit 4) unless it can be created or replaced.
void check_writable_file(const std::filesystem::path& path, const std::string& option);

// InputError (exit 4) unless the output's file system has room for `new_bytes`, plus
// `linked_bytes` when it is not the input's (hard links then fall back to copies).
void check_free_space(const std::filesystem::path& dest, const std::filesystem::path& input_dir,
                      std::uintmax_t new_bytes, std::uintmax_t linked_bytes);

class StagingDir {
 public:
  // Refuses what check_output_destination refuses, removes the staging directories of earlier
  // runs for `dest` whose process is gone (io/stale_staging.h), then creates the temporary one.
  StagingDir(const std::filesystem::path& dest, const std::filesystem::path& input_dir, bool overwrite);
  ~StagingDir();  // removes the temporary directory unless committed
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;

  const std::filesystem::path& path() const { return tmp_; }
  // Renames the finished directory to the destination (replacing an old one with --overwrite).
  void commit();

 private:
  std::filesystem::path dest_, tmp_;
  bool overwrite_;
  bool committed_ = false;
};

// Every staging directory not yet committed, for a signal handler to remove (async-signal-safe
// enough: the handler only reads this path).
const char* active_staging_dir();

// Hard-links `from` to `to`, copying when linking fails (other file system, no permission).
void link_or_copy(const std::filesystem::path& from, const std::filesystem::path& to);

}  // namespace ctcal
