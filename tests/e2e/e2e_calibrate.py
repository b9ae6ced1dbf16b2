#!/usr/bin/env python3
"""End to end: `ctcal calibrate` on the real stories260K model, checked with an independent reader
(Python standard library only): names, shapes, dtypes, index, scale values against the report,
unchanged weights, untouched input directory, determinism across thread counts.

usage: e2e_calibrate.py CTCAL_BINARY SOURCE_DIR
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


def dir_digest(d):
    out = {}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        with open(p, "rb") as f:
            out[name] = (hashlib.sha256(f.read()).hexdigest(), os.stat(p).st_mtime_ns)
    return out


def calibrate(recipe, out, *extra):
    cmd = [BIN, "calibrate", os.path.join(SRC, "recipes", recipe), "--model", MODEL, "--dataset", TEXT,
           "--num-samples", "24", "--max-seq-length", "192", "--output", out, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    check(r.returncode == 0, f"{recipe}: exit {r.returncode}: {r.stderr[-2000:]}")
    return r


def check_checkpoint(out, recipe, site_shapes, scale_dtype="F32", zero_points=None, r3=False, r2=False):
    """site_shapes: {"k": [1], ...}; zero_points: dtype of *_zero_point tensors or None."""
    files = sorted(os.listdir(out))
    for f in ("config.json", "model.safetensors.index.json", "recipe.yaml", "ctcal_report.json",
              "tokenizer.model", "generation_config.json", "model-00001-of-00002.safetensors",
              "model-00002-of-00002.safetensors"):
        check(f in files, f"{recipe}: {f} missing from output ({files})")
    check(not any(re.match(r"model\.safetensors$", f) for f in files), f"{recipe}: a bare model.safetensors would shadow the index")
    index = json.load(open(os.path.join(out, "model.safetensors.index.json")))
    seen = {}
    total = 0
    for shard in [f for f in files if f.endswith(".safetensors")]:
        check(re.fullmatch(r"model-\d{5}-of-00002\.safetensors", shard), f"{recipe}: shard name {shard}")
        header, _, _ = st_reader.read_header(os.path.join(out, shard))
        for name, info in header.items():
            check(name not in seen, f"{recipe}: {name} in two shards")
            seen[name] = shard
            total += info["data_offsets"][1] - info["data_offsets"][0]
    check(index["weight_map"] == seen, f"{recipe}: index weight_map does not match the shards")
    check(index["metadata"]["total_size"] == total, f"{recipe}: total_size {index['metadata']['total_size']} != {total}")
    # Every input tensor is present with identical bytes.
    src = os.path.join(MODEL, "model.safetensors")
    in_header, _, _ = st_reader.read_header(src)
    for name in in_header:
        check(name in seen, f"{recipe}: input tensor {name} missing")
        if name in seen:
            same = st_reader.tensor_bytes(src, name) == st_reader.tensor_bytes(os.path.join(out, seen[name]), name)
            rotated = r2 and (name.endswith("v_proj.weight") or name.endswith("o_proj.weight"))
            check(same != rotated, f"{recipe}: {name} {'not rewritten by R2' if rotated else 'changed'}")
    # Hard links need one file system; across file systems (e.g. a tmpfs /tmp) ctcal copies.
    first = os.path.join(out, "model-00001-of-00002.safetensors")
    linked = os.stat(src).st_ino == os.stat(first).st_ino and os.stat(src).st_dev == os.stat(first).st_dev
    same_fs = os.stat(src).st_dev == os.stat(out).st_dev
    check(linked == (same_fs and not r2), f"{recipe}: shard linked={linked}, expected {same_fs and not r2} (same file system: {same_fs})")
    # Scales: names, shapes, dtypes, values = float32(absmax / 448) from the report.
    report = json.load(open(os.path.join(out, "ctcal_report.json")))
    scale_shard = os.path.join(out, "model-00002-of-00002.safetensors")
    header, _, _ = st_reader.read_header(scale_shard)
    expected = set()
    for layer in range(5):
        for site, shape in site_shapes.items():
            name = f"model.layers.{layer}.self_attn.{site}_scale"
            expected.add(name)
            check(header.get(name, {}).get("shape") == shape, f"{recipe}: {name} shape {header.get(name)} != {shape}")
            check(header.get(name, {}).get("dtype") == scale_dtype, f"{recipe}: {name} dtype")
            vals = st_reader.values(scale_shard, name)
            check(all(v > 0 and v == v and v != float("inf") for v in vals), f"{recipe}: {name} not positive finite: {vals}")
            check(vals == [st_reader.f32(s) for s in report["layers"][layer][site]["scale"]], f"{recipe}: {name} != report")
            if zero_points:
                zp = f"model.layers.{layer}.self_attn.{site}_zero_point"
                expected.add(zp)
                check(header.get(zp, {}).get("dtype") == zero_points and header[zp]["shape"] == shape, f"{recipe}: {zp} {header.get(zp)}")
            if r3 and site in ("k",):
                for loc in ("q_attn", "k_cache"):
                    w = f"model.layers.{layer}.self_attn.R3_{loc}.weight"
                    expected.add(w)
                    check(header.get(w, {}).get("dtype") == "F64" and header[w]["shape"] == [8, 8], f"{recipe}: {w} {header.get(w)}")
                    vals = st_reader.values(scale_shard, w)
                    sylvester = [(-1.0) ** bin(i & j).count("1") for i in range(8) for j in range(8)]
                    check(vals == sylvester, f"{recipe}: {w} is not the unnormalised Sylvester matrix")
    check(set(header) == expected, f"{recipe}: unexpected scale-shard tensors {sorted(set(header) ^ expected)}")
    if not zero_points and all(shape == [1] for shape in site_shapes.values()):
        for layer in report["layers"]:
            for site in site_shapes:
                e = layer[site]
                check(abs(e["scale"][0] - e["absmax"] / 448.0) <= 2.0 ** -23 * e["scale"][0],
                      f"{recipe}: layer {layer['layer']} {site}_scale {e['scale'][0]} is not absmax/448 = {e['absmax'] / 448.0}")
    check(report["samples"] == 24, f"{recipe}: report samples {report['samples']}")
    check(isinstance(report["tokens"], int) and 24 <= report["tokens"] <= 24 * 192, f"{recipe}: report tokens")
    # config.json: input keys unchanged, quantization_config as compressed-tensors writes it.
    cfg_in = json.load(open(os.path.join(MODEL, "config.json")))
    cfg_out = json.load(open(os.path.join(out, "config.json")))
    qc = cfg_out.pop("quantization_config")
    check(cfg_out == cfg_in, f"{recipe}: config.json keys other than quantization_config changed")
    for key, val in (("format", "dense"), ("quant_method", "compressed-tensors"),
                     ("quantization_status", "compressed"), ("version", "0.18.0"), ("sparsity_config", {}),
                     ("global_compression_ratio", None), ("ignore", [])):
        check(qc.get(key) == val, f"{recipe}: quantization_config.{key} = {qc.get(key)!r}")
    check(set(qc["kv_cache_scheme"]) == {"actorder", "block_structure", "dynamic", "group_size", "num_bits", "observer",
                                         "observer_kwargs", "scale_dtype", "strategy", "symmetric", "type", "zp_dtype"},
          f"{recipe}: kv_cache_scheme keys")
    # The written recipe.yaml is a valid recipe for ctcal's own strict parser.
    v = subprocess.run([BIN, "validate", os.path.join(out, "recipe.yaml")], capture_output=True, text=True)
    check(v.returncode == 0, f"{recipe}: recipe.yaml does not validate: {v.stderr[-800:]}")
    text = open(os.path.join(out, "config.json")).read()
    check(text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n", f"{recipe}: config.json is not json.dump(indent=2, sort_keys=True)")
    return qc


tmp = tempfile.mkdtemp(prefix="ctcal-e2e-")
try:
    before = dir_digest(MODEL)
    out = os.path.join(tmp, "fp8")
    r = calibrate("fp8_kv_per_tensor.yaml", out)
    check("wrote" in r.stdout and "k_scale" in r.stdout, "summary not printed")
    qc = check_checkpoint(out, "fp8_kv_per_tensor", {"k": [1], "v": [1]})
    check(qc["kv_cache_scheme"]["observer"] == "static_minmax" and qc["transform_config"] == {}, "fp8 scheme")

    out = os.path.join(tmp, "head")
    calibrate("fp8_kv_per_head.yaml", out)
    check_checkpoint(out, "fp8_kv_per_head", {"k": [4, 1, 1], "v": [4, 1, 1]})

    out = os.path.join(tmp, "int8")
    calibrate("int8_kv_asym_per_head.yaml", out)
    qc = check_checkpoint(out, "int8_kv_asym_per_head", {"k": [4, 1, 1], "v": [4, 1, 1]}, zero_points="I8")
    check(qc["kv_cache_scheme"]["zp_dtype"] == "torch.int8", "int8 zp_dtype")

    out = os.path.join(tmp, "r3att")
    calibrate("r3_fp8_attention.yaml", out)
    qc = check_checkpoint(out, "r3_fp8_attention", {"q": [1], "k": [1], "v": [1]}, zero_points="F8_E4M3", r3=True)
    check(qc["config_groups"]["attention"]["targets"] == ["LlamaAttention"] and
          qc["config_groups"]["attention"]["weights"] is None, "attention config group")
    check(qc["transform_config"]["config_groups"]["R3"]["apply"][0]["location"] == "q_attn", "transform_config R3")

    out = os.path.join(tmp, "r2r3")
    calibrate("r2_r3_int4_kv.yaml", out)
    qc = check_checkpoint(out, "r2_r3_int4_kv", {"k": [4, 1, 1], "v": [4, 1, 1]}, zero_points="I8", r3=True, r2=True)
    check(sorted(qc["transform_config"]["config_groups"]) == ["R2", "R3"], "R2 + R3 transform_config")

    # Same inputs and seed -> byte-identical outputs, whatever --threads is, in both compute modes
    # (bf16 GEMMs run as fixed tiles for this, see model/onednn_matmul.cpp; fp32 GEMMs sum in one fixed
    # order, see model/fixed_order_gemm.h: oneDNN's sgemm differed at --threads 8 and 16 on a 2-core AVX2 CPU).
    bf16_ok = subprocess.run([BIN, "calibrate", os.path.join(SRC, "recipes", "fp8_kv_per_head.yaml"), "--model", MODEL,
                              "--dataset", TEXT, "--compute-dtype", "bf16", "--dry-run"],
                             capture_output=True, text=True).returncode == 0
    for mode in ("fp32", "bf16") if bf16_ok else ("fp32",):
        a = os.path.join(tmp, f"{mode}-t1")
        calibrate("fp8_kv_per_head.yaml", a, "--threads", "1", "--compute-dtype", mode)
        ra = json.load(open(os.path.join(a, "ctcal_report.json")))
        ra.pop("timings")
        for threads in ("2", "16"):
            b = os.path.join(tmp, f"{mode}-t{threads}")
            calibrate("fp8_kv_per_head.yaml", b, "--threads", threads, "--compute-dtype", mode)
            for f in ("model-00002-of-00002.safetensors", "config.json", "model.safetensors.index.json", "recipe.yaml"):
                check(open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read(),
                      f"{mode}: {f} differs between --threads 1 and {threads}")
            rb = json.load(open(os.path.join(b, "ctcal_report.json")))
            rb.pop("timings")
            check(ra == rb, f"{mode}: ctcal_report.json differs between --threads 1 and {threads} (beyond timings)")
    if not bf16_ok:
        print("note: no AVX512-BF16/AMX here; bf16 determinism not checked")

    # ctcal eval on two of the checkpoints written above: the documented JSON layout.
    r = subprocess.run([BIN, "eval", "--model", MODEL, "--dataset", TEXT, "--quantized", os.path.join(tmp, "fp8"),
                        "--quantized", os.path.join(tmp, "int8"), "--num-samples", "8", "--max-seq-length", "128",
                        "--seed", "7", "--json"], capture_output=True, text=True)
    check(r.returncode == 0, f"eval: {r.stderr[-1500:]}")
    ev = json.loads(r.stdout)
    check(set(ev["baseline"]) >= {"nll", "ppl", "tokens"} and isinstance(ev["quantized"], list) and len(ev["quantized"]) == 2, "eval json layout")
    for run in ev["quantized"]:
        check(set(run) >= {"nll", "ppl", "kl", "top1", "layers"} and len(run["layers"]) == 5, "eval run fields")
        check(run["kl"] >= 0 and 0 < run["top1"] <= 1, f"eval metrics in range: {run['kl']} {run['top1']}")

    check(dir_digest(MODEL) == before, "the input model directory was modified")
    check(not [d for d in os.listdir(tmp) if "ctcal-tmp" in d], "temporary directories left behind")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

finish("e2e calibrate")
