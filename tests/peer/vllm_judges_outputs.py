#!/usr/bin/env python3
"""vLLM 0.34.0 judges every serving verdict ctcal gives (issue 26 §2): each checkpoint below is
built and loaded by vLLM's own code under the serve line ctcal prints (vllm_judge.py says which
functions run and what is stubbed), and the test fails where ctcal's verdict and vLLM disagree:
loads or raises (and which exception), each layer's KV cache dtype, each scale vLLM ends with.

usage: vllm_judges_outputs.py CTCAL_BINARY SOURCE_DIR [SHARD/SHARDS]

SHARD/SHARDS (e.g. 1/2) judges one share of the checkpoints, so that ctest runs the shares side by side
on separate cores (tests/CMakeLists.txt): the stories260K ones all in share 1 (the planted copies
derive from one of them), the golden families and the collected checkpoints split by their index.

Checkpoints judged:
- the real stories260K model calibrated with every shipped recipe (recipes/*.yaml) and the peer
  tests' recipes, with --kv-skip-layers, and with legacy scale names planted (kv_scale,
  k_proj.output_scale);
- every golden family's tiny transformers checkpoint calibrated with an FP8 KV recipe (per tensor,
  per head, FP8 W8A8 where the family allows it), and gpt-oss with R3;
- every checkpoint the e2e and peer tests wrote in this ctest run: tests/judge_collect.py copies
  each `ctcal calibrate` output into $CTCAL_JUDGE_COLLECT (tests/CMakeLists.txt sets it for them and
  hands the folder to this test as $CTCAL_JUDGE_COLLECTED), and this test runs after them.
"""
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_util as pu  # noqa: E402
import vllm_judge  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
SHARD, SHARDS = (int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "1/1").split("/"))
vllm_judge.enter()


def in_share(index):
    """Whether item `index` of a list split over the shares is this share's."""
    return index % SHARDS == SHARD - 1

import vllm  # noqa: E402
import compressed_tensors  # noqa: E402

print(f"judge: vllm {vllm.__version__} (compressed-tensors {compressed_tensors.__version__}) from "
      f"{os.path.dirname(vllm.__file__)}", flush=True)
pu.check(vllm.__version__ == "0.34.0", f"the judge is vllm {vllm.__version__}, not 0.34.0")
GOLDEN = os.path.join(SRC, "tests", "golden", "data")
FP8_W8A8 = os.path.join(SRC, "recipes", "fp8_w8a8_fp8_kv.yaml")
PER_TENSOR = os.path.join(SRC, "recipes", "fp8_kv_per_tensor.yaml")
PER_HEAD = os.path.join(SRC, "recipes", "fp8_kv_per_head.yaml")


def plant(src, dst, fn):
    """Copy of checkpoint `src` with fn(tensors) applied to the shard holding the KV scales."""
    from safetensors.torch import load_file, save_file
    shutil.copytree(src, dst)
    index_path = os.path.join(dst, "model.safetensors.index.json")
    index = json.load(open(index_path))
    shard = index["weight_map"]["model.layers.0.self_attn.k_scale"]
    tensors = load_file(os.path.join(dst, shard))
    fn(tensors)
    save_file(tensors, os.path.join(dst, shard), metadata={"format": "pt"})
    index["weight_map"] = {n: f for n, f in index["weight_map"].items() if f != shard}
    index["weight_map"].update({n: shard for n in tensors})
    json.dump(index, open(index_path, "w"))
    return dst


def golden_case(case, tmp):
    golden = json.load(open(os.path.join(GOLDEN, case + ".json")))
    data = os.path.join(tmp, case + ".jsonl")
    pu.write_jsonl(golden["samples"], data)
    return os.path.join(GOLDEN, golden["model_dir"]), data


def own_checkpoints(tmp):
    """(label, directory) of the checkpoints this test writes itself."""
    out = []
    if SHARD == 1:
        out += stories_checkpoints(tmp)
    # The golden families (tiny transformers checkpoints of each architecture ctcal runs).
    cases = sorted(f[:-5] for f in os.listdir(GOLDEN) if f.endswith(".json") and
                   os.path.isdir(os.path.join(GOLDEN, "models", f[:-5])) and f[:-5] != "gpt_oss_mxfp4")
    for case in (c for i, c in enumerate(cases) if in_share(i)):
        m, data = golden_case(case, tmp)
        for recipe in (PER_TENSOR, PER_HEAD, FP8_W8A8):
            label = f"{case} {os.path.basename(recipe)}"
            d = os.path.join(tmp, label.replace(" ", "_"))
            r = pu.ctcal(BIN, "-q", "calibrate", recipe, "--model", m, "--dataset", data, "--output", d,
                         "--no-shuffle", expect=None)
            if r.returncode == 0:
                out.append((label, d))
            else:
                # ctcal refuses some combinations by name (exit 3: the shipped W8A8 recipe would quantize
                # an MoE router; exit 4: unsupported); those write nothing to judge.
                pu.check(r.returncode in (3, 4), f"{label}: calibrate exit {r.returncode}: {r.stderr[-300:]}")
    return out


