#!/usr/bin/env python3
"""End to end: FP8 Linear layers with the KV cache on stories260K, checked with the Python standard
library against an independent re-implementation of compressed-tensors' FP8 math:
  - recipes/fp8_w8a8_fp8_kv.yaml (llm-compressor's llama3_fp8_kv_example.py): every decoder Linear
    `weight` is F8_E4M3, bit-exact to fp8_e4m3(clamp(w / s)) with s = f32(absmax / 448) per tensor;
    `weight_scale` [1] and `input_scale` [1] (F32, the model's dtype); the input scale is
    f32(absmax / 448) of the shared input the report records (q/k/v share one, gate/up one);
    lm_head and the embedding are untouched; quantization_config has format float-quantized,
    group_0 as compressed-tensors dumps it, ignore [lm_head], kv_cache_scheme;
  - the FP8_DYNAMIC preset with per-head KV: per-channel weight scales [rows, 1], no input_scale;
  - inspect lists every FP8 Linear layer's scales and flags a missing input_scale and NaN codes;
  - refusals: lm_head not ignored, a group matching no Linear layer (exit 3);
  - both pass `inspect --strict`, and the output read back as an input (FP8 weights dequantized)
    calibrates again (KV only):
    - default (--propagate unquantized): the calibration forward runs on the original weights, as
      llm-compressor 0.14 does: llmcompressor/pipelines/sequential/pipeline.py
      SequentialPipeline.__call__ runs both the calibrating and the propagating pass inside
      DisableQuantization(model) (llmcompressor/utils/helpers.py), so compressed-tensors'
      quantized_forward (quantization/lifecycle/forward.py) skips the weight and input QDQ and
      QuantizedKVCache.forward (modeling/kvcache.py) skips the K/V QDQ; its
      quantization_aware_calibration argument is "Deprecated. This argument has no effect". (Checked
      against the peer itself by tests/peer/oneshot_vs_ctcal.py on recipes/fp8_w8a8_fp8_kv.yaml.)
      The read-back KV scales then move by what the FP8 weights change: the figure printed.
    - --propagate quantized: the forward runs on dequantize(quantize(W)), the very values the
      output holds, with unquantized inputs (no Linear input QDQ: llm-compressor never applies one
      while calibrating, and a static input scale is final only after the pass; reading back needs
      the weights only). Read back, the output reproduces its KV scales within ROUND_TRIP = 1e-4
      relative (the issue's bound; both forwards do the same fp32 arithmetic on the same weights,
      so the measured difference is 0).

usage: fp8_linear_test.py CTCAL_BINARY SOURCE_DIR
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import st_reader  # noqa: E402
from e2e_util import check, finish, stories260k  # noqa: E402
from fp8_ref import fp8_code, f32  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
MODEL, TEXT = stories260k(SRC)
SITE = {"self_attn.q_proj": "qkv_input", "self_attn.k_proj": "qkv_input", "self_attn.v_proj": "qkv_input",
        "self_attn.o_proj": "o_proj_input", "mlp.gate_proj": "gate_up_input", "mlp.up_proj": "gate_up_input",
        "mlp.down_proj": "down_input"}
DYNAMIC = """
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      targets: Linear
      scheme: FP8_DYNAMIC
      ignore: [lm_head]
      kv_cache_scheme: {num_bits: 8, type: float, strategy: attn_head}
