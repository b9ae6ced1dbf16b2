#!/usr/bin/env python3
"""End to end: calibrating the KV cache of an already-quantized checkpoint. The test makes an FP8
(float-quantized, per output channel, llm-compressor's FP8_DYNAMIC layout) and a W4A16
(pack-quantized int4, per channel) copy of stories260K with the Python standard library, runs
`ctcal calibrate` on each and checks that the weight shards are kept (hard links, bytes
unchanged), that `quantization_config` is merged (config_groups, format and ignore kept,
kv_cache_scheme added), that the output passes `inspect --strict`, and how far the KV scales move from the unquantized model's (printed:
what the quantized weights change). An unknown format exits 4 naming it.

usage: quantized_input_test.py CTCAL_BINARY SOURCE_DIR
"""
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import st_reader  # noqa: E402
from e2e_util import check, finish, stories260k  # noqa: E402
from fp8_ref import f32, fp8_code  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
MODEL, TEXT = stories260k(SRC)
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def quantize_model(out, scheme):
    """Writes out/ (config.json, model.safetensors, tokenizer.model) with every decoder Linear
    quantized: scheme "fp8" (float-quantized, per channel) or "w4a16" (pack-quantized int4 per channel)."""
    os.makedirs(out)
    tensors, meta = st_reader.read_all(os.path.join(MODEL, "model.safetensors"))
    new = {}
    for name, (dtype, shape, raw) in tensors.items():
        module = name[:-len(".weight")]
        if not (name.endswith(".weight") and module.split(".", 3)[-1] in LINEARS):
            new[name] = (dtype, shape, raw)
            continue
        assert dtype == "F32"
        rows, cols = shape
        w = struct.unpack("<%df" % (rows * cols), raw)
        scales, codes = [], []
        for r in range(rows):
            row = w[r * cols:(r + 1) * cols]
            absmax = max(abs(v) for v in row)
            if scheme == "fp8":
                s = f32(absmax / 448.0) or f32(2.0 ** -23)
                codes += [fp8_code(max(-448.0, min(448.0, f32(v / s)))) for v in row]
            else:
                s = f32(absmax / 7.5) or f32(2.0 ** -23)   # symmetric int4: bit_range / 2 = 7.5
                codes += [int(max(-8, min(7, round(f32(v / s))))) for v in row]
            scales.append(s)
        new[module + ".weight_scale"] = ("F32", [rows, 1], st_reader.f32_bytes(scales))
        if scheme == "fp8":
            new[module + ".weight"] = ("F8_E4M3", [rows, cols], bytes(codes))
        else:
            words_per_row = (cols * 4 + 31) // 32
            words = []
            for r in range(rows):
                row = [c + 8 for c in codes[r * cols:(r + 1) * cols]] + [0] * (words_per_row * 8 - cols)
                for wd in range(words_per_row):
                    words.append(sum(row[wd * 8 + i] << (4 * i) for i in range(8)))
            new[module + ".weight_packed"] = ("I32", [rows, words_per_row],
                                              struct.pack("<%dI" % len(words), *words))
            new[module + ".weight_shape"] = ("I64", [2], struct.pack("<2q", rows, cols))
    st_reader.write_file(os.path.join(out, "model.safetensors"), new, meta)
    shutil.copy(os.path.join(MODEL, "tokenizer.model"), out)
    cfg = json.load(open(os.path.join(MODEL, "config.json")))
    if scheme == "fp8":
        weights = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel", "dynamic": False,
                   "group_size": None}
        inputs = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "token", "dynamic": True,
                  "group_size": None}
        fmt = "float-quantized"
    else:
        weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False,
                   "group_size": None}
        inputs = None
        fmt = "pack-quantized"
    cfg["quantization_config"] = {
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": inputs,
                                      "output_activations": None, "format": fmt}},
        "format": fmt, "ignore": ["lm_head"], "quant_method": "compressed-tensors",
        "quantization_status": "compressed", "version": "0.20.1"}
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    return cfg["quantization_config"]


