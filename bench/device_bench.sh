#!/usr/bin/env bash
# Issue 6 figures on the GPU machine's CPU (Intel Xeon, 16 cores), in one run: ctcal vs a
# transformers forward (Llama-3.2-1B shape, 2 and 16 threads, fp32 and bf16), determinism across
# --threads 1/2/16, and cost against sequence length (512..4096 tokens per sample).
# Carry .device_pack (scripts/pack_for_device.sh); output goes to stdout and $OUT/device_bench.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
tar xf .device_pack/bin.tar.xz
CB=".device_bin/run.sh calib_bench"
log="${OUT:-/tmp}/device_bench.txt"
exec > >(tee "$log") 2>&1
lscpu | grep -E "Model name|^CPU\(s\)"
echo "bf16 ISA: $(grep -o -w -E 'amx_bf16|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "== determinism: 123M model, 8 x 512 tokens, digests must match across threads"
$CB make /tmp/b123 >/dev/null
for mode in 0 1; do
  for t in 1 2 16; do
    echo "bf16=$mode threads=$t: $($CB run /tmp/b123 --samples 8 --seq 512 --threads $t --bf16 $mode | grep -E 'digest')"
  done
done
echo "== ctcal vs transformers, Llama-3.2-1B shape"
python3 bench/compare_transformers.py --calib-bench "$CB" --threads 2 16 --samples 8 --seq 512
echo "== sequence length, 1B shape, 16 threads, 8192 tokens each"
for seq in 512 1024 2048 4096; do
  for mode in 0 1; do
    $CB run /tmp/llama1b-random --samples $((8192 / seq)) --seq $seq --threads 16 --bf16 $mode | grep -E "^calibration|peak RSS"
  done
done
