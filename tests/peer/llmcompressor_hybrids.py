#!/usr/bin/env python3
"""What llm-compressor's FP8 KV-cache calibration does on the hybrid families (issue 28), as
docs/hybrids.md states it.

usage: llmcompressor_hybrids.py [CTCAL_BINARY] [SOURCE_DIR]   (both unused: no ctcal run here)

For each family a tiny random checkpoint is written with save_pretrained in a temp dir
(transformers 5.17 classes, two attention layers among linear-attention / Mamba layers), loaded
back in float32, and llm-compressor's `oneshot` runs the shipped FP8 per-tensor KV recipe on two
random token rows, on the CPU. The saved checkpoint's *_scale tensors are then compared with
max|K| / 448 and max|V| / 448 of the same rows, taken from the attention modules' own
`past_key_values.update(key, value)` call (the post-norm, post-RoPE K that compressed-tensors'
QuantizedKVCache sees), computed here in float32 without quantization.

Per family it prints where llm-compressor put k_scale / v_scale, whether they are calibrated
(within 1e-4 relative of the reference: llm-compressor 0.14 propagates under
DisableQuantization, see oneshot_vs_ctcal.py, so every layer sees the unquantized activations the
reference sees), and whether any non-attention layer got a scale. Exit 0 when every observation is the one EXPECTED below (the table of
docs/hybrids.md), 1 otherwise, 77 when the peer venv lacks llm-compressor.
"""
import json
import os
import re
import sys
import tempfile
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_util as pu  # noqa: E402

pu.enter_venv()

import torch  # noqa: E402

SEQ = 80          # longer than the tiny Mamba chunk (32) and the conv kernel (4)
FP8_MAX = 448.0
TOL = 1e-4

# family -> (scale prefix of each attention layer, calibrated?, non-attention layer indices)
EXPECTED = {
    "qwen3_5": (["model.layers.1.self_attn", "model.layers.3.self_attn"], True, [0, 2]),
    "qwen3_5_moe": (["model.layers.1.self_attn", "model.layers.3.self_attn"], True, [0, 2]),
    "qwen3_5_vl": (["model.language_model.layers.1.self_attn",
                    "model.language_model.layers.3.self_attn"], True, [0, 2]),
    "qwen3_next": (["model.layers.1.self_attn", "model.layers.3.self_attn"], True, [0, 2]),
    # The attention mixer lives at `layers.N.mixer`, which llm-compressor's observer regex
    # re:.*(self_attn|attention)$ does not match: compressed-tensors still attaches k_scale/v_scale
    # (torch.empty) and they are saved uncalibrated.
    "nemotron_h": (["backbone.layers.1.mixer", "backbone.layers.4.mixer"], False, [0, 2, 3, 5]),
    "granitemoehybrid": (["model.layers.1.self_attn", "model.layers.3.self_attn"], True, [0, 2]),
}

GDN = dict(linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
           linear_num_value_heads=4, layer_types=["linear_attention", "full_attention"] * 2)
ATTN = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16)
MOE = dict(moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=4,
           num_experts_per_tok=2)
COMMON = dict(vocab_size=128, hidden_size=64, tie_word_embeddings=False)


def build(family):
    """(model class, config) of the tiny random checkpoint of a family."""
    import transformers as T
    if family == "qwen3_5":
        return T.Qwen3_5ForCausalLM, T.Qwen3_5TextConfig(**COMMON, **ATTN, **GDN, intermediate_size=96,
                                                          num_hidden_layers=4)
    if family == "qwen3_5_moe":
        return T.Qwen3_5MoeForCausalLM, T.Qwen3_5MoeTextConfig(**COMMON, **ATTN, **GDN, **MOE,
                                                                num_hidden_layers=4)
    if family == "qwen3_5_vl":
        text = dict(COMMON, **ATTN, **GDN, intermediate_size=96, num_hidden_layers=4)
        vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      num_position_embeddings=16)
        return T.Qwen3_5ForConditionalGeneration, T.Qwen3_5Config(text_config=text, vision_config=vision)
    if family == "qwen3_next":
        return T.Qwen3NextForCausalLM, T.Qwen3NextConfig(**COMMON, **ATTN, **GDN, **MOE, intermediate_size=96,
                                                          num_hidden_layers=4)
    if family == "nemotron_h":
        return T.NemotronHForCausalLM, T.NemotronHConfig(
            **COMMON, **ATTN, layers_block_type=["mamba", "attention", "mlp", "mamba", "attention", "moe"],
            intermediate_size=96, ssm_state_size=16, mamba_num_heads=8, mamba_head_dim=16, n_groups=2,
            chunk_size=32, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
            moe_shared_expert_intermediate_size=32, use_mamba_kernels=False)
    if family == "granitemoehybrid":
        return T.GraniteMoeHybridForCausalLM, T.GraniteMoeHybridConfig(
            **COMMON, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            num_local_experts=4, num_experts_per_tok=2, shared_intermediate_size=64,
            layer_types=["mamba", "attention", "mamba", "attention"], mamba_n_heads=8, mamba_n_groups=1,
            mamba_d_state=16, mamba_d_head=16, mamba_chunk_size=32, position_embedding_type="rope",
            attention_multiplier=0.25)
    raise KeyError(family)


class Recorder:
    """Stands in for past_key_values in one attention module: keeps max|K|, max|V|."""

    def __init__(self):
        self.k = self.v = 0.0

    def update(self, key, value, *args, **kwargs):
        self.k = max(self.k, key.abs().max().item())
        self.v = max(self.v, value.abs().max().item())
        return key, value


