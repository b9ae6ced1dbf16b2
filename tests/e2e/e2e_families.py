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
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_reader as st  # noqa: E402
from e2e_util import check, finish  # noqa: E402
from fp8_ref import f32, fp8_code  # noqa: E402

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
    # hybrids: scales on the full-attention layers only (golden "layers" null elsewhere)
    "qwen3_5_text_fp32": ("Qwen3_5Attention", "model."),
    "qwen3_5_mm_bf16": ("Qwen3_5Attention", "model.language_model."),
    "qwen3_5_moe_text_fp32": ("Qwen3_5MoeAttention", "model."),
    "qwen3_5_moe_mm_bf16": ("Qwen3_5MoeAttention", "model.language_model."),
    "qwen3_next_fp32": ("Qwen3NextAttention", "model."),
    "qwen3_next_sparse_step_bf16": ("Qwen3NextAttention", "model."),
    # Mamba2 hybrids: scales on the attention layers only; Nemotron-H's attention module is `mixer`
    # (vLLM 0.34 maps backbone.layers.N.mixer.{k,v}_scale to mixer.attn), targeted by class name
    # since "re:.*mixer$" would name its Mamba2 and MLP blocks too
    "nemotron_h_fp32": ("NemotronHAttention", "backbone.", "mixer"),
    "granitemoehybrid_fp32": ("GraniteMoeHybridAttention", "model."),
    # Nemotron-H with MoE blocks (sigmoid grouped routing, ungated relu2 experts and shared expert)
    "nemotron_h_moe_fp32": ("NemotronHAttention", "backbone.", "mixer"),
    # issue 29: NoPE layers (SmolLM3), post-norms and whole-projection q/k norms (OLMo 3)
    "smollm3_nope_sliding_fp32": ("SmolLM3Attention", "model."),
    "olmo3_classic_bias_bf16": ("Olmo3Attention", "model."),
    # sigmoid grouped routing with a correction bias, an ungated shared expert, dense first layers (GLM-4.5)
    "glm4_moe_grouped_fp32": ("Glm4MoeAttention", "model."),
    # whole-projection q/k norms, partial rotary, sigmoid routing with the block's correction bias (MiniMax-M2)
    "minimax_m2_fp32": ("MiniMaxM2Attention", "model."),
    # interleaved RoPE + L2 q/k norm + chunked attention, NoPE layers with temperature-tuned queries,
    # top-1 sigmoid routing on the expert inputs, a shared expert, fused input-major experts (Llama 4)
    "llama4_text_fp32": ("Llama4TextAttention", "model."),
    # the same inside the multimodal Llama4ForConditionalGeneration (language_model.model.*, the head at
    # language_model.lm_head, a vision tower copied unchanged)
    "llama4_mm_bf16": ("Llama4TextAttention", "language_model.model."),
    # sliding and full layers with their own head_dim / KV heads, k_eq_v full layers (no v_proj),
    # v_norm, proportional RoPE, layer_scalar, final_logit_softcapping (Gemma 4 text)
    "gemma4_text_fp32": ("Gemma4TextAttention", "model."),
    # the multimodal Gemma4ForConditionalGeneration: per-layer input embeddings, the language model at
    # model.language_model.*, a vision tower copied unchanged
    "gemma4_mm_bf16": ("Gemma4TextAttention", "model.language_model."),
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


# Golden models whose layout vLLM 0.34 refuses (the serving verdict says so; the vLLM judge checks it):
# Qwen2 with both sliding and full layers (Qwen2Model.__init__ asserts), Mixtral in the fused expert
# layout transformers 5 saves (vLLM's Mixtral has no mlp.experts module).
VLLM_REFUSES = {"qwen2_sliding_fp32": "AssertionError", "mixtral_fused_bf16": "block_sparse_moe"}


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True)


def shards(out):
    idx = json.load(open(os.path.join(out, "model.safetensors.index.json")))
    where = {}
    for name, f in idx["weight_map"].items():
        where[name] = os.path.join(out, f)
    return where


def check_baseline_nll(case, golden, doc):
    """eval's baseline NLL (token-weighted over the samples) against transformers' loss, 1e-4."""
    lengths = [len(s) - 1 for s in golden["samples"]]
    want = sum(l * n for l, n in zip(golden["loss"], lengths)) / sum(lengths)
    got = doc["baseline"]["nll"]
    check(abs(got - want) <= 1e-4, f"{case}: eval baseline NLL {got}, transformers loss {want}")
    print(f"{case}: baseline NLL {got:.6f} vs transformers {want:.6f} (diff {abs(got - want):.2g})")


