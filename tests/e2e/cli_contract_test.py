#!/usr/bin/env python3
"""What the command line promises, on the real binary and the real stories260K model:
- every subcommand's --json output parses as JSON (validate crashed with exit 139 on every recipe);
- --log-json writes one JSON object per line, multi-line errors included; an unknown
  CTCAL_LOG_LEVEL is a usage error (exit 2), never silence;
- --overwrite never replaces what a user owns: `.`, the current directory's parents, $HOME, `/`,
  a file, a non-empty directory that is not a previous ctcal output;
- a --report path that cannot be written fails before any work (exit 4), also with --dry-run,
  and leaves no output;
- recipes llm-compressor accepts load (case-insensitive observers, pydantic lax scalars, ignored
  top-level keys, input_observer overrides); GPTQ/AWQ/AutoRound recipes are refused with the
  KV-only alternative;
- a memoryless observer is honoured with a loud warning naming the worst layer;
- an attention group with a regex target is written with the model's attention class name.

usage: cli_contract_test.py CTCAL_BINARY SOURCE_DIR
"""
import glob
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from e2e_util import check, ctcal_runner, finish, stories260k  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
MODEL, TEXT = stories260k(SRC)
RECIPE = os.path.join(SRC, "recipes", "fp8_kv_per_tensor.yaml")


run = ctcal_runner(BIN, timeout=300)


def calibrate(out, *extra, recipe=RECIPE, cwd=None, env=None):
    return run("calibrate", recipe, "--model", MODEL, "--dataset", TEXT, "--num-samples", "4",
               "--max-seq-length", "32", "--output", out, *extra, cwd=cwd, env=env)


def parses(text, what):
    try:
        json.loads(text)
        return True
    except ValueError as e:
        check(False, f"{what}: not JSON ({e}): {text[:200]!r}")
        return False


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


