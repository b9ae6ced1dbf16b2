#!/usr/bin/env python3
"""ctcal beside a PyTorch forward of the same model on this machine (issue 6), same samples,
same thread count. PyTorch from Debian (`apt-get install python3-torch`, 1.13); the Llama
forward is written with the ops transformers runs (RMSNorm, rotate_half RoPE, GQA SDPA, SwiGLU),
weights read from the same safetensors.

    python3 bench/compare_pytorch.py --calib-bench build/bench/calib_bench --model /tmp/bench8 \
        [--threads 2] [--samples 32] [--seq 512]
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
import st_reader  # noqa: E402


def splitmix64_ids(seed, n, bound):
    """The same ids calib_bench draws: SplitMix64 + rejection-sampled bounded draws."""
    mask = (1 << 64) - 1
    state, out = seed, []
    threshold = ((1 << 64) - bound) % bound
    while len(out) < n:
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        if z >= threshold:
            out.append(z % bound)
    return out


def load(model_dir, dtype):
    index = json.load(open(os.path.join(model_dir, "model.safetensors.index.json")))["weight_map"]
    w = {}
    for shard in sorted(set(index.values())):
        tensors, _ = st_reader.read_all(os.path.join(model_dir, shard))
        for name, (dt, shape, raw) in tensors.items():
            assert dt == "BF16"
            t = torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).reshape(shape)
            w[name] = t.to(dtype)
    return w


def rms(x, g, eps):
    x32 = x.float()
    return g * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def forward(w, cfg, ids, dtype):
    H, nh, nkv, d = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    S = ids.shape[1]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    f = torch.outer(torch.arange(S).float(), inv)
    emb = torch.cat([f, f], -1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    mask = torch.full((S, S), float("-inf")).triu(1).to(dtype)

    def rot(x):
        return torch.cat([-x[..., d // 2:], x[..., :d // 2]], -1)

    h = w["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        x = rms(h, w[p + "input_layernorm.weight"], cfg["rms_norm_eps"])
        q = (x @ w[p + "self_attn.q_proj.weight"].T).view(1, S, nh, d).transpose(1, 2)
        k = (x @ w[p + "self_attn.k_proj.weight"].T).view(1, S, nkv, d).transpose(1, 2)
        v = (x @ w[p + "self_attn.v_proj.weight"].T).view(1, S, nkv, d).transpose(1, 2)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)
        # transformers' eager attention (torch 1.13 has no SDPA): fp32 softmax, cast back
        sc = (q @ k.transpose(-1, -2)) * d ** -0.5 + mask
        a = torch.softmax(sc.float(), -1).to(dtype) @ v
        h = h + a.transpose(1, 2).reshape(1, S, nh * d) @ w[p + "self_attn.o_proj.weight"].T
        x = rms(h, w[p + "post_attention_layernorm.weight"], cfg["rms_norm_eps"])
        g = torch.nn.functional.silu(x @ w[p + "mlp.gate_proj.weight"].T) * (x @ w[p + "mlp.up_proj.weight"].T)
        h = h + g @ w[p + "mlp.down_proj.weight"].T
    return h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib-bench", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq", type=int, default=512)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    flat = splitmix64_ids(7, a.samples * a.seq, cfg["vocab_size"])
    tokens = a.samples * a.seq
    print(f"torch {torch.__version__}, {a.threads} threads, {a.samples} x {a.seq} tokens", flush=True)
    for dtype in (torch.float32, torch.bfloat16):
        w = load(a.model, dtype)
        with torch.no_grad():
            forward(w, cfg, torch.tensor([flat[:64]]), dtype)  # warm-up
            t0 = time.perf_counter()
            for s in range(a.samples):
                forward(w, cfg, torch.tensor([flat[s * a.seq:(s + 1) * a.seq]]), dtype)
            dt = time.perf_counter() - t0
        print(f"pytorch {str(dtype).split('.')[1]:9s}: {tokens / dt:8.1f} tokens/s ({dt:.1f} s, all layers, no lm_head)", flush=True)
        del w
    for extra in ([], ["--bf16", "1"]):
        r = subprocess.run([a.calib_bench, "run", a.model, "--samples", str(a.samples), "--seq", str(a.seq),
                            "--threads", str(a.threads), *extra], capture_output=True, text=True)
        print(r.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