def golden_inputs(case, tmp, suffix=""):
    """Golden case `case`: (golden, model directory, its samples written as an input_ids dataset)."""
    golden = json.load(open(os.path.join(GOLDEN, case + ".json")))
    data = os.path.join(tmp, case + suffix + ".jsonl")
    with open(data, "w") as f:
        for ids in golden["samples"]:
            f.write(json.dumps({"input_ids": ids}) + "\n")
    return golden, os.path.join(GOLDEN, golden["model_dir"]), data


def calibrate_case(case, recipe_text, tmp, label):
    """Calibrates golden case `case` on its own samples with `recipe_text`: (golden, model, data,
    out), or None after recording the failure."""
    golden, model, data = golden_inputs(case, tmp)
    recipe = os.path.join(tmp, label + ".yaml")
    with open(recipe, "w") as f:
        f.write(recipe_text)
    out = os.path.join(tmp, f"{case}-{label}")
    r = run("calibrate", recipe, "--model", model, "--dataset", data, "--output", out, "--no-shuffle", "-q")
    check(r.returncode == 0, f"{case} {label}: calibrate exit {r.returncode}: {r.stderr[-400:]}")
    return (golden, model, data, out) if r.returncode == 0 else None


def check_case(case, attn_class, prefix, tmp, module="self_attn"):
    recipe = RECIPE if module == "self_attn" else RECIPE.replace('"re:.*self_attn$"', attn_class)
    done = calibrate_case(case, recipe, tmp, "out")
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
        if g is None:  # a hybrid's linear-attention layer: no KV cache, no scale of any name
            extra = [n for n in where if n.startswith(f"{prefix}layers.{layer}.") and n.endswith("_scale")]
            check(not extra, f"{case}: layer {layer} (no KV cache) has scales {extra}")
            continue
        for site in ("q", "k", "v"):
            name = f"{prefix}layers.{layer}.{module}.{site}_scale"
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
    if "attention_layers" in golden:
        # everything but the new scales is copied unchanged (the vision tower of the wrapper included)
        src = st.read_header(os.path.join(model, "model.safetensors"))[0]
        for name in (n for n in src if n != "__metadata__"):
            check(name in where, f"{case}: {name} not copied")
            if name in where and name.startswith("model.visual."):
                check(st.tensor_bytes(where[name], name) == st.tensor_bytes(os.path.join(model, "model.safetensors"), name),
                      f"{case}: {name} changed")
    r = run("inspect", out, "--strict", "--json")
    if "attention_layers" in golden and r.returncode == 0:
        layers = json.loads(r.stdout)["serving"]["vllm"]["kv_layers"]
        check([l["layer"] for l in layers] == golden["attention_layers"],
              f"{case}: the verdict's kv_layers {[l['layer'] for l in layers]}, want {golden['attention_layers']}")
    if case in VLLM_REFUSES:
        # The files are right, but vLLM 0.34 cannot load this model (tests/peer/vllm_judges_outputs.py
        # sees it refuse): --strict exits 5 for the engine's verdict alone, naming why.
        doc = json.loads(r.stdout)
        check(r.returncode == 5 and doc["problems"] == [] and VLLM_REFUSES[case] in json.dumps(doc["serving"]["vllm"]),
              f"{case}: inspect --strict exit {r.returncode}, want 5 naming {VLLM_REFUSES[case]!r}: {doc['serving']['vllm']}")
    else:
        check(r.returncode == 0, f"{case}: inspect --strict exit {r.returncode}: {r.stdout[-600:]}")
    r = run("eval", "--model", model, "--dataset", data, "--quantized", out, "--json", "--no-shuffle")
    check(r.returncode == 0, f"{case}: eval exit {r.returncode}: {r.stderr[-400:]}")
    if r.returncode == 0:
        check_baseline_nll(case, golden, json.loads(r.stdout))


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
    golden, model, data = golden_inputs(case, tmp)
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
        check_baseline_nll(case, golden, json.loads(r.stdout))
    r = run("inspect", model, "--json")
    check(r.returncode == 0, f"{case}: inspect exit {r.returncode}: {r.stdout[-400:]} {r.stderr[-400:]}")


FP8_RECIPE = """
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      ignore: [lm_head]
      config_groups:
        group_0:
          targets: [Linear]
          weights: {num_bits: 8, type: float, symmetric: true, strategy: STRATEGY, dynamic: false, observer: minmax}
          input_activations: {num_bits: 8, type: float, symmetric: true, strategy: tensor, dynamic: false, observer: static_minmax}
      kv_cache_scheme: {num_bits: 8, type: float, symmetric: true, strategy: tensor, dynamic: false, observer: static_minmax}
"""


