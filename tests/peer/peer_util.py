"""Shared pieces of the peer tests (issue 13): run inside the pinned peer venv, skip (ctest
SKIP_RETURN_CODE 77) naming what failed when it is absent or broken, locate the shared data, run
the real ctcal binary, collect failed checks.

Every peer test script starts with `peer_util.enter_venv()`: when the script is not already
running under the venv's interpreter it re-executes itself there. The venv is the one
scripts/peer_venv.sh builds (its path is keyed by the lock file's hash); $CTCAL_PEER_VENV
overrides it.
"""
import json
import os
import subprocess
import sys

SKIP = 77

# Every checkpoint a test writes is kept for the vLLM judge when $CTCAL_JUDGE_COLLECT is set
# (tests/judge_collect.py).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import judge_collect  # noqa: E402

judge_collect.install()
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
failures = []


def skip(why):
    print(f"skip: {why}", flush=True)
    sys.exit(SKIP)


def venv_path():
    if os.environ.get("CTCAL_PEER_VENV"):
        return os.environ["CTCAL_PEER_VENV"]
    r = subprocess.run(["bash", os.path.join(SRC, "scripts", "peer_venv.sh"), "--print-path"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        skip(f"scripts/peer_venv.sh --print-path failed: {r.stderr.strip()}")
    return r.stdout.strip().splitlines()[-1]


def enter_venv():
    venv = venv_path()
    py = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) != os.path.realpath(venv):
        if not os.path.isfile(os.path.join(venv, ".ctcal-complete")) or not os.access(py, os.X_OK):
            skip(f"peer venv {venv} is not built (run scripts/peer_venv.sh)")
        os.execv(py, [py, sys.argv[0], *sys.argv[1:]])
    # Inside the venv: every package the tests use must import; name the one that does not.
    mods = ["torch", "transformers", "compressed_tensors", "llmcompressor", "safetensors", "datasets"]
    if os.environ.get("CTCAL_PEER_CT_PATH", "installed") != "installed":
        mods.remove("llmcompressor")  # an older compressed-tensors put first on the path on purpose
    for mod in mods:
        try:
            __import__(mod)
        except Exception as e:  # noqa: BLE001 - any import failure means a broken venv
            skip(f"peer venv {venv} is broken: import {mod} failed: {type(e).__name__}: {e}")
    # The tests run on this machine's CPU; a CUDA torch must not try to find a GPU.
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def data_dir():
    d = os.environ.get("CTCAL_DATA") or os.path.join(os.path.dirname(SRC), "shared", "data")
    if not os.path.isdir(os.path.join(d, "hf")):
        skip(f"shared data not found at {d} (set CTCAL_DATA)")
    return d


def model_dir(name):
    d = os.path.join(data_dir(), "hf", name)
    if not os.path.isdir(d):
        skip(f"model {d} not found")
    return d


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)
    return cond


def finish(label):
    print(f"{len(failures)} failed" if failures else f"{label}: all checks passed", flush=True)
    sys.exit(1 if failures else 0)


def ctcal(binary, *args, expect=0):
    r = subprocess.run([binary, *args], capture_output=True, text=True)
    if expect is not None and r.returncode != expect:
        print(r.stdout[-3000:], r.stderr[-3000:], sep="\n")
        raise SystemExit(f"ctcal {' '.join(args[:2])}: exit {r.returncode}, expected {expect}")
    return r


def calibration_ids(binary, model, n, max_len):
    """Token ids both calibrators see: TinyStories documents tokenized by ctcal with the model's
    own tokenizer.model (`ctcal tokenize --json`), written once as input_ids rows so that ctcal (a
    .jsonl) and llm-compressor (a datasets.Dataset) get the identical tokens (ctcal's tokenizer is
    tested against SentencePiece elsewhere).

    Row i is the i-th document of at least max_len tokens, truncated to max_len - i: strictly
    descending, distinct lengths. llm-compressor does not keep the dataset order when it is not
    shuffled: its LengthAwareSampler visits samples longest first (torch.argsort descending, which
    orders ties arbitrarily). With distinct descending lengths its order is the file order, which
    ctcal keeps with --no-shuffle, so order-dependent observers (minmax, memoryless_minmax) see
    the samples in the same order in both."""
    text = os.path.join(data_dir(), "tinystories-valid", "validation_100.txt")
    r = ctcal(binary, "tokenize", "--tokenizer", model, "--dataset", text, "--json")
    rows = [json.loads(line)["input_ids"] for line in r.stdout.splitlines() if line.strip()]
    rows = [ids for ids in rows if len(ids) >= max_len][:n]
    if len(rows) < n:
        raise SystemExit(f"only {len(rows)} documents of >= {max_len} tokens")
    return [ids[:max_len - i] for i, ids in enumerate(rows)]


def write_jsonl(rows, path):
    with open(path, "w") as f:
        for ids in rows:
            f.write(json.dumps({"input_ids": ids}) + "\n")


def calibrate(binary, recipe, model, dataset, out, n, max_len, *extra):
    """ctcal on exactly these rows, in file order (no shuffle), each row one sample."""
    return ctcal(binary, "calibrate", recipe, "--model", model, "--dataset", dataset,
                 "--num-samples", str(n), "--max-seq-length", str(max_len), "--no-shuffle",
                 "--output", out, "--overwrite", "-q", *extra)


def load_tensors(out):
    """Every tensor of a checkpoint directory, read with safetensors (torch)."""
    from safetensors.torch import load_file
    tensors = {}
    for f in sorted(os.listdir(out)):
        if f.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(out, f)))
    return tensors


def ulps(a, b):
    """Distance in units in the last place of a's dtype, elementwise (a, b: same-dtype tensors):
    the difference of the ordered integer encodings (sign-magnitude folded to two's complement)."""
    import torch
    ints = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}[a.dtype]

    def ordered(x):
        i = x.contiguous().view(ints).to(torch.int64)
        top = {torch.int32: 1 << 31, torch.int16: 1 << 15}[ints]
        return torch.where(i < 0, -(i + top), i)

    return (ordered(a) - ordered(b.to(a.dtype))).abs()
