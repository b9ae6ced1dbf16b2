#!/usr/bin/env bash
# Installs the Debian packages ctcal needs to build and test, only when one is missing.
# Called by `make` (demo, build, test) and by .ci/run; safe to run repeatedly.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libcli11-dev          # command line
  libyaml-cpp-dev       # recipes
  nlohmann-json3-dev    # config.json, safetensors headers, reports
  libeigen3-dev         # GEMMs of the forward pass
  libspdlog-dev libfmt-dev  # logging
  libgtest-dev googletest   # tests
  libsentencepiece-dev  # tokenizer.model (Llama-2 style) text datasets
  libpcre2-dev          # Unicode regexes of tokenizer.json pre-tokenizers (Llama-3)
  zlib1g-dev            # reading the gzipped tokenizer golden files in tests
  libopenblas-dev       # the sgemm peak the calibration benchmark compares against
  libdnnl-dev           # oneDNN bf16 GEMMs for --compute-dtype bf16
  ocl-icd-opencl-dev    # oneDNN's dnnl-config.cmake requires OpenCL (libdnnl-dev only recommends it)
  libopenmpi-dev openmpi-bin  # mpirun data-parallel calibration (util/ranks.h) and its e2e test
  python3               # the standard-library-only output checker in tests/e2e
  python3-venv          # scripts/peer_venv.sh: the pinned Python peer stack of `ctest -L peer`
  jq                    # examples/ci-gate checks inspect --json with jq (run by the e2e tests)
  clang-14 libclang-rt-14-dev  # libFuzzer targets (scripts/fuzz.sh)
)

# --with-chromium: also the headless browser the HTML report test renders with (CI installs it;
# `make demo` does not need it).
if [ "${1:-}" = "--with-chromium" ]; then PACKAGES+=(chromium); fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install_deps: installing missing Debian packages: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
