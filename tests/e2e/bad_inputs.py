#!/usr/bin/env python3
"""Bad input, one ctest per case: `ctcal calibrate` must exit with the documented code, print a
message naming the file/field and what was expected, and leave no output (nor temporary) directory.

usage: bad_inputs.py --list | bad_inputs.py CTCAL_BINARY SOURCE_DIR CASE
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

USAGE, RECIPE, INPUT = 2, 3, 4


def copy_model(ctx):
    d = os.path.join(ctx["tmp"], "model")
    shutil.copytree(ctx["model"], d)
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)
    return d


def edit_config(ctx, **changes):
    d = copy_model(ctx)
    p = os.path.join(d, "config.json")
    cfg = json.load(open(p))
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    json.dump(cfg, open(p, "w"))
    return d


def write(ctx, name, text):
    p = os.path.join(ctx["tmp"], name)
    with open(p, "w") as f:
        f.write(text)
    return p


def poison_weight(ctx, tensor, value):
    d = copy_model(ctx)
    p = os.path.join(d, "model.safetensors")
    with open(p, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        b, _ = header[tensor]["data_offsets"]
        f.seek(8 + n + b)
        f.write(struct.pack("<f", value))
    return d


def truncate_shard(ctx):
    d = copy_model(ctx)
    p = os.path.join(d, "model.safetensors")
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size - 1000)
    return d


def header_length(ctx, n):
    d = copy_model(ctx)
    with open(os.path.join(d, "model.safetensors"), "r+b") as f:
        f.write(struct.pack("<Q", n))
    return d


def index_missing_shard(ctx):
    d = copy_model(ctx)
    header = json.loads(open(os.path.join(d, "model.safetensors"), "rb").read()[8:8 + struct.unpack("<Q", open(os.path.join(d, "model.safetensors"), "rb").read(8))[0]])
    wm = {k: "model-00001-of-00002.safetensors" for k in header if k != "__metadata__"}
    os.rename(os.path.join(d, "model.safetensors"), os.path.join(d, "model-00001-of-00002.safetensors"))
    wm["lm_head.weight"] = "model-00002-of-00002.safetensors"
    json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
    return d


def duplicate_across_shards(ctx):
    """Two shards that both hold model.norm.weight, listed by an index."""
    sys.path.insert(0, os.path.dirname(__file__))
    import st_reader as st
    d = copy_model(ctx)
    tensors, meta = st.read_all(os.path.join(d, "model.safetensors"))
    os.remove(os.path.join(d, "model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    st.write_file(os.path.join(d, "model-00001-of-00002.safetensors"), {n: tensors[n] for n in names[:half] + ["model.norm.weight"]}, meta)
    st.write_file(os.path.join(d, "model-00002-of-00002.safetensors"), {n: tensors[n] for n in names[half:]}, meta)
    wm = {n: ("model-00001-of-00002.safetensors" if i < half else "model-00002-of-00002.safetensors") for i, n in enumerate(names)}
    json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
    return d


GOOD_RECIPE = "fp8_kv_per_tensor.yaml"

# name -> (setup(ctx) -> dict of overrides, expected exit code, substrings of stderr)
CASES = {
    "missing_model_dir": (lambda c: {"model": os.path.join(c["tmp"], "nope")}, INPUT, ["nope", "does not exist"]),
    "missing_config": (lambda c: {"model": (lambda d: (os.remove(os.path.join(d, "config.json")), d)[1])(copy_model(c))}, INPUT, ["no config.json"]),
    "invalid_config_json": (lambda c: {"model": (lambda d: (open(os.path.join(d, "config.json"), "w").write("{oops"), d)[1])(copy_model(c))}, INPUT, ["config.json", "not valid JSON"]),
    "unsupported_architecture": (lambda c: {"model": edit_config(c, architectures=["GPT2LMHeadModel"])}, INPUT, ["architectures", "GPT2LMHeadModel", "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"]),
    "heads_not_divisible": (lambda c: {"model": edit_config(c, num_key_value_heads=3)}, INPUT, ["num_key_value_heads", "divisible"]),
    "config_missing_field": (lambda c: {"model": edit_config(c, hidden_size=None)}, INPUT, ["config.json", "'hidden_size'", "missing"]),
    "truncated_safetensors": (lambda c: {"model": truncate_shard(c)}, INPUT, ["model.safetensors", "truncated"]),
    "absurd_header_length": (lambda c: {"model": header_length(c, 1 << 62)}, INPUT, ["model.safetensors", "header length"]),
    "index_points_to_missing_shard": (lambda c: {"model": index_missing_shard(c)}, INPUT, ["model-00002-of-00002.safetensors", "does not exist"]),
    "tensor_missing": (lambda c: {"model": edit_config(c, num_hidden_layers=6)}, INPUT, ["model.layers.5.", "missing"]),
    "tensor_wrong_shape": (lambda c: {"model": edit_config(c, intermediate_size=200)}, INPUT, ["mlp", "has shape", "expected [200, 64]"]),
    "nan_in_weights": (lambda c: {"model": poison_weight(c, "model.layers.2.self_attn.k_proj.weight", float("nan"))}, INPUT, ["model.layers.2.self_attn.k_proj.weight", "NaN"]),
    "inf_in_norm_reaches_activations": (lambda c: {"model": poison_weight(c, "model.layers.1.input_layernorm.weight", float("inf"))}, INPUT, ["layer 1", "NaN or Inf"]),
    "malformed_yaml": (lambda c: {"recipe": write(c, "r.yaml", "quant_stage:\n  quant_modifiers: [\n")}, RECIPE, ["r.yaml", "YAML syntax error at line"]),
    "unknown_recipe_key": (lambda c: {"recipe": write(c, "r.yaml", "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      kv_cache_scheme: {type: float}\n      kv_cache_schema: {}\n")}, RECIPE, ["kv_cache_schema", "line 5", "valid keys"]),
    "invalid_args_combination": (lambda c: {"recipe": write(c, "r.yaml", "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      kv_cache_scheme: {type: float, strategy: group, group_size: 16}\n")}, RECIPE, ["strategy 'group'", "expected 'tensor' or 'attn_head'"]),
    "unsupported_rotation": (lambda c: {"recipe": write(c, "r.yaml", "quant_stage:\n  quant_modifiers:\n    SpinQuantModifier: {rotations: [R1]}\n    QuantizationModifier: {kv_cache_scheme: {type: float}}\n")}, RECIPE, ["R1 is not supported yet"]),
    "dataset_line_not_json": (lambda c: {"dataset": write(c, "d.jsonl", '{"input_ids": [1, 2]}\n{"input_ids": [1, 2\n')}, INPUT, ["d.jsonl", "line 2", "not valid JSON"]),
    "token_id_out_of_vocab": (lambda c: {"dataset": write(c, "d.jsonl", '{"input_ids": [1, 2, 512]}\n')}, INPUT, ["d.jsonl", "line 1", "512", "vocabulary [0, 512)"]),
    "empty_dataset": (lambda c: {"dataset": write(c, "d.jsonl", "\n")}, INPUT, ["d.jsonl", "no rows"]),
    "only_empty_samples": (lambda c: {"dataset": write(c, "d.jsonl", '{"input_ids": []}\n')}, INPUT, ["no usable sample"]),
    "tokenizer_of_another_model": (lambda c: {"model": (lambda d: (os.remove(os.path.join(d, "tokenizer.model")), shutil.copy(os.path.join(os.path.dirname(c["model"]), "..", "llama3-tokenizer", "tokenizer.json"), d), d)[2])(copy_model(c))}, INPUT, ["outside the model's vocabulary", "is it the model's tokenizer?"]),
    "row_without_text_or_ids": (lambda c: {"dataset": write(c, "d.jsonl", '{"prompt": "hi"}\n')}, INPUT, ["d.jsonl", "line 1", "neither 'input_ids' nor 'text'"]),
    "duplicate_tensor_across_shards": (lambda c: {"model": duplicate_across_shards(c)}, INPUT, ["model.norm.weight", "appears in both"]),
    "sequence_longer_than_context_is_truncated": (lambda c: {"dataset": write(c, "d.jsonl", json.dumps({"input_ids": [1] * 600}) + "\n"), "extra": ["--max-seq-length", "1000"], "expect_output": True}, 0, ["truncated to 512"]),
    "output_exists": (lambda c: {"output": (lambda p: (os.mkdir(p), p)[1])(os.path.join(c["tmp"], "exists"))}, USAGE, ["already exists", "--overwrite"]),
    "output_inside_model": (lambda c: {"model": (lambda d: d)(copy_model(c)), "output_in_model": True}, USAGE, ["inside"]),
}


def main():
    if sys.argv[1] == "--list":
        print("\n".join(sorted(list(CASES) + ["sigint_leaves_nothing", "sigterm_leaves_nothing"])))
        return 0
    binary, src, case = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, os.path.dirname(__file__))
    from e2e_util import stories260k
    model, text = stories260k(src)  # exits 77 (ctest SKIP) without the shared data
    tmp = tempfile.mkdtemp(prefix="ctcal-bad-")
    try:
        ctx = {"tmp": tmp, "model": model}
        args = {"recipe": os.path.join(src, "recipes", GOOD_RECIPE), "model": model,
                "dataset": text,
                "output": os.path.join(tmp, "out")}
        if case in ("sigint_leaves_nothing", "sigterm_leaves_nothing"):
            return signal_case(binary, args, tmp, signal.SIGINT if case.startswith("sigint") else signal.SIGTERM)
        setup, code, needles = CASES[case]
        overrides = setup(ctx)
        if overrides.pop("output_in_model", False):
            overrides["output"] = os.path.join(overrides["model"], "calibrated")
        args.update(overrides)
        existed = os.path.exists(args["output"])
        extra = overrides.get("extra", ["--max-seq-length", "64"])
        cmd = [binary, "calibrate", args["recipe"], "--model", args["model"], "--dataset", args["dataset"],
               "--output", args["output"], "--num-samples", "8", *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        ok = True
        if r.returncode != code:
            print(f"FAIL: exit code {r.returncode}, expected {code}")
            ok = False
        for n in needles:
            if n not in r.stderr:
                print(f"FAIL: message lacks {n!r}")
                ok = False
        if overrides.get("expect_output") and not os.path.isdir(args["output"]):
            print("FAIL: no output written")
            ok = False
        if r.returncode != 0 and os.path.exists(args["output"]) and not existed:
            print("FAIL: output directory left behind")
            ok = False
        leftovers = [f for f in os.listdir(os.path.dirname(args["output"])) if ".ctcal-tmp-" in f]
        if leftovers:
            print(f"FAIL: temporary directories left: {leftovers}")
            ok = False
        print("stderr:", r.stderr.strip()[-1500:])
        print(f"{case}: {'ok' if ok else 'FAILED'}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def signal_case(binary, args, tmp, sig):
    # Enough work to still be running when the signal arrives.
    cmd = [binary, "calibrate", args["recipe"], "--model", args["model"], "--dataset", args["dataset"],
           "--output", args["output"], "--num-samples", "512", "--max-seq-length", "512", "--threads", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and not [f for f in os.listdir(tmp) if ".ctcal-tmp-" in f]:
        time.sleep(0.01)  # wait until the staging directory exists
    time.sleep(0.2)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    left = os.listdir(tmp)
    ok = p.returncode not in (0, None) and not left
    print("stderr:", err.strip()[-800:])
    print(f"exit {p.returncode}, left in output parent: {left}")
    print(f"{sig.name}: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
