#!/usr/bin/env python3
"""Golden NLL with fake-quantized K/V, from transformers (float64) on the GPU machine.

    python3 tests/golden/make_eval_golden.py --stories DIR_OF_HF_stories260K \
        --golden tests/golden/data/stories260K.json --out tests/golden/data/stories260K_eval.json

Uses the golden samples of make_golden.py. For each scheme it derives the scales the way
compressed-tensors does from the float64 activations of those samples (static min/max over all
samples), inserts fake quantization where vLLM quantizes (K after RoPE and R3, V after v_proj:
x / scale, clamp, FP8 E4M3 round-to-nearest-even or integer round-half-even with the zero point,
dequantize) and records the loss per sample.
"""
import argparse
import json
import math

import torch
from transformers import LlamaForCausalLM
from transformers.models.llama import modeling_llama

SCHEMES = {
    "fp8_tensor": dict(kind="fp8", per_head=False, r3=False),
    "fp8_tensor_r3": dict(kind="fp8", per_head=False, r3=True),
    "int4_asym_head": dict(kind="int4", per_head=True, r3=False),
}


def sylvester(n):
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def f32(x):
    return torch.tensor(x, dtype=torch.float32).to(torch.float64)


def qparams(mn, mx, kind):
    """mn/mx: float64 tensors [heads] or [1]. Returns float32-rounded scale and zero point."""
    mn, mx = torch.clamp(mn, max=0), torch.clamp(mx, min=0)
    if kind == "fp8":
        scale = f32(torch.maximum(mn.abs(), mx.abs()) / 448.0)
        return scale, torch.zeros_like(scale)
    scale = f32((mx - mn) / 15.0)
    zp = torch.round(torch.clamp(-8 - mn / scale, -8, 7))  # torch.round: half to even
    return scale, zp


def fake_quant(x, scale, zp, kind):
    """x: [H, S, D]; scale/zp: [H] or [1]."""
    s = scale.view(-1, 1, 1)
    z = zp.view(-1, 1, 1)
    if kind == "fp8":
        y = torch.clamp(x / s, -448, 448).to(torch.float8_e4m3fn).to(torch.float64)
        return y * s
    q = torch.clamp(torch.round(x / s + z), -8, 7)
    return (q - z) * s


class Hooks:
    def __init__(self, model, head_dim, kv_heads):
        self.layer = None
        self.mode = "collect"
        self.rot = None
        self.stats = {}
        self.params = {}
        self.kind = None
        self.kv_heads, self.head_dim = kv_heads, head_dim
        for i, layer in enumerate(model.model.layers):
            layer.self_attn.register_forward_pre_hook(self._pre(i))
            layer.self_attn.v_proj.register_forward_hook(self._v)
        self.orig = modeling_llama.apply_rotary_pos_emb
        hooks = self

        def wrapped(q, k, cos, sin, *a, **kw):
            q, k = hooks.orig(q, k, cos, sin, *a, **kw)
            if hooks.rot is not None:
                q, k = q @ hooks.rot, k @ hooks.rot
            k = hooks._site("k", k)
            return q, k

        modeling_llama.apply_rotary_pos_emb = wrapped

    def _pre(self, i):
        def hook(module, args):
            self.layer = i
        return hook

    def _site(self, site, t):  # t: [1, H, S, D]
        key = (self.layer, site)
        if self.mode == "collect":
            mn, mx = t[0].amin(dim=(1, 2)), t[0].amax(dim=(1, 2))
            if key in self.stats:
                mn, mx = torch.minimum(mn, self.stats[key][0]), torch.maximum(mx, self.stats[key][1])
            self.stats[key] = (mn, mx)
            return t
        scale, zp = self.params[key]
        return fake_quant(t[0], scale, zp, self.kind)[None]

    def _v(self, module, inputs, out):
        b, s, _ = out.shape
        v = out.view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self._site("v", v)
        return v.transpose(1, 2).reshape(b, s, -1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stories", required=True)
    ap.add_argument("--golden", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    samples = json.load(open(args.golden))["samples"]
    model = LlamaForCausalLM.from_pretrained(args.stories, dtype=torch.float64, attn_implementation="eager").eval()
    cfg = model.config
    head_dim = cfg.head_dim
    hooks = Hooks(model, head_dim, cfg.num_key_value_heads)
    out = {"samples": samples, "schemes": {}}

    def losses():
        res = []
        with torch.no_grad():
            for ids in samples:
                t = torch.tensor([ids])
                res.append(model(t, labels=t, use_cache=False).loss.item())
        return res

    hooks.mode = "collect"
    out["baseline_loss"] = losses()
    for name, sc in SCHEMES.items():
        hooks.rot = sylvester(head_dim) / math.sqrt(head_dim) if sc["r3"] else None
        hooks.mode, hooks.stats = "collect", {}
        losses()
        hooks.kind = sc["kind"]
        hooks.params = {}
        for key, (mn, mx) in hooks.stats.items():
            if not sc["per_head"]:
                mn, mx = mn.min().view(1), mx.max().view(1)
            hooks.params[key] = qparams(mn, mx, sc["kind"])
        hooks.mode = "quant"
        out["schemes"][name] = {
            "loss": losses(),
            "scales": {f"{l}.{s}": [v.tolist() for v in p] for (l, s), p in hooks.params.items()},
        }
        print(name, out["schemes"][name]["loss"], flush=True)
    json.dump(out, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