def bf16(x):
    """x rounded to bfloat16 (8 significant bits, nearest even; normal range)."""
    if x == 0.0:
        return 0.0
    m, e = math.frexp(x)
    return round(m * 256) / 256 * 2.0 ** e


def check_phi3_fp8(tmp, case, strategy):
    """FP8 W8A8 on Phi-3's fused projections: qkv_proj [q + 2 kv, hidden] and gate_up_proj
    [2 intermediate, hidden] are one Linear each, as compressed-tensors writes that module (one
    F8_E4M3 weight, one weight_scale over the fused rows, one input_scale) and as vLLM's Phi-3
    loads a checkpoint fused on disk (QKVParallelLinear / MergedColumnParallelLinear with no shard
    id: a per-tensor scale goes to shard 0, and the max over shards is the one scale). Scales and
    codes against compressed-tensors' math re-implemented here (fp8_ref.py): s = dtype(absmax / 448)
    per tensor or per row, code = fp8(clamp(dtype(f32(w / s)))). Then the output calibrated with
    --propagate quantized, read back, reproduces its KV scales within 1e-4."""
    label = f"fp8-{strategy}"
    done = calibrate_case(case, FP8_RECIPE.replace("STRATEGY", strategy), tmp, label)
    if not done:
        return
    golden, model, data, out = done
    cfg = json.load(open(os.path.join(model, "config.json")))
    rnd = bf16 if "bf16" in case else f32
    src = os.path.join(model, "model.safetensors")
    src_header = st.read_header(src)[0]
    where = shards(out)
    report = json.load(open(os.path.join(out, "ctcal_report.json")))
    sites = {"self_attn.qkv_proj": "qkv_input", "self_attn.o_proj": "o_proj_input",
             "mlp.gate_up_proj": "gate_up_input", "mlp.down_proj": "down_input"}
    for layer in range(cfg["num_hidden_layers"]):
        check(f"model.layers.{layer}.self_attn.q_proj.weight" not in where, f"{case}: a q_proj appeared")
        for suffix, site in sites.items():
            m = f"model.layers.{layer}.{suffix}"
            header = st.read_header(where[m + ".weight"])[0][m + ".weight"]
            check(header["dtype"] == "F8_E4M3" and header["shape"] == src_header[m + ".weight"]["shape"],
                  f"{case}: {m}.weight {header}")
            rows, cols = header["shape"]
            w = st.values(src, m + ".weight")
            codes = st.tensor_bytes(where[m + ".weight"], m + ".weight")
            scales = st.values(where[m + ".weight_scale"], m + ".weight_scale")
            sh = st.read_header(where[m + ".weight_scale"])[0][m + ".weight_scale"]["shape"]
            check(sh == ([rows, 1] if strategy == "channel" else [1]), f"{case}: {m}.weight_scale shape {sh}")
            bad = 0
            for r in range(rows):
                row = w[r * cols:(r + 1) * cols]
                s = rnd(max(abs(v) for v in (row if strategy == "channel" else w)) / 448.0)
                got = scales[r if strategy == "channel" else 0]
                check(got == s, f"{case}: {m}.weight_scale[{r}] {got} != {s}")
                want = bytes(fp8_code(max(-448.0, min(448.0, rnd(f32(v / got))))) for v in row)
                bad += codes[r * cols:(r + 1) * cols] != want
            check(bad == 0, f"{case}: {m}.weight: {bad} rows of FP8 codes differ")
            got = st.values(where[m + ".input_scale"], m + ".input_scale")
            check(got == [rnd(report["layers"][layer][site]["absmax"] / 448.0)], f"{case}: {m}.input_scale {got}")
    r = run("inspect", out, "--strict")
    check(r.returncode == 0, f"{case} {label}: inspect --strict exit {r.returncode}: {r.stdout[-600:]}")
    # The round trip: --propagate quantized, then the output read back (KV only).
    worst = round_trip(tmp, case, label, model, data)
    check(worst <= 1e-4, f"{case}: round trip moved KV scales by {worst:.3g}")
    print(f"{case} FP8 {strategy} (fused qkv_proj / gate_up_proj): codes and scales exact; round trip {worst:.3g}")


