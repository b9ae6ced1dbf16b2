#!/usr/bin/env bash
# Issue 6 figures on the GPU machine's CPU (Intel Xeon, 16 cores), in one run: ctcal vs a
# transformers forward (Llama-3.2-1B shape, 2 and 16 threads, fp32 and bf16), determinism across
# --threads 1/2/16, and cost against sequence length (512..4096 tokens per sample).
# Carry .device_pack (scripts/pack_for_device.sh); output goes to stdout and $OUT/device_bench.txt.
#
#   bash bench/device_bench.sh       the issue-6 figures above (1B shape)
#   bash bench/device_bench.sh 8b    issue 17: the Llama-3.1-8B shape at 16 threads, bf16, against
#                                    transformers, with ctcal's time per phase, and determinism
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
if [ "${1:-}" = 8b ]; then
  # calib_bench writes the random 16 GB checkpoint (a few minutes; kept for later runs), which
  # transformers loads as it is. Its index is written last: without it, a run was cut short.
  # M8=DIR reuses a checkpoint of this shape (gpu_bench.py's /tmp/ctcal-gpu-bench/8b is one).
  M8=${M8:-/tmp/llama8b-random}
  [ -f $M8/model.safetensors.index.json ] || $CB make $M8 --layers 32 --hidden 4096 --heads 32 --kv-heads 8 --intermediate 14336 --vocab 128256
  echo "== the projection GEMMs alone, 16 threads, 2048 rows: ctcal's tiles, oneDNN threaded, PyTorch"
  python3 bench/compare_gemm.py --gemm-bench ".device_bin/run.sh gemm_bench" --threads 16 --rows 2048
  echo "== ctcal vs transformers, Llama-3.1-8B shape, 16 threads, bf16, 8 x 512 tokens"
  CTCAL_CPU_PROFILE=1 python3 bench/compare_transformers.py --calib-bench "$CB" --shape 8b --dir $M8 --threads 16 \
    --samples 8 --seq 512 --dtypes bf16 --bf16-attention-off
  echo "== 8B shape, 16 threads, bf16, 2 x 2048 tokens: bf16 attention, then fp32 attention"
  for att in 1 0; do
    CTCAL_CPU_PROFILE=1 $CB run $M8 --samples 2 --seq 2048 --threads 16 --bf16 1 --bf16-attention $att | grep -E "calibration \(|phase|peak RSS"
  done
  exit 0
fi
echo "== ctcal vs transformers, Llama-3.2-1B shape"
python3 bench/compare_transformers.py --calib-bench "$CB" --threads 2 16 --samples 8 --seq 512
echo "== sequence length, 1B shape, 16 threads, 8192 tokens each"
for seq in 512 1024 2048 4096; do
  for mode in 0 1; do
    $CB run /tmp/llama1b-random --samples $((8192 / seq)) --seq $seq --threads 16 --bf16 $mode | grep -E "calibration \(|peak RSS"
  done
done
