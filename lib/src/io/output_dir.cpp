#include "ctcal/io/output_dir.h"

#include <unistd.h>

#include <cstring>
#include <string>

#include "ctcal/error.h"

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

StagingDir::StagingDir(const fs::path& dest, const fs::path& input_dir, bool overwrite)
    : dest_(absolute_clean(dest)), overwrite_(overwrite) {
  const fs::path in = absolute_clean(input_dir);
  if (is_inside(dest_, in))
    throw UsageError(fmt::format("--output {} is the model directory or inside it; choose a "
                                 "directory outside {} (the input is never modified)",
                                 dest.string(), input_dir.string()));
  if (is_inside(in, dest_) && overwrite)
    throw UsageError(fmt::format("--output {} contains the model directory {}; --overwrite would "
                                 "delete the input", dest.string(), input_dir.string()));
  if (fs::exists(dest_) && !overwrite)
    throw UsageError(fmt::format("--output {} already exists; pass --overwrite to replace it",
                                 dest.string()));
  const fs::path parent = dest_.parent_path();
  std::error_code pec;
  fs::create_directories(parent, pec);  // like mkdir -p: a fresh path is a normal request
  if (!fs::is_directory(parent))
    throw UsageError(fmt::format("--output {}: cannot create parent directory {}: {}", dest.string(),
                                 parent.string(), pec.message()));
  tmp_ = parent / fmt::format(".{}.ctcal-tmp-{}", dest_.filename().string(), ::getpid());
  std::error_code ec;
  fs::remove_all(tmp_, ec);
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
