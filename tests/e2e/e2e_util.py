"""Shared pieces of the e2e scripts (Python standard library only): where the shared data is,
skipping (ctest SKIP_RETURN_CODE 77) without it, and collecting failed checks."""
import os
import subprocess
import sys

SKIP = 77

# Every checkpoint a test writes is kept for the vLLM judge when $CTCAL_JUDGE_COLLECT is set
# (tests/judge_collect.py).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import judge_collect  # noqa: E402

judge_collect.install()
failures = []


def data_dir(src):
    """$CTCAL_DATA, else ../shared/data beside the source tree."""
    return os.environ.get("CTCAL_DATA") or os.path.join(os.path.dirname(os.path.abspath(src)), "shared", "data")


def require(path):
    if not os.path.isdir(path):
        print(f"skip: {path} not found (set CTCAL_DATA)")
        sys.exit(SKIP)


def stories260k(src):
    """The real model and text every e2e script calibrates: (model_dir, text_file); skips without them."""
    data = data_dir(src)
    model = os.path.join(data, "hf", "stories260K")
    require(model)
    return model, os.path.join(data, "tinystories-valid", "validation_100.txt")


def ctcal_runner(binary, timeout=600):
    """run(*args, cwd=None, env=None): `binary args...` with its output captured and CTCAL_LOG_LEVEL
    unset (the tests read the default output), `env` added to this process's environment."""
    def run(*args, cwd=None, env=None):
        e = dict(os.environ)
        e.pop("CTCAL_LOG_LEVEL", None)
        e.update(env or {})
        return subprocess.run([binary, *args], capture_output=True, text=True, cwd=cwd, env=e, timeout=timeout)
    return run


def split_text(text, folder):
    """(calibration, held-out) files in `folder`: the first and second half of `text`'s lines."""
    lines = open(text, encoding="utf-8").read().splitlines(keepends=True)
    calib, held = os.path.join(folder, "calib.txt"), os.path.join(folder, "held.txt")
    open(calib, "w", encoding="utf-8").writelines(lines[: len(lines) // 2])
    open(held, "w", encoding="utf-8").writelines(lines[len(lines) // 2:])
    return calib, held


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def finish(label):
    print(f"{len(failures)} failed" if failures else f"{label}: all checks passed")
    sys.exit(1 if failures else 0)

