#!/usr/bin/env python3
"""Mamba2 mixer golden data: transformers 5.17's own mixer modules (CPU, the peer venv of
scripts/peer_venv.sh), pure-torch path (no mamba_ssm / causal_conv1d kernels, no cache: one
prefill from zero state), in float64:

    $(scripts/peer_venv.sh)/bin/python tests/golden/make_mamba2_golden.py --out tests/golden/data/mamba2

Two cases, one per family, tiny random weights, T = 150 tokens with chunk_size 32 (four full
chunks and a partial one; the convolution kernel is 4):
  nemotron_h        NemotronHMamba2Mixer: 8 heads x 12, n_groups 2, state 16, in/out_proj and
                    conv bias (use_bias, use_conv_bias), gated norm in groups of I / n_groups,
                    dt clamped below at time_step_min (0.05 here, so that it bites).
  granitemoehybrid  GraniteMoeHybridMambaLayer: hidden 64, mamba_expand 2 -> I = 128, 8 heads x
                    16, mamba_n_groups 2, state 16, no projection or conv bias, gated norm over
                    the whole row, time_step_limit (0.02, 0.6) (both ends bite).

Writes <case>.safetensors: the module's parameters under their state_dict names (in_proj.weight,
conv1d.weight [conv_dim, 1, K], ...; the checkpoint names without the layer prefix), the input
`x` [T, hidden] (float32 values, so ctcal reads exactly what the module read), and `y` [T, hidden]
float64; the hyper-parameters as JSON in the metadata key "config" (the family's config keys) and
"mixer" (the mixer's derived values; time_step_max null = inf). Read by mamba2_golden_test.cpp.

Reference in float64 throughout: transformers' mamba2_chunk_scan casts x, B, C and dt to float32
(`.float()`) and its gated norms compute in float32 (`.to(torch.float32)`), whatever the model's
dtype. Those casts are lifted while `y` is computed (float32_casts_lifted), so `y` is the same
math in float64; the script checks that the module as shipped (with the casts) agrees within
1e-4 (it is float32 inside) and that a plain per-token recurrence in float64 agrees within 1e-10.
"""
import argparse
import contextlib
import json
import os

import torch
from safetensors.torch import save_file
import transformers
from transformers import GraniteMoeHybridConfig, NemotronHConfig
from transformers.models.granitemoehybrid.modeling_granitemoehybrid import GraniteMoeHybridMambaLayer
from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHMamba2Mixer

T = 150


@contextlib.contextmanager
def float32_casts_lifted():
    """float64 tensors stay float64 under .float() and .to(torch.float32) inside the block."""
    orig_float, orig_to = torch.Tensor.float, torch.Tensor.to

    def keep_float(self, *a, **k):
        return self if self.dtype == torch.float64 else orig_float(self, *a, **k)

    def keep_to(self, *a, **k):
        target = k.get("dtype", a[0] if a else None)
        if self.dtype == torch.float64 and target is torch.float32:
            return self
        return orig_to(self, *a, **k)

    torch.Tensor.float, torch.Tensor.to = keep_float, keep_to
    try:
        yield
    finally:
        torch.Tensor.float, torch.Tensor.to = orig_float, orig_to


