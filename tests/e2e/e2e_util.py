"""Shared pieces of the e2e scripts (Python standard library only): where the shared data is,
skipping (ctest SKIP_RETURN_CODE 77) without it, and collecting failed checks."""
import os
import sys

SKIP = 77
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


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def finish(label):
    print(f"{len(failures)} failed" if failures else f"{label}: all checks passed")
    sys.exit(1 if failures else 0)


def strip_kv_scales(src_dir, dst_dir):
    """Copies checkpoint `src_dir` to `dst_dir` without its k_scale / v_scale tensors (ctcal refuses
    to calibrate over existing KV scales, so an output is read back from such a copy)."""
    import json
    import shutil
    import st_reader
    shutil.copytree(src_dir, dst_dir)
    index_path = os.path.join(dst_dir, "model.safetensors.index.json")
    index = json.load(open(index_path))
    for shard in set(index["weight_map"].values()):
        ts, meta = st_reader.read_all(os.path.join(dst_dir, shard))
        kept = {n: v for n, v in ts.items() if not n.endswith(("k_scale", "v_scale"))}
        if len(kept) != len(ts):
            st_reader.write_file(os.path.join(dst_dir, shard), kept, meta)
    index["weight_map"] = {n: f for n, f in index["weight_map"].items() if not n.endswith(("k_scale", "v_scale"))}
    json.dump(index, open(index_path, "w"))
