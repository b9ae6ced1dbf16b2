#!/usr/bin/env python3
"""Issue 31 item 1 on the GPU: `ctcal eval --kv-cache-dtype nvfp4 --device cuda` against the same
command on the CPU, on a real trained model with 16-wide heads (babyllama-tok105), FP8 per-tensor
KV calibrated on the fly on half of the TinyStories text and evaluated on the other half.

The NVFP4 fake quantization runs on the host in both (the CUDA forward hands K and V to it), so the
rows differ only by the forward's rounding on the GPU (bf16 attention and GEMMs there): each layer's
decode multipliers s (k_s / v_s) under the fixed rules (amax/448, amax/2688: amax comes from the
calibrated FP8 scales) must agree within S_REL = 2 %, the GPU tests' bound for the CUDA
backend's observed ranges against the CPU (tests/gpu/), and each row's KL within KL_REL = 10 %, the
bound scripts/gpu_remote.sh holds eval's FP8 KL to (a KL is a small difference of two forwards, so
the forward's rounding weighs more in it than in a range). The searched rows' s are an argmin
over 6^(1/8)-spaced candidates and then the model-level guard's choice among three whole sets, on
objectives that are flat near their minimum: on an H100 (2026-12-07) the two devices' guards chose
different sets (cuda amax/448, cpu searched; s up to 7.5x apart in one layer) with KLs 0.103337 and
0.103321, 0.015 % apart. So those rows are held to the KL bound only. Run on the GPU machine from a copy of this tree carrying
.gpu-bundle (scripts/gpu_remote.sh sets the paths):

    python3 tests/gpu/eval_nvfp4_cuda_vs_cpu.py CTCAL_BINARY DATA_DIR SOURCE_DIR
"""
import json
import os
import subprocess
import sys
import tempfile

S_REL = 0.02
KL_REL = 0.10
ctcal, data, src = sys.argv[1:4]
model = os.path.join(data, "hf", "babyllama-tok105")
text = os.path.join(data, "tinystories-valid", "validation_100.txt")
with tempfile.TemporaryDirectory() as tmp:
    lines = open(text, encoding="utf-8").read().splitlines(keepends=True)
    calib, held = os.path.join(tmp, "calib.txt"), os.path.join(tmp, "held.txt")
    open(calib, "w", encoding="utf-8").writelines(lines[: len(lines) // 2])
    open(held, "w", encoding="utf-8").writelines(lines[len(lines) // 2:])
    docs = {}
    for device in ("cuda", "cpu"):
        p = subprocess.run([ctcal, "eval", "--model", model, "--dataset", held, "--calibration-dataset", calib,
                            "--recipe", os.path.join(src, "recipes", "fp8_kv_per_tensor.yaml"), "--num-samples", "24",
                            "--max-seq-length", "256", "--no-unit-scales", "--kv-cache-dtype", "nvfp4",
                            "--device", device, "--json"], capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            sys.exit(f"eval --device {device} exited {p.returncode}: {p.stderr[-2000:]}")
        docs[device] = {r["name"]: r for r in json.loads(p.stdout)["quantized"][0]["kv_cache_dtypes"]}
g, c = docs["cuda"], docs["cpu"]
if list(g) != list(c):
    sys.exit(f"different rows: cuda {list(g)}, cpu {list(c)}")
worst_kl = worst_s = 0.0
for name in c:
    rel = abs(g[name]["kl"] - c[name]["kl"]) / c[name]["kl"]
    worst_kl = max(worst_kl, rel)
    s_rel = 0.0
    searched = "searched" in name  # an argmin: compared by its KL only (above)
    for lg, lc in zip(g[name].get("layers", []), c[name].get("layers", [])) if not searched else []:
        for key in ("k_s", "v_s"):
            if key in lc:
                s_rel = max(s_rel, abs(lg[key] - lc[key]) / abs(lc[key]))
    worst_s = max(worst_s, s_rel)
    print(f"{name:24s} KL cuda {g[name]['kl']:.6g}  cpu {c[name]['kl']:.6g}  (rel {rel:.3g}); "
          + (f"s worst rel {s_rel:.3g}" if not searched else "s: argmin, not compared"))
ok = worst_kl <= KL_REL and worst_s <= S_REL
print(f"eval nvfp4 cuda vs cpu: worst KL rel {worst_kl:.3g}, worst s rel {worst_s:.3g} (bounds {KL_REL}, {S_REL}): "
      f"{'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
