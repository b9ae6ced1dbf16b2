#pragma once
// Writes a checkpoint directory atomically: everything goes to a temporary directory next to
// the destination, which is renamed into place only when complete. Any failure (or a signal,
// through the caller) removes the temporary directory; the input is never modified.
#include <filesystem>

namespace ctcal {

class StagingDir {
 public:
  // Refuses (UsageError, exit 2) an existing `dest` unless `overwrite`, and a `dest` that is, or
  // is inside, `input_dir`.
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