tmp = tempfile.mkdtemp(prefix="ctcal-cli-")
try:
    # --- every --json output parses -------------------------------------------------------------
    for recipe in sorted(glob.glob(os.path.join(SRC, "recipes", "*.yaml"))):
        r = run("validate", recipe, "--json")
        check(r.returncode == 0, f"validate --json {os.path.basename(recipe)}: exit {r.returncode} {r.stderr[-300:]}")
        if parses(r.stdout, f"validate --json {recipe}"):
            check(json.loads(r.stdout)["valid"] is True, f"validate --json {recipe}: valid")
    # --- devices: a bad --device, and --max-gpu-memory on the CPU, are usage errors (exit 2)
    # before any work; --device cuda in a build without the backend, or without a GPU, too --------
    for extra, words in ((["--device", "tpu"], "expected cpu, cuda or cuda:N"),
                         (["--max-gpu-memory", "100"], "applies to --device cuda"),
                         (["--device", "cuda"], "cuda")):
        out = os.path.join(tmp, "device-" + extra[1])
        r = calibrate(out, *extra)
        check(r.returncode == 2 and words in r.stderr and not os.path.exists(out),
              f"calibrate {' '.join(extra)}: exit {r.returncode}, {r.stderr[-300:]}")
    good = os.path.join(tmp, "good")
    r = calibrate(good)
    check(r.returncode == 0, f"calibrate: {r.stderr[-500:]}")
    r = run("inspect", good, "--json")
    check(r.returncode == 0 and parses(r.stdout, "inspect --json"), "inspect --json")
    r = run("eval", "--model", MODEL, "--dataset", TEXT, "--quantized", good, "--num-samples", "2",
            "--max-seq-length", "32", "--json")
    check(r.returncode == 0 and parses(r.stdout, "eval --json"), f"eval --json: exit {r.returncode} {r.stderr[-300:]}")
    if r.returncode == 0:
        ev = json.loads(r.stdout)["quantized"]
        check(isinstance(ev, list) and len(ev) == 1, "eval --json: 'quantized' is a list even for one run")
        run0 = ev[0]
        check(run0.get("wins") in ("calibrated", "unit_scales", "no_significant_difference") and "kl" in run0.get("unit_scales", {})
              and "kl_diff_ci95" in run0 and isinstance(run0.get("significant"), bool),
              f"eval --json: the scale-1.0 baseline, the interval and the verdict: {sorted(run0)}")
        fr = [l["k_clipped_fraction"] for l in run0["layers"]] + [l["v_clipped_fraction"] for l in run0["layers"]]
        check(all(f is not None and 0 <= f <= 1 for f in fr), f"eval --json: clipped fractions in [0, 1]: {fr}")
    rows = write(os.path.join(tmp, "rows.jsonl"), '{"input_ids": [1, 2, 3]}\n{"text": "Once upon a time"}\n')
    r = run("tokenize", "--tokenizer", MODEL, "--dataset", rows, "--json")
    check(r.returncode == 0 and all(parses(l, "tokenize --json line") for l in r.stdout.splitlines()), "tokenize --json")

    # --- logs -------------------------------------------------------------------------------------
    bad = write(os.path.join(tmp, "bad.yaml"), "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n"
                "      kv_cache_scheme: {type: float, observr: x, strategy: channel}\n")
    r = run("--log-json", "calibrate", bad, "--model", MODEL, "--dataset", TEXT, "--output", os.path.join(tmp, "x"))
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    check(r.returncode == 3 and lines, f"--log-json with a bad recipe: exit {r.returncode}")
    objs = [json.loads(l) for l in lines if parses(l, "--log-json line")]
    check(any("\n" in o.get("message", "") and o.get("level") == "error" for o in objs),
          f"--log-json: the multi-line error is one object with its newlines escaped: {lines[:3]}")
    r = run("--log-json", "calibrate", RECIPE, "--model", MODEL, "--dataset", TEXT, "--num-samples", "2",
            "--max-seq-length", "16", "--output", os.path.join(tmp, "logjson"))
    check(r.returncode == 0 and all(parses(l, "--log-json info line") for l in r.stderr.splitlines() if l.strip()),
          "--log-json on a good run: every stderr line is JSON")
    r = run("validate", RECIPE, env={"CTCAL_LOG_LEVEL": "loud"})
    check(r.returncode == 2 and "CTCAL_LOG_LEVEL" in r.stderr and "loud" in r.stderr,
          f"unknown CTCAL_LOG_LEVEL: exit {r.returncode}, {r.stderr!r}")
    r = run("validate", RECIPE, env={"CTCAL_LOG_LEVEL": "debug"})
    check(r.returncode == 0, "CTCAL_LOG_LEVEL=debug is accepted")

    # --- --overwrite never deletes what a user owns ---------------------------------------------
    notes = os.path.join(tmp, "notes")
    os.mkdir(notes)
    write(os.path.join(notes, "keep.txt"), "mine")
    r = calibrate(".", "--overwrite", cwd=notes)
    check(r.returncode == 2 and os.path.exists(os.path.join(notes, "keep.txt")),
          f"--output . --overwrite: exit {r.returncode}, keep.txt kept: {os.path.exists(os.path.join(notes, 'keep.txt'))}")
    sub = os.path.join(notes, "sub")
    os.mkdir(sub)
    r = calibrate("..", "--overwrite", cwd=sub)
    check(r.returncode == 2 and "current directory or one of its parents" in r.stderr, f"--output .. : {r.stderr[-200:]}")
    r = calibrate(notes, "--overwrite")
    check(r.returncode == 2 and "ctcal_report.json" in r.stderr and os.path.exists(os.path.join(notes, "keep.txt")),
          f"non-empty foreign directory: exit {r.returncode} {r.stderr[-200:]}")
    home = os.path.join(tmp, "home")
    shutil.copytree(good, home)  # even a ctcal output is not replaced when it is $HOME
    r = calibrate(home, "--overwrite", env={"HOME": home})
    check(r.returncode == 2 and "home directory" in r.stderr, f"$HOME: exit {r.returncode} {r.stderr[-200:]}")
    r = calibrate("/", "--overwrite")
    check(r.returncode == 2 and ("root directory" in r.stderr or "contains the model directory" in r.stderr),
          f"/: exit {r.returncode} {r.stderr[-200:]}")
    afile = write(os.path.join(tmp, "afile"), "data")
    r = calibrate(afile, "--overwrite")
    check(r.returncode == 2 and open(afile).read() == "data", f"a file: exit {r.returncode}")
    r = calibrate(good, "--overwrite")
    check(r.returncode == 0 and os.path.exists(os.path.join(good, "ctcal_report.json")), "a previous ctcal output is replaced")
    empty = os.path.join(tmp, "empty")
    os.mkdir(empty)
    r = calibrate(empty, "--overwrite")
    check(r.returncode == 0, f"an empty directory is replaced: {r.stderr[-200:]}")

    # --- every output path is checked before any work --------------------------------------------
    for dry in ([], ["--dry-run"]):
        out = os.path.join(tmp, "with_report")
        r = calibrate(out, "--report", os.path.join(afile, "report.html"), *dry)
        check(r.returncode == 4 and "--report" in r.stderr, f"unwritable --report {dry}: exit {r.returncode} {r.stderr[-200:]}")
        check("layer 1/" not in r.stderr, f"unwritable --report {dry}: failed before calibrating")
        check(not os.path.exists(out), f"unwritable --report {dry}: no output left")
        r = calibrate(out, "--report", tmp, *dry)
        check(r.returncode == 4 and "is a directory" in r.stderr, f"--report DIR {dry}: exit {r.returncode}")
    r = calibrate(os.path.join(afile, "out"), "--dry-run")
    check(r.returncode == 4, f"--dry-run with an output under a file: exit {r.returncode} {r.stderr[-200:]}")

    # --- recipes llm-compressor accepts ------------------------------------------------------------
    lenient = write(os.path.join(tmp, "lenient.yaml"), """version: "1.0"
args: {foo: 1}
quant_stage:
  run_type: oneshot
  quant_modifiers:
    QuantizationModifier:
      input_observer: MSE
      config_groups:
        attention:
          targets: [LlamaAttention]
          input_activations: {num_bits: "8", type: FLOAT, symmetric: "true", strategy: tensor, observer: static_minmax}
""")
    r = run("validate", lenient, "--json")
    check(r.returncode == 0, f"lenient recipe: exit {r.returncode} {r.stderr[-400:]}")
    if r.returncode == 0:
        doc = json.dumps(json.loads(r.stdout))
        check('"observer": "mse"' in doc, f"input_observer MSE overrides the group's observer, lower-cased: {doc[:600]}")
        check('"num_bits": 8' in doc and '"symmetric": true' in doc, "lax scalars read as 8 and true")
    for algo in ("GPTQModifier", "AWQModifier", "AutoRoundModifier"):
        rec = write(os.path.join(tmp, f"{algo}.yaml"), f"""quant_stage:
  quant_modifiers:
    {algo}:
      targets: Linear
      scheme: W4A16
      kv_cache_scheme: {{num_bits: 8, type: float, strategy: tensor, symmetric: true, dynamic: false}}
""")
        r = run("validate", rec)
        check(r.returncode == 3 and algo in r.stderr and "QuantizationModifier" in r.stderr and "kv_cache_scheme" in r.stderr,
              f"{algo} + kv_cache_scheme: exit {r.returncode} {r.stderr[-400:]}")

    # --- memoryless observers: honoured, loudly --------------------------------------------------
    mem = write(os.path.join(tmp, "memoryless.yaml"), "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n"
                "      kv_cache_scheme: {num_bits: 8, type: float, strategy: tensor, symmetric: true, dynamic: false, observer: memoryless_minmax}\n")
    r = run("calibrate", mem, "--model", MODEL, "--dataset", TEXT, "--num-samples", "16", "--max-seq-length", "64",
            "--output", os.path.join(tmp, "memoryless"))
    check(r.returncode == 0, f"memoryless: exit {r.returncode}")
    check("LAST sample" in r.stderr and "worst: layer" in r.stderr, f"memoryless warning names the worst layer: {r.stderr[-600:]}")
    r = calibrate(os.path.join(tmp, "static"))
    check("LAST sample" not in r.stderr, "no memoryless warning for static_minmax")

    # --- --key-range envelope: K's range from the pre-RoPE pair norms -------------------------------
    for recipe in ("fp8_kv_per_head.yaml", "r3_fp8_kv.yaml"):
        rec = os.path.join(SRC, "recipes", recipe)
        obs, env = os.path.join(tmp, recipe + "-observed"), os.path.join(tmp, recipe + "-envelope")
        r1 = calibrate(obs, recipe=rec)
        r2 = calibrate(env, "--key-range", "envelope", recipe=rec)
        check(r1.returncode == 0 and r2.returncode == 0, f"{recipe} envelope: {r2.stderr[-300:]}")
        if r1.returncode == 0 and r2.returncode == 0:
            lo = json.load(open(os.path.join(obs, "ctcal_report.json")))["layers"]
            hi = json.load(open(os.path.join(env, "ctcal_report.json")))["layers"]
            for a, b in zip(lo, hi):
                check(all(y >= x for x, y in zip(a["k"]["scale"], b["k"]["scale"])),
                      f"{recipe} layer {a['layer']}: envelope k_scale {b['k']['scale']} below observed {a['k']['scale']}")
                check(a["v"]["scale"] == b["v"]["scale"], f"{recipe} layer {a['layer']}: v_scale must not change")
            check("key_range: envelope" in open(os.path.join(env, "recipe.yaml")).read(), "recipe.yaml records key_range")
    # eval at long positions, on the calibration tokens themselves (same sampling options): the
    # baseline is unchanged (RoPE scores depend on relative positions only), the envelope K never
    # saturates at any offset, and the offset is bounded by the context.
    env_ckpt = os.path.join(tmp, "fp8_kv_per_head.yaml-envelope")
    docs = {}
    for off in (0, 384):
        r = run("eval", "--model", MODEL, "--dataset", TEXT, "--quantized", env_ckpt, "--num-samples", "4",
                "--max-seq-length", "32", "--position-offset", str(off), "--json", "--no-unit-scales")
        check(r.returncode == 0, f"eval --position-offset {off}: {r.stderr[-300:]}")
        docs[off] = json.loads(r.stdout) if r.returncode == 0 else None
    if docs[0] and docs[384]:
        b0, b1 = docs[0]["baseline"]["nll"], docs[384]["baseline"]["nll"]
        check(abs(b0 - b1) <= 1e-5 * abs(b0), f"baseline NLL moved with the position offset: {b0} vs {b1}")
        clipped = [l["k_clipped_fraction"] for l in docs[384]["quantized"][0]["layers"]]
        check(all(c == 0 for c in clipped), f"envelope K clipped at offset 384: {clipped}")
    # Layer sensitivity: each layer quantized alone, ranked by KL, every layer once.
    r = run("eval", "--model", MODEL, "--dataset", TEXT, "--quantized", env_ckpt, "--num-samples", "4",
            "--max-seq-length", "32", "--layer-sensitivity", "--json", "--no-unit-scales")
    check(r.returncode == 0, f"eval --layer-sensitivity: {r.stderr[-300:]}")
    if r.returncode == 0:
        ranked = json.loads(r.stdout)["quantized"][0]["kl_contribution"]
        kls = [x["kl"] for x in ranked]
        check(sorted(x["layer"] for x in ranked) == list(range(5)) and kls == sorted(kls, reverse=True) and kls[-1] >= 0,
              f"kl_contribution ranks every layer once, most sensitive first: {ranked}")
    r = run("eval", "--model", MODEL, "--dataset", TEXT, "--quantized", env_ckpt, "--num-samples", "2",
            "--max-seq-length", "32", "--position-offset", "500")
    check(r.returncode == 2 and "max_position_embeddings" in r.stderr, f"offset past the context: exit {r.returncode}")
    r = calibrate(os.path.join(tmp, "env_mse"), "--key-range", "envelope", recipe=write(os.path.join(tmp, "mse.yaml"),
                  "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      kv_cache_scheme: {type: float, observer: mse}\n"))
    check(r.returncode == 2 and "envelope" in r.stderr, f"--key-range envelope with mse: exit {r.returncode}")

    # --- --kv-skip-layers: the most sensitive layer (eval's own ranking) stays unquantized ---------
    full, skip = os.path.join(tmp, "kv_full"), os.path.join(tmp, "kv_skip")
    r1 = calibrate(full)
    r2 = calibrate(skip, "--kv-skip-layers", "1")
    check(r1.returncode == 0 and r2.returncode == 0, f"--kv-skip-layers: {r2.stderr[-300:]}")
    if r1.returncode == 0 and r2.returncode == 0:
        r = run("eval", "--model", MODEL, "--dataset", TEXT, "--quantized", full, "--num-samples", "4",
                "--max-seq-length", "32", "--layer-sensitivity", "--json", "--no-unit-scales")
        top = json.loads(r.stdout)["quantized"][0]["kl_contribution"][0]["layer"] if r.returncode == 0 else None
        qc = json.load(open(os.path.join(skip, "config.json")))["quantization_config"]
        check(qc["ignore"] == [f"model.layers.{top}.self_attn"], f"ignore {qc['ignore']}, eval's most sensitive layer {top}")
        index = json.load(open(os.path.join(skip, "model.safetensors.index.json")))["weight_map"]
        check(f"model.layers.{top}.self_attn.k_scale" not in index and "model.layers.0.self_attn.k_scale" in index
              or top == 0, "no scales for the skipped layer, scales for the others")
        r = run("inspect", skip, "--strict", "--json")
        doc = json.loads(r.stdout) if r.stdout.strip() else {}
        check(r.returncode == 0 and f"--kv-cache-dtype-skip-layers {top}" in (doc.get("serving", {}).get("vllm", {}).get("command") or ""),
              f"inspect --strict passes and the serve line skips layer {top}: {doc.get('serving', {}).get('vllm')}")
    r = calibrate(os.path.join(tmp, "kv_skip_all"), "--kv-skip-layers", "5")
    check(r.returncode == 2 and "--kv-skip-layers" in r.stderr, f"--kv-skip-layers past the layers: exit {r.returncode}")

    # --- calibrate --report carries the scale-1.0 baseline (ctcal_report.json and the page) ----------
    out, page = os.path.join(tmp, "with_baseline"), os.path.join(tmp, "with_baseline.html")
    r = calibrate(out, "--report", page)
    check(r.returncode == 0, f"calibrate --report: {r.stderr[-300:]}")
    if r.returncode == 0:
        u = json.load(open(os.path.join(out, "ctcal_report.json"))).get("unit_scales_baseline", {})
        check(u.get("wins") in ("calibrated", "unit_scales", "no_significant_difference") and "kl_diff_ci95" in u
              and u.get("calibrated_kl", -1) >= 0 and u.get("unit_kl", -1) >= 0,
              f"ctcal_report.json unit_scales_baseline: {u}")
        check("Calibrated scales against scale 1.0" in open(page).read(), "the report page shows the baseline")

    # --- attention groups are written with the model's attention class -----------------------------
    regex = write(os.path.join(tmp, "regex_attention.yaml"), """quant_stage:
  quant_modifiers:
    QuantizationModifier:
      config_groups:
        attention:
          targets: ["re:.*self_attn$"]
          input_activations: {num_bits: 8, type: float, symmetric: true, strategy: tensor, observer: static_minmax}
""")
    out = os.path.join(tmp, "regex_out")
    r = calibrate(out, recipe=regex)
    check(r.returncode == 0, f"regex attention recipe: {r.stderr[-300:]}")
    if r.returncode == 0:
        qc = json.load(open(os.path.join(out, "config.json")))["quantization_config"]
        check(qc["config_groups"]["attention"]["targets"] == ["LlamaAttention"],
              f"attention group targets written as the class name: {qc['config_groups']['attention']['targets']}")
        r = run("inspect", out, "--strict")
        check(r.returncode == 0, f"the written attention checkpoint passes inspect --strict: {r.stdout[-400:]}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

finish("cli contract")