def calibrate(model, out):
    cmd = [BIN, "calibrate", os.path.join(SRC, "recipes", "fp8_kv_per_tensor.yaml"), "--model", model,
           "--dataset", TEXT, "--num-samples", "16", "--max-seq-length", "128", "--output", out]
    return subprocess.run(cmd, capture_output=True, text=True)


def kv_scales(out):
    index = json.load(open(os.path.join(out, "model.safetensors.index.json")))["weight_map"]
    return {n: st_reader.values(os.path.join(out, f), n)[0] for n, f in index.items()
            if n.endswith(("k_scale", "v_scale"))}


with tempfile.TemporaryDirectory() as tmp:
    base = os.path.join(tmp, "base")
    r = calibrate(MODEL, base)
    check(r.returncode == 0, f"unquantized: exit {r.returncode}: {r.stderr[-1500:]}")
    ref = kv_scales(base)
    for scheme in ("fp8", "w4a16"):
        qdir, out = os.path.join(tmp, scheme), os.path.join(tmp, scheme + "-kv")
        qc_in = quantize_model(qdir, scheme)
        r = calibrate(qdir, out)
        check(r.returncode == 0, f"{scheme}: exit {r.returncode}: {r.stderr[-1500:]}")
        if r.returncode != 0:
            continue
        check("dequantized one layer at a time" in r.stderr, f"{scheme}: no log line about the quantized input")
        qc = json.load(open(os.path.join(out, "config.json")))["quantization_config"]
        for k in ("config_groups", "format", "ignore"):
            check(qc[k] == qc_in[k], f"{scheme}: quantization_config.{k} changed: {qc[k]} != {qc_in[k]}")
        check(qc["kv_cache_scheme"]["type"] == "float" and qc["kv_cache_scheme"]["num_bits"] == 8,
              f"{scheme}: kv_cache_scheme missing")
        index = json.load(open(os.path.join(out, "model.safetensors.index.json")))["weight_map"]
        in_st = os.stat(os.path.join(qdir, "model.safetensors"))
        kept = [f for f in set(index.values()) if os.stat(os.path.join(out, f)).st_ino == in_st.st_ino]
        check(len(kept) == 1, f"{scheme}: the input shard is not hard-linked into the output ({sorted(set(index.values()))})")
        qnames = [n for n in st_reader.read_header(os.path.join(qdir, "model.safetensors"))[0]]
        check(all(n in index for n in qnames), f"{scheme}: input tensors missing from the output index")
        r = subprocess.run([BIN, "inspect", out, "--strict"], capture_output=True, text=True)
        check(r.returncode == 0, f"{scheme}: inspect --strict exit {r.returncode}: {r.stdout[-1500:]}")
        got = kv_scales(out)
        check(set(got) == set(ref), f"{scheme}: scale names differ")
        worst = max(abs(got[n] - ref[n]) / ref[n] for n in ref)
        print(f"{scheme}: KV scales move by at most {100 * worst:.2f} % from the unquantized model's")
        # FP8 per-channel weights change the keys and values by ~2^-4 relative at most per weight;
        # int4 by far more. Bounds with a wide margin over the printed figures.
        check(worst < (0.05 if scheme == "fp8" else 0.5), f"{scheme}: KV scales moved by {worst:.3f}")
    # An unknown compressed-tensors format: exit 4, naming it.
    bad = os.path.join(tmp, "fp8")
    cfg = json.load(open(os.path.join(bad, "config.json")))
    cfg["quantization_config"]["format"] = "marlin-24"
    for g in cfg["quantization_config"]["config_groups"].values():
        g["format"] = None
    json.dump(cfg, open(os.path.join(bad, "config.json"), "w"))
    r = calibrate(bad, os.path.join(tmp, "bad-out"))
    check(r.returncode == 4 and "marlin-24" in r.stderr, f"unknown format: exit {r.returncode}: {r.stderr[-800:]}")

finish("quantized input")
