#!/usr/bin/env bash
# FP8 per-tensor KV scales for a Llama checkpoint; prints the vllm serve line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CTCAL=${CTCAL:-ctcal}
DATA=${CTCAL_DATA:-$here/../../../shared/data}
MODEL=${MODEL:-$DATA/hf/stories260K}
DATASET=${DATASET:-$DATA/tinystories-valid/validation_100.txt}
OUT=${OUT:-$(mktemp -d)/fp8-kv}

"$CTCAL" calibrate "$here/../../recipes/fp8_kv_per_tensor.yaml" \
  --model "$MODEL" --dataset "$DATASET" --num-samples "${NUM_SAMPLES:-64}" --max-seq-length 512 \
  --output "$OUT" | tee "$OUT.log"
grep -qx " *serve with: vllm serve $OUT" "$OUT.log"
echo "checkpoint: $OUT"
