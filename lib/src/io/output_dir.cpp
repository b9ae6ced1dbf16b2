#include "ctcal/io/output_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include <cstring>
#include <string>

#include "ctcal/error.h"
#include "ctcal/io/stale_staging.h"

namespace ctcal {

namespace fs = std::filesystem;

namespace {
char g_active[4096] = {0};

fs::path absolute_clean(const fs::path& p) { return fs::weakly_canonical(fs::absolute(p)); }

bool is_inside(const fs::path& child, const fs::path& parent) {
  auto c = child.begin(), p = parent.begin();
  for (; p != parent.end(); ++p, ++c)
    if (c == child.end() || *c != *p) return false;
  return true;
}
}  // namespace

const char* active_staging_dir() { return g_active; }

namespace {
// The nearest existing directory at or above `p`: where new entries will be created.
fs::path existing_ancestor(fs::path p) {
  while (!p.empty() && !fs::exists(p) && p != p.root_path()) p = p.parent_path();
  return p.empty() ? fs::path("/") : p;
}
}  // namespace

void check_output_destination(const fs::path& dest, const fs::path& input_dir, bool overwrite) {
  const fs::path d = absolute_clean(dest);
  const fs::path in = absolute_clean(input_dir);
  if (is_inside(d, in))
    throw UsageError(fmt::format("--output {} is the model directory or inside it; choose a "
                                 "directory outside {} (the input is never modified)",
                                 dest.string(), input_dir.string()));
  if (is_inside(in, d))
    throw UsageError(fmt::format("--output {} contains the model directory {}; choose a directory "
                                 "that does not hold the input", dest.string(), input_dir.string()));
  if (!fs::exists(d)) {
    // The parent chain must end in a directory we can create entries in.
    const fs::path parent = existing_ancestor(d.parent_path());
    if (!fs::is_directory(parent))
      throw InputError(fmt::format("--output {}: {} is not a directory", dest.string(), parent.string()));
    if (::access(parent.c_str(), W_OK) != 0)
      throw InputError(fmt::format("--output {}: cannot create files in {} ({})", dest.string(), parent.string(),
                                   std::strerror(errno)));
    return;
  }
  if (!overwrite)
    throw UsageError(fmt::format("--output {} already exists; pass --overwrite to replace it",
                                 dest.string()));
  // --overwrite replaces only what ctcal wrote before: never a directory the user works in, their
  // home, the root, nor a directory (or file) that is not a ctcal output.
  std::error_code ec;
  const fs::path cwd = absolute_clean(fs::current_path(ec));
  const char* home = std::getenv("HOME");
  auto refuse = [&](const std::string& why) {
    throw UsageError(fmt::format("--output {}: --overwrite refuses to replace it: {}", dest.string(), why));
  };
  if (d == d.root_path()) refuse("it is the root directory");
  if (home && home[0] && d == absolute_clean(home)) refuse("it is your home directory ($HOME)");
  if (!ec && is_inside(cwd, d)) refuse("it is the current directory or one of its parents");
  if (!fs::is_directory(d)) refuse("it is not a directory");
  if (fs::is_empty(d)) return;
  if (!fs::exists(d / "ctcal_report.json"))
    refuse("it is not empty and holds no ctcal_report.json, so it is not a previous ctcal output; "
           "choose a new directory or remove it yourself");
}

void check_writable_file(const fs::path& path, const std::string& option) {
  const fs::path p = fs::absolute(path).lexically_normal();
  if (fs::is_directory(p))
    throw InputError(fmt::format("{} {}: is a directory; expected a file name", option, path.string()));
  if (fs::exists(p)) {
    if (::access(p.c_str(), W_OK) != 0)
      throw InputError(fmt::format("{} {}: exists and cannot be written ({})", option, path.string(), std::strerror(errno)));
    return;
  }
  const fs::path parent = existing_ancestor(p.parent_path());
  if (!fs::is_directory(parent))
    throw InputError(fmt::format("{} {}: {} is not a directory", option, path.string(), parent.string()));
  if (::access(parent.c_str(), W_OK) != 0)
    throw InputError(fmt::format("{} {}: cannot create files in {} ({})", option, path.string(), parent.string(),
                                 std::strerror(errno)));
}

void check_free_space(const fs::path& dest, const fs::path& input_dir, std::uintmax_t new_bytes,
                      std::uintmax_t linked_bytes) {
  const fs::path parent = existing_ancestor(absolute_clean(dest).parent_path());
  if (::access(parent.c_str(), W_OK) != 0)
    throw InputError(fmt::format("--output {}: cannot create files in {} ({})", dest.string(), parent.string(),
                                 std::strerror(errno)));
  // Hard links cost nothing on the input's file system; elsewhere the shards are copied.
  struct stat a {}, b {};
  const bool same_fs = ::stat(parent.c_str(), &a) == 0 && ::stat(absolute_clean(input_dir).c_str(), &b) == 0 &&
                       a.st_dev == b.st_dev;
  const std::uintmax_t need = new_bytes + (same_fs ? 0 : linked_bytes);
  std::error_code ec;
  const auto space = fs::space(parent, ec);
  if (ec) return;  // unknown (some network file systems): the write itself reports a full disk
  if (space.available < need)
    throw InputError(fmt::format("--output {}: needs {:.1f} MB in {}, only {:.1f} MB free", dest.string(),
                                 need / 1e6, parent.string(), space.available / 1e6));
}

StagingDir::StagingDir(const fs::path& dest, const fs::path& input_dir, bool overwrite)
    : dest_(absolute_clean(dest)), overwrite_(overwrite) {
  check_output_destination(dest, input_dir, overwrite);
  const fs::path parent = dest_.parent_path();
  std::error_code pec;
  fs::create_directories(parent, pec);  // like mkdir -p: a fresh path is a normal request
  if (!fs::is_directory(parent))
    throw UsageError(fmt::format("--output {}: cannot create parent directory {}: {}", dest.string(),
                                 parent.string(), pec.message()));
  // A run killed with SIGKILL leaves its staging directory (its handler never ran); the next run
  // for this output removes those of processes that are gone (io/stale_staging.h).
  remove_stale_staging_dirs(dest_);
  tmp_ = parent / fmt::format(".{}.ctcal-tmp-{}", dest_.filename().string(), ::getpid());
  std::error_code ec;
  fs::remove_all(tmp_, ec);  // our own PID's, left by an earlier process that had it
  if (!fs::create_directory(tmp_, ec) || ec)
    throw InputError(fmt::format("{}: cannot create the temporary output directory: {}",
                                 tmp_.string(), ec.message()));
  std::strncpy(g_active, tmp_.c_str(), sizeof(g_active) - 1);
}

StagingDir::~StagingDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
  g_active[0] = '\0';
}

void StagingDir::commit() {
  std::error_code ec;
  fs::path old;
  if (fs::exists(dest_)) {
    CTCAL_ASSERT(overwrite_, "existing output checked in the constructor");
    old = dest_.parent_path() / fmt::format(".{}.ctcal-old-{}", dest_.filename().string(), ::getpid());
    fs::rename(dest_, old, ec);
    if (ec) throw InputError(fmt::format("{}: cannot move the old output aside: {}", dest_.string(), ec.message()));
  }
  fs::rename(tmp_, dest_, ec);
  if (ec) {
    if (!old.empty()) fs::rename(old, dest_, ec);
    throw InputError(fmt::format("{}: cannot move the finished output into place: {}", dest_.string(), ec.message()));
  }
  committed_ = true;
  g_active[0] = '\0';
  if (!old.empty()) fs::remove_all(old, ec);
}

void link_or_copy(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::create_hard_link(from, to, ec);
  if (!ec) return;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) throw InputError(fmt::format("{}: cannot link or copy to {}: {}", from.string(), to.string(), ec.message()));
}

}  // namespace ctcal
