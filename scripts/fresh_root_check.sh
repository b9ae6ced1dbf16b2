#!/usr/bin/env bash
# Proves the README's set-up on a fresh Debian 12: a minimal root made with mmdebstrap (variant
# minbase plus only what a person has before reading the README: git, make, ca-certificates), a
# clone of this repository's HEAD and a copy of ../shared inside it, then `make demo` and
# `make test-smoke` through chroot. A package that scripts/install_deps.sh forgets fails here, even
# when the CI machine has it from an earlier run.
#
# Why test-smoke and not the README's `make test` (issue 27): this step proves the install, not
# the code. `make demo` builds every target (so every header and library is found and links) and
# calibrates the real model; the smoke tests (label smoke, chosen in tests/CMakeLists.txt) then run
# each runtime library, python3, mpirun, jq and every data path of ../shared once. The whole suite
# runs right after, in .ci/run's `make test` on the CI machine; running it here as well ran it
# twice per CI run, a cost that grows with every family the suite gains, for nothing more about
# the install. A smoke test that skips (a data path not found) fails this check.
#
#   scripts/fresh_root_check.sh [SHARED_DIR]      (run as root; CI calls it from .ci/run)
#
# Environment: FRESH_ROOT_MIRROR (default http://deb.debian.org/debian), FRESH_ROOT_KEEP=1 keeps
# the root for a look after a failure, FRESH_ROOT_JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
shared=$(cd "${1:-$repo/../shared}" && pwd)
mirror=${FRESH_ROOT_MIRROR:-http://deb.debian.org/debian}
security=${FRESH_ROOT_SECURITY:-http://deb.debian.org/debian-security}

if [ "$(id -u)" -ne 0 ]; then echo "fresh_root_check: needs root (mmdebstrap, mount, chroot)" >&2; exit 2; fi
command -v mmdebstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends mmdebstrap >&2; }

root=$(mktemp -d /tmp/ctcal-fresh-root.XXXXXX)
mounted=()
cleanup() {
  # Unmount before anything is deleted: rm -rf through a bind mount of /dev would delete the host's.
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  if grep -q " $root/" /proc/mounts; then
    echo "fresh_root_check: $root still has mounts; not deleting it" >&2
    return
  fi
  if [ "${FRESH_ROOT_KEEP:-0}" = 1 ]; then echo "fresh_root_check: kept $root" >&2; else rm -rf "$root"; fi
}
trap cleanup EXIT

t0=$(date +%s)
echo "fresh_root_check: mmdebstrap bookworm minbase + git, make, ca-certificates -> $root" >&2
mmdebstrap --quiet --variant=minbase --include=git,make,ca-certificates bookworm "$root" \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main"
cp /etc/resolv.conf "$root/etc/resolv.conf"

# What a user has: a clone of the repository (committed HEAD, not the working tree) and ../shared.
mkdir -p "$root/work"
git clone --quiet --no-hardlinks "$repo" "$root/work/ctcal"
git -C "$root/work/ctcal" checkout --quiet "$(git rev-parse HEAD)"
bash "$repo/scripts/copy_shared.sh" "$shared" "$root/work/shared"

mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount --bind /dev "$root/dev" && mounted+=("$root/dev")
mount -t tmpfs tmpfs "$root/tmp" && mounted+=("$root/tmp")

log="$root/work/fresh-root.log"
jobs=${FRESH_ROOT_JOBS:-$(nproc)}
set +e
chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 /bin/bash -c "cd /work/ctcal && make demo JOBS=$jobs && make test-smoke JOBS=$jobs" >"$log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "The following tests did not run" "$log"; then
  echo "fresh_root_check: a smoke test skipped on the fresh root (it must prove the data paths):" >&2
  rc=1
fi
set -e
t1=$(date +%s)
if [ $rc -ne 0 ]; then
  tail -n 60 "$log" >&2
  echo >&2
  echo "fresh_root_check: FAILED (exit $rc) after $(( (t1 - t0) / 60 )) min: \`make demo && make test-smoke\` does not pass on a" >&2
  echo "fresh Debian 12 root. The missing step is in the output above; a CMake 'Could NOT find X' or a" >&2
  echo "missing header means scripts/install_deps.sh lacks the package that provides X" >&2
  echo "(find it with: apt-file search X, or dpkg -S on the CI machine)." >&2
  exit 1
fi
grep -E "tests passed|tests failed" "$log" | tail -1 >&2
echo "fresh_root_check: make demo && make test-smoke passed on a fresh Debian 12 root in $(( (t1 - t0) / 60 )) min $(( (t1 - t0) % 60 )) s" >&2
