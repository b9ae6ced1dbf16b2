#!/usr/bin/env bash
# Builds (or reuses) the Python virtual environment of the peer stack that tests/peer runs:
# compressed-tensors, llmcompressor, transformers, torch, safetensors at the versions pinned in
# tests/peer/requirements.lock (the full resolved set; top-level pins in requirements.txt).
#
# The venv lives outside the clone, keyed by the lock file's hash, so CI on the same machine reuses
# it and a change of pins builds a new one:
#     ${CTCAL_PEER_VENV_ROOT:-$HOME/.cache/ctcal}/peer-venv-<hash>
# A marker file is written only after the build completed and every package imports, so an
# interrupted build is never used (it is rebuilt). The last line of stdout is its path.
#
# torch: download.pytorch.org (the CPU-only wheels) is not reachable from the project's machines,
# so torch comes from PyPI (a CUDA build; on a CPU it runs on the CPU, its CUDA libraries unused).
# The first build downloads ~3 GB and installs 5.8 GB; it took 12.3 minutes on the 2-core
# development machine while three other builds shared it, 2.4 minutes when rebuilt from the lock
# (see docs/testing.md).
#
# Usage: scripts/peer_venv.sh [--print-path]   (--print-path: print where it would be; build nothing)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
lock="$here/tests/peer/requirements.lock"
[[ -f "$lock" ]] || lock="$here/tests/peer/requirements.txt"
python="${CTCAL_PEER_PYTHON:-python3}"
hash="$(cat "$lock" | sha256sum | cut -c1-16)"
root="${CTCAL_PEER_VENV_ROOT:-$HOME/.cache/ctcal}"
venv="$root/peer-venv-$hash"

if [[ "${1:-}" == "--print-path" ]]; then echo "$venv"; exit 0; fi

# The check that a venv is complete: the marker written after a successful build, and every
# package the peer tests import imports.
check='import compressed_tensors, llmcompressor, transformers, torch, safetensors, datasets
print("peer venv:", "compressed-tensors", compressed_tensors.__version__, "llmcompressor",
      llmcompressor.__version__, "transformers", transformers.__version__, "torch", torch.__version__)'
ready() { [[ -f "$venv/.ctcal-complete" && -x "$venv/bin/python" && -d "$venv/ct-0.18.0/compressed_tensors" ]] && "$venv/bin/python" -c "$check" >&2; }

# vLLM 0.34.0, the judge of ctcal's serving verdicts (tests/peer/vllm_judges_outputs.py), side-installed
# with --no-deps into $venv/vllm-0.34.0 from tests/peer/vllm-requirements.txt (its pins conflict with
# llm-compressor's, so it is on no path unless a test puts it there). Added to a complete venv too:
# a venv built before the judge existed gets it without a rebuild. Its own marker carries the
# requirements' hash, so a change of pins reinstalls it.
vllm_reqs="$here/tests/peer/vllm-requirements.txt"
vllm_dir="$venv/vllm-0.34.0"
vllm_marker="$vllm_dir/.ctcal-complete-$(sha256sum <"$vllm_reqs" | cut -c1-16)"
install_vllm() {
  [[ -f "$vllm_marker" ]] && return 0
  local t0; t0=$(date +%s)
  echo "peer venv: installing the vLLM judge into $vllm_dir" >&2
  rm -rf "$vllm_dir"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$vllm_dir" -r "$vllm_reqs" >&2
  PYTHONPATH="$vllm_dir" VLLM_TARGET_DEVICE=cpu CUDA_VISIBLE_DEVICES= "$venv/bin/python" -c \
    'import vllm, compressed_tensors; from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import CompressedTensorsConfig; print("peer venv: vllm", vllm.__version__, "compressed-tensors", compressed_tensors.__version__)' >&2 2>/dev/null ||
    { echo "peer venv: the vLLM judge does not import from $vllm_dir" >&2; return 1; }
  touch "$vllm_marker"
  echo "peer venv: vLLM judge installed in $(( $(date +%s) - t0 ))s" >&2
}

if ready; then
  exec 9>"$venv.lock"
  flock 9
  install_vllm
  echo "$venv"; exit 0
fi

mkdir -p "$root"
# One build at a time per venv (two CI runs on one machine): the second waits, then reuses it.
exec 9>"$venv.lock"
flock 9
if ready; then install_vllm; echo "$venv"; exit 0; fi

"$python" -c "import venv, ensurepip" 2>/dev/null || {
  echo "peer venv: $python cannot create virtual environments (no venv/ensurepip module);" \
       "on Debian: apt-get install python3-venv" >&2; exit 1; }
start=$(date +%s)
echo "peer venv: building $venv from $(basename "$lock") with $("$python" --version 2>&1)" >&2
rm -rf "$venv"   # a build that was interrupted, or a venv that no longer imports
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$lock" >&2
# compressed-tensors 0.18.0 beside the newer one (not on sys.path unless a test puts it there):
# ctcal's output claims version 0.18.0, and tests/peer/ct_parses_outputs.py --claimed-version checks
# the claim with that very version. No dependencies: it imports the venv's torch/pydantic/transformers.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
  --target "$venv/ct-0.18.0" compressed-tensors==0.18.0 >&2
ready_msg=$("$venv/bin/python" -c "$check" 2>&1) || { echo "$ready_msg" >&2; exit 1; }
touch "$venv/.ctcal-complete"
echo "$ready_msg" >&2
install_vllm
echo "peer venv: built in $(( $(date +%s) - start ))s" >&2
echo "$venv"
