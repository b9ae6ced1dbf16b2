#!/usr/bin/env bash
# Cold start against the disk (issue 30 item 3), on the GPU machine:
#   bench/cold_start.sh CTCAL MODEL_DIR [DEVICE]
# 1. the disk's sequential read bandwidth of the checkpoint's own files, page cache dropped:
#    buffered `cat` and O_DIRECT `dd` (64 MiB reads), both printed;
# 2. ctcal's whole command on one 2048-token sample, page cache dropped, then again warm;
# 3. the cold command against the time the disk needs to read the files (the best it could do).
# Needs root to drop the page cache (/proc/sys/vm/drop_caches); says so and stops otherwise.
set -uo pipefail
ctcal=$1 model=$2 device=${3:-cuda}
drop() { sync && echo 3 > /proc/sys/vm/drop_caches; }
if ! drop 2> /dev/null; then echo "cold start: cannot drop the page cache here (not root?); not measured"; exit 0; fi
bytes=$(cat "$model"/*.safetensors | wc -c)
gb=$(python3 -c "print($bytes / 1e9)")
now() { date +%s.%N; }
drop; t0=$(now); cat "$model"/*.safetensors > /dev/null; t1=$(now)
drop; t2=$(now); for f in "$model"/*.safetensors; do dd if="$f" of=/dev/null bs=64M iflag=direct status=none; done; t3=$(now)
work=$(mktemp -d)
python3 - "$work/one.jsonl" <<'PY'
import json, random, sys
random.seed(7)
open(sys.argv[1], "w").write(json.dumps({"input_ids": [random.randrange(1000, 30000) for _ in range(2048)]}) + "\n")
PY
printf 'quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      kv_cache_scheme: {num_bits: 8, type: float, symmetric: true, strategy: tensor, dynamic: false}\n' > "$work/r.yaml"
run() { "$ctcal" calibrate "$work/r.yaml" --model "$model" --dataset "$work/one.jsonl" --num-samples 1 \
          --max-seq-length 2048 --device "$device" --output "$work/out" --overwrite -q > "$work/log" 2>&1 || { cat "$work/log"; exit 1; }; }
drop; t4=$(now); run; t5=$(now)
t6=$(now); run; t7=$(now)
python3 - "$gb" "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" "$t6" "$t7" <<'PY'
import sys
gb, *t = map(float, sys.argv[1:])
cat, direct, cold, warm = t[1] - t[0], t[3] - t[2], t[5] - t[4], t[7] - t[6]
best = min(cat, direct)
print(f"cold start: {gb:.2f} GB of safetensors; disk: cat {gb / cat:.2f} GB/s ({cat:.2f} s), O_DIRECT 64 MiB "
      f"{gb / direct:.2f} GB/s ({direct:.2f} s)")
print(f"cold start: ctcal whole command, 1 x 2048 tokens: cold {cold:.2f} s, warm {warm:.2f} s; "
      f"cold = {gb / cold:.2f} GB/s, {100 * best / cold:.0f} % of the disk's best read; "
      f"cold minus warm {cold - warm:.2f} s vs the read {best:.2f} s ({100 * best / max(cold - warm, 1e-9):.0f} %)")
PY
rm -rf "$work"