def randomise(m, g, hidden, inter, heads):
    """Nontrivial weights, drawn in float32 then widened (exactly representable in fp32)."""
    def rnd(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g) * scale + shift).to(torch.float64)

    with torch.no_grad():
        m.in_proj.weight.copy_(rnd(*m.in_proj.weight.shape, scale=hidden ** -0.5))
        if m.in_proj.bias is not None:
            m.in_proj.bias.copy_(rnd(*m.in_proj.bias.shape, scale=0.1))
        m.conv1d.weight.copy_(rnd(*m.conv1d.weight.shape, scale=0.5))
        if m.conv1d.bias is not None:
            m.conv1d.bias.copy_(rnd(*m.conv1d.bias.shape, scale=0.2))
        # dt_bias in [-4, 1]: softplus(dt + dt_bias) spans ~0.01 .. 3, so both clamps bite.
        m.dt_bias.copy_((torch.rand(heads, generator=g) * 5 - 4).to(torch.float64))
        # A = -exp(A_log) in [-8, -0.02]: some heads forget within a token, others carry their
        # state across several chunks (the inter-chunk recurrence matters).
        a = torch.exp(torch.rand(heads, generator=g) * (torch.log(torch.tensor(8.0)) - torch.log(torch.tensor(0.02)))
                      + torch.log(torch.tensor(0.02)))
        m.A_log.copy_(torch.log(a).to(torch.float32).to(torch.float64))
        m.D.copy_(rnd(heads))
        m.norm.weight.copy_(rnd(inter, scale=0.2, shift=1.0))
        m.out_proj.weight.copy_(rnd(*m.out_proj.weight.shape, scale=inter ** -0.5))
        if m.out_proj.bias is not None:
            m.out_proj.bias.copy_(rnd(*m.out_proj.bias.shape, scale=0.1))


