#!/usr/bin/env bash
# Runs on the GPU machine, from a copy of this tree carrying .gpu-bundle (scripts/gpu_bundle.sh):
#   tests        gpu_tests (the CUDA backend against float64 golden data and the CPU path), the CLI
#                on stories260K (cuda twice: byte-identical; cpu), and two MPI ranks sharing one GPU
#   bench SHAPE  bench/gpu_bench.py for SHAPE (1b, 8b, 70b8): ctcal --device cuda against
#                transformers' bf16 forward in the same run
#   bench-attention  bench/flash_attention_bench on the 8B, 70B and gpt-oss attention shapes
#   bench-gemm       bench/projection_gemm_bench on the 8B, 1B and 70B projection shapes
# Results and logs go to $OUT (or /tmp/ctcal-gpu-out).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bundle=$root/.gpu-bundle
out=${OUT:-/tmp/ctcal-gpu-out}
mkdir -p "$out"
[ -d "$bundle/lib" ] || tar -C "$bundle" -xJf "$bundle/libs.tar.xz"
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ldd "$bundle/bin/ctcal" | grep -q "libmpi.*not found"; then
  echo "no Open MPI here: using the bundle's"
  export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$bundle/lib-mpi
fi
if ldd "$bundle/bin/ctcal" | grep "not found"; then echo "missing libraries (above)"; exit 1; fi
export CTCAL_DATA=$bundle/data CTCAL_SOURCE_DIR=$root
# The CUDA paths that have not yet run on a GPU (check_cuda_supports refuses them otherwise): this
# script is how they first run, under the GPU tests that compare them with the CPU and float64.
export CTCAL_CUDA_UNVERIFIED=1
ctcal=$bundle/bin/ctcal
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

