#!/usr/bin/env python3
"""Golden data for the MoE expert-input hook points (Site::kExpertGateUpInput, kExpertDownInput:
what FP8 static input scales of MoE experts are observed on): per MoE layer and expert, the min,
max and row count of the expert's gate/up input (the tokens routed to it) and of its down input
(act(gate) * up on those tokens), over the golden samples, from transformers in float64.

Pinned versions: the peer venv (tests/peer/requirements.lock: torch 2.15 CPU, transformers 5.17):

    $(ls -d $HOME/.cache/ctcal/peer-venv-*)/bin/python tests/golden/make_expert_input_golden.py \
        --golden tests/golden/data --out tests/golden/data/expert_inputs

For the per-expert MoE cases (qwen3_moe_fp32, mixtral_sliding_fp32) it loads the checkpoint in
float64 with eager attention and eager experts (transformers 5 fuses the per-expert tensors into its experts module
on load), registers a forward pre-hook on every layer's experts module (Qwen3MoeExperts /
MixtralExperts: forward(hidden_states, top_k_index, top_k_weights)), and, for each expert, takes
the rows routed to it as that module's forward does (one_hot(top_k_index), torch.where), and
act(gate) * up from its gate_up_proj[e] chunked in two: the down projection's input. Each sample
runs alone (batch 1, as llm-compressor calibrates). llm-compressor's own default
(moe_calibrate_all_experts) runs every expert on every token instead; ctcal observes the routed
rows, the inputs the experts see when served (docs/recipes.md).
"""
import argparse
import json
import os

import torch
import transformers
from transformers import AutoModelForCausalLM

CASES = ["qwen3_moe_fp32", "mixtral_sliding_fp32"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for case in CASES:
        g = json.load(open(os.path.join(a.golden, case + ".json")))
        model = AutoModelForCausalLM.from_pretrained(os.path.join(a.golden, g["model_dir"]), dtype=torch.float64,
                                                     attn_implementation="eager", experts_implementation="eager")
        model.eval()
        stats = {}  # (layer, "gate_up" | "down", expert) -> [min, max, rows]

        def hook(layer):
            def pre(module, args):
                hidden, top_k_index = args[0], args[1]  # [tokens, hidden], [tokens, top_k]
                mask = torch.nn.functional.one_hot(top_k_index, num_classes=module.num_experts).permute(2, 1, 0)
                for e in range(module.num_experts):
                    _, rows = torch.where(mask[e])
                    if rows.numel() == 0:
                        continue
                    x = hidden[rows]                                           # [rows, hidden]
                    gate, up = torch.nn.functional.linear(x, module.gate_up_proj[e]).chunk(2, dim=-1)
                    d = module.act_fn(gate) * up                               # [rows, moe_intermediate]
                    for site, t in (("gate_up", x), ("down", d)):
                        s = stats.setdefault((layer, site, e), [float("inf"), float("-inf"), 0])
                        s[0] = min(s[0], t.min().item())
                        s[1] = max(s[1], t.max().item())
                        s[2] += rows.numel()
            return pre

        handles = []
        for i, layer in enumerate(model.model.layers):
            experts = getattr(layer.mlp, "experts", None)
            if experts is not None and hasattr(experts, "gate_up_proj"):
                handles.append(experts.register_forward_pre_hook(hook(i)))
        with torch.no_grad():
            for ids in g["samples"]:
                model(torch.tensor([ids]), use_cache=False)
        for h in handles:
            h.remove()
        layers = []
        for li in range(model.config.num_hidden_layers):
            entry = {}
            for (l, site, e), (mn, mx, n) in sorted(stats.items()):
                if l == li:
                    entry.setdefault(site, {})[str(e)] = {"min": mn, "max": mx, "rows": n}
            layers.append(entry)
        out = {"case": case, "transformers": transformers.__version__, "torch": torch.__version__, "layers": layers}
        with open(os.path.join(a.out, case + ".json"), "w") as fo:
            json.dump(out, fo, indent=1, sort_keys=True)
            fo.write("\n")
        print(case, "ok", flush=True)


if __name__ == "__main__":
    main()
