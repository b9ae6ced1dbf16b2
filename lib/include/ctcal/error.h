#pragma once
// User-facing failures. Each subclass maps to one documented exit code (SPEC §1), applied only
// at the edge (app/main.cpp). Messages read "<where>: <what>; expected <X>, got <Y>".
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace ctcal {

enum class ExitCode : int {
  kOk = 0,
  kOther = 1,
  kUsage = 2,         // bad flags, existing --output without --overwrite
  kInvalidRecipe = 3, // recipe YAML / QuantizationArgs / transform errors
  kBadInput = 4,      // model directory, dataset, tokenizer, I/O
  kProblemsFound = 5, // `inspect --strict` found problems
};

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ExitCode code() const { return code_; }

 private:
  ExitCode code_;
};

class UsageError : public Error {
 public:
  explicit UsageError(const std::string& m) : Error(ExitCode::kUsage, m) {}
};
class RecipeError : public Error {
 public:
  explicit RecipeError(const std::string& m) : Error(ExitCode::kInvalidRecipe, m) {}
};
class InputError : public Error {
 public:
  explicit InputError(const std::string& m) : Error(ExitCode::kBadInput, m) {}
};

// Programmer invariants (never user input): always on, abort with location.
[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const std::string& msg);
#define CTCAL_ASSERT(cond, msg)                                            \
  do {                                                                     \
    if (!(cond)) ::ctcal::assert_fail(#cond, __FILE__, __LINE__, (msg));   \
  } while (0)

}  // namespace ctcal
