#!/usr/bin/env python3
"""`ctcal eval --kv-cache-dtype nvfp4` (issue 31 items 1-2) on a real trained model with 16-wide
heads (babyllama-tok105: 4 KV heads of 16; stories260K's heads are 8 wide, which NVFP4 cannot
quantize), FP8 per-tensor KV calibrated on the fly on half of the TinyStories text and evaluated
on the other half:

- the JSON names each KV format of the run: `fp8` (the calibrated scales) and `nvfp4 s=1.0`,
  `nvfp4 s=amax/448`, `nvfp4 s=amax/2688`, `nvfp4 s=searched`, each with finite KL, NLL, SQNR
  and per-layer block counts; KL grows from fp8 to every NVFP4 rule beyond the paired-bootstrap
  noise eval reports;
- the searched s (issue 31 item 3): each layer's chosen candidate is the model's default fixed
  rule (the one of lower geometric-mean error ratio over layers), or the least error of its
  evidence where that is better beyond the bootstrap interval;
  its s is that candidate times the amax, the evidence's fixed-rule errors are
  those candidates', and on the held-out text it is not worse than the better fixed rule beyond
  the bootstrap noise;
- the model-level guard: search.calibration_kl holds the KL of the searched set, amax/448 and
  amax/2688 on the calibration samples, and chosen_from names the least (ties: searched), whose s
  the row carries;
- the decode multipliers are the calibrated scales read back as amax (scale x 448), in fp32;
- every (token, KV head) block of 16 is counted once per layer (tokens counted here from the
  document's own sample lengths); on layer 0, whose K/V are the same in every run, a larger s
  never saturates more blocks and never flushes fewer;
- the terminal table prints the same rows;
- `nvfp4 s=searched +R3` last: the same search with Q and K rotated by the head-dim Hadamard (R3),
  marked evidence only (mainline vLLM cannot apply R3), with its KL difference to `nvfp4 s=searched`;
- bad values: an unknown --kv-cache-dtype exits 2 (usage) naming it; a model whose head_dim is not
  a multiple of 16 exits 4 naming it; an int KV recipe exits 2 saying NVFP4 needs FP8 scales.

usage: eval_nvfp4_test.py CTCAL_BINARY SOURCE_DIR
"""
import json
import math
import os
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from e2e_util import check, ctcal_runner, data_dir, finish, require, split_text  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
DATA = data_dir(SRC)
MODEL = os.path.join(DATA, "hf", "babyllama-tok105")
STORIES = os.path.join(DATA, "hf", "stories260K")
require(MODEL)
TEXT = os.path.join(DATA, "tinystories-valid", "validation_100.txt")
RULES = ["nvfp4 s=1.0", "nvfp4 s=amax/448", "nvfp4 s=amax/2688", "nvfp4 s=searched"]
KV_HEADS, HEAD_DIM = 4, 16  # babyllama-tok105's config.json


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


run = ctcal_runner(BIN)


