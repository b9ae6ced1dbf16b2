#!/usr/bin/env python3
"""Data-parallel calibration under a real Open MPI: `mpirun -np N ctcal calibrate` writes the same
checkpoint as one process, byte for byte (static_minmax: the per-layer all-reduce of minima and
maxima is exact), including a rank left without samples, and its ctcal_report.json records
`ranks`; information is printed once (rank 0), not once per rank; order-dependent observers are
refused; a failing rank ends every rank instead of leaving the others waiting.

usage: mpi_ranks_test.py CTCAL_BINARY SOURCE_DIR
"""
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from e2e_util import SKIP, check, finish, stories260k  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
MODEL, TEXT = stories260k(SRC)
MPIRUN = shutil.which("mpirun")
if not MPIRUN:
    print("skip: mpirun not found (apt-get install openmpi-bin; scripts/install_deps.sh installs it)")
    sys.exit(SKIP)
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
# Under `make test-asan`: Open MPI's runtime leaks at MPI_Finalize from MCA components it has
# dlopen'd and unloaded again (their frames are "<unknown module>", so no suppression can name
# them). Leak checking is off for the MPI runs only; ASan still checks every access, and ctcal's
# own allocations on these paths are leak-checked by the single-process tests.
ENV["ASAN_OPTIONS"] = ":".join(x for x in (os.environ.get("ASAN_OPTIONS", ""), "detect_leaks=0") if x)


def calibrate(out, recipe, ranks, samples=24, extra=(), env=ENV):
    cmd = [BIN, "calibrate", os.path.join(SRC, "recipes", recipe), "--model", MODEL, "--dataset", TEXT,
           "--num-samples", str(samples), "--max-seq-length", "96", "--threads", "1", "--output", out, *extra]
    if ranks > 1:
        cmd = [MPIRUN, "-np", str(ranks), "--oversubscribe", "--bind-to", "none", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def count_lines(text, needle):
    return sum(needle in line for line in text.splitlines())


def report_ranks(out):
    p = os.path.join(out, "ctcal_report.json")
    return json.load(open(p)).get("ranks", "absent") if os.path.isfile(p) else "no report"


def same_checkpoint(a, b, what):
    names = sorted(os.listdir(a))
    check(names == sorted(os.listdir(b)), f"{what}: file lists differ: {names} vs {sorted(os.listdir(b))}")
    for n in names:
        if n == "ctcal_report.json":  # timings differ; everything measured must not
            ra, rb = json.load(open(os.path.join(a, n))), json.load(open(os.path.join(b, n)))
            for key in ("samples", "tokens", "layers", "kv_cache_scheme", "dataset_sha256"):
                check(ra[key] == rb[key], f"{what}: ctcal_report.json '{key}' differs")
        else:
            check(filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False), f"{what}: {n} differs")


tmp = tempfile.mkdtemp(prefix="ctcal-mpi-")
try:
    for recipe, ranks, samples in (("fp8_kv_per_head.yaml", 2, 24), ("r3_fp8_attention.yaml", 2, 24),
                                   ("int8_kv_asym_per_head.yaml", 3, 24), ("fp8_kv_per_tensor.yaml", 3, 2),
                                   ("fp8_w8a8_fp8_kv.yaml", 2, 24)):
        one, many = os.path.join(tmp, f"{recipe}-1"), os.path.join(tmp, f"{recipe}-{ranks}")
        r1 = calibrate(one, recipe, 1, samples)
        rn = calibrate(many, recipe, ranks, samples)
        check(r1.returncode == 0, f"{recipe} one rank: {r1.stderr[-300:]}")
        check(rn.returncode == 0, f"{recipe} {ranks} ranks: exit {rn.returncode} {rn.stderr[-600:]}")
        if r1.returncode == 0 and rn.returncode == 0:
            same_checkpoint(one, many, f"{recipe}, {ranks} ranks, {samples} samples")
            check(f"{ranks} MPI ranks" in rn.stderr, f"{recipe}: the run says it used {ranks} ranks")
            check(report_ranks(one) == 1, f"{recipe}: ctcal_report.json 'ranks' is 1 for one process, got {report_ranks(one)}")
            check(report_ranks(many) == ranks,
                  f"{recipe}: ctcal_report.json 'ranks' is {ranks}, got {report_ranks(many)}")
        print(f"{recipe}: {ranks} ranks x {samples} samples compared")

    # Information is printed once, by rank 0, even with CTCAL_LOG_LEVEL=info (mpirun hands it to
    # every rank); a warning about the plan (int8 asymmetric) too. Both ranks' stderr is combined.
    out = os.path.join(tmp, "once")
    r = calibrate(out, "int8_kv_asym_per_head.yaml", 2, 8, env=dict(ENV, CTCAL_LOG_LEVEL="info"))
    check(r.returncode == 0, f"2 ranks, CTCAL_LOG_LEVEL=info: exit {r.returncode} {r.stderr[-600:]}")
    for needle in ("2 MPI ranks", "calibration data:", "layer 1/5", "layer 5/5", "tokenizer:",
                   "asymmetric KV quantization"):
        n = count_lines(r.stderr, needle)
        check(n == 1, f"2 ranks: '{needle}' printed once, not once per rank: {n} times")
    check("rank 1" not in r.stderr, f"2 ranks: nothing from rank 1 in a run without trouble: {r.stderr[-600:]}")
    print(f"2 ranks, CTCAL_LOG_LEVEL=info: {len(r.stderr.splitlines())} stderr lines; report ranks = {report_ranks(out)}")

    mem = os.path.join(tmp, "memoryless.yaml")
    open(mem, "w").write("quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      kv_cache_scheme: "
                         "{num_bits: 8, type: float, strategy: tensor, symmetric: true, observer: memoryless_minmax}\n")
    r = subprocess.run([MPIRUN, "-np", "2", "--oversubscribe", BIN, "calibrate", mem, "--model", MODEL, "--dataset", TEXT,
                        "--num-samples", "4", "--max-seq-length", "32", "--output", os.path.join(tmp, "m")],
                       capture_output=True, text=True, env=ENV, timeout=120)
    check(r.returncode != 0 and "cannot be combined across ranks" in r.stderr, f"memoryless under 2 ranks: {r.returncode} {r.stderr[-300:]}")
    check(not os.path.exists(os.path.join(tmp, "m")), "memoryless: nothing written")

    bad = os.path.join(tmp, "bad.jsonl")
    open(bad, "w").write('{"input_ids": [1, 2, 99999]}\n')
    r = subprocess.run([MPIRUN, "-np", "2", "--oversubscribe", BIN, "calibrate", os.path.join(SRC, "recipes", "fp8_kv_per_tensor.yaml"),
                        "--model", MODEL, "--dataset", bad, "--output", os.path.join(tmp, "b")],
                       capture_output=True, text=True, env=ENV, timeout=120)
    check(r.returncode != 0 and not os.path.exists(os.path.join(tmp, "b")), f"a bad dataset under 2 ranks ends every rank: {r.returncode}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

finish("mpi ranks")
