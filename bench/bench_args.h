#pragma once
// The benches' command-line options: `--name VALUE` anywhere after the program name (positional
// arguments such as a mode or a directory never start with "--").
#include <cstdint>
#include <cstring>
#include <string>

namespace bench {

// The integer after --name, or `def` when --name is absent (std::stoll: a non-number throws).
inline int64_t arg(int argc, char** argv, const char* name, int64_t def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::stoll(argv[i + 1]);
  return def;
}

// The string after --name, or `def`.
inline std::string arg_str(int argc, char** argv, const char* name, const char* def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return def;
}

}  // namespace bench