def is_kv_attention(module):
    """compressed-tensors' own test (initialize.py is_cached_attention_module)."""
    from compressed_tensors.quantization.lifecycle.initialize import is_cached_attention_module
    return is_cached_attention_module(module)


def reference(model, rows):
    """{saved-name prefix: (max|K|, max|V|)} of every KV attention module, float32, no quantization.
    Module names are the in-memory ones; the checkpoint may rename them (Nemotron-H: backbone.)."""
    recs, hooks = {}, []
    for name, module in model.named_modules():
        if is_kv_attention(module):
            rec = recs[name] = Recorder()
            kw = "past_key_values"

            def pre(mod, args, kwargs, rec=rec, kw=kw):
                kwargs[kw] = rec
                return args, kwargs
            hooks.append(module.register_forward_pre_hook(pre, with_kwargs=True))
    with torch.no_grad():
        for ids in rows:
            model(input_ids=torch.tensor([ids]), use_cache=False)
    for h in hooks:
        h.remove()
    return {n: (r.k, r.v) for n, r in recs.items()}


def saved_name(family, name):
    """The checkpoint name transformers 5.17 writes for an in-memory module name."""
    if family == "nemotron_h":
        return re.sub(r"^model\.", "backbone.", name)
    return name


def run(family, root, recipe, rows):
    from datasets import Dataset
    from llmcompressor import oneshot
    from loguru import logger
    from transformers import AutoModelForCausalLM  # noqa: F401 (the oneshot path imports it too)
    import oneshot_vs_ctcal as ovc
    cls, config = build(family)
    torch.manual_seed(0)
    src, out = os.path.join(root, family), os.path.join(root, family + "-fp8kv")
    cls(config).float().save_pretrained(src)
    model = cls.from_pretrained(src, dtype=torch.float32)
    model.eval()
    ref = {saved_name(family, n): v for n, v in reference(model, rows).items()}
    sink = logger.add(os.path.join(root, family + ".log"), level="WARNING")
    try:
        oneshot(model=model, dataset=Dataset.from_dict({"input_ids": rows}), recipe=recipe,
                processor=ovc.peer_tokenizer(), num_calibration_samples=len(rows), max_seq_length=SEQ,
                shuffle_calibration_samples=False, batch_size=1)
        model.save_pretrained(out, save_compressed=True)
    finally:
        logger.remove(sink)
    scales = {k: v for k, v in pu.load_tensors(out).items() if k.endswith(("_scale", "_zero_point"))}
    qc = json.load(open(os.path.join(out, "config.json"))).get("quantization_config", {})
    return ref, scales, qc


def main():
    recipe = os.path.join(pu.SRC, "recipes", "fp8_kv_per_tensor.yaml")
    if not os.path.isfile(recipe):
        pu.skip(f"{recipe} not found")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(3, 128, (SEQ - i,), generator=g).tolist() for i in range(2)]
    families = sys.argv[3:] or list(EXPECTED)
    with tempfile.TemporaryDirectory(prefix="ctcal-peer-hybrids-") as root:
        for family in families:
            prefixes, calibrated, other_layers = EXPECTED[family]
            print(f"== {family}", flush=True)
            try:
                ref, scales, qc = run(family, root, recipe, rows)
            except Exception as e:  # noqa: BLE001 - the doc states that each family runs
                traceback.print_exc()
                pu.check(False, f"{family}: oneshot failed: {type(e).__name__}: {e}")
                continue
            names = sorted(scales)
            print("  scales written:", ", ".join(names) or "none", flush=True)
            pu.check(qc.get("kv_cache_scheme") is not None, f"{family}: config has no kv_cache_scheme")
            want = sorted(f"{p}.{s}_scale" for p in prefixes for s in "kv")
            pu.check(names == want, f"{family}: scale tensors {names}, docs/hybrids.md says {want}")
            for layer in other_layers:
                stray = [n for n in names if re.search(rf"\.layers\.{layer}\.", n)]
                pu.check(not stray, f"{family}: non-attention layer {layer} got {stray}")
            pu.check(sorted(ref) == sorted(prefixes),
                     f"{family}: KV attention modules {sorted(ref)}, expected {sorted(prefixes)}")
            for p in prefixes:
                if p not in ref or f"{p}.k_scale" not in scales or f"{p}.v_scale" not in scales:
                    continue
                for s, amax in zip("kv", ref[p]):
                    got = scales[f"{p}.{s}_scale"].float().flatten()
                    want_s = amax / FP8_MAX
                    ok = got.numel() == 1 and bool(torch.isfinite(got).all()) and \
                        abs(got.item() - want_s) <= TOL * want_s
                    print(f"  {p}.{s}_scale = {got.tolist()}  reference max|{s.upper()}|/448 = {want_s:.6g}"
                          f"  -> {'calibrated' if ok else 'NOT calibrated'}", flush=True)
                    pu.check(ok == calibrated, f"{family}: {p}.{s}_scale is "
                             f"{'calibrated' if ok else 'not calibrated'}; docs/hybrids.md says "
                             f"{'calibrated' if calibrated else 'not calibrated'}")
            targets = __import__("compressed_tensors.quantization.utils",
                                 fromlist=["KV_CACHE_TARGETS"]).KV_CACHE_TARGETS
            matched = [p for p in prefixes if any(re.fullmatch(t[3:], p.replace("backbone.", "model."))
                                                 for t in targets if t.startswith("re:"))]
            print(f"  llm-compressor observer targets {targets} match: {matched or 'none'}", flush=True)
    pu.finish("llmcompressor_hybrids")


if __name__ == "__main__":
    main()
