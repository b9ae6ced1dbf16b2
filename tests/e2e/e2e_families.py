#!/usr/bin/env python3
"""e2e for every decoder family (issue 14): calibrates one tiny golden model per family (made by
transformers 5.17: tests/golden/make_family_golden.py) on the golden token ids, then checks the
output with the independent safetensors reader against the float64 transformers reference:

- scale tensors under the names vLLM's loader of that family maps (`<prefix>layers.{i}.self_attn.
  {q,k,v}_scale`; prefix `language_model.model.` for Gemma3ForConditionalGeneration as transformers
  5.17 saves it), stored in the model's dtype;
- per-tensor k/v scales = absmax / 448 of the golden K/V within one ulp of the stored dtype + 1e-4;
- the attention config group's single target is the family's attention class (e.g. Qwen3Attention);
- `ctcal inspect --strict` finds no problem; `ctcal eval`'s baseline NLL equals transformers' loss
  (token-weighted over the samples) within 1e-4.

Usage: e2e_families.py CTCAL_BINARY SOURCE_DIR
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_reader as st  # noqa: E402
from e2e_util import check, finish  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
GOLDEN = os.path.join(SRC, "tests", "golden", "data")
# case -> (attention class, tensor-name prefix)
CASES = {
    "mistral_sliding": ("MistralAttention", "model."),
    "qwen2_sliding_fp32": ("Qwen2Attention", "model."),
    "qwen3_head_dim_bf16": ("Qwen3Attention", "model."),
    "gemma3_text_bf16_classic": ("Gemma3Attention", "model."),
    "gemma3_mm_fp32": ("Gemma3Attention", "language_model.model."),
    "phi3_partial_su_sliding_bf16": ("Phi3Attention", "model."),
    "qwen3_moe_fused_sliding_bf16": ("Qwen3MoeAttention", "model."),
    "mixtral_sliding_fp32": ("MixtralAttention", "model."),
    "gpt_oss_yarn_fp32": ("GptOssAttention", "model."),
    "gpt_oss_classic_bf16": ("GptOssAttention", "model."),
}
RECIPE = """
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      config_groups:
        attention:
          targets: ["re:.*self_attn$"]
          input_activations: {num_bits: 8, type: float, symmetric: true, strategy: tensor, observer: static_minmax}
"""
ULP_REL = {"F32": 2.0 ** -23, "BF16": 2.0 ** -7, "F16": 2.0 ** -10}


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True)


def shards(out):
    idx = json.load(open(os.path.join(out, "model.safetensors.index.json")))
    where = {}
    for name, f in idx["weight_map"].items():
        where[name] = os.path.join(out, f)
    return where


def calibrate_case(case, recipe_text, tmp, label):
    """Calibrates golden case `case` on its own samples with `recipe_text`: (golden, model, data,
    out), or None after recording the failure."""
    golden = json.load(open(os.path.join(GOLDEN, case + ".json")))
    model = os.path.join(GOLDEN, golden["model_dir"])
    data = os.path.join(tmp, case + ".jsonl")
    with open(data, "w") as f:
        for ids in golden["samples"]:
            f.write(json.dumps({"input_ids": ids}) + "\n")
    recipe = os.path.join(tmp, label + ".yaml")
    with open(recipe, "w") as f:
        f.write(recipe_text)
    out = os.path.join(tmp, f"{case}-{label}")
    r = run("calibrate", recipe, "--model", model, "--dataset", data, "--output", out, "--no-shuffle", "-q")
    check(r.returncode == 0, f"{case} {label}: calibrate exit {r.returncode}: {r.stderr[-400:]}")
    return (golden, model, data, out) if r.returncode == 0 else None


def check_case(case, attn_class, prefix, tmp):
    done = calibrate_case(case, RECIPE, tmp, "out")
    if not done:
        return
    golden, model, data, out = done
    cfg = json.load(open(os.path.join(out, "config.json")))
    qc = cfg["quantization_config"]
    check(qc["config_groups"]["attention"]["targets"] == [attn_class],
          f"{case}: attention group targets {qc['config_groups']['attention']['targets']}, want [{attn_class}]")
    text = cfg.get("text_config", cfg)
    dtype = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[cfg.get("dtype") or cfg.get("torch_dtype") or text.get("dtype")]
    where = shards(out)
    for layer, g in enumerate(golden["layers"]):
        for site in ("q", "k", "v"):
            name = f"{prefix}layers.{layer}.self_attn.{site}_scale"
            check(name in where, f"{case}: {name} missing")
            if name not in where:
                continue
            header, _, _ = st.read_header(where[name])
            check(header[name]["dtype"] == dtype and header[name]["shape"] == [1],
                  f"{case}: {name} is {header[name]['dtype']} {header[name]['shape']}, want {dtype} [1]")
            got = st.values(where[name], name)[0]
            want = max(abs(g[site]["min"]), abs(g[site]["max"])) / 448.0
            err = abs(got - want) / want
            check(err <= ULP_REL[dtype] + 1e-4, f"{case}: {name} = {got}, transformers {want} (rel {err:.3g})")
    r = run("inspect", out, "--strict", "--json")
    check(r.returncode == 0, f"{case}: inspect --strict exit {r.returncode}: {r.stdout[-600:]}")
    r = run("eval", "--model", model, "--dataset", data, "--quantized", out, "--json", "--no-shuffle")
    check(r.returncode == 0, f"{case}: eval exit {r.returncode}: {r.stderr[-400:]}")
    if r.returncode == 0:
        doc = json.loads(r.stdout)
        lengths = [len(s) - 1 for s in golden["samples"]]
        want = sum(l * n for l, n in zip(golden["loss"], lengths)) / sum(lengths)
        got = doc["baseline"]["nll"]
        check(abs(got - want) <= 1e-4, f"{case}: eval baseline NLL {got}, transformers loss {want}")
        print(f"{case}: baseline NLL {got:.6f} vs transformers {want:.6f} (diff {abs(got - want):.2g})")


R2_RECIPE = """
quant_stage:
  quant_modifiers:
    SpinQuantModifier: {rotations: [R2], transform_type: hadamard}
    QuantizationModifier:
      kv_cache_scheme: {num_bits: 8, type: float, symmetric: true, strategy: tensor, observer: static_minmax}