def round_trip(tmp, case, label, model, data):
    """Worst relative KV-scale change of `label`'s recipe calibrated with --propagate quantized and
    read back (KV only)."""
    recipe = os.path.join(tmp, label + ".yaml")
    quant = os.path.join(tmp, f"{case}-{label}-quantized")
    r = run("calibrate", recipe, "--model", model, "--dataset", data, "--output", quant, "--no-shuffle", "-q",
            "--propagate", "quantized")
    check(r.returncode == 0, f"{case}: --propagate quantized exit {r.returncode}: {r.stderr[-400:]}")
    if r.returncode != 0:
        return math.inf
    again = os.path.join(tmp, f"{case}-{label}-again")  # its own KV scales are replaced
    kv_recipe = os.path.join(tmp, "kv-only.yaml")
    open(kv_recipe, "w").write("q_stage:\n  q_modifiers:\n    QuantizationModifier:\n      kv_cache_scheme: {num_bits: 8, "
                               "type: float, symmetric: true, strategy: tensor, dynamic: false, observer: static_minmax}\n")
    r = run("calibrate", kv_recipe, "--model", quant, "--dataset", data, "--output", again, "--no-shuffle", "-q")
    check(r.returncode == 0, f"{case}: read-back calibrate exit {r.returncode}: {r.stderr[-400:]}")
    if r.returncode != 0:
        return math.inf
    a, b = shards(quant), shards(again)
    worst = 0.0
    for n in a:
        if n.endswith(("k_scale", "v_scale")):
            x, y = st.values(a[n], n)[0], st.values(b[n], n)[0]
            worst = max(worst, abs(x - y) / x)
    return worst


MOE_ROUTER = {"qwen3_moe_fp32": "mlp.gate", "mixtral_sliding_fp32": "block_sparse_moe.gate"}
MOE_EXPERT = {"qwen3_moe_fp32": ("mlp.experts.{}.", ("gate_proj", "up_proj", "down_proj")),
              "mixtral_sliding_fp32": ("block_sparse_moe.experts.{}.", ("w1", "w3", "w2"))}


def check_moe_fp8(tmp, case):
    """FP8 W8A8 on MoE experts (per-expert layout, the hub names): every expert's gate/up/down is an
    FP8 Linear with its own weight_scale (absmax / 448, codes bit-exact as fp8_ref.py re-implements
    compressed-tensors) and input_scale = absmax / 448 of the rows routed to it (gate/up) and of
    act(gate) * up on them (down), against transformers' float64 forward
    (tests/golden/data/expert_inputs, made by tests/golden/make_expert_input_golden.py), within
    one fp32 ulp + 1e-4 as the KV scales; an expert no token reached gets the largest input scale
    of the layer's experts (vLLM's W8A8 FP8 MoE takes the max over experts). vLLM's
    compressed-tensors MoE loader reads these per-expert names (`experts.{e}.<proj>.weight /
    weight_scale / input_scale` into w13/w2 parameters [E, ...]). The router stays unquantized: a
    recipe that does not ignore it is refused (exit 3), as llm-compressor's MoE examples ignore it.
    Then the --propagate quantized round trip within 1e-4."""
    router = MOE_ROUTER[case]
    recipe = FP8_RECIPE.replace("STRATEGY", "tensor")
    # The router not ignored: refused.
    golden, model, data = golden_inputs(case, tmp, "-router")
    path = os.path.join(tmp, case + "-router.yaml")
    open(path, "w").write(recipe)
    r = run("calibrate", path, "--model", model, "--dataset", data, "--output", os.path.join(tmp, case + "-router"))
    check(r.returncode == 3 and "router" in r.stderr, f"{case}: router not ignored: exit {r.returncode}: {r.stderr[-300:]}")
    recipe = recipe.replace("ignore: [lm_head]", f'ignore: [lm_head, "re:.*{router}$"]')
    label = "fp8-moe"
    done = calibrate_case(case, recipe, tmp, label)
    if not done:
        return
    golden, model, data, out = done
    cfg = json.load(open(os.path.join(model, "config.json")))
    ref = json.load(open(os.path.join(GOLDEN, "expert_inputs", case + ".json")))
    src = os.path.join(model, "model.safetensors")
    where = shards(out)
    experts = cfg.get("num_experts") or cfg["num_local_experts"]
    worst, n = 0.0, 0
    for layer, lref in enumerate(ref["layers"]):
        p = f"model.layers.{layer}."
        if not lref:  # a dense layer (mlp_only_layers): gate/up/down_proj
            check(p + "mlp.down_proj.weight_scale" in where, f"{case}: dense layer {layer} MLP not FP8")
            continue
        check(p + router + ".weight" in where and p + router + ".weight_scale" not in where, f"{case}: {p}{router} quantized")
        fmt_, names = MOE_EXPERT[case]
        for site, projs in (("gate_up", names[:2]), ("down", names[2:])):
            top = max(max(abs(v["min"]), abs(v["max"])) for v in lref[site].values())
            for e in range(experts):
                for proj in projs:
                    m = p + fmt_.format(e) + proj
                    hdr = st.read_header(where[m + ".weight"])[0][m + ".weight"]
                    check(hdr["dtype"] == "F8_E4M3", f"{case}: {m}.weight {hdr['dtype']}")
                    w = st.values(src, m + ".weight")
                    s = st.values(where[m + ".weight_scale"], m + ".weight_scale")
                    check(s == [f32(max(abs(v) for v in w) / 448.0)], f"{case}: {m}.weight_scale {s}")
                    codes = st.tensor_bytes(where[m + ".weight"], m + ".weight")
                    check(codes == bytes(fp8_code(max(-448.0, min(448.0, f32(v / s[0])))) for v in w),
                          f"{case}: {m}.weight FP8 codes differ")
                    got = st.values(where[m + ".input_scale"], m + ".input_scale")[0]
                    e_ref = lref[site].get(str(e))
                    want = (max(abs(e_ref["min"]), abs(e_ref["max"])) if e_ref else top) / 448.0
                    err = abs(got - want) / want
                    worst, n = max(worst, err), n + 1
                    check(err <= ULP_REL["F32"] + 1e-4, f"{case}: {m}.input_scale {got}, transformers {want} "
                          f"({'routed rows' if e_ref else 'no rows: the layer max'})")
    r = run("inspect", out, "--strict")
    check(r.returncode == 0, f"{case} {label}: inspect --strict exit {r.returncode}: {r.stdout[-600:]}")
    trip = round_trip(tmp, case, label, model, data)
    check(trip <= 1e-4, f"{case}: round trip moved KV scales by {trip:.3g}")
    print(f"{case} FP8 experts: {n} expert input scales within {worst:.3g} of transformers; codes exact; "
          f"round trip {trip:.3g}")


