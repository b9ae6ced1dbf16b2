# Warning and sanitizer flags as INTERFACE targets, linked by every ctcal target
# (never edits the global CMAKE_CXX_FLAGS).
add_library(ctcal_options INTERFACE)
target_compile_options(ctcal_options INTERFACE -Wall -Wextra -Wpedantic -Wshadow
  -Wno-sign-conversion
  # GCC 12 reports false positives inside its own AVX-512 intrinsic headers when Eigen inlines them.
  $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
if(CTCAL_WERROR)
  target_compile_options(ctcal_options INTERFACE -Werror)
endif()
if(CTCAL_NATIVE)
  target_compile_options(ctcal_options INTERFACE -march=native)
endif()
if(CTCAL_FUZZ)
  # Coverage instrumentation for libFuzzer plus ASan/UBSan on the library and the targets.
  target_compile_options(ctcal_options INTERFACE -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  target_link_options(ctcal_options INTERFACE -fsanitize=address,undefined)
endif()
if(CTCAL_SANITIZE)
  target_compile_options(ctcal_options INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
    -fno-sanitize-recover=undefined)
  target_link_options(ctcal_options INTERFACE -fsanitize=address,undefined)
endif()
