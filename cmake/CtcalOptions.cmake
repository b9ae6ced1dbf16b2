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

# The headers nearly every file parses (the standard library's, Eigen, nlohmann/json, fmt, spdlog),
# precompiled once per target. CI compiles the project four times on two cores (fresh root,
# Release, ASan, CUDA), and parsing these was a quarter to two fifths of a file's compile time
# (Release, GCC 12: layer.cpp 7.2 -> 4.2 s, plan.cpp 16.0 -> 12.0 s, eval_run.cpp 12.2 -> 10.4 s,
# inspect.cpp 24.0 -> 20.9 s of CPU). A file must still include what it uses: the fuzz build
# (scripts/fuzz.sh) compiles its files without this.
function(ctcal_precompile_headers target)
  if(CTCAL_PCH AND NOT CTCAL_FUZZ)
    target_precompile_headers(${target} PRIVATE <algorithm> <cmath> <cstdint> <filesystem> <functional> <map>
      <memory> <optional> <set> <string> <vector> <Eigen/Core> <nlohmann/json.hpp> <fmt/format.h>
      <spdlog/spdlog.h> ${ARGN})
  endif()
endfunction()

# What a library built from lib/src needs and gives its users: the public headers, the version
# string, the header-only and runtime dependencies, and Open MPI where ranks are built in. ctcal_lib
# and the fuzz build's ctcal_fuzz_parsers (a subset of lib/src, tests/fuzz/CMakeLists.txt) both call
# it, so the two cannot drift apart.
function(ctcal_library_usage target)
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR}/lib/include)
  target_compile_definitions(${target} PUBLIC CTCAL_VERSION_STRING="${PROJECT_VERSION}")
  target_link_libraries(${target}
    PUBLIC ctcal_options Eigen3::Eigen nlohmann_json::nlohmann_json fmt::fmt spdlog::spdlog OpenMP::OpenMP_CXX
    PRIVATE yaml-cpp PkgConfig::SENTENCEPIECE PkgConfig::PCRE2)
  if(CTCAL_MPI)
    target_link_libraries(${target} PRIVATE MPI::MPI_CXX)
    target_compile_definitions(${target} PRIVATE CTCAL_HAVE_MPI)
  endif()
endfunction()