def check_fused_experts_refused(tmp):
    """transformers 5's fused experts (one [E, 2I, H] tensor): FP8 experts are refused (exit 4)."""
    case = "qwen3_moe_fused_sliding_bf16"
    golden, model, data = golden_inputs(case, tmp, "-fused")
    path = os.path.join(tmp, "fused.yaml")
    open(path, "w").write(FP8_RECIPE.replace("STRATEGY", "tensor").replace("ignore: [lm_head]",
                                                                            'ignore: [lm_head, "re:.*mlp.gate$"]'))
    r = run("calibrate", path, "--model", model, "--dataset", data, "--output",
            os.path.join(tmp, "fused-out"))
    check(r.returncode == 4 and "fuses every expert" in r.stderr, f"{case}: exit {r.returncode}: {r.stderr[-400:]}")


def check_shared_expert_fp8(tmp, case):
    """FP8 W8A8 on Qwen3-Next / Qwen3.5-MoE with llm-compressor's Qwen3-Next ignore list ("lm_head",
    "re:.*mlp.gate$", "re:.*mlp.shared_expert_gate$", "re:.*linear_attn.*": examples/
    quantization_w8a8_fp8/qwen3_next_example.py). Without the shared_expert_gate entry the recipe is
    refused (exit 3): vLLM 0.34 builds that gate without a quant config (models/qwen3_next.py).
    With it: the shared expert's gate/up/down_proj are FP8 with input_scale = absmax / 448 of the
    MoE block's input and of act(gate) * up, against transformers' float64 forward (the golden
    "shared_expert_inputs"), within one fp32 ulp + 1e-4 as the KV scales; the router, the shared
    expert's gate and every linear_attn projection stay unquantized; inspect --strict passes."""
    ignore = '"re:.*linear_attn.*", "re:.*mlp.gate$"'
    # per-tensor weights: vLLM 0.34's FP8 MoE takes static input scales only with per-tensor weights
    # (CompressedTensorsW8A8Fp8MoEMethod asserts otherwise)
    recipe = FP8_RECIPE.replace("STRATEGY", "tensor").replace("ignore: [lm_head]", f"ignore: [lm_head, {ignore}]")
    golden, model, data = golden_inputs(case, tmp, "-shared-gate")
    path = os.path.join(tmp, case + "-shared-gate.yaml")
    open(path, "w").write(recipe)
    r = run("calibrate", path, "--model", model, "--dataset", data, "--output", os.path.join(tmp, case + "-shared-gate"))
    check(r.returncode == 3 and "shared_expert_gate" in r.stderr,
          f"{case}: shared_expert_gate not ignored: exit {r.returncode}: {r.stderr[-300:]}")
    recipe = recipe.replace(ignore, ignore + ', "re:.*mlp.shared_expert_gate$"')
    done = calibrate_case(case, recipe, tmp, "fp8-shared")
    if not done:
        return
    golden, model, data, out = done
    where = shards(out)
    worst, n = 0.0, 0
    for layer, ref in golden["shared_expert_inputs"].items():
        p = f"model.layers.{layer}.mlp."
        for proj, site in (("gate_proj", "gate_up"), ("up_proj", "gate_up"), ("down_proj", "down")):
            m = p + "shared_expert." + proj
            hdr = st.read_header(where[m + ".weight"])[0][m + ".weight"]
            check(hdr["dtype"] == "F8_E4M3", f"{case}: {m}.weight {hdr['dtype']}")
            got = st.values(where[m + ".input_scale"], m + ".input_scale")[0]
            want = ref[site] / 448.0
            err = abs(got - want) / want
            worst, n = max(worst, err), n + 1
            check(err <= ULP_REL["F32"] + 1e-4, f"{case}: {m}.input_scale {got}, transformers {want}")
        for m in (p + "gate", p + "shared_expert_gate"):
            check(m + ".weight" in where and m + ".weight_scale" not in where, f"{case}: {m} quantized")
    for name in where:
        check(".linear_attn." not in name or not name.endswith(("weight_scale", "input_scale")),
              f"{case}: {name}: a linear_attn projection quantized")
    r = run("inspect", out, "--strict")
    check(r.returncode == 0, f"{case} fp8-shared: inspect --strict exit {r.returncode}: {r.stdout[-600:]}")
    print(f"{case} FP8 shared expert: {n} input scales within {worst:.3g} of transformers; router, "
          f"shared_expert_gate and linear_attn unquantized")