with tempfile.TemporaryDirectory() as tmp:
    calib, held = split_text(TEXT, tmp)
    common = ["eval", "--model", MODEL, "--dataset", held, "--calibration-dataset", calib,
              "--recipe", os.path.join(SRC, "recipes", "fp8_kv_per_tensor.yaml"), "--num-samples", "16",
              "--max-seq-length", "192", "--no-unit-scales", "--kv-cache-dtype", "nvfp4",
              "--threads", "1"]  # one thread: eval's OpenMP barriers crawl on a loaded shared machine
    p = run(*common, "--json")
    check(p.returncode == 0, f"eval --kv-cache-dtype nvfp4 exits 0 (got {p.returncode}: {p.stderr[-500:]})")
    doc = json.loads(p.stdout) if p.returncode == 0 else {"quantized": [{}]}
    r = doc["quantized"][0]
    formats = r.get("kv_cache_dtypes", [])
    names = [d.get("name") for d in formats]
    check(names == ["fp8"] + RULES + ["nvfp4 s=searched +R3"], f"kv_cache_dtypes names {names}")
    # Issue 31 item 5: R3 (head-dim Hadamard on Q and K) before the NVFP4 K cache, as evidence only.
    r3 = formats[-1] if formats else {}
    r3_diff = r3.get("kl_diff_vs_searched", {})
    check("mainline vLLM 0.34" in r3.get("evidence_only", "") and r3.get("rotation") is True
          and abs(r3_diff.get("kl_diff", 1) - (r3.get("kl", 0) - formats[-2].get("kl", 0))) < 1e-12,
          f"+R3 row: evidence only, rotated, KL difference to the unrotated searched s ({r3_diff})")
    by = {d.get("name"): d for d in formats}
    fp8 = by.get("fp8", {})
    check(fp8.get("kl") == r.get("kl") and fp8.get("nll") == r.get("nll"), "the fp8 entry is the calibrated run itself")
    # Every sample's tokens, from the document: predicted tokens + 1 per sample.
    lengths = [n + 1 for n in doc.get("sample_tokens", [])]
    all_counted = doc.get("samples") == len(lengths)
    tokens = sum(lengths)
    fp8_layers = r.get("layers", [])
    for name in RULES:
        d = by.get(name, {})
        kl = d.get("kl", float("nan"))
        check(isinstance(kl, float) and math.isfinite(kl) and math.isfinite(d.get("delta_nll", float("nan"))),
              f"{name}: KL {kl} and dNLL finite")
        check(kl > fp8.get("kl", float("inf")), f"{name}: KL {kl} above fp8's {fp8.get('kl')}")
        diff = d.get("kl_diff_vs_fp8", {})
        ci = diff.get("kl_diff_ci95") or [float("nan"), float("nan")]
        check(abs(diff.get("kl_diff", 0) - (kl - fp8.get("kl", 0))) < 1e-12, f"{name}: kl_diff is KL - KL(fp8)")
        check(ci[0] > 0 and diff.get("significant") is True,
              f"{name}: KL - KL(fp8) interval {ci} above 0 (beyond the bootstrap noise)")
        check(d.get("kv_cache_dtype") == "nvfp4", f"{name}: kv_cache_dtype nvfp4")
        layers = d.get("layers", [])
        check(len(layers) == len(fp8_layers) == 5, f"{name}: 5 layers ({len(layers)})")
        for le, lf in zip(layers, fp8_layers):
            for site in ("k", "v"):
                blocks = le.get(f"{site}_blocks", -1)
                if all_counted:
                    check(blocks == tokens * KV_HEADS * HEAD_DIM // 16,
                          f"{name} layer {le['layer']} {site}: {blocks} blocks for {tokens} tokens x {KV_HEADS} heads")
                sat, fl = le.get(f"{site}_saturated_blocks", -1), le.get(f"{site}_flushed_blocks", -1)
                check(0 <= sat <= blocks and 0 <= fl <= blocks, f"{name} layer {le['layer']} {site}: counts in range")
                sq = le.get(f"{site}_sqnr_db")
                check(isinstance(sq, float) and 5 < sq < 40, f"{name} layer {le['layer']} {site}: SQNR {sq} dB")
                # s from the calibrated FP8 scale (= amax / 448), rounded to fp32 as the kernel takes it.
                scale = lf[f"{site}_scale"][0]
                if name == "nvfp4 s=searched":
                    ev = d.get("search", {}).get("layers", [{}] * 5)[le["layer"]].get(site, {})
                    err, over, chosen = ev.get("error", []), ev.get("s_over_amax", []), ev.get("chosen", -1)
                    least, fixed = ev.get("least_error"), ev.get("default_fixed")
                    ci = ev.get("least_minus_fixed_ci95") or [0, 0]
                    # The default: the fixed rule of lower geometric-mean error ratio over layers.
                    ratios = [math.log(x[site]["error"][4] / x[site]["error"][12]) for x in d.get("search", {}).get("layers", [])]
                    check(len(err) == len(over) == 17 and least == err.index(min(err))
                          and fixed == (4 if sum(ratios) < 0 else 12),
                          f"searched layer {le['layer']} {site}: least {least} and default {fixed} of 17 errors")
                    # The least error only when it is better than the default beyond noise.
                    check(chosen == fixed or (chosen == least and ci[1] < 0),
                          f"searched layer {le['layer']} {site}: chosen {chosen} (least {least}, fixed {fixed}, {ci})")
                    check(len(err) == 17 and ev.get("error_at_amax_448") == err[4] and ev.get("error_at_amax_2688") == err[12],
                          f"searched layer {le['layer']} {site}: fixed-rule errors are candidates 4 and 12")
                    # The model-level guard kept the per-layer choice, or replaced it by a fixed rule.
                    source = d.get("search", {}).get("chosen_from")
                    if source == "searched" and 0 <= chosen < len(over):
                        want = over[chosen] * scale * 448
                        check(abs(le.get(f"{site}_s", 0) - want) <= 1e-6 * want,
                              f"searched layer {le['layer']} {site}: s {le.get(f'{site}_s')} = candidate x amax {want}")
                    else:
                        want = f32(scale * 448 / {"amax/448": 448, "amax/2688": 2688}.get(source, float("nan")))
                        check(le.get(f"{site}_s") == want,
                              f"searched layer {le['layer']} {site}: chosen_from {source}: s {le.get(f'{site}_s')} == {want}")
                    continue
                want = {"nvfp4 s=1.0": 1.0, "nvfp4 s=amax/448": f32(scale * 448 / 448),
                        "nvfp4 s=amax/2688": f32(scale * 448 / 2688)}[name]
                check(le.get(f"{site}_s") == want, f"{name} layer {le['layer']} {site}: s {le.get(f'{site}_s')} == {want}")
    # The guard: the set of least KL on the calibration samples (ties: the searched one).
    search = by.get("nvfp4 s=searched", {}).get("search", {})
    ckl = search.get("calibration_kl", {})
    check(sorted(ckl) == ["amax/2688", "amax/448", "searched"] and all(math.isfinite(x) and x > 0 for x in ckl.values()),
          f"search.calibration_kl has the three sets' KL: {ckl}")
    if len(ckl) == 3:
        least = min(ckl.values())
        want = "searched" if ckl["searched"] == least else min(("amax/448", "amax/2688"), key=lambda n: ckl[n])
        check(search.get("chosen_from") == want, f"chosen_from {search.get('chosen_from')} is the least calibration KL ({want})")
    best = by.get("nvfp4 s=searched", {}).get("kl_diff_vs_best_fixed", {})
    fixed = min(("nvfp4 s=amax/448", "nvfp4 s=amax/2688"), key=lambda n: by.get(n, {}).get("kl", float("inf")))
    check(best.get("best_fixed") == fixed and best.get("worse_beyond_noise") is False
          and (best.get("kl_diff_ci95") or [1])[0] <= 0,
          f"searched s not worse than the better fixed rule ({fixed}) beyond the noise: {best}")
    # Layer 0 sees the same K/V in every run: a larger s gives a smaller block scale amax / (6 s).
    l0 = {n: by.get(n, {}).get("layers", [{}])[0] for n in RULES[:3]}
    for site in ("k", "v"):
        big, small = l0["nvfp4 s=amax/448"], l0["nvfp4 s=amax/2688"]
        check(big.get(f"{site}_saturated_blocks", 1) <= small.get(f"{site}_saturated_blocks", 0),
              f"layer 0 {site}: s=amax/448 saturates no more blocks than amax/2688")
        check(big.get(f"{site}_flushed_blocks", 0) >= small.get(f"{site}_flushed_blocks", 1),
              f"layer 0 {site}: s=amax/448 flushes no fewer blocks than amax/2688")
    print("KL:", {n: round(by.get(n, {}).get("kl", float("nan")), 5) for n in ["fp8"] + RULES},
          "dNLL:", {n: round(by.get(n, {}).get("delta_nll", float("nan")), 5) for n in ["fp8"] + RULES})

    # The table's rows and words, on a smaller run (each eval runs every NVFP4 rule: minutes under ASan).
    light = [{"16": "4", "192": "64"}.get(a, a) for a in common]
    p = run(*light)
    check(p.returncode == 0, f"eval table exits 0 ({p.returncode})")
    for name in ["fp8 (calibrated scales)"] + RULES:
        check(any(line.strip().startswith(name) for line in p.stdout.splitlines()), f"table row '{name}'")
    check("blocks saturated / flushed" in p.stdout, "table says which blocks it counts")

    p = run(*[a if a != "nvfp4" else "fp4" for a in common])
    check(p.returncode == 2 and "--kv-cache-dtype fp4" in p.stderr, f"--kv-cache-dtype fp4: exit 2 naming it ({p.returncode})")
    if os.path.isdir(STORIES):
        p = run(*[a if a != MODEL else STORIES for a in common])
        check(p.returncode == 4 and "head_dim 8" in p.stderr, f"stories260K (head_dim 8): exit 4 naming it ({p.returncode})")
    int_recipe = os.path.join(SRC, "recipes", "int8_kv_asym_per_head.yaml")
    p = run(*[a if not a.endswith("fp8_kv_per_tensor.yaml") else int_recipe for a in common])
    check(p.returncode == 2 and "symmetric FP8" in p.stderr and "calibrating" not in p.stderr,
          f"int8 KV recipe: exit 2 before calibrating ({p.returncode}: {p.stderr[-300:]})")

finish("eval_nvfp4")
