# Every dependency comes from Debian's packages (scripts/install_deps.sh installs them).
find_package(CLI11 CONFIG REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(OpenMP REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
find_package(ZLIB REQUIRED)
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)
find_package(dnnl REQUIRED)
# Data-parallel calibration under mpirun (util/ranks.h). Off: one rank only.
option(CTCAL_MPI "Data-parallel calibration across mpirun ranks (Open MPI)" ON)
if(CTCAL_MPI)
  find_package(MPI REQUIRED COMPONENTS CXX)
endif()
# The CUDA backend (model/cuda_backend.h): nvcc, the CUDA runtime and cuBLAS from the CUDA
# toolkit (13 here), found through CMake's CUDAToolkit. Off by default: the default build and CI's
# test run stay CPU-only; CI also compiles it (nothing here runs it).
option(CTCAL_CUDA "Build the CUDA backend (--device cuda)" OFF)
if(CTCAL_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)  # Hopper (H100/H200); override with -DCMAKE_CUDA_ARCHITECTURES=...
  endif()
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 does not know nvcc 13's C++20 flag; the kernels need 17
  find_package(CUDAToolkit REQUIRED)
endif()
