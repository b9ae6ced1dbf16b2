#!/usr/bin/env python3
"""Issue 28's speed bar: a hybrid calibrates at least half as fast as a dense model of the same shape.

    python3 bench/hybrid_vs_dense.py --ctcal build/app/ctcal [--hidden 1024] [--layers 8]
        [--samples 4] [--seq 2048] [--threads 2] [--runs 3] [--dir DIR]
        [--family qwen3_5|nemotron_h|granitemoehybrid]

Makes two random checkpoints with transformers' own save_pretrained (the peer venv's 5.17):
- dense: Qwen3ForCausalLM, `--layers` layers, hidden H, 8 heads / 2 KV heads, head_dim 128,
  intermediate 3H;
- hybrid: Qwen3_5ForCausalLM of the same hidden, layers, heads and intermediate, with Qwen3.5's
  layer pattern (every 4th layer full attention, the others gated DeltaNet with H/128 key and
  2H/128 value heads of 128: Qwen3-Next's 16 / 32 at its hidden 2048; conv kernel 4);
  or, with --family, a Mamba2 hybrid with the same 3:1 pattern, Mamba2 of I = 2H in H/32 heads of 64,
  state 128 (the config classes' head size and state): nemotron_h (NemotronHForCausalLM: each dense
  layer's two halves as two blocks, the mixer then a relu2 MLP of width 3H; 8 groups, chunk 128) or
  granitemoehybrid (GraniteMoeHybridForCausalLM without experts: shared_mlp of width 3H, RoPE; 1
  group, chunk 256).
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


def make_models(d, hidden, layers, family="qwen3_5"):
    common = dict(vocab_size=32000, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                  num_attention_heads=8, num_key_value_heads=2, head_dim=128, max_position_embeddings=8192,
                  tie_word_embeddings=False)
    torch.manual_seed(0)
    dense = os.path.join(d, "dense")
    if not os.path.isfile(os.path.join(dense, "config.json")):
        Qwen3ForCausalLM(Qwen3Config(**common)).to(torch.bfloat16).save_pretrained(dense)
    hybrid = os.path.join(d, "hybrid" if family == "qwen3_5" else family)
    kinds = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(layers)]
    mamba_heads = 2 * hidden // 64
    if family == "nemotron_h" and not os.path.isfile(os.path.join(hybrid, "config.json")):
        from transformers import NemotronHConfig, NemotronHForCausalLM
        blocks = [b for k in kinds for b in (k, "mlp")]
        cfg = NemotronHConfig(**{k: v for k, v in common.items() if k != "num_hidden_layers"}, layers_block_type=blocks,
                              mamba_num_heads=mamba_heads, mamba_head_dim=64, ssm_state_size=128, n_groups=8,
                              chunk_size=128)
        NemotronHForCausalLM(cfg).to(torch.bfloat16).save_pretrained(hybrid)
    if family == "granitemoehybrid" and not os.path.isfile(os.path.join(hybrid, "config.json")):
        from transformers import GraniteMoeHybridConfig, GraniteMoeHybridForCausalLM
        cfg = GraniteMoeHybridConfig(**{k: v for k, v in common.items() if k not in ("head_dim", "intermediate_size")},
                                     shared_intermediate_size=3 * hidden, num_local_experts=0, layer_types=kinds,
                                     position_embedding_type="rope", mamba_n_heads=mamba_heads, mamba_d_state=128,
                                     mamba_n_groups=1, mamba_chunk_size=256)
        GraniteMoeHybridForCausalLM(cfg).to(torch.bfloat16).save_pretrained(hybrid)
    if family == "qwen3_5" and not os.path.isfile(os.path.join(hybrid, "config.json")):
        cfg = Qwen3_5TextConfig(**common, linear_num_key_heads=hidden // 128, linear_num_value_heads=2 * hidden // 128,
                                linear_key_head_dim=128,
                                linear_value_head_dim=128, linear_conv_kernel_dim=4,
                                layer_types=kinds)
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
    ap.add_argument("--family", choices=["qwen3_5", "nemotron_h", "granitemoehybrid"], default="qwen3_5")
    a = ap.parse_args()
    d = a.dir or tempfile.mkdtemp(prefix="ctcal-hybrid-bench-")
    os.makedirs(d, exist_ok=True)
    dense, hybrid = make_models(d, a.hidden, a.layers, a.family)
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
          f"{a.threads} threads, hybrid {a.family}")


if __name__ == "__main__":
    main()