run_tests() {
  local rc=0
  "$bundle/bin/gpu_tests" 2>&1 | tee "$out/gpu_tests.log" | grep -E "^\[ |GPU|eval NLL|PASSED|FAILED|SKIPPED" | tail -80
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  local work; work=$(mktemp -d)
  local args=(calibrate "$root/recipes/fp8_kv_per_head.yaml" --model "$CTCAL_DATA/hf/stories260K"
              --dataset "$CTCAL_DATA/tinystories-valid/validation_100.txt" --num-samples 64 --max-seq-length 256)
  for run in cuda-a cuda-b; do "$ctcal" "${args[@]}" --device cuda --output "$work/$run" > "$work/$run.log" 2>&1 || rc=1; done
  "$ctcal" "${args[@]}" --output "$work/cpu" > "$work/cpu.log" 2>&1 || rc=1
  grep -h "cuda:" "$work/cuda-a.log" | tail -2
  same() {  # every safetensors file of two outputs byte-identical
    local f ok=0
    for f in "$1"/*.safetensors; do cmp -s "$f" "$2/$(basename "$f")" || ok=1; done
    return $ok
  }
  if same "$work/cuda-a" "$work/cuda-b"; then echo "CLI: two cuda runs byte-identical"
  else echo "CLI: cuda runs differ"; rc=1; fi
  python3 - "$work" <<'PY' || rc=1
import json, sys
from safetensors.numpy import load_file
w = sys.argv[1]
import glob
def scales(d):
    out = {}
    for f in glob.glob(f"{d}/*.safetensors"):
        out.update({k: v for k, v in load_file(f).items() if k.endswith(("k_scale", "v_scale"))})
    return out
a, c = scales(f"{w}/cuda-a"), scales(f"{w}/cpu")
assert a and a.keys() == c.keys(), (sorted(a)[:4], sorted(c)[:4])
worst = max(float(abs(a[k].astype("f8") - c[k].astype("f8")).max() / abs(c[k].astype("f8")).max())
            for k in a)
print(f"CLI: cuda vs cpu k/v scales, worst relative difference {worst:.3g} (bound 0.02)")
sys.exit(0 if worst <= 0.02 else 1)
PY
  if command -v mpirun > /dev/null; then
    # One GPU: both ranks share it (each takes local rank % GPUs = cuda:0).
    mpirun --allow-run-as-root --oversubscribe -np 2 "$ctcal" "${args[@]}" --device cuda --output "$work/mpi2" \
      > "$work/mpi2.log" 2>&1 || { rc=1; tail -5 "$work/mpi2.log"; }
    if same "$work/cuda-a" "$work/mpi2"; then
      echo "MPI: 2 ranks sharing one GPU, byte-identical to 1 rank"
    else echo "MPI: 2-rank output differs from 1 rank"; rc=1; fi
  fi
  # eval on the GPU with FP8 W8A8 + KV (weights by the loader, Linear inputs and KV on the host)
  # against the CPU: each device's KL against its own baseline.
  local ev=(eval --model "$CTCAL_DATA/hf/stories260K" --dataset "$CTCAL_DATA/tinystories-valid/validation_100.txt"
            --recipe "$root/recipes/fp8_w8a8_fp8_kv.yaml" --calibration-dataset "$CTCAL_DATA/tinystories-valid/validation_100.txt"
            --num-samples 16 --max-seq-length 256 --json)
  "$ctcal" "${ev[@]}" --device cuda > "$work/eval-cuda.json" 2> "$work/eval-cuda.log" || rc=1
  "$ctcal" "${ev[@]}" > "$work/eval-cpu.json" 2> "$work/eval-cpu.log" || rc=1
  python3 - "$work" <<'PY' || rc=1
import json, sys
g, c = (json.load(open(f"{sys.argv[1]}/eval-{d}.json"))["quantized"][0] for d in ("cuda", "cpu"))
print(f"eval FP8 W8A8 + KV, KL: cuda {g['kl']:.5f}, cpu {c['kl']:.5f}")
sys.exit(0 if abs(g["kl"] - c["kl"]) <= 0.1 * c["kl"] else 1)  # bf16 attention and GEMMs: KL within 10 %
PY
  # eval's NVFP4 KV rows (issue 31) with the CUDA forward against the CPU's
  python3 "$root/tests/gpu/eval_nvfp4_cuda_vs_cpu.py" "$ctcal" "$CTCAL_DATA" "$root" || rc=1
  if CTCAL=$ctcal OUT=$work/example NUM_SAMPLES=16 bash "$root/examples/gpu-fp8-kv/run.sh" > "$work/example.log" 2>&1; then
    echo "example gpu-fp8-kv: $(grep 'worst relative' "$work/example.log")"
  else echo "example gpu-fp8-kv: FAILED"; tail -5 "$work/example.log"; rc=1; fi
  cp "$work"/*.log "$out/" 2>/dev/null
  rm -rf "$work"
  return $rc
}

case "${1:-tests}" in
  tests) run_tests ;;
  bench)
    # The GPU's SM clock and power draw every 100 ms while the bench runs (whether it throttles).
    nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,utilization.gpu --format=csv -lms 100 \
      > "$out/smi_${2:-1b}.csv" 2>/dev/null &
    smi=$!
    python3 "$root/bench/gpu_bench.py" --ctcal "$ctcal" --shape "${2:-1b}" --out "$out" "${@:3}"
    rc=$?
    kill "$smi" 2>/dev/null
    exit $rc ;;
  bench-attention)
    fab=$bundle/bin/flash_attention_bench
    { "$fab" --heads 32 --kv-heads 8 --head-dim 128   # Llama-3.1-8B
      "$fab" --heads 64 --kv-heads 8 --head-dim 128   # Llama-3.1-70B
      "$fab" --heads 64 --kv-heads 8 --head-dim 64 --window 128; } | tee "$out/flash_attention_bench.txt" ;;  # gpt-oss sliding layers
  bench-gemm)
    pgb=$bundle/bin/projection_gemm_bench
    { "$pgb" --hidden 4096 --q-dim 4096 --kv-dim 1024 --intermediate 14336   # Llama-3.1-8B
      "$pgb" --hidden 2048 --q-dim 2048 --kv-dim 512 --intermediate 8192     # Llama-3.2-1B
      "$pgb" --hidden 8192 --q-dim 8192 --kv-dim 1024 --intermediate 28672; } | tee "$out/projection_gemm_bench.txt" ;;  # Llama-3.1-70B
  *) echo "usage: $0 tests | bench 1b|8b|70b8 [gpu_bench.py options] | bench-attention | bench-gemm"; exit 2 ;;
esac
