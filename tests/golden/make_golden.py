#!/usr/bin/env python3
"""Makes ctcal's golden data with the real reference stack (transformers + PyTorch).

Run on the GPU machine (PyTorch 2.11, transformers 5.17, safetensors), or on any CPU with the peer
venv (scripts/peer_venv.sh; the peer test peer.golden_regenerates does this for stories260K):

    python3 tests/golden/make_golden.py --stories DIR_OF_HF_stories260K --out tests/golden/data
    python3 tests/golden/make_golden.py --stories DIR --out /tmp/g --only stories260K

For each case it (1) builds a tiny Llama/Mistral checkpoint with transformers (random weights,
scaled so that outliers and per-head differences show), writes it with save_pretrained (some in
the classic config spelling, one sharded), (2) reloads it in float64 with eager attention and
(3) records, for fixed token ids: per-layer Q and K after RoPE and V (min/max per tensor and per
head, also after the SpinQuant Sylvester rotation H/sqrt(d) for R3/R2), a few raw rows, the
logits and the loss. The real stories260K model is a case too (weights not copied).

The reference is computed in float64 from the stored weights, so the tolerance measures ctcal,
not bf16 noise (transformers keeps the RoPE angles in fp32; ctcal does the same).
"""
import argparse
import json
import math
import os
import shutil

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral

CASES = [
    # name, arch, config kwargs, dtype, spelling, shard size
    ("gqa_bf16_classic", "llama",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, vocab_size=96, max_position_embeddings=64,
          tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
     torch.bfloat16, "classic", "40KB"),
    ("mha_fp16_tied", "llama",
     dict(hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=4, vocab_size=96, max_position_embeddings=64,
          tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
     torch.float16, "v5", None),
    ("llama3_rope_legacy_type", "llama",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=1, vocab_size=96, max_position_embeddings=128,
          tie_word_embeddings=False,
          rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 16}),
     torch.float32, "classic_legacy_type", None),
    ("head_dim_bias_fp32", "llama",
     dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, head_dim=16, vocab_size=96, max_position_embeddings=64,
          attention_bias=True, mlp_bias=True, tie_word_embeddings=False,
          rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}),
     torch.float32, "v5", None),
    ("dynamic_rope_bf16", "llama",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, vocab_size=96, max_position_embeddings=16,
          tie_word_embeddings=True,
          rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}),
     torch.bfloat16, "classic", None),
    ("mistral_sliding", "mistral",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, head_dim=16, vocab_size=96, max_position_embeddings=64,
          sliding_window=6, tie_word_embeddings=False,
          rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
     torch.float32, "v5", None),
]

SAMPLE_LENGTHS = [11, 24]
ROW_TOKENS = 2  # raw rows recorded for the first sample


def sylvester(n):
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    assert h.shape[0] == n, "head_dim must be a power of two"
    return h


