#!/usr/bin/env python3
"""The serving verdict encodes vLLM 0.34.0's loader (issue 26 §1): each rule on a checkpoint ctcal
writes, or on a copy with one thing changed. tests/peer/vllm_judges_outputs.py then checks the same
verdicts against vLLM 0.34.0's own functions; this test runs without vLLM, in the plain suite.

usage: serving_verdict_test.py CTCAL_BINARY SOURCE_DIR
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
GOLDEN = os.path.join(SRC, "tests", "golden", "data")


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True)


def calibrate(recipe, out, *extra, model=MODEL, data=TEXT):
    r = run("calibrate", recipe, "--model", model, "--dataset", data, "--num-samples", "8",
            "--max-seq-length", "64", "--output", out, *extra)
    check(r.returncode == 0, f"calibrate {os.path.basename(recipe)} {extra}: exit {r.returncode}: {r.stderr[-500:]}")
    if r.returncode == 0:
        # calibrate decides its verdict from what it wrote, without reading the output back
        # (issue 27); `inspect` reads the files: the two verdicts must be the same lines.
        ins = run("inspect", out)
        mine, theirs = verdict_block(r.stdout), verdict_block(ins.stdout)
        check(mine and mine == theirs, f"calibrate {os.path.basename(recipe)} {extra}: its verdict\n{mine}\n"
              f"is not inspect's\n{theirs}")
    return r


def verdict_block(text):
    """The serving verdict as printed: from the engine's line to the end."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("vllm 0.34.0")), len(lines))
    return "\n".join(lines[start:]).strip()


def verdict(path):
    r = run("inspect", path, "--json")
    return json.loads(r.stdout)["serving"]["vllm"]


def rename_tensors(d, fn):
    """Applies fn(tensors) to all tensors of checkpoint copy `d` (a tensor keeps its shard; a new name
    goes to the last shard) and rewrites the shards and the index."""
    index_path = os.path.join(d, "model.safetensors.index.json")
    index = json.load(open(index_path))
    shards = sorted(set(index["weight_map"].values()))
    tensors, metas = {}, {}
    for shard in shards:
        ts, metas[shard] = st.read_all(os.path.join(d, shard))
        tensors.update(ts)
    fn(tensors)
    where = {n: index["weight_map"].get(n, shards[-1]) for n in tensors}
    for shard in shards:
        st.write_file(os.path.join(d, shard), {n: t for n, t in tensors.items() if where[n] == shard}, metas[shard])
    index["weight_map"] = where
    json.dump(index, open(index_path, "w"))


def recipe_path(name):
    return os.path.join(SRC, "recipes", name)


