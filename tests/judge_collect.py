"""Keeps a copy of every checkpoint the e2e and peer tests write, for the vLLM judge
(tests/peer/vllm_judges_outputs.py, issue 26: "vLLM's functions on every checkpoint the suite
writes").

When $CTCAL_JUDGE_COLLECT names a directory (tests/CMakeLists.txt sets it for e2e and peer tests),
install() wraps subprocess.run: after a `ctcal calibrate ... --output DIR` that exits 0, DIR is
copied to $CTCAL_JUDGE_COLLECT/<script>-<n>-<name> before the test's temporary directory goes away.
Outputs over MAX_BYTES are not copied (the suite's models are tiny; a large one would be a bench).
Without the variable nothing changes. Standard library only: e2e_util and peer_util import it.
"""
import os
import shutil
import subprocess
import sys

MAX_BYTES = 64 << 20
_count = 0


def _output_of(args):
    if not isinstance(args, (list, tuple)) or "calibrate" not in args[:4]:
        return None
    args = [str(a) for a in args]
    for i, a in enumerate(args):
        if a == "--output" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--output="):
            return a.split("=", 1)[1]
    return None


def _keep(out):
    global _count
    root = os.environ["CTCAL_JUDGE_COLLECT"]
    if not os.path.isfile(os.path.join(out, "config.json")) or "--dry-run" in out:
        return
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if os.path.isfile(os.path.join(out, f)))
    if size > MAX_BYTES:
        return
    _count += 1
    script = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    dst = os.path.join(root, f"{script}-{os.getpid()}-{_count}-{os.path.basename(os.path.normpath(out))}")
    os.makedirs(root, exist_ok=True)
    shutil.copytree(out, dst, ignore=shutil.ignore_patterns("*.html"))


def install():
    if not os.environ.get("CTCAL_JUDGE_COLLECT") or getattr(subprocess.run, "_judge_collect", False):
        return
    real_run = subprocess.run

    def run(args, *a, **kw):
        r = real_run(args, *a, **kw)
        out = _output_of(args) if r.returncode == 0 else None
        if out and "--dry-run" not in [str(x) for x in args]:
            _keep(out)
        return r

    run._judge_collect = True
    subprocess.run = run
