#!/usr/bin/env bash
# FP8 per-head KV scales calibrated on a GPU (--device cuda), beside the same run on the CPU.
# With a binary built without -DCTCAL_CUDA=ON, or no GPU, it shows the refusal (exit 2, and how to
# rebuild) and stops there: nothing is calibrated half on one device.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CTCAL=${CTCAL:-ctcal}
DATA=${CTCAL_DATA:-$here/../../../shared/data}
MODEL=${MODEL:-$DATA/hf/stories260K}
DATASET=${DATASET:-$DATA/tinystories-valid/validation_100.txt}
OUT=${OUT:-$(mktemp -d)/gpu-fp8-kv}
args=(calibrate "$here/../../recipes/fp8_kv_per_head.yaml" --model "$MODEL" --dataset "$DATASET"
      --num-samples "${NUM_SAMPLES:-64}" --max-seq-length 512)

set +e
"$CTCAL" "${args[@]}" --device cuda --output "$OUT" > "$OUT.log" 2>&1
rc=$?
set -e
if [ $rc -eq 2 ]; then
  grep -E "without the CUDA backend|no CUDA device" "$OUT.log"
  echo "no GPU run here (exit 2, as documented); build with cmake -DCTCAL_CUDA=ON on a machine with a GPU"
  exit 0
fi
[ $rc -eq 0 ] || { cat "$OUT.log"; exit $rc; }
grep -E "device:|cuda:" "$OUT.log" || true
"$CTCAL" "${args[@]}" --output "$OUT-cpu" > /dev/null
# The two runs' k/v scales side by side (the GPU's projections and attention are bf16: within 2 %).
python3 - "$OUT" "$OUT-cpu" <<'PY'
import glob, json, struct, sys
def scales(d):
    out = {}
    for f in glob.glob(d + "/*.safetensors"):
        b = open(f, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        for k, v in json.loads(b[8:8 + n]).items():
            if k.endswith(("k_scale", "v_scale")):
                s, e = v["data_offsets"]
                raw = b[8 + n + s:8 + n + e]
                out[k] = ([struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
                          if v["dtype"] == "BF16" else list(struct.unpack(f"<{len(raw) // 4}f", raw)))
    return out
g, c = scales(sys.argv[1]), scales(sys.argv[2])
worst = max(abs(x - y) / y for k in c for x, y in zip(g[k], c[k]))
print(f"{len(c)} k/v scale tensors; cuda vs cpu worst relative difference {worst:.3%}")
sys.exit(0 if worst <= 0.02 else 1)
PY
echo "checkpoints: $OUT (cuda), $OUT-cpu (cpu)"