def stories_checkpoints(tmp):
    """stories260K under every recipe, with --kv-skip-layers, and with legacy names planted; gpt-oss
    with R3."""
    out = []
    model = pu.model_dir("stories260K")
    text = os.path.join(pu.data_dir(), "tinystories-valid", "validation_100.txt")
    recipes = sorted(os.path.join(SRC, "recipes", f) for f in os.listdir(os.path.join(SRC, "recipes")))
    recipes += sorted(os.path.join(SRC, "tests", "peer", "recipes", f)
                      for f in os.listdir(os.path.join(SRC, "tests", "peer", "recipes")))
    for recipe in recipes:
        label = "stories260K " + os.path.basename(recipe)
        d = os.path.join(tmp, label.replace(" ", "_"))
        pu.ctcal(BIN, "-q", "calibrate", recipe, "--model", model, "--dataset", text, "--num-samples", "4",
                 "--max-seq-length", "64", "--output", d)
        out.append((label, d))
    for recipe in (PER_TENSOR, PER_HEAD):
        label = f"stories260K {os.path.basename(recipe)} --kv-skip-layers 2"
        d = os.path.join(tmp, label.replace(" ", "_"))
        pu.ctcal(BIN, "-q", "calibrate", recipe, "--model", model, "--dataset", text, "--num-samples", "4",
                 "--max-seq-length", "64", "--output", d, "--kv-skip-layers", "2")
        out.append((label, d))
    good = out[[l for l, _ in out].index("stories260K fp8_kv_per_tensor.yaml")][1]
    out.append(("stories260K legacy k_proj.output_scale", plant(good, os.path.join(tmp, "legacy_output_scale"),
               lambda t: t.__setitem__("model.layers.2.self_attn.k_proj.output_scale",
                                       t.pop("model.layers.2.self_attn.k_scale")))))

    def fuse(t):
        t["model.layers.1.self_attn.kv_scale"] = t.pop("model.layers.1.self_attn.k_scale")
        del t["model.layers.1.self_attn.v_scale"]
    out.append(("stories260K legacy kv_scale", plant(good, os.path.join(tmp, "legacy_kv_scale"), fuse)))
    out.append(("stories260K missing v_scale", plant(good, os.path.join(tmp, "missing_v_scale"),
               lambda t: t.pop("model.layers.3.self_attn.v_scale"))))
    # gpt-oss with R3: its loader skips the R3 tensors (loads, runs unrotated). The fp32 golden model,
    # since vLLM's CPU MoE kernels refuse bf16 here (vllm_judge.CPU_ONLY_REFUSALS).
    m, data = golden_case("gpt_oss_yarn_fp32", tmp)
    d = os.path.join(tmp, "gpt_oss_r3")
    pu.ctcal(BIN, "-q", "calibrate", os.path.join(SRC, "recipes", "r3_fp8_kv.yaml"), "--model", m,
             "--dataset", data, "--output", d, "--no-shuffle")
    out.append(("gpt_oss_yarn_fp32 r3_fp8_kv.yaml", d))
    return out


def collected():
    root = os.environ.get("CTCAL_JUDGE_COLLECTED")
    if not root or not os.path.isdir(root):
        return []
    names = [name for name in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, name, "config.json"))]
    return [(f"collected {name}", os.path.join(root, name)) for i, name in enumerate(names) if in_share(i)]


tmp = tempfile.mkdtemp(prefix="ctcal-vllm-judge-")
try:
    t0 = time.time()
    mine = own_checkpoints(tmp)
    theirs = collected()
    print(f"judge (share {SHARD}/{SHARDS}): {len(mine)} checkpoints of its own, {len(theirs)} collected from the suite "
          f"({os.environ.get('CTCAL_JUDGE_COLLECTED') or 'CTCAL_JUDGE_COLLECTED unset'})", flush=True)
    loaded = refused = not_judged = 0
    for label, d in mine + theirs:
        bad, summary = vllm_judge.judge(BIN, d, label)
        loaded += summary.startswith("loaded")
        not_judged += summary.startswith("NOT JUDGED")
        refused += summary.startswith("vLLM raised")
        print(f"{'FAIL' if bad else 'ok  '} {label}: {summary}", flush=True)
        for b in bad:
            pu.check(False, b)
    print(f"judge: {loaded} loaded, {refused} refused by vLLM, {not_judged} not judged on this CPU, "
          f"in {time.time() - t0:.0f} s", flush=True)
    pu.check(loaded > 0 and refused > 0, "the judge saw both loadable and refused checkpoints")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

pu.finish("vllm judges outputs")
