#!/usr/bin/env bash
# Calibrate plain FP8 KV and R3 + FP8 KV, then compare both against the unquantized model.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CTCAL=${CTCAL:-ctcal}
DATA=${CTCAL_DATA:-$here/../../../shared/data}
MODEL=${MODEL:-$DATA/hf/stories260K}
DATASET=${DATASET:-$DATA/tinystories-valid/validation_100.txt}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
if [ -z "${HELDOUT:-}" ]; then
  # Held-out text the model never calibrated on: WikiText-2's test split (ctcal reads .txt).
  HELDOUT=$OUT/heldout.txt
  cp "$DATA/wikitext-2-raw/wiki.test.raw" "$HELDOUT"
fi

for recipe in fp8_kv_per_tensor r3_fp8_kv; do
  "$CTCAL" -q calibrate "$here/../../recipes/$recipe.yaml" --model "$MODEL" --dataset "$DATASET" \
    --num-samples "${NUM_SAMPLES:-32}" --max-seq-length 256 --output "$OUT/$recipe" --overwrite >/dev/null
done
"$CTCAL" eval --model "$MODEL" --dataset "$HELDOUT" --quantized "$OUT/fp8_kv_per_tensor" --quantized "$OUT/r3_fp8_kv" \
  --num-samples "${EVAL_SAMPLES:-16}" --max-seq-length 256 --report "$OUT/report.html" | tee "$OUT/eval.txt"
test -s "$OUT/report.html"
echo "report: $OUT/report.html"
