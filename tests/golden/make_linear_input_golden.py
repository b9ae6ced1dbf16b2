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
"""
import argparse
import json
import os

import torch
import transformers
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", required=True)
    ap.add_argument("--data", required=True, help="the shared data folder (for stories260K)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for f in sorted(os.listdir(a.golden)):
        if not f.endswith(".json") or f.endswith("_eval.json"):
            continue
        g = json.load(open(os.path.join(a.golden, f)))
        d = g["model_dir"]
        d = os.path.join(a.data, d[len("$CTCAL_DATA/"):]) if d.startswith("$CTCAL_DATA/") else os.path.join(a.golden, d)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64, attn_implementation="eager")
        model.eval()
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
            if isinstance(m, torch.nn.Linear) and ".layers." in name:
                handles.append(m.register_forward_pre_hook(hook(name)))
        with torch.no_grad():
            for ids in g["samples"]:
                model(torch.tensor([ids]), use_cache=False)
        for h in handles:
            h.remove()
        layers = []
        for li in range(model.config.num_hidden_layers):
            entry = {}
            for name, (mn, mx) in stats.items():
                parts = name.split(".")
                if int(parts[2]) == li:
                    entry[parts[-1]] = {"min": mn, "max": mx}
            layers.append(entry)
        out = {"case": f[:-5], "transformers": transformers.__version__, "torch": torch.__version__,
               "layers": layers}
        with open(os.path.join(a.out, f), "w") as fo:
            json.dump(out, fo, indent=1, sort_keys=True)
            fo.write("\n")
        print(f[:-5], "ok", flush=True)


if __name__ == "__main__":
    main()
