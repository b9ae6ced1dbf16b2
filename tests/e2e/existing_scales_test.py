#!/usr/bin/env python3
"""End to end: calibrating a checkpoint that already carries KV scales (issue 26 §3). Hub FP8
checkpoints often carry scales from a memoryless or moving-average observer; calibrating them again
(per head, more samples) must replace the old scales and keep every other byte. Cases, all on
stories260K and checked with the Python standard library (st_reader):
  - per-tensor KV (16 samples) calibrated again per head (64 samples): exit 0; every tensor that is
    not an attention scale byte-identical; k/v scales [kv_heads, 1, 1]; ctcal_report.json lists
    every replaced scale with its old and new values and largest relative change; the printed line
    names the largest change (tensor, head, old and new value); the input's files unchanged;
  - FP8 W8A8 (weights, weight_scale, input_scale) with per-tensor KV, calibrated again per head:
    the FP8 tensors byte-identical, quantization_config's groups, format and ignore kept,
    kv_cache_scheme the new one;
  - one model.safetensors holding weights and legacy scale names (`k_proj.output_scale`,
    `kv_scale`, which vLLM 0.34 does not remap for compressed-tensors checkpoints): they are not
    written, the output says so, the canonical `self_attn.k_scale` replaces them;
  - --kv-skip-layers 1 over a KV checkpoint: the skipped layer's old scales are dropped and named;
  - FP8 attention (q_scale, zero points, attention group) calibrated again KV-only: q_scale, the
    zero points and the attention group are gone; and KV-only calibrated again with attention;
  - an R3 checkpoint (keys rotated at serving time) is refused (exit 4, naming transform_config):
    scales observed on unrotated keys would not fit it.

usage: existing_scales_test.py CTCAL_BINARY SOURCE_DIR
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import st_reader  # noqa: E402
from e2e_util import check, finish, stories260k  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
MODEL, TEXT = stories260k(SRC)
RECIPES = os.path.join(SRC, "recipes")
CFG = json.load(open(os.path.join(MODEL, "config.json")))
LAYERS, KV_HEADS = CFG["num_hidden_layers"], CFG["num_key_value_heads"]
# Every attention scale name ctcal treats as the input's KV/Q scales: canonical and legacy.
ATTN_SCALE = re.compile(r"\.self_attn\.(?:[qkv]_scale|[qkv]_zero_point|kv_scale|[qkv]_proj\.output_scale"
                        r"|[qkv]_proj\.output_zero_point|k_proj\.k_scale|v_proj\.v_scale)$")
ATTENTION = """
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      config_groups:
        attention:
          targets: [LlamaAttention]
          input_activations: {num_bits: 8, type: float, symmetric: true, strategy: tensor, observer: static_minmax}