def check_mamba_hybrid_fp8(tmp, case, moe_ignore, mamba_ignore):
    """FP8 W8A8 on a Mamba2 hybrid, as llm-compressor's Granite 4 / Nemotron FP8 examples quantize
    it (examples/quantization_w8a8_fp8/granite4_example.py ignores lm_head and the MoE,
    nemotron_3_5_lightning_example.py lm_head, conv1d, embeddings, norms: the Mamba2 in_proj /
    out_proj are quantized). With `moe_ignore` only: every Linear but the MoE is FP8, the Mamba2
    projections included, each input_scale = absmax / 448 of transformers' float64 input
    (golden/data/linear_inputs, make_linear_input_golden.py) within 1e-4 relative (the golden test's
    fp32-vs-float64 tolerance) plus one fp32 ulp. With `mamba_ignore` too: the Mamba2 projections
    stay as they were. Granite's mixer is `mamba` in the checkpoint but `mixer` in vLLM 0.34
    (granitemoehybrid.py:72-87), which matches `ignore` against its own name: an ignore entry
    matching only one of them is refused (exit 3). inspect --strict passes on both outputs."""
    recipe = FP8_RECIPE.replace("STRATEGY", "tensor")
    ref = json.load(open(os.path.join(GOLDEN, "linear_inputs", case + ".json")))["layers"]
    done = calibrate_case(case, recipe.replace("ignore: [lm_head]", f"ignore: [lm_head{moe_ignore}]"), tmp, "fp8-mamba")
    if not done:
        return
    golden, model, data, out = done
    where = shards(out)
    worst, n = 0.0, 0
    for layer, mods in enumerate(ref):
        for proj, mm in mods.items():
            m = next((k[:-len(".weight")] for k in where if k.endswith(f"layers.{layer}.{'mamba' if 'granite' in case else 'mixer'}.{proj}.weight")), None)
            check(m is not None, f"{case}: layer {layer} {proj} missing")
            if m is None:
                continue
            hdr = st.read_header(where[m + ".weight"])[0][m + ".weight"]
            check(hdr["dtype"] == "F8_E4M3", f"{case}: {m}.weight {hdr['dtype']}")
            got = st.values(where[m + ".input_scale"], m + ".input_scale")[0]
            want = max(abs(mm["min"]), abs(mm["max"])) / 448.0
            err = abs(got - want) / want
            worst, n = max(worst, err), n + 1
            check(err <= ULP_REL["F32"] + 1e-4, f"{case}: {m}.input_scale {got}, transformers {want}")
    check(n > 0, f"{case}: no Mamba2 layer in the golden data")
    r = run("inspect", out, "--strict")
    check(r.returncode == 0, f"{case} fp8-mamba: inspect --strict exit {r.returncode}: {r.stdout[-600:]}")
    print(f"{case} FP8 W8A8: {n} Mamba2 in/out_proj input scales within {worst:.3g} of transformers")
    if "granite" in case:
        golden, model, data = golden_inputs(case, tmp, "-mamba-only")
        path = os.path.join(tmp, case + "-mamba-only.yaml")
        open(path, "w").write(recipe.replace("ignore: [lm_head]", f'ignore: [lm_head{moe_ignore}, "re:.*mamba.(in|out)_proj$"]'))
        r = run("calibrate", path, "--model", model, "--dataset", data, "--output", os.path.join(tmp, case + "-mamba-only"))
        check(r.returncode == 3 and "vLLM 0.34's name" in r.stderr,
              f"{case}: ignore matching only the checkpoint's name: exit {r.returncode}: {r.stderr[-300:]}")
    done = calibrate_case(case, recipe.replace("ignore: [lm_head]", f"ignore: [lm_head{moe_ignore}, {mamba_ignore}]"),
                          tmp, "fp8-mamba-ignored")
    if not done:
        return
    golden, model, data, out = done
    where = shards(out)
    quantized = sorted(n[:-len(".input_scale")] for n in where if n.endswith(".input_scale"))
    for m in quantized:
        hdr = st.read_header(where[m + ".weight"])[0][m + ".weight"]
        check(hdr["dtype"] == "F8_E4M3", f"{case}: {m}.weight {hdr['dtype']}")
        check(not any(k in m for k in ("in_proj", "out_proj", "block_sparse_moe")), f"{case}: {m} quantized")
    kinds = sorted({m.rsplit(".", 1)[1] for m in quantized})
    want = ["down_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"] if case.startswith("nemotron") else \
        ["input_linear", "k_proj", "o_proj", "output_linear", "q_proj", "v_proj"]
    check(kinds == want, f"{case}: FP8 modules {kinds}, want {want}")
    r = run("inspect", out, "--strict")
    check(r.returncode == 0, f"{case} fp8-mamba-ignored: inspect --strict exit {r.returncode}: {r.stdout[-600:]}")
    print(f"{case} FP8 W8A8 with the Mamba2 projections ignored: {len(quantized)} attention / MLP Linears quantized")


