#!/usr/bin/env bash
# `make build` (and so `make demo` / `make test`) must fail when the compiler fails. The build
# line filters the compiler's output through grep; it once ended in `|| true`, so a failed build
# passed and tests ran stale binaries. A `cmake` first on PATH that configures normally but fails
# at `--build` stands in for a compile error, so the check takes a second instead of a build.
#   usage: make_build_fails_test.sh SOURCE_DIR
set -u
src=$1
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
real=$(command -v cmake)
cat >"$shim/cmake" <<SHIM
#!/usr/bin/env bash
if [ "\${1:-}" = "--build" ]; then echo "src/broken.cpp:1:1: error: expected unqualified-id" >&2; exit 2; fi
exec "$real" "\$@"
SHIM
chmod +x "$shim/cmake"
out=$(PATH="$shim:$PATH" make -C "$src" build BUILD="$shim/build" 2>&1)
rc=$?
echo "$out" | tail -5
if [ $rc -eq 0 ]; then echo "FAIL: make build exited 0 although the build failed"; exit 1; fi
echo "$out" | grep -q "expected unqualified-id" || { echo "FAIL: the compiler's error was not shown"; exit 1; }
echo "make build fails with the compiler (exit $rc): ok"
