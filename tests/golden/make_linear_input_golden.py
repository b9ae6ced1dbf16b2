#!/usr/bin/env python3
"""Golden data for the Linear-input hook points (FP8 static input scales): per layer, the min and
max of every Linear layer's input over the golden samples, from transformers in float64.

Pinned versions (the scratch venv of make_quantized_golden.py: torch 2.15.0 CPU, transformers
5.24.0, which computes the Llama/Mistral forward as 5.17 does):

    /root/.cache/ctcal/ct-venv/bin/pip install torch==2.15.0 transformers==5.24.0 safetensors==0.8.0
    /root/.cache/ctcal/ct-venv/bin/python tests/golden/make_linear_input_golden.py \
        --golden tests/golden/data --data ../shared/data --out tests/golden/data/linear_inputs

For every forward-golden case (`data/<case>.json`: its model directory and token-id samples) it
loads the checkpoint in float64 with eager attention, registers a forward pre-hook on each
nn.Linear of the decoder layers, runs each sample alone (batch 1, as llm-compressor calibrates)
and writes `<case>.json` = {"layers": [{module: {"min": m, "max": M}}]} for the modules q_proj,
k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.

Mamba2 hybrids (`--cases nemotron_h_fp32,granitemoehybrid_fp32`, run with the peer venv's
transformers 5.17, which has both model types): only the Mamba2 mixers' in_proj and out_proj are
recorded (`"modules": ["in_proj", "out_proj"]`, a layer without a mixer is {}), with the mixer's
float32 casts lifted as make_family_golden.py does, so that the whole reference is float64:

    /root/.cache/ctcal/peer-venv-6d71794b1fa55080/bin/python tests/golden/make_linear_input_golden.py \
        --golden tests/golden/data --data ../shared/data --out tests/golden/data/linear_inputs \
        --cases nemotron_h_fp32,granitemoehybrid_fp32
"""
import argparse
import contextlib
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_mamba2_golden import float32_casts_lifted  # noqa: E402  (the mixer's float64 reference)

MAMBA_TYPES = ("nemotron_h", "granitemoehybrid")
MAMBA_MODULES = ("in_proj", "out_proj")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", required=True)
    ap.add_argument("--data", required=True, help="the shared data folder (for stories260K)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", help="comma-separated case names (default: every forward-golden case)")
    a = ap.parse_args()
    only = set(a.cases.split(",")) if a.cases else None
    os.makedirs(a.out, exist_ok=True)
    for f in sorted(os.listdir(a.golden)):
        if not f.endswith(".json") or f.endswith("_eval.json"):
            continue
        if only is not None and f[:-5] not in only:
            continue
        g = json.load(open(os.path.join(a.golden, f)))
        d = g["model_dir"]
        d = os.path.join(a.data, d[len("$CTCAL_DATA/"):]) if d.startswith("$CTCAL_DATA/") else os.path.join(a.golden, d)
        # Eager experts: the grouped GEMM takes no float64 (Granite 4 hybrid's MoE, as make_family_golden.py).
        extra = {"experts_implementation": "eager"} if json.load(open(os.path.join(d, "config.json"))).get(
            "model_type") in MAMBA_TYPES else {}
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64, attn_implementation="eager", **extra)
        model.eval()
        mamba = model.config.model_type in MAMBA_TYPES
        stats = {}

        def hook(name):
            def pre(module, args):
                x = args[0]
                s = stats.setdefault(name, [float("inf"), float("-inf")])
                s[0] = min(s[0], x.min().item())
                s[1] = max(s[1], x.max().item())
            return pre

        handles = []
        for name, m in model.named_modules():
            if not isinstance(m, torch.nn.Linear) or ".layers." not in name:
                continue
            # Mamba2 hybrids: the mixer's in_proj / out_proj (Nemotron-H's `mixer`, Granite's `mamba`).
            if mamba and not (name.split(".")[-1] in MAMBA_MODULES and name.split(".")[-2] in ("mixer", "mamba")):
                continue
            handles.append(m.register_forward_pre_hook(hook(name)))
        lifted = float32_casts_lifted() if mamba else contextlib.nullcontext()
        with torch.no_grad(), lifted:
            for ids in g["samples"]:
                model(torch.tensor([ids]), use_cache=False)
        for h in handles:
            h.remove()
        layers = []
        for li in range(model.config.num_hidden_layers):
            entry = {}
            for name, (mn, mx) in stats.items():
                parts = name.split(".")
                if int(parts[parts.index("layers") + 1]) == li:
                    entry[parts[-1]] = {"min": mn, "max": mx}
            layers.append(entry)
        out = {"case": f[:-5], "transformers": transformers.__version__, "torch": torch.__version__,
               "layers": layers}
        if mamba:
            out["modules"] = list(MAMBA_MODULES)
        with open(os.path.join(a.out, f), "w") as fo:
            json.dump(out, fo, indent=1, sort_keys=True)
            fo.write("\n")
        print(f[:-5], "ok", flush=True)


if __name__ == "__main__":
    main()