def check_nemotron_moe_fp8(tmp, case):
    """FP8 W8A8 on Nemotron-H with MoE blocks: the router (mixer.gate, a GateLinear built without a
    quant config in vLLM 0.34's NemotronHMoE) is refused until ignored (exit 3); with it ignored every
    expert's up/down_proj, the shared expert's, the attention and the Mamba2 projections are F8_E4M3,
    the router and its e_score_correction_bias are copied unchanged, and inspect --strict passes."""
    recipe = FP8_RECIPE.replace("STRATEGY", "tensor")
    golden, model, data = golden_inputs(case, tmp, "-fp8")
    path = os.path.join(tmp, f"{case}-fp8-router.yaml")
    open(path, "w").write(recipe)
    r = run("calibrate", path, "--model", model, "--dataset", data, "--output", os.path.join(tmp, f"{case}-fp8-router"))
    check(r.returncode == 3 and "mixer.gate" in r.stderr, f"{case}: router not refused: exit {r.returncode}: {r.stderr[-300:]}")
    done = calibrate_case(case, recipe.replace("ignore: [lm_head]", 'ignore: [lm_head, "re:.*mixer.gate$"]'), tmp, "fp8-nemotron-moe")
    if not done:
        return
    golden, model, data, out = done
    where = shards(out)
    src = st.read_header(os.path.join(model, "model.safetensors"))[0]
    fp8 = sorted(n for n in where if n.endswith(".weight") and st.read_header(where[n])[0][n]["dtype"] == "F8_E4M3")
    want = sorted(n for n in src if n.endswith("_proj.weight"))
    check(fp8 == want, f"{case}: FP8 weights {fp8}, want {want}")
    check(any(".experts." in n for n in fp8) and any("shared_experts" in n for n in fp8), f"{case}: no expert is FP8")
    for n in (n for n in src if n.endswith(("mixer.gate.weight", "e_score_correction_bias"))):
        check(st.tensor_bytes(where[n], n) == st.tensor_bytes(os.path.join(model, "model.safetensors"), n), f"{case}: {n} changed")
    r = run("inspect", out, "--strict")
    check(r.returncode == 0, f"{case} fp8: inspect --strict exit {r.returncode}: {r.stdout[-600:]}")
    print(f"{case} FP8 W8A8: {len(fp8)} Linear layers F8_E4M3 (experts, shared expert, attention, Mamba2); router refused until ignored")