"""


ROUND_TRIP = 1e-4


def calibrate(recipe, model, out, *extra):
    cmd = [BIN, "calibrate", recipe, "--model", model, "--dataset", TEXT, "--num-samples", "16",
           "--max-seq-length", "128", "--output", out, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    check(r.returncode == 0, f"{recipe} on {model}: exit {r.returncode}: {r.stderr[-1500:]}")
    return r.returncode == 0


def tensors(out):
    index = json.load(open(os.path.join(out, "model.safetensors.index.json")))["weight_map"]
    return {n: (os.path.join(out, f), st_reader.read_header(os.path.join(out, f))[0][n]) for n, f in index.items()}


def check_output(out, static, per_channel):
    t = tensors(out)
    src = os.path.join(MODEL, "model.safetensors")
    src_header = st_reader.read_header(src)[0]
    report = json.load(open(os.path.join(out, "ctcal_report.json")))
    cfg = json.load(open(os.path.join(MODEL, "config.json")))
    for layer in range(cfg["num_hidden_layers"]):
        for suffix, site in SITE.items():
            m = f"model.layers.{layer}.{suffix}"
            path, info = t[m + ".weight"]
            check(info["dtype"] == "F8_E4M3" and info["shape"] == src_header[m + ".weight"]["shape"],
                  f"{m}.weight: {info}")
            rows, cols = info["shape"]
            w = st_reader.values(src, m + ".weight")
            codes = st_reader.tensor_bytes(path, m + ".weight")
            spath, sinfo = t[m + ".weight_scale"]
            scales = st_reader.values(spath, m + ".weight_scale")
            check(sinfo["dtype"] == "F32" and sinfo["shape"] == ([rows, 1] if per_channel else [1]),
                  f"{m}.weight_scale: {sinfo}")
            for r in range(rows):
                row = w[r * cols:(r + 1) * cols]
                absmax = max(abs(v) for v in (row if per_channel else w))
                s = f32(absmax / 448.0)
                check(scales[r if per_channel else 0] == s, f"{m}.weight_scale[{r}] {scales[r if per_channel else 0]} != {s}")
                want = bytes(fp8_code(max(-448.0, min(448.0, f32(v / s)))) for v in row)
                check(codes[r * cols:(r + 1) * cols] == want, f"{m}.weight row {r}: FP8 codes differ")
            if static:
                ipath, iinfo = t[m + ".input_scale"]
                want = f32(report["layers"][layer][site]["absmax"] / 448.0)
                got = st_reader.values(ipath, m + ".input_scale")
                check(iinfo["shape"] == [1] and iinfo["dtype"] == "F32" and got[0] == want,
                      f"{m}.input_scale {got} {iinfo} != {want}")
            else:
                check(m + ".input_scale" not in t, f"{m}.input_scale written for dynamic inputs")
    check(t["model.embed_tokens.weight"][1]["dtype"] == "F32", "embed_tokens changed")
    check(not any(n.startswith("lm_head") for n in t), "lm_head tensors appeared")
    qc = json.load(open(os.path.join(out, "config.json")))["quantization_config"]
    check(qc["format"] == "float-quantized" and qc["ignore"] == ["lm_head"], f"format/ignore: {qc['format']} {qc['ignore']}")
    g = qc["config_groups"]["group_0"]
    check(g["targets"] == ["Linear"] and g["format"] == "float-quantized" and g["output_activations"] is None,
          f"group_0: {g}")
    check(g["weights"]["type"] == "float" and g["weights"]["strategy"] == ("channel" if per_channel else "tensor"),
          f"group_0.weights: {g['weights']}")
    check((g["input_activations"]["dynamic"] is False) == static, f"group_0.input_activations: {g['input_activations']}")
    r = subprocess.run([BIN, "inspect", out, "--strict"], capture_output=True, text=True)
    check(r.returncode == 0, f"inspect --strict {out}: exit {r.returncode}: {r.stdout[-1500:]}")


def kv(out):
    t = tensors(out)
    return {n: st_reader.values(p, n) for n, (p, _) in t.items() if n.endswith(("k_scale", "v_scale"))}


def read_back(out, tmp, name):
    """KV scales of `out` calibrated again as an input (KV only; its own KV scales are replaced).
    Returns the worst relative change."""
    again = os.path.join(tmp, name + "-again")
    if not calibrate(os.path.join(SRC, "recipes", "fp8_kv_per_tensor.yaml"), out, again):
        return math.inf
    a, b = kv(out), kv(again)
    return max(abs(b[n][0] - a[n][0]) / a[n][0] for n in a)


with tempfile.TemporaryDirectory() as tmp:
    static_out = os.path.join(tmp, "fp8")
    if calibrate(os.path.join(SRC, "recipes", "fp8_w8a8_fp8_kv.yaml"), MODEL, static_out):
        check_output(static_out, static=True, per_channel=False)
        # inspect: per-module weight and input scales; a missing input_scale and a NaN FP8 code
        # are problems (exit 5 with --strict).
        r = subprocess.run([BIN, "inspect", static_out, "--json"], capture_output=True, text=True)
        lin = json.loads(r.stdout).get("linear", {})
        check(len(lin) == 35 and all("input_scale" in e for e in lin.values()), f"inspect linear: {len(lin)} modules")
        broken = os.path.join(tmp, "broken")
        shutil.copytree(static_out, broken)
        index_path = os.path.join(broken, "model.safetensors.index.json")
        index = json.load(open(index_path))
        m = "model.layers.0.self_attn.q_proj"
        for shard in set(index["weight_map"].values()):
            ts, meta = st_reader.read_all(os.path.join(broken, shard))
            if m + ".input_scale" in ts or m + ".weight" in ts:
                ts.pop(m + ".input_scale", None)
                if m + ".weight" in ts:
                    dt, shape, raw = ts[m + ".weight"]
                    ts[m + ".weight"] = (dt, shape, b"\x7f" + raw[1:])
                st_reader.write_file(os.path.join(broken, shard), ts, meta)
        del index["weight_map"][m + ".input_scale"]
        json.dump(index, open(index_path, "w"))
        r = subprocess.run([BIN, "inspect", broken, "--strict"], capture_output=True, text=True)
        check(r.returncode == 5 and "missing_input_scale" in r.stdout and "nan_fp8_weight" in r.stdout,
              f"inspect of a broken FP8 checkpoint: exit {r.returncode}: {r.stdout[-800:]}")
        # eval: the FP8 W8A8 run (weights + inputs + KV together, what transformers' compressed-tensors
        # forward computes: tests/peer/transformers_loads.py) and each part alone.
        r = subprocess.run([BIN, "eval", "--model", MODEL, "--dataset", TEXT, "--quantized", static_out, "--json",
                            "--num-samples", "8", "--max-seq-length", "64", "--no-unit-scales"],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"eval of the FP8 output: exit {r.returncode}: {r.stderr[-600:]}")
        if r.returncode == 0:
            run = json.loads(r.stdout)["quantized"]
            check(len(run) == 1, f"eval lists {len(run)} runs; the parts belong inside the one run")
            parts = run[0].get("parts", {})
            check(sorted(parts) == ["activations", "kv", "weights"], f"eval parts: {sorted(parts)}")
            for name, p in parts.items():
                check(0 < p["kl"] < run[0]["kl"], f"eval part {name}: KL {p['kl']} vs together {run[0]['kl']}")
            print("eval: KL together {:.3g}; weights {:.3g}, activations {:.3g}, kv {:.3g}".format(
                run[0]["kl"], *(parts[k]["kl"] for k in ("weights", "activations", "kv"))))
        worst = read_back(static_out, tmp, "unquantized")
        print(f"FP8 W8A8 output (--propagate unquantized) read back: KV scales move by at most {100 * worst:.2f} %")
        # Measured 6.97 % (per-tensor FP8 weights; 2.4 % per channel, see quantized_input_test):
        # a bound with a 2x margin: the unquantized model's KV scales move by what the FP8 weights
        # change. More than ROUND_TRIP, or --propagate would change nothing.
        check(ROUND_TRIP < worst < 0.15, f"read-back KV scales moved by {worst:.3g}")
    # --propagate quantized: the round trip of the issue.
    quant_out = os.path.join(tmp, "fp8-quantized")
    if calibrate(os.path.join(SRC, "recipes", "fp8_w8a8_fp8_kv.yaml"), MODEL, quant_out, "--propagate", "quantized"):
        check_output(quant_out, static=True, per_channel=False)
        worst = read_back(quant_out, tmp, "quantized")
        print(f"FP8 W8A8 output (--propagate quantized) read back: KV scales move by at most {worst:.3g} (relative)")
        check(worst <= ROUND_TRIP, f"round trip: read-back KV scales moved by {worst:.3g} > {ROUND_TRIP}")
        written = open(os.path.join(quant_out, "recipe.yaml")).read()
        check("propagate: quantized" in written, "recipe.yaml does not record propagate: quantized")
    recipe = os.path.join(tmp, "dynamic.yaml")
    open(recipe, "w").write(DYNAMIC)
    dyn_out = os.path.join(tmp, "dyn")
    if calibrate(recipe, MODEL, dyn_out):
        check_output(dyn_out, static=False, per_channel=True)

    # Refusals (exit 3): lm_head not ignored; a group that matches no Linear layer.
    for body, what in (("      targets: Linear\n      scheme: FP8\n", "would quantize lm_head"),
                       ("      ignore: [lm_head]\n      config_groups:\n        g: {targets: [\"re:.*nothing$\"], "
                        "weights: {type: float}}\n", "matches no Linear layer")):
        bad = os.path.join(tmp, "bad.yaml")
        open(bad, "w").write("q_stage:\n  q_modifiers:\n    QuantizationModifier:\n"
                             "      kv_cache_scheme: {type: float}\n" + body)
        r = subprocess.run([BIN, "calibrate", bad, "--model", MODEL, "--dataset", TEXT, "--output",
                            os.path.join(tmp, "bad-out")], capture_output=True, text=True)
        check(r.returncode == 3 and what in r.stderr, f"{what}: exit {r.returncode}: {r.stderr[-600:]}")

finish("fp8 linear")