def sequential_reference(m, x, eps, norm_group, dt_lo, dt_hi):
    """The mixer as a plain per-token recurrence in float64 (no chunks): the math the chunked scan
    must equal. x: [T, hidden] -> [T, hidden]."""
    H, P, N, G, K = m.num_heads, m.head_dim, m.ssm_state_size, m.n_groups, m.conv_kernel_size
    inter = H * P
    zxbcdt = torch.nn.functional.linear(x, m.in_proj.weight, m.in_proj.bias)  # [T, I + conv_dim + H]
    z, xbc, dt = zxbcdt.split([inter, m.conv_dim, H], dim=-1)
    w = m.conv1d.weight[:, 0, :]  # [conv_dim, K]
    conv = torch.zeros_like(xbc)
    for t in range(x.shape[0]):
        for k in range(K):
            s = t - (K - 1) + k
            if s >= 0:
                conv[t] += w[:, k] * xbc[s]
    if m.conv1d.bias is not None:
        conv += m.conv1d.bias
    conv = torch.nn.functional.silu(conv)
    xs, B, C = conv.split([inter, G * N, G * N], dim=-1)
    dt = torch.clamp(torch.nn.functional.softplus(dt + m.dt_bias), min=dt_lo, max=dt_hi)  # [T, H]
    A = -torch.exp(m.A_log)
    y = torch.zeros(x.shape[0], inter, dtype=torch.float64)
    for h in range(H):
        g = h // (H // G)
        S = torch.zeros(P, N, dtype=torch.float64)
        for t in range(x.shape[0]):
            xt = xs[t, h * P:(h + 1) * P]
            S = torch.exp(A[h] * dt[t, h]) * S + dt[t, h] * torch.outer(xt, B[t, g * N:(g + 1) * N])
            y[t, h * P:(h + 1) * P] = S @ C[t, g * N:(g + 1) * N] + m.D[h] * xt
    hg = (y * torch.nn.functional.silu(z)).view(x.shape[0], inter // norm_group, norm_group)
    hg = hg * torch.rsqrt(hg.pow(2).mean(-1, keepdim=True) + eps)
    out = m.norm.weight * hg.view(x.shape[0], inter)
    return torch.nn.functional.linear(out, m.out_proj.weight, m.out_proj.bias)


def make_case(name, m, cfg_keys, mixer, seed, hidden, out_dir):
    g = torch.Generator().manual_seed(seed)
    m = m.to(torch.float64).eval()
    randomise(m, g, hidden, mixer["intermediate_size"], mixer["num_heads"])
    x = torch.randn(1, T, hidden, generator=g).to(torch.float64)  # float32 values
    with torch.no_grad():
        with float32_casts_lifted():
            y = m(x)[0]  # [T, hidden]
        y_shipped = m(x)[0]  # with the module's own float32 casts
        y_seq = sequential_reference(m, x[0], mixer["norm_eps"], mixer["norm_group_size"],
                                     mixer["time_step_min"], mixer["time_step_max"])
    scale = y.abs().max().item()
    err_shipped = (y_shipped - y).abs().max().item() / scale
    err_seq = (y_seq - y).abs().max().item() / scale
    assert err_shipped < 1e-4, f"{name}: the module with its float32 casts differs by {err_shipped}"
    assert err_seq < 1e-10, f"{name}: the sequential recurrence differs by {err_seq}"
    # The clamps must bite somewhere, or the case would not test them.
    dt = torch.nn.functional.softplus(m.in_proj(x)[0, :, -mixer["num_heads"]:] + m.dt_bias)
    low = (dt < mixer["time_step_min"]).double().mean().item()
    high = (dt > mixer["time_step_max"]).double().mean().item()
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in m.state_dict().items()}
    tensors["x"] = x[0].to(torch.float32).contiguous()
    tensors["y"] = y.detach().contiguous()
    # JSON has no infinity: an unbounded time_step_max is written as null.
    mixer_json = dict(mixer, time_step_max=None if mixer["time_step_max"] == float("inf") else mixer["time_step_max"])
    meta = {"format": "pt", "config": json.dumps(cfg_keys, sort_keys=True), "mixer": json.dumps(mixer_json, sort_keys=True),
            "transformers": transformers.__version__, "torch": torch.__version__}
    save_file(tensors, os.path.join(out_dir, f"{name}.safetensors"), metadata=meta)
    print(f"{name}: T={T} |y|max={scale:.4g} float32-casts vs float64 {err_shipped:.2e}, sequential vs chunked "
          f"{err_seq:.2e}, dt below min {low:.1%}, above max {high:.1%}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    nemo_keys = dict(hidden_size=64, layers_block_type=["linear_attention"], mamba_num_heads=8, mamba_head_dim=12,
                     n_groups=2, ssm_state_size=16, conv_kernel=4, chunk_size=32, use_bias=True, use_conv_bias=True,
                     time_step_min=0.05, layer_norm_epsilon=1e-5, mamba_hidden_act="silu")
    nemo = NemotronHMamba2Mixer(NemotronHConfig(**nemo_keys), layer_idx=0)
    nemo_mixer = dict(hidden_size=64, num_heads=8, head_dim=12, intermediate_size=96, state_size=16, n_groups=2,
                      conv_kernel=4, chunk_size=32, norm_eps=1e-5, norm_group_size=96 // 2,
                      time_step_min=0.05, time_step_max=float("inf"))
    assert nemo.time_step_limit == (nemo_mixer["time_step_min"], nemo_mixer["time_step_max"])
    assert nemo.norm.group_size == nemo_mixer["norm_group_size"]
    make_case("nemotron_h", nemo, nemo_keys, nemo_mixer, 2801, 64, args.out)

    gran_keys = dict(hidden_size=64, num_hidden_layers=1, layer_types=["mamba"], mamba_n_heads=8, mamba_d_head=16,
                     mamba_n_groups=2, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=32,
                     mamba_proj_bias=False, mamba_conv_bias=False, time_step_limit=[0.02, 0.6], rms_norm_eps=1e-6,
                     hidden_act="silu", num_attention_heads=4)
    gran = GraniteMoeHybridMambaLayer(GraniteMoeHybridConfig(**gran_keys), layer_idx=0)
    gran_mixer = dict(hidden_size=64, num_heads=8, head_dim=16, intermediate_size=128, state_size=16, n_groups=2,
                      conv_kernel=4, chunk_size=32, norm_eps=1e-6, norm_group_size=128,
                      time_step_min=0.02, time_step_max=0.6)
    assert tuple(gran.time_step_limit) == (0.02, 0.6)
    make_case("granitemoehybrid", gran, gran_keys, gran_mixer, 2802, 64, args.out)


if __name__ == "__main__":
    main()
