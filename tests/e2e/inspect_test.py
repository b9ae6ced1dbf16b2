#!/usr/bin/env python3
"""`ctcal inspect`: plant each defect in a copy of a good checkpoint and check inspect names it;
a good checkpoint passes --strict; llm-compressor layouts (old and new, made here) are read;
--json validates against docs/inspect.schema.json.

usage: inspect_test.py CTCAL_BINARY SOURCE_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import st_reader as st  # noqa: E402
from e2e_util import check, finish, stories260k  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
MODEL, TEXT = stories260k(SRC)
SCHEMA = json.load(open(os.path.join(SRC, "docs", "inspect.schema.json")))


def validate(doc, schema, path="$", root=None):
    """A small JSON-schema subset: type, enum, required, properties, items, $ref."""
    root = root or schema
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    types = schema.get("type")
    if types:
        types = types if isinstance(types, list) else [types]
        pytypes = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
                   "integer": int, "number": (int, float)}
        ok = any(isinstance(doc, pytypes[t]) and not (t in ("integer", "number") and isinstance(doc, bool)) for t in types)
        check(ok, f"schema: {path} is {type(doc).__name__}, expected {types}")
    if "enum" in schema:
        check(doc in schema["enum"], f"schema: {path} = {doc!r} not in {schema['enum']}")
    if isinstance(doc, dict):
        for k in schema.get("required", []):
            check(k in doc, f"schema: {path}.{k} missing")
        for k, sub in schema.get("properties", {}).items():
            if k in doc:
                validate(doc[k], sub, f"{path}.{k}", root)
    if isinstance(doc, list) and "items" in schema:
        for i, item in enumerate(doc):
            validate(item, schema["items"], f"{path}[{i}]", root)


def inspect(path, *flags):
    r = subprocess.run([BIN, "inspect", path, "--json", *flags], capture_output=True, text=True)
    doc = json.loads(r.stdout) if r.stdout.strip() else None
    if doc is not None:
        validate(doc, SCHEMA)
    return r.returncode, doc, r.stderr


def codes(doc):
    return {(p["code"], p["layer"]) for p in doc["problems"]}


def copy(src, name):
    d = os.path.join(tmp, name)
    shutil.copytree(src, d, copy_function=shutil.copy)
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)
    return d


def edit_scales(d, fn):
    p = os.path.join(d, "model-00002-of-00002.safetensors")
    tensors, meta = st.read_all(p)
    fn(tensors)
    st.write_file(p, tensors, meta)
    idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
    idx["weight_map"] = {k: v for k, v in idx["weight_map"].items() if v != "model-00002-of-00002.safetensors"}
    idx["weight_map"].update({k: "model-00002-of-00002.safetensors" for k in tensors})
    json.dump(idx, open(os.path.join(d, "model.safetensors.index.json"), "w"))


def set_scale(name, value):
    return lambda t: t.__setitem__(name, ("F32", t[name][1], st.f32_bytes([value] * (len(t[name][2]) // 4))))


tmp = tempfile.mkdtemp(prefix="ctcal-inspect-")
try:
    good = os.path.join(tmp, "good")
    for recipe, out in (("fp8_kv_per_tensor.yaml", good), ("r3_fp8_attention.yaml", os.path.join(tmp, "r3"))):
        r = subprocess.run([BIN, "-q", "calibrate", os.path.join(SRC, "recipes", recipe), "--model", MODEL,
                            "--dataset", TEXT, "--num-samples", "8", "--max-seq-length", "64", "--output", out],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"calibrate {recipe}: {r.stderr}")

    rc, doc, _ = inspect(good, "--strict")
    check(rc == 0 and doc["problems"] == [], f"good checkpoint: rc {rc}, problems {doc and doc['problems']}")
    check(doc["serving"]["vllm"]["serves_as_calibrated"] and doc["serving"]["vllm"]["command"] == f"vllm serve {good}",
          f"good: vLLM verdict {doc['serving']['vllm']['command']}")
    check(len(doc["layers"]) == 5 and doc["layers"][0]["k"]["shape"] == [1], "good: layer table")

    # The engine's verdict counts under --strict: vLLM 0.34's AutoWeightsLoader raises ValueError on R3_* weights,
    # and the R3 serving branch refuses FP8 KV scales together with the rotation.
    rc, doc, _ = inspect(os.path.join(tmp, "r3"), "--strict")
    check(rc == 5, f"r3 checkpoint: --strict exit {rc}, expected 5 (mainline vLLM cannot load it)")
    check(not doc["serving"]["vllm"]["loadable"] and doc["serving"]["vllm_r3"]["applicable"], "r3: verdicts")
    check(any("ValueError" in r for r in doc["serving"]["vllm"]["reasons"]), f"r3: ValueError named: {doc['serving']['vllm']['reasons']}")
    rc, doc, _ = inspect(os.path.join(tmp, "r3"), "--strict", "--engine", "vllm-r3")
    check(rc == 5 and not doc["serving"]["vllm_r3"]["meets"], f"r3 + FP8 under the R3 branch: exit {rc}, expected 5")
    rc, _, _ = inspect(os.path.join(tmp, "r3"))
    check(rc == 0, f"r3 without --strict: exit {rc}, expected 0")
    rc, _, _ = inspect(good, "--strict", "--engine", "vllm-r3")
    check(rc == 0, f"good checkpoint under the R3 branch's rules: exit {rc}, expected 0 (same rules without R3)")
    r = subprocess.run([BIN, "inspect", good], capture_output=True, text=True)
    check("no problems found" in r.stdout and r.returncode == 0, "good: text says no problems found")

    # Int and asymmetric KV: vLLM's validate_kv_cache_scheme raises NotImplementedError.
    for recipe in ("int8_kv_asym_per_head.yaml",):
        out = os.path.join(tmp, recipe.replace(".yaml", ""))
        r = subprocess.run([BIN, "-q", "calibrate", os.path.join(SRC, "recipes", recipe), "--model", MODEL,
                            "--dataset", TEXT, "--num-samples", "4", "--max-seq-length", "32", "--output", out],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"calibrate {recipe}: {r.stderr}")
        rc, doc, _ = inspect(out, "--strict")
        check(rc == 5 and not doc["serving"]["vllm"]["loadable"], f"{recipe}: --strict exit {rc}, expected 5")
        check(any("NotImplementedError" in x for x in doc["serving"]["vllm"]["reasons"]), f"{recipe}: reason names NotImplementedError")

    # Per-head scales load only on FlashAttention 3: a condition, not a refusal.
    out = os.path.join(tmp, "per_head")
    r = subprocess.run([BIN, "-q", "calibrate", os.path.join(SRC, "recipes", "fp8_kv_per_head.yaml"), "--model", MODEL,
                        "--dataset", TEXT, "--num-samples", "4", "--max-seq-length", "32", "--output", out],
                       capture_output=True, text=True)
    rc, doc, _ = inspect(out, "--strict")
    check(rc == 0 and doc["serving"]["vllm"]["loadable"], f"per-head: exit {rc}")
    check(any("FlashAttention 3" in c for c in doc["serving"]["vllm"]["conditions"]), f"per-head: FA3 condition: {doc['serving']['vllm']}")

    # An attention group whose target is a regex: vLLM validates `weights: null` and fails to load.
    d = copy(os.path.join(tmp, "r3"), "regex_attention_group")
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["quantization_config"]["config_groups"]["attention"]["targets"] = ["re:.*self_attn$"]
    cfg["quantization_config"]["transform_config"] = {}
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2, sort_keys=True)
    rc, doc, _ = inspect(d, "--strict")
    check(rc == 5 and ("attention_group_targets", None) in codes(doc), f"regex attention group: {doc and codes(doc)}")
    check(not doc["serving"]["vllm"]["loadable"], "regex attention group: not loadable")
    check("q" in doc["layers"][0] and "zero_point" in doc["layers"][0]["q"], "r3: q_scale and zero points shown")

    planted = {
        "zero_scale": (set_scale("model.layers.2.self_attn.k_scale", 0.0), ("zero_scale", 2)),
        "nan_scale": (set_scale("model.layers.1.self_attn.v_scale", float("nan")), ("nonfinite_scale", 1)),
        "inf_scale": (set_scale("model.layers.1.self_attn.v_scale", float("inf")), ("nonfinite_scale", 1)),
        "negative_scale": (set_scale("model.layers.3.self_attn.k_scale", -0.5), ("negative_scale", 3)),
        "implausible_scale": (set_scale("model.layers.0.self_attn.k_scale", 1e6), ("implausible_scale", 0)),
        "missing_scale": (lambda t: t.pop("model.layers.4.self_attn.v_scale"), ("missing_scale", 4)),
        "wrong_shape": (lambda t: t.__setitem__("model.layers.0.self_attn.k_scale", ("F32", [2], st.f32_bytes([0.1, 0.1]))), ("scale_shape", 0)),
        "wrong_dtype": (lambda t: t.__setitem__("model.layers.0.self_attn.k_scale", ("I32", [1], b"\1\0\0\0")), ("scale_dtype", 0)),
        "legacy_name": (lambda t: t.__setitem__("model.layers.2.self_attn.k_proj.output_scale", t.pop("model.layers.2.self_attn.k_scale")), ("legacy_scale_name", 2)),
        "extra_scale": (lambda t: t.__setitem__("model.layers.9.self_attn.k_scale", t["model.layers.0.self_attn.k_scale"]), ("extra_scale", None)),
        "all_ones": (lambda t: [set_scale(n, 1.0)(t) for n in list(t)], ("uncalibrated", None)),
    }
    for name, (fn, want) in planted.items():
        d = copy(good, name)
        edit_scales(d, fn)
        rc, doc, err = inspect(d, "--strict")
        check(doc is not None and want in codes(doc), f"{name}: expected {want}, got {doc and codes(doc)} {err}")
        check(rc == 5, f"{name}: --strict exit {rc}, expected 5")
        rc, _, _ = inspect(d)
        check(rc == 0, f"{name}: without --strict exit {rc}, expected 0")

    d = copy(good, "missing_shard")
    os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))
    rc, doc, _ = inspect(d, "--strict")
    check(("missing_shard", None) in codes(doc) and rc == 5, f"missing shard: {doc and codes(doc)}")

    d = copy(os.path.join(tmp, "r3"), "bad_transform")
    def spoil(t):
        name = "model.layers.0.self_attn.R3_q_attn.weight"
        vals = list(st.struct.unpack("<64d", t[name][2]))
        vals[5] = 3.0
        t[name] = ("F64", [8, 8], st.struct.pack("<64d", *vals))
    edit_scales(d, spoil)
    rc, doc, _ = inspect(d, "--strict")
    check(("transform_not_orthogonal", None) in codes(doc), f"bad transform: {doc and codes(doc)}")

    # Not quantized: reported as a problem (vLLM would use scale 1.0), exit 0 unless --strict;
    # the text never says "no problems found" when --strict exits 5.
    rc, doc, _ = inspect(MODEL)
    check(rc == 0 and doc["quantized"] is False, f"base model: rc {rc}")
    check(("no_kv_scales", None) in codes(doc), f"base model: no_kv_scales problem: {codes(doc)}")
    rc, doc, _ = inspect(os.path.join(MODEL, "config.json"), "--strict")
    check(rc == 5 and doc["kind"] == "config", f"base config --strict: rc {rc}")
    r = subprocess.run([BIN, "inspect", MODEL, "--strict"], capture_output=True, text=True)
    check(r.returncode == 5 and "no problems found" not in r.stdout, f"base model text: exit {r.returncode}, {r.stdout[-300:]}")

    # llm-compressor layouts (reference §2.3, §4.1): an old CT <= 0.12 dump with fewer keys and
    # `minmax`, bf16 scales; and a new one with attention quantization and fp8 zero points.
    d = copy(good, "llmc_old")
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["quantization_config"] = {"config_groups": {}, "format": "dense", "global_compression_ratio": None, "ignore": [],
        "kv_cache_scheme": {"num_bits": 8, "type": "float", "strategy": "tensor", "symmetric": True, "dynamic": False,
                            "observer": "minmax", "block_structure": None, "group_size": None},
        "quant_method": "compressed-tensors", "quantization_status": "compressed", "sparsity_config": {}, "version": "0.12.2"}
    cfg["torch_dtype"] = "bfloat16"
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2, sort_keys=True)
    def to_bf16(t):
        for n in list(t):
            vals = st.values_from(t[n]) if hasattr(st, "values_from") else list(st.struct.unpack("<%df" % (len(t[n][2]) // 4), t[n][2]))
            t[n] = ("BF16", t[n][1], b"".join(st.struct.pack("<f", v)[2:] for v in vals))
    edit_scales(d, to_bf16)
    rc, doc, _ = inspect(d, "--strict")
    check(rc == 0 and doc["layers"][0]["k"]["dtype"] == "BF16", f"llm-compressor old layout: rc {rc} {doc and doc['problems']}")
    check("minmax" in doc["quantization"]["kv_cache"], "old layout: observer shown")
    rc, doc, _ = inspect(os.path.join(tmp, "r3"))
    check(doc["quantization"]["config_groups"][0].startswith("attention: attention"), "new layout: attention group in words")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

finish("inspect")
