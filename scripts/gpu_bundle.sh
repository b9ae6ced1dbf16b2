#!/usr/bin/env bash
# Builds the CUDA backend here (nvcc compiles and links; nothing runs) and packs what the GPU
# machine needs into .gpu-bundle/ (gitignored): the ctcal binary and gpu_tests, the shared
# libraries the GPU machine lacks, and the shared data the tests read. Then, on the GPU machine,
# from a copy of this tree that carries .gpu-bundle: `bash scripts/gpu_remote.sh tests|bench-...`.
#
# Libraries: everything the binaries link except glibc, libstdc++, libgcc and libgomp (the GPU
# machine's are newer and backward compatible), CUDA's (its toolkit and driver must be its own)
# and Open MPI's (mpirun and libmpi must match: they go in lib-mpi/, used only when the machine
# has no libmpi). xz keeps oneDNN's 38 MB under the 64 MiB a carry may hold.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${CTCAL_CUDA_BUILD:-$root/build-cuda}
data=${CTCAL_DATA:-$root/../shared/data}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCTCAL_CUDA=ON >/dev/null
cmake --build "$build" -j"$(nproc)" --target ctcal gpu_tests flash_attention_bench projection_gemm_bench
out=$root/.gpu-bundle
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/lib-mpi" "$out/data"
cp "$build/app/ctcal" "$build/tests/gpu_tests" "$build/bench/flash_attention_bench" "$build/bench/projection_gemm_bench" "$out/bin/"
{ ldd "$build/app/ctcal"; ldd "$build/tests/gpu_tests"; } | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libstdc++*|libgcc_s*|libgomp*) ;;
    libcuda*|libcudart*|libcublas*) ;;
    libmpi*|libopen-*|libpmix*|libhwloc*|libevent*|libudev*|libltdl*) cp -L "$lib" "$out/lib-mpi/" ;;
    *) cp -L "$lib" "$out/lib/" ;;
  esac
done
tar -C "$out" -cJf "$out/libs.tar.xz" lib lib-mpi
rm -rf "$out/lib" "$out/lib-mpi"
cp -r "$data/hf" "$data/tinystories-valid" "$out/data/"
du -sh "$out"
