#!/usr/bin/env bash
# One process against two MPI ranks: the checkpoints must be byte-identical (timings aside).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CTCAL=${CTCAL:-ctcal}
DATA=${CTCAL_DATA:-$here/../../../shared/data}
MODEL=${MODEL:-$DATA/hf/stories260K}
DATASET=${DATASET:-$DATA/tinystories-valid/validation_100.txt}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
args=(calibrate "$here/../../recipes/fp8_kv_per_head.yaml" --model "$MODEL" --dataset "$DATASET"
      --num-samples "${NUM_SAMPLES:-64}" --max-seq-length 256 --threads 1 -q)

"$CTCAL" "${args[@]}" --output "$OUT/one-rank" >/dev/null
mpirun -np 2 --oversubscribe "$CTCAL" "${args[@]}" --output "$OUT/two-ranks" >/dev/null
for f in config.json model-00001-of-00002.safetensors model-00002-of-00002.safetensors model.safetensors.index.json; do
  cmp "$OUT/one-rank/$f" "$OUT/two-ranks/$f"
done
echo "one rank and two ranks wrote identical checkpoints: $OUT"