"""


def check_phi3_r2(tmp):
    """R2 on Phi-3's fused qkv_proj: q/k rows kept bit for bit, v rows rotated, o_proj rewritten, and
    v_scale = absmax of transformers' V rotated by H/sqrt(d) per head, / 448."""
    case = "phi3_longrope_fp32"
    done = calibrate_case(case, R2_RECIPE, tmp, "r2")
    if not done:
        return
    golden, model, data, out = done
    cfg = json.load(open(os.path.join(model, "config.json")))
    d = cfg["hidden_size"] // cfg["num_attention_heads"]
    q_rows, kv_rows = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    row_bytes = cfg["hidden_size"] * 4
    src = os.path.join(model, "model.safetensors")
    where = shards(out)
    for layer, g in enumerate(golden["layers"]):
        name = f"model.layers.{layer}.self_attn.qkv_proj.weight"
        before, after = st.tensor_bytes(src, name), st.tensor_bytes(where[name], name)
        qk = (q_rows + kv_rows) * row_bytes
        check(before[:qk] == after[:qk], f"{case} R2: {name} q/k rows changed")
        check(before[qk:] != after[qk:], f"{case} R2: {name} v rows not rotated")
        o = f"model.layers.{layer}.self_attn.o_proj.weight"
        check(st.tensor_bytes(src, o) != st.tensor_bytes(where[o], o), f"{case} R2: {o} not rewritten")
        vs = f"model.layers.{layer}.self_attn.v_scale"
        got = st.values(where[vs], vs)[0]
        want = max(abs(g["v"]["rot_min"]), abs(g["v"]["rot_max"])) / 448.0
        check(abs(got - want) / want <= ULP_REL["F32"] + 1e-4, f"{case} R2: {vs} = {got}, transformers {want}")


def check_gpt_oss_mxfp4(tmp):
    """gpt-oss with MXFP4 experts (as published): eval and inspect read it (baseline NLL =
    transformers' loss on the dequantized experts); calibrate refuses before any work (exit 4,
    naming quant_method mxfp4), since its output cannot be both MXFP4 and compressed-tensors."""
    case = "gpt_oss_mxfp4"
    golden = json.load(open(os.path.join(GOLDEN, case + ".json")))
    model = os.path.join(GOLDEN, golden["model_dir"])
    data = os.path.join(tmp, case + ".jsonl")
    with open(data, "w") as f:
        for ids in golden["samples"]:
            f.write(json.dumps({"input_ids": ids}) + "\n")
    recipe = os.path.join(tmp, "mxfp4.yaml")
    with open(recipe, "w") as f:
        f.write(RECIPE)
    r = run("calibrate", recipe, "--model", model, "--dataset", data, "--output", os.path.join(tmp, "mxfp4-out"),
            "--no-shuffle", "-q")
    check(r.returncode == 4 and "mxfp4" in r.stderr, f"{case}: calibrate exit {r.returncode}, want 4 naming mxfp4: {r.stderr[-400:]}")
    check(not os.path.exists(os.path.join(tmp, "mxfp4-out", "config.json")), f"{case}: calibrate wrote an output")
    r = run("eval", "--model", model, "--dataset", data, "--recipe", recipe, "--calibration-dataset", data,
            "--json", "--no-shuffle")
    check(r.returncode == 0, f"{case}: eval exit {r.returncode}: {r.stderr[-400:]}")
    if r.returncode == 0:
        doc = json.loads(r.stdout)
        lengths = [len(s) - 1 for s in golden["samples"]]
        want = sum(l * n for l, n in zip(golden["loss"], lengths)) / sum(lengths)
        got = doc["baseline"]["nll"]
        check(abs(got - want) <= 1e-4, f"{case}: eval baseline NLL {got}, transformers loss {want}")
        print(f"{case}: baseline NLL {got:.6f} vs transformers {want:.6f} (diff {abs(got - want):.2g})")
    r = run("inspect", model, "--json")
    check(r.returncode == 0, f"{case}: inspect exit {r.returncode}: {r.stdout[-400:]} {r.stderr[-400:]}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for case, (attn, prefix) in CASES.items():
            check_case(case, attn, prefix, tmp)
        check_phi3_r2(tmp)
        check_gpt_oss_mxfp4(tmp)
    finish("e2e families")


if __name__ == "__main__":
    main()