"""


def calibrate(recipe, model, out, samples, *extra):
    cmd = [BIN, "calibrate", recipe, "--model", model, "--dataset", TEXT, "--num-samples", str(samples),
           "--max-seq-length", "128", "--output", out, *extra]
    return subprocess.run(cmd, capture_output=True, text=True)


def tensors(d):
    """{name: (dtype, shape, bytes)} of every shard of checkpoint `d`."""
    index = os.path.join(d, "model.safetensors.index.json")
    files = set(json.load(open(index))["weight_map"].values()) if os.path.exists(index) else {"model.safetensors"}
    out = {}
    for f in files:
        ts, _ = st_reader.read_all(os.path.join(d, f))
        out.update(ts)
    return out


def values(t):
    dtype, shape, raw = t
    path = os.path.join(tempfile.gettempdir(), f"existing-scales-{os.getpid()}.safetensors")
    st_reader.write_file(path, {"x": t})
    v = st_reader.values(path, "x")
    os.remove(path)
    return v


def hashes(d):
    return {f: hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest() for f in sorted(os.listdir(d))}


def rel_change(old, new):
    """Largest |new - old| / old over the elements (a [1] scale broadcast against [heads, 1, 1]) and
    the element where it is (None when both are single values)."""
    n = max(len(old), len(new))
    pairs = [(old[i if len(old) > 1 else 0], new[i if len(new) > 1 else 0]) for i in range(n)]
    worst = max(range(n), key=lambda i: abs(pairs[i][1] - pairs[i][0]) / pairs[i][0])
    return abs(pairs[worst][1] - pairs[worst][0]) / pairs[worst][0], (worst if n > 1 else None)


def check_kept(label, inp, out, changed=ATTN_SCALE):
    """Every tensor of `inp` that is not an attention scale is in `out`, byte for byte."""
    a, b = tensors(inp), tensors(out)
    kept = [n for n in a if not changed.search(n)]
    differ = [n for n in kept if b.get(n) != a[n]]
    check(not differ, f"{label}: {len(differ)} tensors not byte-identical (e.g. {differ[:3]})")
    extra = [n for n in b if n not in a and not changed.search(n)]
    check(not extra, f"{label}: tensors not in the input: {extra[:3]}")
    return a, b


def report(out):
    return json.load(open(os.path.join(out, "ctcal_report.json")))


def check_replaced(label, inp, out, log, old_names=None):
    """The report lists every replaced scale with the input's and the output's values, and the printed
    line names the largest change. `old_names`: {new name: the input's (legacy) name}."""
    old_names = old_names or {}
    a, b = tensors(inp), tensors(out)
    rep = {e["name"]: e for e in report(out).get("replaced_scales", [])}
    expected = {}
    for n in b:
        if re.search(r"\.self_attn\.[qkv]_scale$", n):
            src = old_names.get(n, n)
            if src in a:
                expected[n] = (src, values(a[src]), values(b[n]))
    check(set(rep) == set(expected), f"{label}: report lists {sorted(rep)}, expected {sorted(expected)}")
    largest = None
    for n, (src, old, new) in expected.items():
        e = rep.get(n)
        if e is None:
            continue
        check(e["old"] == old and e["new"] == new, f"{label}: {n}: report old/new {e['old']} / {e['new']}, files "
              f"{old} / {new}")
        check(e.get("old_name", n) == src, f"{label}: {n}: old_name {e.get('old_name')}, expected {src}")
        change, at = rel_change(old, new)
        check(abs(e["max_relative_change"] - change) <= 1e-12 * max(1.0, change),
              f"{label}: {n}: max_relative_change {e['max_relative_change']}, expected {change}")
        check(e.get("head") == at, f"{label}: {n}: head {e.get('head')}, expected {at}")
        if largest is None or change > largest[1]:
            largest = (n, change, at, old[at or 0] if len(old) > 1 else old[0], new[at or 0] if len(new) > 1 else new[0])
    m = re.search(r"replaced (\d+) attention scales? of the input[^;\n]*; largest change (\S+)(?: head (\d+))?: "
                  r"(\S+) -> (\S+) \(([+-][0-9.]+) %", log)
    check(m is not None, f"{label}: no 'replaced N attention scales ... largest change' line in:\n{log[-2000:]}")
    if m and largest:
        name, change, at, old, new = largest
        check(int(m.group(1)) == len(expected), f"{label}: line counts {m.group(1)}, expected {len(expected)}")
        check(m.group(2) == name and (int(m.group(3)) if m.group(3) else None) == at,
              f"{label}: line names {m.group(2)} head {m.group(3)}, expected {name} head {at}")
        check(abs(float(m.group(4)) - old) <= 1e-3 * old and abs(float(m.group(5)) - new) <= 1e-3 * new,
              f"{label}: line says {m.group(4)} -> {m.group(5)}, expected {old} -> {new}")
        print(f"{label}: {len(expected)} scales replaced; largest change {name}"
              f"{'' if at is None else f' head {at}'}: {old:.6g} -> {new:.6g} ({100 * change:.1f} %)")
    return rep


def run_case(label, recipe, inp, out, samples, *extra):
    """Calibrates `inp` again; the input's files must not change. Returns the process."""
    before = hashes(inp)
    r = calibrate(recipe, inp, out, samples, *extra)
    check(hashes(inp) == before, f"{label}: the input directory changed")
    check(r.returncode == 0, f"{label}: exit {r.returncode}: {r.stderr[-1500:]}")
    return r


with tempfile.TemporaryDirectory() as tmp:
    per_tensor, per_head = (os.path.join(RECIPES, f"fp8_kv_per_{s}.yaml") for s in ("tensor", "head"))

    # 1. Per-tensor KV, 16 samples -> per head, 64 samples.
    base = os.path.join(tmp, "kv")
    r = calibrate(per_tensor, MODEL, base, 16)
    check(r.returncode == 0, f"base: exit {r.returncode}: {r.stderr[-1500:]}")
    again = os.path.join(tmp, "kv-per-head")
    r = run_case("per-head", per_head, base, again, 64)
    if r.returncode == 0:
        check_kept("per-head", base, again)
        b = tensors(again)
        for layer in range(LAYERS):
            for s in ("k", "v"):
                n = f"model.layers.{layer}.self_attn.{s}_scale"
                check(n in b and b[n][1] == [KV_HEADS, 1, 1], f"per-head: {n} shape {b.get(n, (0, None))[1]}")
        check_replaced("per-head", base, again, r.stdout + r.stderr)
        qc = json.load(open(os.path.join(again, "config.json")))["quantization_config"]
        check(qc["kv_cache_scheme"]["strategy"] == "attn_head", f"per-head: kv_cache_scheme {qc['kv_cache_scheme']}")
        check(report(again).get("dropped_scales", []) == [], f"per-head: dropped {report(again).get('dropped_scales')}")

    # 2. FP8 weights + static inputs + per-tensor KV -> per-head KV only: FP8 tensors kept.
    fp8 = os.path.join(tmp, "fp8")
    r = calibrate(os.path.join(RECIPES, "fp8_w8a8_fp8_kv.yaml"), MODEL, fp8, 16)
    check(r.returncode == 0, f"fp8 base: exit {r.returncode}: {r.stderr[-1500:]}")
    again = os.path.join(tmp, "fp8-per-head")
    r = run_case("fp8", per_head, fp8, again, 64)
    if r.returncode == 0:
        a, _ = check_kept("fp8", fp8, again)
        check(sum(n.endswith((".weight_scale", ".input_scale")) for n in a) == 2 * 35,
              "fp8: the input has no FP8 weight_scale / input_scale to keep")
        check_replaced("fp8", fp8, again, r.stdout + r.stderr)
        qin = json.load(open(os.path.join(fp8, "config.json")))["quantization_config"]
        qout = json.load(open(os.path.join(again, "config.json")))["quantization_config"]
        for k in ("config_groups", "format", "ignore"):
            check(qout[k] == qin[k], f"fp8: quantization_config.{k} changed: {qout[k]} != {qin[k]}")
        check(qout["kv_cache_scheme"]["strategy"] == "attn_head", f"fp8: kv_cache_scheme {qout['kv_cache_scheme']}")

    # 3. Legacy names in one model.safetensors beside the weights.
    legacy = os.path.join(tmp, "legacy")
    os.makedirs(legacy)
    ts = tensors(base)
    ts["model.layers.0.self_attn.k_proj.output_scale"] = ts.pop("model.layers.0.self_attn.k_scale")
    ts["model.layers.1.self_attn.kv_scale"] = ts.pop("model.layers.1.self_attn.k_scale")
    del ts["model.layers.1.self_attn.v_scale"]
    st_reader.write_file(os.path.join(legacy, "model.safetensors"), ts, {"format": "pt"})
    for f in ("config.json", "tokenizer.model", "generation_config.json"):
        shutil.copy(os.path.join(base, f), legacy)
    again = os.path.join(tmp, "legacy-again")
    r = run_case("legacy", per_tensor, legacy, again, 16)
    if r.returncode == 0:
        log = r.stdout + r.stderr
        check_kept("legacy", legacy, again)
        b = tensors(again)
        check(not [n for n in b if n.endswith(("output_scale", "kv_scale"))], "legacy: a legacy name was written")
        check(all(f"model.layers.{i}.self_attn.{s}_scale" in b for i in range(LAYERS) for s in "kv"),
              "legacy: a canonical k/v scale is missing")
        for n in ("model.layers.0.self_attn.k_proj.output_scale", "model.layers.1.self_attn.kv_scale"):
            check(re.search(r"legacy.*" + re.escape(n) + "|" + re.escape(n) + r".*legacy", log) is not None,
                  f"legacy: the output does not say {n} was dropped:\n{log[-1500:]}")
        check_replaced("legacy", legacy, again, log, {
            "model.layers.0.self_attn.k_scale": "model.layers.0.self_attn.k_proj.output_scale",
            "model.layers.1.self_attn.k_scale": "model.layers.1.self_attn.kv_scale",
            "model.layers.1.self_attn.v_scale": "model.layers.1.self_attn.kv_scale"})

    # 4. --kv-skip-layers: the skipped layer's old scales must not survive.
    again = os.path.join(tmp, "kv-skip")
    r = run_case("skip", per_tensor, base, again, 16, "--kv-skip-layers", "1")
    if r.returncode == 0:
        log = r.stdout + r.stderr
        check_kept("skip", base, again)
        skipped = json.load(open(os.path.join(again, "config.json")))["quantization_config"]["ignore"]
        check(len(skipped) == 1, f"skip: ignore {skipped}")
        b = tensors(again)
        dropped = {e["name"] for e in report(again).get("dropped_scales", [])}
        for m in skipped:
            for s in ("k", "v"):
                n = f"{m}.{s}_scale"
                check(n not in b, f"skip: {n} of the skipped layer survived")
                check(n in dropped, f"skip: report's dropped_scales lacks {n}: {sorted(dropped)}")
                check(n in log, f"skip: the output does not name the dropped {n}")
        check_replaced("skip", base, again, log)

    # 5. Attention (q_scale, zero points, group) -> KV only, and KV only -> attention.
    attn_recipe = os.path.join(tmp, "attention.yaml")
    open(attn_recipe, "w").write(ATTENTION)
    attn = os.path.join(tmp, "attn")
    r = calibrate(attn_recipe, MODEL, attn, 16)
    check(r.returncode == 0, f"attention base: exit {r.returncode}: {r.stderr[-1500:]}")
    again = os.path.join(tmp, "attn-kv")
    r = run_case("attention->kv", per_head, attn, again, 16)
    if r.returncode == 0:
        check_kept("attention->kv", attn, again)
        b = tensors(again)
        stale = [n for n in b if re.search(r"\.(q_scale|[qkv]_zero_point)$", n)]
        check(not stale, f"attention->kv: stale {stale[:3]}")
        dropped = {e["name"] for e in report(again).get("dropped_scales", [])}
        expected = {n for n in tensors(attn) if re.search(r"\.(q_scale|[qkv]_zero_point)$", n)}
        check(dropped == expected, f"attention->kv: dropped {sorted(dropped ^ expected)[:4]} differ")
        qc = json.load(open(os.path.join(again, "config.json")))["quantization_config"]
        check(qc["config_groups"] == {}, f"attention->kv: config_groups {qc['config_groups']}")
        check_replaced("attention->kv", attn, again, r.stdout + r.stderr)
    again = os.path.join(tmp, "kv-attn")
    r = run_case("kv->attention", attn_recipe, base, again, 16)
    if r.returncode == 0:
        check_kept("kv->attention", base, again)
        qc = json.load(open(os.path.join(again, "config.json")))["quantization_config"]
        check(list(qc["config_groups"]) == ["attention"], f"kv->attention: config_groups {qc['config_groups']}")
        check("model.layers.0.self_attn.q_scale" in tensors(again), "kv->attention: no q_scale")
        check_replaced("kv->attention", base, again, r.stdout + r.stderr)

    # 6. R3: refused before any work, naming transform_config.
    r3 = os.path.join(tmp, "r3")
    r = calibrate(os.path.join(RECIPES, "r3_fp8_kv.yaml"), MODEL, r3, 16)
    check(r.returncode == 0, f"r3 base: exit {r.returncode}: {r.stderr[-1500:]}")
    before = hashes(r3)
    r = calibrate(per_head, r3, os.path.join(tmp, "r3-again"), 16)
    check(r.returncode == 4 and "transform_config" in r.stderr, f"r3: exit {r.returncode}: {r.stderr[-800:]}")
    check(hashes(r3) == before and not os.path.exists(os.path.join(tmp, "r3-again")),
          "r3: the input changed or an output was left")

finish("existing scales")
