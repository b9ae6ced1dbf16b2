#!/usr/bin/env python3
"""Issue 28's speed bar: a hybrid calibrates at least half as fast as a dense model of the same shape.

    python3 bench/hybrid_vs_dense.py --ctcal build/app/ctcal [--hidden 1024] [--layers 8]
        [--samples 4] [--seq 2048] [--threads 2] [--runs 3] [--dir DIR]

Makes two random checkpoints with transformers' own save_pretrained (the peer venv's 5.17):
- dense: Qwen3ForCausalLM, `--layers` layers, hidden H, 8 heads / 2 KV heads, head_dim 128,
  intermediate 3H;
- hybrid: Qwen3_5ForCausalLM of the same hidden, layers, heads and intermediate, with Qwen3.5's
  layer pattern (every 4th layer full attention, the others gated DeltaNet with H/128 key and
  2H/128 value heads of 128: Qwen3-Next's 16 / 32 at its hidden 2048; conv kernel 4).
Both in bf16, the same random token ids (`--samples` × `--seq`), FP8 per-tensor KV recipe, ctcal's
whole command on the CPU. Prints each run's wall time, the best of `--runs` for each model, and
hybrid tokens/s ÷ dense tokens/s (the bar: >= 0.5). Runs alternate (dense, hybrid, dense, ...) so
that a busy machine slows both alike.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "peer"))
import peer_util as pu  # noqa: E402

pu.enter_venv()

import torch  # noqa: E402
from transformers import Qwen3Config, Qwen3ForCausalLM  # noqa: E402
from transformers import Qwen3_5TextConfig, Qwen3_5ForCausalLM  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def make_models(d, hidden, layers):
    common = dict(vocab_size=32000, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                  num_attention_heads=8, num_key_value_heads=2, head_dim=128, max_position_embeddings=8192,
                  tie_word_embeddings=False)
    torch.manual_seed(0)
    dense = os.path.join(d, "dense")
    if not os.path.isfile(os.path.join(dense, "config.json")):
        Qwen3ForCausalLM(Qwen3Config(**common)).to(torch.bfloat16).save_pretrained(dense)
    hybrid = os.path.join(d, "hybrid")
    if not os.path.isfile(os.path.join(hybrid, "config.json")):
        cfg = Qwen3_5TextConfig(**common, linear_num_key_heads=hidden // 128, linear_num_value_heads=2 * hidden // 128,
                                linear_key_head_dim=128,
                                linear_value_head_dim=128, linear_conv_kernel_dim=4,
                                layer_types=["full_attention" if (i + 1) % 4 == 0 else "linear_attention"
                                             for i in range(layers)])
        Qwen3_5ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(hybrid)
    return dense, hybrid


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctcal", required=True)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir")
    a = ap.parse_args()
    d = a.dir or tempfile.mkdtemp(prefix="ctcal-hybrid-bench-")
    os.makedirs(d, exist_ok=True)
    dense, hybrid = make_models(d, a.hidden, a.layers)
    data = os.path.join(d, "ids.jsonl")
    rng = random.Random(42)
    with open(data, "w") as f:
        for _ in range(a.samples):
            f.write(json.dumps({"input_ids": [rng.randrange(32000) for _ in range(a.seq)]}) + "\n")
    recipe = os.path.join(ROOT, "recipes", "fp8_kv_per_tensor.yaml")
    best = {}
    for run in range(a.runs):
        for name, model in (("dense", dense), ("hybrid", hybrid)):
            out = os.path.join(d, f"out-{name}")
            t0 = time.perf_counter()
            r = subprocess.run([a.ctcal, "calibrate", recipe, "--model", model, "--dataset", data, "--output", out,
                                "--overwrite", "--num-samples", str(a.samples), "--max-seq-length", str(a.seq),
                                "--threads", str(a.threads), "-q"], capture_output=True, text=True)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                sys.exit(f"{name}: ctcal exited {r.returncode}: {r.stderr[-600:]}")
            best[name] = min(best.get(name, dt), dt)
            print(f"run {run + 1} {name:6s} {dt:7.2f} s  ({a.samples * a.seq / dt:8.0f} tokens/s)", flush=True)
    ratio = best["dense"] / best["hybrid"]
    print(f"best: dense {best['dense']:.2f} s, hybrid {best['hybrid']:.2f} s; hybrid speed / dense speed = "
          f"{ratio:.2f} (bar >= 0.5); hidden {a.hidden}, {a.layers} layers, {a.samples} x {a.seq} tokens, "
          f"{a.threads} threads")


if __name__ == "__main__":
    main()
