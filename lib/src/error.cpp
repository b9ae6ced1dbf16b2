#include "ctcal/error.h"

#include <cstdio>
#include <cstdlib>

namespace ctcal {

void assert_fail(const char* expr, const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "ctcal internal error: %s:%d: assertion '%s' failed: %s\n", file, line,
               expr, msg.c_str());
  std::abort();
}

}  // namespace ctcal
