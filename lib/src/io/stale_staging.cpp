#include "ctcal/io/stale_staging.h"

#include <signal.h>

#include <cerrno>
#include <charconv>
#include <limits>

#include <spdlog/spdlog.h>

namespace ctcal {

namespace fs = std::filesystem;

namespace {

// Bytes of the regular files under `dir` (links not followed: their targets are not ours).
std::uintmax_t tree_bytes(const fs::path& dir) {
  std::uintmax_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code fec;
    if (it->is_regular_file(fec) && !it->is_symlink(fec)) total += it->file_size(fec);
  }
  return total;
}

std::string human_bytes(std::uintmax_t b) {
  return b >= 1000000000 ? fmt::format("{:.1f} GB", b / 1e9) : fmt::format("{:.1f} MB", b / 1e6);
}

}  // namespace

std::optional<pid_t> staging_dir_pid(const std::string& name, const std::string& output_filename) {
  const std::string prefix = "." + output_filename + ".ctcal-tmp-";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  const char* first = name.data() + prefix.size();
  const char* last = name.data() + name.size();
  for (const char* c = first; c != last; ++c)
    if (*c < '0' || *c > '9') return std::nullopt;
  long long pid = 0;
  const auto [end, err] = std::from_chars(first, last, pid);
  // PID 0 is no process: kill(0, 0) would ask about our own process group instead.
  if (err != std::errc() || end != last || pid <= 0 || pid > std::numeric_limits<pid_t>::max()) return std::nullopt;
  return static_cast<pid_t>(pid);
}

bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

std::vector<RemovedStaging> remove_stale_staging_dirs(const fs::path& dest) {
  // Collected first, removed after: the directory is not changed while it is being listed.
  std::vector<RemovedStaging> stale;
  const std::string name = dest.filename().string();
  std::error_code ec;
  for (fs::directory_iterator it(dest.parent_path(), ec), end; !ec && it != end; it.increment(ec)) {
    const auto pid = staging_dir_pid(it->path().filename().string(), name);
    std::error_code sec;
    if (pid && fs::is_directory(it->symlink_status(sec)) && !process_alive(*pid)) stale.push_back({it->path(), *pid, 0});
  }
  std::vector<RemovedStaging> removed;
  for (RemovedStaging& r : stale) {
    r.bytes = tree_bytes(r.dir);
    std::error_code rec;
    fs::remove_all(r.dir, rec);
    if (rec) {
      spdlog::warn("{}: could not remove the staging directory left by process {} (no longer running, {}): {}",
                   r.dir.string(), r.pid, human_bytes(r.bytes), rec.message());
      continue;
    }
    spdlog::info("removed {}: the staging directory of an earlier run for this output (process {}, no longer "
                 "running; {})", r.dir.string(), r.pid, human_bytes(r.bytes));
    removed.push_back(std::move(r));
  }
  return removed;
}

}  // namespace ctcal