def spike_weights(model, seed):
    """Random-init models have tiny, featureless activations: scale q/k/v up, plant outliers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for li, layer in enumerate(model.model.layers):
            a = layer.self_attn
            a.q_proj.weight.mul_(6.0)
            a.k_proj.weight.mul_(6.0)
            a.v_proj.weight.mul_(4.0)
            rows = a.k_proj.weight.shape[0]
            for r in torch.randint(0, rows, (3,), generator=g).tolist():
                a.k_proj.weight[r].mul_(8.0 + 4.0 * li)  # a few large key channels
            hd = a.v_proj.weight.shape[0]
            a.v_proj.weight[: hd // 2].mul_(3.0)  # kv heads differ in range
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.copy_(1.0 + 0.2 * torch.randn(norm.weight.shape, generator=g))
            for lin in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, layer.mlp.gate_proj,
                        layer.mlp.up_proj, layer.mlp.down_proj):
                if lin.bias is not None:
                    lin.bias.copy_(0.5 * torch.randn(lin.bias.shape, generator=g))
        model.model.norm.weight.copy_(1.0 + 0.2 * torch.randn(model.model.norm.weight.shape, generator=g))


def respell_config(path, spelling):
    """transformers 5 writes rope_parameters/dtype; hub checkpoints mostly use the classic names."""
    with open(path) as f:
        cfg = json.load(f)
    if spelling.startswith("classic"):
        rp = cfg.pop("rope_parameters")
        cfg["rope_theta"] = rp.pop("rope_theta")
        rtype = rp.pop("rope_type")
        if rtype == "default" and not rp:
            cfg["rope_scaling"] = None
        else:
            key = "type" if spelling == "classic_legacy_type" else "rope_type"
            cfg["rope_scaling"] = {key: rtype, **rp}
        cfg["torch_dtype"] = cfg.pop("dtype")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


class Capture:
    """Captures post-RoPE Q/K (wrapping apply_rotary_pos_emb) and V (v_proj hook) per layer."""

    def __init__(self, model):
        self.layer = None
        self.store = {}  # layer -> {"q": [tensors [H,S,D]], ...}
        self.handles = []
        cfg = model.config
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        for i, layer in enumerate(model.model.layers):
            self.handles.append(layer.self_attn.register_forward_pre_hook(self._pre(i)))
            self.handles.append(layer.self_attn.v_proj.register_forward_hook(self._v))
        self.originals = {}
        for mod in (modeling_llama, modeling_mistral):
            orig = mod.apply_rotary_pos_emb
            self.originals[mod] = orig

            def wrapped(q, k, cos, sin, *a, _orig=orig, **kw):
                qo, ko = _orig(q, k, cos, sin, *a, **kw)
                self._put("q", qo[0])
                self._put("k", ko[0])
                return qo, ko

            mod.apply_rotary_pos_emb = wrapped

    def _pre(self, i):
        def hook(module, args):
            self.layer = i
        return hook

    def _v(self, module, inputs, out):
        b, s, _ = out.shape
        self._put("v", out.view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)[0])

    def _put(self, site, t):
        self.store.setdefault(self.layer, {}).setdefault(site, []).append(t.detach().clone())

    def close(self):
        for h in self.handles:
            h.remove()
        for mod, orig in self.originals.items():
            mod.apply_rotary_pos_emb = orig


def stats(tensors, head_dim):
    """tensors: list of [H, S, D] float64 (one per sample)."""
    h = sylvester(head_dim) / math.sqrt(head_dim)
    cat = torch.cat(tensors, dim=1)  # [H, sum S, D]
    rot = cat @ h
    out = {
        "min": cat.min().item(), "max": cat.max().item(),
        "head_min": cat.amin(dim=(1, 2)).tolist(), "head_max": cat.amax(dim=(1, 2)).tolist(),
        "rot_min": rot.min().item(), "rot_max": rot.max().item(),
        "rot_head_min": rot.amin(dim=(1, 2)).tolist(), "rot_head_max": rot.amax(dim=(1, 2)).tolist(),
        # per-sample absmax (for observers that keep the last sample or average)
        "sample_absmax": [t.abs().max().item() for t in tensors],
        "sample_min": [t.min().item() for t in tensors],
        "sample_max": [t.max().item() for t in tensors],
    }
    return out


def reference(model_dir, samples):
    model = LlamaForCausalLM if "Llama" in json.load(open(os.path.join(model_dir, "config.json")))["architectures"][0] \
        else MistralForCausalLM
    model = model.from_pretrained(model_dir, dtype=torch.float64, attn_implementation="eager")
    model.eval()
    cap = Capture(model)
    logits, losses = [], []
    with torch.no_grad():
        for ids in samples:
            t = torch.tensor([ids])
            out = model(t, labels=t, use_cache=False)
            logits.append(out.logits[0].tolist())
            losses.append(out.loss.item())
    cap.close()
    layers = []
    for li in sorted(cap.store):
        layers.append({site: stats(cap.store[li][site], cap.head_dim) for site in ("q", "k", "v")})
    last = max(cap.store)
    rows = {}
    for li in (0, last):
        rows[str(li)] = {site: cap.store[li][site][0][:, :ROW_TOKENS, :].tolist() for site in ("q", "k", "v")}
    return {"layers": layers, "rows": rows, "logits": logits, "loss": losses}


def make_case(name, arch, kwargs, dtype, spelling, shard, out_dir, seed):
    torch.manual_seed(seed)
    if arch == "llama":
        cfg = LlamaConfig(**kwargs)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = MistralConfig(**kwargs)
        model = MistralForCausalLM(cfg)
    spike_weights(model, seed)
    model = model.to(dtype)
    d = os.path.join(out_dir, "models", name)
    shutil.rmtree(d, ignore_errors=True)
    if shard:
        model.save_pretrained(d, max_shard_size=shard)
    else:
        model.save_pretrained(d)
    respell_config(os.path.join(d, "config.json"), spelling)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stories", required=True, help="HF stories260K directory")
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", help="regenerate this one case (e.g. stories260K); the sample "
                    "generator is advanced exactly as a full run does, so the samples are the same")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__}
    for i, (name, arch, kwargs, dtype, spelling, shard) in enumerate(CASES):
        if args.only and args.only != name:
            for n in SAMPLE_LENGTHS:  # the draws this case would make (make_case does not use g)
                torch.randint(0, kwargs["vocab_size"], (n,), generator=g)
            continue
        d = make_case(name, arch, kwargs, dtype, spelling, shard, args.out, 100 + i)
        vocab = kwargs["vocab_size"]
        samples = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in SAMPLE_LENGTHS]
        ref = reference(d, samples)
        ref.update({"case": name, "model_dir": f"models/{name}", "samples": samples, **meta})
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump(ref, f)
        print(name, "done", flush=True)
    # The real trained model (read from ../shared/data, not copied into the repository).
    if args.only and args.only != "stories260K":
        return
    samples = [torch.randint(1, 512, (n,), generator=g).tolist() for n in (20, 48)]
    for s in samples:
        s[0] = 1  # BOS, as the model was trained
    ref = reference(args.stories, samples)
    ref.update({"case": "stories260K", "model_dir": "$CTCAL_DATA/hf/stories260K", "samples": samples, **meta})
    with open(os.path.join(args.out, "stories260K.json"), "w") as f:
        json.dump(ref, f)
    print("stories260K done", flush=True)


if __name__ == "__main__":
    main()
