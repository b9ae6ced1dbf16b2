#pragma once
// Shared test helpers: data locations, named tolerances, JSON golden loading.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace ctcal::test {

// ---- Tolerances (one place; each says why) ----
// ctcal computes in fp32 against a float64 reference; an absmax over thousands of values after
// ~3 fp32 GEMMs per layer keeps ~6 significant digits, so 1e-4 relative leaves a 100x margin.
inline constexpr double kAbsmaxRelTol = 1e-4;
// Normalised MSE of the logits, sum((a-b)^2)/sum(b^2): fp32 through every layer (ggml's
// test-backend-ops uses 1e-7 for fp32 ops the same way).
inline constexpr double kLogitsNmse = 1e-7;
// Single activation values (raw rows): absolute error relative to the row's absmax.
inline constexpr double kRowRelTol = 1e-4;
// One small fp32 op chain (a few GEMMs of width <= 64) against its double formula
// (CTranslate2's CPU fp32 tolerance).
inline constexpr double kTolFp32Op = 1e-5;

// The repository: $CTCAL_SOURCE_DIR (a test binary carried to another machine), else where it was built.
inline std::filesystem::path source_dir() {
  if (const char* d = std::getenv("CTCAL_SOURCE_DIR")) return d;
  return CTCAL_SOURCE_DIR;
}
inline std::filesystem::path golden_dir() { return source_dir() / "tests/golden/data"; }

// The shared data folder: $CTCAL_DATA, else ../shared/data beside the repository.
inline std::filesystem::path data_dir() {
  if (const char* d = std::getenv("CTCAL_DATA")) return d;
  return source_dir().parent_path() / "shared/data";
}

#define CTCAL_REQUIRE_DATA()                                                                \
  do {                                                                                      \
    if (!std::filesystem::is_directory(::ctcal::test::data_dir() / "hf"))                   \
      GTEST_SKIP() << "shared data not found at " << ::ctcal::test::data_dir()              \
                   << " (set CTCAL_DATA)";                                                  \
  } while (0)

inline nlohmann::json load_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

inline double rel_err(double got, double want) {
  return std::abs(got - want) / std::max(std::abs(want), 1e-30);
}

// A fresh empty temporary directory removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ctcal-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace ctcal::test