def check_llama4_fp8(tmp, case, outside=""):
    """FP8 W8A8 on Llama 4 (`outside`: the multimodal checkpoint's own ignores, for its head and vision
    tower): the router must be ignored (exit 3; vLLM 0.34 builds it as a GateLinear
    without a quant config), the fused input-major experts too (exit 4: ctcal does not split them, and
    vLLM would build an FP8 MoE for them); with both ignored (llm-compressor's Llama 4 recipes ignore
    "re:.*router"), every attention, dense MLP and shared-expert Linear is F8_E4M3, the experts' 3-D
    tensors are copied unchanged and inspect --strict passes."""
    recipe = FP8_RECIPE.replace("STRATEGY", "tensor").replace("ignore: [lm_head]", f"ignore: [lm_head{outside}]")
    golden, model, data = golden_inputs(case, tmp, "-fp8")
    for ignore, code, says in (("", 3, "feed_forward.router"), (', "re:.*router"', 4, "feed_forward.experts.0.gate_proj")):
        path = os.path.join(tmp, f"{case}-fp8-{code}.yaml")
        open(path, "w").write(recipe.replace(f"ignore: [lm_head{outside}]", f"ignore: [lm_head{outside}{ignore}]"))
        r = run("calibrate", path, "--model", model, "--dataset", data, "--output", os.path.join(tmp, f"{case}-fp8-{code}"))
        check(r.returncode == code and says in r.stderr, f"{case}: exit {r.returncode}, want {code} naming {says}: {r.stderr[-400:]}")
    done = calibrate_case(case, recipe.replace(f"ignore: [lm_head{outside}]",
                                               f'ignore: [lm_head{outside}, "re:.*router", "re:.*feed_forward.experts.*"]'),
                          tmp, "fp8-llama4")
    if not done:
        return
    golden, model, data, out = done
    where = shards(out)
    src = st.read_header(os.path.join(model, "model.safetensors"))[0]
    fp8 = [n for n in where if n.endswith(".weight") and st.read_header(where[n])[0][n]["dtype"] == "F8_E4M3"]
    want = [n for n in src if n.endswith("_proj.weight") and "router" not in n and n.startswith(("model.", "language_model."))]
    check(sorted(fp8) == sorted(want), f"{case}: FP8 weights {sorted(fp8)}, want {sorted(want)}")
    for n in (n for n in src if n.endswith(("experts.gate_up_proj", "experts.down_proj"))):
        check(st.tensor_bytes(where[n], n) == st.tensor_bytes(os.path.join(model, "model.safetensors"), n), f"{case}: {n} changed")
    r = run("inspect", out, "--strict")
    check(r.returncode == 0, f"{case} fp8: inspect --strict exit {r.returncode}: {r.stdout[-600:]}")
    print(f"{case} FP8 W8A8: {len(fp8)} Linear layers F8_E4M3 (attention, dense MLP, shared expert); router and fused experts refused until ignored")
    # the key envelope bounds K by its pre-RoPE pair norms; Llama 4 L2-normalises K after RoPE: refused (exit 2)
    path = os.path.join(tmp, f"{case}-kv.yaml")
    open(path, "w").write(RECIPE)
    r = run("calibrate", path, "--model", model, "--dataset", data, "--output", os.path.join(tmp, f"{case}-envelope"),
            "--key-range", "envelope")
    check(r.returncode == 2 and "L2-normalises K after RoPE" in r.stderr, f"{case}: --key-range envelope exit {r.returncode}: {r.stderr[-300:]}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for case, (attn, prefix, *module) in CASES.items():
            check_case(case, attn, prefix, tmp, *module)
        check_phi3_r2(tmp)
        check_gpt_oss_mxfp4(tmp)
        check_phi3_fp8(tmp, "phi3_longrope_fp32", "tensor")
        check_phi3_fp8(tmp, "phi3_partial_su_sliding_bf16", "channel")
        check_moe_fp8(tmp, "qwen3_moe_fp32")
        check_moe_fp8(tmp, "mixtral_sliding_fp32")
        check_fused_experts_refused(tmp)
        check_shared_expert_fp8(tmp, "qwen3_next_fp32")
        check_shared_expert_fp8(tmp, "qwen3_5_moe_text_fp32")
        check_mamba_hybrid_fp8(tmp, "nemotron_h_fp32", "", '"re:.*mixer.(in|out)_proj$"')
        check_mamba_hybrid_fp8(tmp, "granitemoehybrid_fp32", ', "re:.*block_sparse_moe.*"',
                               '"re:.*(mamba|mixer).(in|out)_proj$"')
        check_llama4_fp8(tmp, "llama4_text_fp32")
        check_nemotron_moe_fp8(tmp, "nemotron_h_moe_fp32")
        # the head is language_model.lm_head; the vision tower's and projector's Linears stay bf16
        check_llama4_fp8(tmp, "llama4_mm_bf16", ', "re:.*lm_head", "re:vision_model.*", "re:multi_modal_projector.*"')
    finish("e2e families")


if __name__ == "__main__":
    main()
