#!/usr/bin/env bash
# Packs ctcal, calib_bench, fp8_overhead_bench, gemm_bench and the shared libraries they load (those a bare machine lacks) into
# .device_pack/bin.tar.xz, for benchmarks on the GPU machine's CPU (issue 6), which has none of
# our Debian packages. There: `tar xf .device_pack/bin.tar.xz` and run .device_bin/run.sh PROGRAM ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
rm -rf .device_bin && mkdir -p .device_bin/lib .device_pack
cp "$BUILD/app/ctcal" "$BUILD/bench/calib_bench" "$BUILD/bench/fp8_overhead_bench" "$BUILD/bench/gemm_bench" .device_bin/
# Every library either program loads except the C library and the loader, which any x86-64
# Linux has (and which must match the kernel's loader).
for bin in .device_bin/ctcal .device_bin/calib_bench .device_bin/fp8_overhead_bench .device_bin/gemm_bench; do
  ldd "$bin" | awk '/=> \//{print $3}'
done | sort -u | grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' | while read -r lib; do
  cp -L "$lib" .device_bin/lib/
done
cat > .device_bin/run.sh <<'SH'
#!/usr/bin/env bash
# Runs a packed program with the packed libraries first on the search path.
here="$(cd "$(dirname "$0")" && pwd)"
prog="$1"; shift
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/$prog" "$@"
SH
chmod +x .device_bin/run.sh
tar cJf .device_pack/bin.tar.xz .device_bin
ls -la .device_pack/bin.tar.xz