tmp = tempfile.mkdtemp(prefix="ctcal-verdict-")
try:
    # The engine the rules encode is named in the JSON and the text.
    good = os.path.join(tmp, "good")
    r = calibrate(recipe_path("fp8_kv_per_tensor.yaml"), good)
    v = verdict(good)
    check(v.get("engine") == "vllm 0.34.0", f"engine named: {v.get('engine')}")
    check("vllm 0.34.0" in r.stdout + r.stderr, "calibrate prints the engine version of its verdict")
    check(v["loadable"] and v["serves_as_calibrated"], f"good: {v['reasons']}")
    # --kv-cache-dtype fp8 is redundant with a kv_cache_scheme (auto becomes fp8): said, not printed.
    check(v["command"] == f"vllm serve {good}", f"good: serve line {v['command']}")
    check(any("not needed" in n and "auto" in n for n in v["notes"]), f"good: fp8 flag redundancy stated: {v['notes']}")
    check(any("missing q/k/v scale becomes 1.0" in n for n in v["notes"]), "good: silent 1.0 default stated")
    check([l["cache"] for l in v["kv_layers"]] == ["fp8"] * 5 and all(l["k"] == "checkpoint" for l in v["kv_layers"]),
          f"good: per-layer verdict {v['kv_layers']}")

    # Skip layers: space-separated (nargs="+", matched as str(layer_idx) in list), and the verdict
    # says what happens without the flag (every Attention gets the KV method: FP8 at 1.0).
    skip = os.path.join(tmp, "skip")
    r = calibrate(recipe_path("fp8_kv_per_tensor.yaml"), skip, "--kv-skip-layers", "2")
    v = verdict(skip)
    skipped = [l["layer"] for l in v["kv_layers"] if l["cache"] == "auto"]
    check(len(skipped) == 2, f"skip: two layers unquantized under the serve line: {v['kv_layers']}")
    flag = "--kv-cache-dtype-skip-layers " + " ".join(map(str, skipped))
    check(v["command"] is not None and v["command"].endswith(flag), f"skip: serve line {v['command']!r}, want ...{flag!r}")
    check("," not in (v["command"] or ","), f"skip: no comma-joined indices: {v['command']}")
    check(flag in r.stdout + r.stderr, f"skip: calibrate's line carries {flag!r}")
    w = v["without_skip_flag"]
    check(w is not None and all(w["kv_layers"][l]["cache"] == "fp8" and w["kv_layers"][l]["k"] == "1.0" for l in skipped),
          f"skip: without the flag, skipped layers run FP8 at 1.0: {w}")
    text = run("inspect", skip).stdout
    check("scale 1.0" in text and "without --kv-cache-dtype-skip-layers" in text, f"skip: inspect says what the missing flag does: {text[-800:]}")

    # R3 on a Llama: AutoWeightsLoader raises ValueError on the R3_* tensors (not KeyError).
    r3 = os.path.join(tmp, "r3")
    calibrate(recipe_path("r3_fp8_kv.yaml"), r3)
    v = verdict(r3)
    check(not v["loadable"] and v["load_error"] and v["load_error"]["exception"] == "ValueError",
          f"r3: ValueError: {v['load_error']}")
    check(not any("KeyError" in x for x in v["reasons"]), f"r3: no KeyError claim: {v['reasons']}")

    # R3 on gpt-oss: its loader skips unknown names, so it loads and runs unrotated: loud.
    golden = json.load(open(os.path.join(GOLDEN, "gpt_oss_classic_bf16.json")))
    data = os.path.join(tmp, "gpt_oss.jsonl")
    with open(data, "w") as f:
        for ids in golden["samples"]:
            f.write(json.dumps({"input_ids": ids}) + "\n")
    gr3 = os.path.join(tmp, "gpt_oss_r3")
    r = calibrate(recipe_path("r3_fp8_kv.yaml"), gr3, model=os.path.join(GOLDEN, golden["model_dir"]), data=data)
    if r.returncode == 0:
        v = verdict(gr3)
        check(v["loadable"] and not v["serves_as_calibrated"] and v["command"] is None, f"gpt-oss r3: {v}")
        check(any("WRONG OUTPUT" in x and "unrotated" in x for x in v["reasons"]), f"gpt-oss r3: loud reason: {v['reasons']}")
        check("WRONG OUTPUT" in r.stdout + r.stderr, "gpt-oss r3: calibrate prints the loud reason")

    # A legacy k_proj.output_scale is not remapped for compressed-tensors: loading fails (the judge saw
    # vLLM 0.34 raise AttributeError in the stacked qkv_proj mapping).
    d = os.path.join(tmp, "legacy_output_scale")
    shutil.copytree(good, d)
    rename_tensors(d, lambda t: t.__setitem__("model.layers.2.self_attn.k_proj.output_scale",
                                              t.pop("model.layers.2.self_attn.k_scale")))
    v = verdict(d)
    check(not v["loadable"] and v["load_error"]["exception"] == "AttributeError"
          and v["load_error"]["tensor"] == "model.layers.2.self_attn.k_proj.output_scale", f"legacy output_scale: {v['load_error']}")

    # A fused kv_scale becomes k_scale only: v_scale stays 1.0.
    d = os.path.join(tmp, "legacy_kv_scale")
    shutil.copytree(good, d)
    def fuse(t):
        t["model.layers.1.self_attn.kv_scale"] = t.pop("model.layers.1.self_attn.k_scale")
        t.pop("model.layers.1.self_attn.v_scale")
    rename_tensors(d, fuse)
    v = verdict(d)
    l1 = v["kv_layers"][1]
    check(v["loadable"] and l1["k"] == "checkpoint kv_scale" and l1["v"] == "1.0", f"kv_scale: layer 1 {l1}")
    check(not v["serves_as_calibrated"] and any("v_scale, which stays 1.0" in x for x in v["reasons"]), f"kv_scale: {v['reasons']}")

    # Per-head scales: FlashAttention 3 and 4.
    ph = os.path.join(tmp, "per_head")
    calibrate(recipe_path("fp8_kv_per_head.yaml"), ph)
    v = verdict(ph)
    check(any("FlashAttention 3" in c and "4 (Blackwell)" in c for c in v["conditions"]), f"per-head: {v['conditions']}")

    # FP8 MoE experts (get_moe_method, then CompressedTensorsW8A8Fp8MoEMethod.__init__); the vLLM judge,
    # which collects these outputs, holds them to vLLM's own code.
    golden = json.load(open(os.path.join(GOLDEN, "qwen3_moe_fp32.json")))
    data = os.path.join(tmp, "qwen3_moe.jsonl")
    with open(data, "w") as f:
        for ids in golden["samples"]:
            f.write(json.dumps({"input_ids": ids}) + "\n")
    # (weights, inputs, dynamic inputs, what vLLM does): per-tensor/per-tensor and per-channel/per-token
    # load; per-tensor weights with per-token inputs and per-channel weights with static per-tensor
    # inputs fail the method's `assert ... BLOCK`.
    for weights, inputs, dynamic, want in (("tensor", "tensor", "false", None), ("channel", "tensor", "false", "AssertionError"),
                                           ("tensor", "token", "true", "AssertionError"), ("channel", "token", "true", None)):
        recipe = os.path.join(tmp, f"moe_{weights}_{inputs}.yaml")
        with open(recipe, "w") as f:
            f.write(f"""quant_stage:
  quant_modifiers:
    QuantizationModifier:
      ignore: ["lm_head", "re:.*mlp.gate$"]
      config_groups:
        group_0:
          targets: ["Linear"]
          weights: {{num_bits: 8, type: float, strategy: {weights}, dynamic: false, symmetric: true}}
          input_activations: {{num_bits: 8, type: float, strategy: {inputs}, dynamic: {dynamic}, symmetric: true}}
      kv_cache_scheme: {{num_bits: 8, type: float, strategy: tensor, dynamic: false, symmetric: true}}
""")
        out = os.path.join(tmp, f"moe_{weights}_{inputs}")
        if calibrate(recipe, out, model=os.path.join(GOLDEN, golden["model_dir"]), data=data).returncode != 0:
            continue
        v = verdict(out)
        if want is None:
            check(v["loadable"] and v["serves_as_calibrated"], f"FP8 MoE {weights}/{inputs}: {v['reasons']}")
        else:
            e = v["load_error"] or {}
            check(not v["loadable"] and e.get("exception") == want and ".experts." in (e.get("tensor") or ""),
                  f"FP8 MoE {weights}/{inputs}: {want} on an expert: {v['load_error']}")
        if weights == "channel" and inputs == "token":
            # compressed-tensors refuses static per-token args before any MoE rule (planted: ctcal's
            # recipe parser refuses to write it).
            planted = out + "-static-token"
            shutil.copytree(out, planted)
            cfg = json.load(open(os.path.join(planted, "config.json")))
            cfg["quantization_config"]["config_groups"]["group_0"]["input_activations"]["dynamic"] = False
            json.dump(cfg, open(os.path.join(planted, "config.json"), "w"), indent=2)
            v = verdict(planted)
            check(not v["loadable"] and (v["load_error"] or {}).get("exception") == "ValidationError",
                  f"static per-token inputs: ValidationError: {v['load_error']}")

    # FP8 Linear on a multimodal wrapper: ctcal copies the vision tower unchanged, so a Linear group
    # that reaches it is refused by name (vLLM's qwen3_5.py builds the tower with the quant config and
    # would find no FP8 weights); with the tower ignored, as llm-compressor's example does, it loads.
    golden = json.load(open(os.path.join(GOLDEN, "qwen3_5_mm_bf16.json")))
    data = os.path.join(tmp, "qwen3_5_mm.jsonl")
    with open(data, "w") as f:
        for ids in golden["samples"]:
            f.write(json.dumps({"input_ids": ids}) + "\n")
    w8a8 = open(recipe_path("fp8_w8a8_fp8_kv.yaml")).read()
    check('ignore: ["lm_head"]' in w8a8, "the shipped W8A8 recipe's ignore line")
    for ignore, want_exit in (('["lm_head", "re:.*linear_attn.*"]', 3),
                              ('["lm_head", "re:.*linear_attn.*", "re:model.visual.*"]', 0)):
        recipe = os.path.join(tmp, f"w8a8_mm_{want_exit}.yaml")
        with open(recipe, "w") as f:
            f.write(w8a8.replace('ignore: ["lm_head"]', f"ignore: {ignore}"))
        out = os.path.join(tmp, f"w8a8_mm_{want_exit}")
        r = run("calibrate", recipe, "--model", os.path.join(GOLDEN, golden["model_dir"]), "--dataset", data,
                "--output", out, "-q")
        check(r.returncode == want_exit, f"W8A8 on the Qwen3.5 wrapper, ignore {ignore}: exit {r.returncode}, want "
              f"{want_exit}: {r.stderr[-400:]}")
        if want_exit == 3:
            check("model.visual." in r.stderr and '"re:model.visual.*"' in r.stderr and not os.path.exists(out),
                  f"the refusal names the tower and its ignore entry, writes nothing: {r.stderr[-400:]}")
        elif r.returncode == 0:
            v = verdict(out)
            check(v["loadable"], f"W8A8 with the tower ignored: {v['reasons']}")

    # Configs of models ctcal does not run: MLA, hybrids, MXFP4 (inspect reads a config.json alone).
    kv = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor", "dynamic": False}
    for arch, want in (("DeepseekV3ForCausalLM", "MLA"), ("Qwen3NextForCausalLM", "hybrid")):
        p = os.path.join(tmp, arch + ".json")
        json.dump({"architectures": [arch], "quantization_config": {"quant_method": "compressed-tensors",
                   "config_groups": {}, "kv_cache_scheme": kv, "format": "dense"}}, open(p, "w"))
        v = verdict(p)
        words = " ".join(v["reasons"] + v["notes"])
        check(want in words, f"{arch}: verdict names {want}: {words}")
    mla = verdict(os.path.join(tmp, "DeepseekV3ForCausalLM.json"))
    check(not mla["serves_as_calibrated"], "MLA: scales not served")
    v = verdict(os.path.join(GOLDEN, "models", "gpt_oss_mxfp4"))
    check(not v["serves_as_calibrated"] and any("Mxfp4Config" in x for x in v["reasons"]), f"mxfp4: {v['reasons']}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

finish("serving verdict")
