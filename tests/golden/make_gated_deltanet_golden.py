#!/usr/bin/env python3
"""Gated DeltaNet golden data: transformers 5.17's own linear-attention modules
(Qwen3NextGatedDeltaNet, Qwen3_5GatedDeltaNet, Qwen3_5MoeGatedDeltaNet) on tiny random weights, in
float64 on the CPU, through their pure-torch paths (torch_chunk_gated_delta_rule, chunk 64, and
causal_conv1d_fn; the fla and causal-conv1d packages must be absent, which this script checks):

    /root/.cache/ctcal/peer-venv-6d71794b1fa55080/bin/python tests/golden/make_gated_deltanet_golden.py \
        --out tests/golden/data/gated_deltanet

Each case runs one sample of T = 150 tokens (longer than the chunk of 64 and the convolution) as a
prefill without a cache (cache_params=None: zero initial conv and recurrent state), as calibration
runs a sample. Writes <case>.safetensors with the module's state_dict under its own names
(in_proj_qkvz.weight + in_proj_ba.weight for Qwen3-Next; in_proj_qkv/z/b/a.weight for Qwen3.5),
`x` [T, hidden] (the module's input), `core` [T, num_v_heads * head_v_dim] (the delta rule's
output, the gated norm's input), `z` [T, num_v_heads * head_v_dim] (the gate) and `y` [T, hidden]
(the module's output), all float64, and the hyper-parameters in the header's metadata.

The module runs in float64, but transformers itself computes the delta rule and the gated norm's
normalisation in float32 (torch_chunk_gated_delta_rule casts q, k, v, g, beta to float32;
RMSNormGated normalises in float32): `core` and `y` carry that float32 rounding, about 1e-7
relative. Read by gated_deltanet_golden_test.cpp.
"""
import argparse
import importlib.util
import math
import os

import torch
import transformers
from safetensors.torch import save_file
from transformers.models.qwen3_5 import modeling_qwen3_5
from transformers.models.qwen3_5.configuration_qwen3_5 import Qwen3_5TextConfig
from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe
from transformers.models.qwen3_5_moe.configuration_qwen3_5_moe import Qwen3_5MoeTextConfig
from transformers.models.qwen3_next import modeling_qwen3_next
from transformers.models.qwen3_next.configuration_qwen3_next import Qwen3NextConfig

T = 150  # tokens: two full chunks of 64 and a partial one

# (case, module class, config class, module file, hyper-parameters, per-value-head A = exp(A_log)).
# A spans mild decay (state carried across chunks) to strong decay (exp(cumsum g) underflows to 0 in
# float32 inside a chunk); head_k_dim != head_v_dim and GQA ratios 2 and 1 catch transposed indices.
CASES = [
    ("qwen3_next", modeling_qwen3_next.Qwen3NextGatedDeltaNet, Qwen3NextConfig, modeling_qwen3_next,
     dict(hidden_size=64, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
          linear_value_head_dim=16, linear_conv_kernel_dim=4, rms_norm_eps=1e-6),
     [0.02, 0.3, 2.0, 10.0]),
    ("qwen3_5", modeling_qwen3_5.Qwen3_5GatedDeltaNet, Qwen3_5TextConfig, modeling_qwen3_5,
     dict(hidden_size=64, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
          linear_value_head_dim=24, linear_conv_kernel_dim=4, rms_norm_eps=1e-6),
     [0.05, 0.01, 5.0, 0.8]),
    ("qwen3_5_moe", modeling_qwen3_5_moe.Qwen3_5MoeGatedDeltaNet, Qwen3_5MoeTextConfig, modeling_qwen3_5_moe,
     dict(hidden_size=48, linear_num_key_heads=3, linear_num_value_heads=3, linear_key_head_dim=8,
          linear_value_head_dim=16, linear_conv_kernel_dim=3, rms_norm_eps=1e-5),
     [0.1, 1.0, 0.005]),
]


def check_torch_paths(module_file):
    """The pure-torch paths run only when neither fla nor causal_conv1d (nor the kernels hub) is present."""
    for pkg in ("fla", "causal_conv1d", "kernels"):
        if importlib.util.find_spec(pkg) is not None:
            raise SystemExit(f"{pkg} is installed: transformers would use its kernels, not the torch path")
    for fn in ("torch_chunk_gated_delta_rule", "causal_conv1d_fn"):
        f = getattr(module_file, fn)
        if f.__module__ != module_file.__name__:
            raise SystemExit(f"{module_file.__name__}.{fn} resolves to {f.__module__}")


def make_case(name, cls, cfg_cls, module_file, hp, a_heads, seed):
    check_torch_paths(module_file)
    cfg = cfg_cls(**hp, hidden_act="silu", num_hidden_layers=1, layer_types=["linear_attention"])
    torch.manual_seed(seed)
    m = cls(cfg, layer_idx=0).to(torch.float64).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in m.named_parameters():
            if pname.startswith("in_proj") or pname == "out_proj.weight":
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.15)
            elif pname == "conv1d.weight":  # [conv_dim, 1, K]
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
            elif pname == "dt_bias":
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
            elif pname == "A_log":
                jitter = 1 + 0.2 * torch.rand(p.shape, generator=g, dtype=torch.float64)
                p.copy_(torch.log(torch.tensor(a_heads, dtype=torch.float64) * jitter))
            elif pname == "norm.weight":
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            else:
                raise SystemExit(f"unexpected parameter {pname}")
    x = torch.randn(1, T, hp["hidden_size"], generator=g, dtype=torch.float64)
    captured = {}

    def norm_pre_hook(module, args):  # RMSNormGated(core_attn_out [T * nv, dv], z [T * nv, dv])
        captured["core"] = args[0].reshape(T, -1).clone()
        captured["z"] = args[1].reshape(T, -1).clone()

    h = m.norm.register_forward_pre_hook(norm_pre_hook)
    with torch.no_grad():
        y = m(x)  # cache_params=None: a prefill from zero state
    h.remove()
    tensors = {k: v.contiguous() for k, v in m.state_dict().items()}
    tensors.update(x=x[0].contiguous(), y=y[0].contiguous(), core=captured["core"].contiguous(),
                   z=captured["z"].contiguous())
    meta = {"format": "pt", "case": name, "module": cls.__name__, "transformers": transformers.__version__,
            "torch": torch.__version__, "tokens": str(T)}
    meta.update({k: repr(v) for k, v in hp.items()})
    return tensors, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for i, (name, cls, cfg_cls, module_file, hp, a_heads) in enumerate(CASES):
        tensors, meta = make_case(name, cls, cfg_cls, module_file, hp, a_heads, seed=1000 + i)
        path = os.path.join(a.out, f"{name}.safetensors")
        save_file(tensors, path, metadata=meta)
        y = tensors["y"]
        print(f"{name}: {cls.__name__}, y max |.| {y.abs().max().item():.4g}, "
              f"{os.path.getsize(path)} bytes", flush=True)
        assert math.isfinite(y.abs().max().item())


if __name__ == "__main__":
    main()
