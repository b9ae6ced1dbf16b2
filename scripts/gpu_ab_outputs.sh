#!/usr/bin/env bash
# Runs on the GPU machine, from a copy of this tree carrying .gpu-bundle: calibrates every committed
# tiny family checkpoint and stories260K with two ctcal binaries on the GPU and says whether their
# outputs are byte-identical. For restructurings that must not move a bit (issue 27: "byte-identical
# before and after on the GPU"): put the earlier build's binary beside the bundle's, e.g.
#   cp build-cuda-before/app/ctcal .gpu-bundle/bin/ctcal-before
#   bash scripts/gpu_ab_outputs.sh .gpu-bundle/bin/ctcal-before .gpu-bundle/bin/ctcal
# Exit 0 when every output agrees; 1 otherwise (the first differing files are named).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bundle=$root/.gpu-bundle
[ $# -eq 2 ] || { echo "usage: $0 CTCAL_A CTCAL_B" >&2; exit 2; }
a=$1 b=$2
[ -d "$bundle/lib" ] || tar -C "$bundle" -xJf "$bundle/libs.tar.xz"
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
data=${CTCAL_DATA:-$bundle/data}
text=$data/tinystories-valid/validation_100.txt
work=$(mktemp -d)
rc=0 n=0 refused=0
# (model, recipe): KV scales on every family; FP8 W8A8 (Linear-input observers, MoE experts) and
# R3 (the rotation on the device) where they apply. The tiny golden models have no tokenizer: their
# golden samples (token ids, longer than every window) are the dataset.
moe_w8a8=$work/fp8_w8a8_moe.yaml
sed 's/ignore: \["lm_head"\]/ignore: ["lm_head", "re:.*mlp.gate$", "re:.*mlp.router$"]/' "$root/recipes/fp8_w8a8_fp8_kv.yaml" > "$moe_w8a8"
grep -q 'mlp.gate' "$moe_w8a8" || { echo "gpu_ab_outputs: could not add the router to the W8A8 recipe's ignore" >&2; exit 2; }
cases=()
for m in "$root"/tests/golden/data/models/*/; do cases+=("$m:$root/recipes/fp8_kv_per_head.yaml"); done
cases+=("$data/hf/stories260K:$root/recipes/fp8_w8a8_fp8_kv.yaml" "$data/hf/stories260K:$root/recipes/r3_fp8_kv.yaml"
        "$root/tests/golden/data/models/qwen3_moe_fp32:$moe_w8a8" "$root/tests/golden/data/models/mixtral_sliding_fp32:$moe_w8a8")
for c in "${cases[@]}"; do
  model=${c%%:*} recipe=${c##*:} name=$(basename "$model")-$(basename "${recipe%.yaml}")
  dataset=$text golden=$root/tests/golden/data/$(basename "$model").json
  if [ -f "$golden" ]; then
    dataset=$work/$(basename "$model").jsonl
    python3 -c 'import json, sys
for s in json.load(open(sys.argv[1]))["samples"]: print(json.dumps({"input_ids": s}))' "$golden" > "$dataset"
  fi
  failed=0
  for side in a b; do
    bin=$a; [ $side = b ] && bin=$b
    "$bin" calibrate "$recipe" --model "$model" --dataset "$dataset" --num-samples 8 --max-seq-length 128 \
      --device cuda --output "$work/$name-$side" > "$work/$name-$side.log" 2>&1 ||
      { echo "$name: $side exited $? ($(tail -1 "$work/$name-$side.log"))"; failed=$((failed + 1)); }
  done
  # A model both binaries refuse on the GPU (a family the CUDA backend does not run) has no output
  # to compare; it is counted apart, not as a difference.
  if [ $failed = 2 ]; then refused=$((refused + 1)); continue; fi
  n=$((n + 1))
  same=1
  for f in "$work/$name-a"/*.safetensors; do
    [ -f "$f" ] || { same=0; break; }
    cmp -s "$f" "$work/$name-b/$(basename "$f")" || { same=0; echo "$name: $(basename "$f") differs"; }
  done
  [ $same = 1 ] || rc=1
done
echo "gpu_ab_outputs: $n cases compared, $([ $rc = 0 ] && echo "all byte-identical" || echo "some differ"); $refused refused by both"
rm -rf "$work"
exit $rc
