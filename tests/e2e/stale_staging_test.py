#!/usr/bin/env python3
"""A run killed with SIGKILL cannot remove its staging directory `.NAME.ctcal-tmp-PID/` (with FP8
weights of a large model, tens of GB). The next run for the same output removes it, saying so
(the directory, its PID and its size), but never the staging directory of a process that is still
running, nor a directory that only looks similar (another output's, a non-numeric PID).

usage: stale_staging_test.py CTCAL_BINARY SOURCE_DIR
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from e2e_util import check, finish, stories260k  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
MODEL, TEXT = stories260k(SRC)
RECIPE = os.path.join(SRC, "recipes", "fp8_kv_per_tensor.yaml")


def command(out, samples, seq):
    return [BIN, "calibrate", RECIPE, "--model", MODEL, "--dataset", TEXT, "--output", out,
            "--num-samples", str(samples), "--max-seq-length", str(seq), "--threads", "1"]


def quick_run(out):
    return subprocess.run(command(out, 4, 32), capture_output=True, text=True, timeout=120)


def staging_name(out, pid):
    return f".{os.path.basename(out)}.ctcal-tmp-{pid}"


def fill(path, nbytes):
    """Stands in for the shards a killed run had written (its size is in the message)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "model-00002-of-00002.safetensors"), "wb") as f:
        f.write(b"\0" * nbytes)


tmp = tempfile.mkdtemp(prefix="ctcal-stale-")
sleeper = None
try:
    # 1. SIGKILL while the staging directory exists: it is left behind (nothing can remove it).
    out = os.path.join(tmp, "out")
    p = subprocess.Popen(command(out, 512, 512), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stale = os.path.join(tmp, staging_name(out, p.pid))
    deadline = time.time() + 60
    while time.time() < deadline and not os.path.isdir(stale) and p.poll() is None:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    check(os.path.isdir(stale), f"SIGKILL leaves {stale} (precondition of this test)")
    if os.path.isdir(stale):
        fill(stale, 3 * 1024 * 1024)

    # 2. The next run for the same output removes it and says so: directory, PID and size.
    r = quick_run(out)
    check(r.returncode == 0, f"second run: exit {r.returncode}: {r.stderr[-600:]}")
    check(not os.path.exists(stale), f"the stale {os.path.basename(stale)} of dead process {p.pid} was removed")
    lines = [line for line in r.stderr.splitlines() if os.path.basename(stale) in line]
    check(len(lines) == 1, f"one line names {os.path.basename(stale)}: {lines or r.stderr[-600:]}")
    if lines:
        check(str(p.pid) in lines[0] and "removed" in lines[0] and "3.1 MB" in lines[0],
              f"the line says removed, PID {p.pid} and the size (3.1 MB): {lines[0]!r}")
        check(lines[0].startswith("info:"), f"the line is informational: {lines[0]!r}")
    check(os.path.isfile(os.path.join(out, "ctcal_report.json")), "second run: the output was written")
    print("killed run's staging directory:", "removed" if not os.path.exists(stale) else "LEFT", lines)

    # 3. A live process's staging directory is kept, and so are look-alikes of dead PIDs.
    out2 = os.path.join(tmp, "out2")
    sleeper = subprocess.Popen(["sleep", "300"])
    live = os.path.join(tmp, staging_name(out2, sleeper.pid))
    fill(live, 1024)
    dead_pid = p.pid  # reaped above; nothing runs under it (a reuse within seconds is unlikely)
    lookalikes = [os.path.join(tmp, n) for n in (
        f"{staging_name(out2, dead_pid)}x",         # PID not all digits
        f".{os.path.basename(out2)}x.ctcal-tmp-{dead_pid}",  # another output's name
        f"{os.path.basename(out2)}.ctcal-tmp-{dead_pid}",    # no leading dot
        staging_name(out2, 0),                      # PID 0 is no process (kill(0, 0) signals the group)
    )]
    for d in lookalikes:
        fill(d, 1024)
    r = quick_run(out2)
    check(r.returncode == 0, f"run beside a live staging directory: exit {r.returncode}: {r.stderr[-600:]}")
    check(os.path.isdir(live), f"{os.path.basename(live)} of live process {sleeper.pid} (sleep) was kept")
    check(os.path.isfile(os.path.join(live, "model-00002-of-00002.safetensors")), "its contents were kept")
    for d in lookalikes:
        check(os.path.isdir(d), f"look-alike {os.path.basename(d)} was kept")
    check("ctcal-tmp" not in r.stderr, f"nothing is said about directories that were kept: {r.stderr[-600:]}")
    print("live and look-alike staging directories kept:", os.path.isdir(live), [os.path.isdir(d) for d in lookalikes])
finally:
    if sleeper:
        sleeper.kill()
        sleeper.wait()
    shutil.rmtree(tmp, ignore_errors=True)

finish("stale staging")
