#!/usr/bin/env bash
# FP8 W8A8 + FP8 KV from llm-compressor's own example recipe; checks the result with inspect.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CTCAL=${CTCAL:-ctcal}
DATA=${CTCAL_DATA:-$here/../../../shared/data}
MODEL=${MODEL:-$DATA/hf/stories260K}
DATASET=${DATASET:-$DATA/tinystories-valid/validation_100.txt}
OUT=${OUT:-$(mktemp -d)/fp8-w8a8-kv}

"$CTCAL" calibrate "$here/../../recipes/fp8_w8a8_fp8_kv.yaml" --model "$MODEL" --dataset "$DATASET" \
  --num-samples "${NUM_SAMPLES:-64}" --max-seq-length 512 --output "$OUT"
"$CTCAL" inspect "$OUT" --strict >/dev/null   # exit 5 if anything is missing or unservable
grep -q '"format": "float-quantized"' "$OUT/config.json"
echo "checkpoint: $OUT"
