#!/usr/bin/env bash
# Calibrate, gate on inspect --strict, then check our own rules on its JSON with jq.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CTCAL=${CTCAL:-ctcal}
DATA=${CTCAL_DATA:-$here/../../../shared/data}
MODEL=${MODEL:-$DATA/hf/stories260K}
DATASET=${DATASET:-$DATA/tinystories-valid/validation_100.txt}
OUT=${OUT:-$(mktemp -d)/gated}
RECIPE=${RECIPE:-$here/../../recipes/fp8_kv_per_head.yaml}

"$CTCAL" -q calibrate "$RECIPE" --model "$MODEL" --dataset "$DATASET" \
  --num-samples "${NUM_SAMPLES:-32}" --max-seq-length 256 --output "$OUT" >/dev/null || exit $?

"$CTCAL" inspect "$OUT" --strict --json >"$OUT.inspect.json"
rc=$?
if [ $rc -ne 0 ]; then
  echo "gate: inspect --strict exit $rc" >&2
  jq -r '.problems[] | "  \(.severity): \(.message)"' "$OUT.inspect.json" >&2
  jq -r '.serving.vllm.reasons[] | "  vLLM: \(.)"' "$OUT.inspect.json" >&2
  exit $rc
fi
# Our own rules: every layer has k and v scales, and no k_scale is within 1 % of 1.0 (the value
# vLLM uses when a checkpoint has none: a sign of an uncalibrated layer).
jq -e '[.layers[] | has("k") and has("v")] | all' "$OUT.inspect.json" >/dev/null || { echo "gate: a layer lacks k or v scales" >&2; exit 6; }
jq -e '[.layers[].k.values[] | (. - 1.0 | fabs) > 0.01] | all' "$OUT.inspect.json" >/dev/null || { echo "gate: a k_scale looks uncalibrated (1.0)" >&2; exit 6; }
echo "gate: passed ($(jq '.layers | length' "$OUT.inspect.json") layers; $(jq -r '.serving.vllm.conditions | join("; ")' "$OUT.inspect.json"))"
