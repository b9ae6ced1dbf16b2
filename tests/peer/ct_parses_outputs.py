#!/usr/bin/env python3
"""compressed-tensors parses every ctcal output, strictly, and would write the same config.

usage: ct_parses_outputs.py CTCAL_BINARY SOURCE_DIR [--claimed-version]

ctcal calibrates the real stories260K model with every shipped recipe (recipes/*.yaml) and the
peer tests' own recipes (tests/peer/recipes/*.yaml). For each output directory:
- `quantization_config` holds exactly the keys compressed-tensors' writer
  (`ModelCompressor.update_config`: `version`, `quant_method`, `sparsity_config`,
  `transform_config`, then `QuantizationConfig.model_dump()`) writes, plus ctcal's `provider`
  (the one key ctcal adds; compressed-tensors and transformers ignore it) and nothing else;
- the QuantizationConfig part validates with extra keys forbidden (QuantizationConfig itself
  ignores unknown keys, so a subclass forbids them; QuantizationScheme, QuantizationArgs,
  TransformConfig, TransformScheme and TransformArgs forbid them already);
- round trip: compressed-tensors' own dump of the parsed config equals what ctcal wrote, value for
  value (every default, every enum spelling), and the same for `transform_config`;
- the compressor transformers builds when it loads the directory: `AutoConfig.from_pretrained(dir)`,
  `CompressedTensorsConfig.from_dict(quantization_config)`,
  `ModelCompressor.from_compression_config(...)` holds the same configs. (The brief's
  `ModelCompressor.from_pretrained(dir)` no longer exists in compressed-tensors 0.18 and 0.19;
  `from_compression_config` is the entry point transformers' CompressedTensorsHfQuantizer calls.)
  transformers drops `transform_config` on that path; the test records it.

--claimed-version: run the same checks under the compressed-tensors version that ctcal's output
claims in `version` (scripts/peer_venv.sh installs compressed-tensors 0.18.0 beside the venv's
newer one, in $VENV/ct-0.18.0), and fail if that version is not one the venv has. This decides,
by test, that the claim is true: the checkpoint is exactly what that version writes.
"""
import glob
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_util as pu  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
CLAIMED = "--claimed-version" in sys.argv[3:]
pu.enter_venv()

if CLAIMED and not os.environ.get("CTCAL_PEER_CT_PATH"):
    # Find the claimed version first (cheap: a dry calibration is not enough, the version is
    # written with the checkpoint), then re-execute with that compressed-tensors first on the path.
    import compressed_tensors
    model = pu.model_dir("stories260K")
    with tempfile.TemporaryDirectory() as tmp:
        rows = pu.calibration_ids(BIN, model, 2, 32)
        pu.write_jsonl(rows, os.path.join(tmp, "ids.jsonl"))
        pu.calibrate(BIN, os.path.join(SRC, "recipes", "fp8_kv_per_tensor.yaml"), model,
                     os.path.join(tmp, "ids.jsonl"), os.path.join(tmp, "out"), 2, 32)
        claimed = json.load(open(os.path.join(tmp, "out", "config.json")))["quantization_config"]["version"]
    installed = compressed_tensors.__version__
    print(f"ctcal claims compressed-tensors {claimed}; the venv has {installed}")
    if claimed != installed:
        side = os.path.join(sys.prefix, f"ct-{claimed}")
        if not pu.check(os.path.isdir(side), f"ctcal claims compressed-tensors {claimed}, which neither the venv "
                        f"({installed}) nor {side} has: the claim cannot be checked (a version that was never "
                        "released, or scripts/peer_venv.sh lacks it)"):
            pu.finish("ct_parses_outputs --claimed-version")
        env = dict(os.environ, CTCAL_PEER_CT_PATH=side, PYTHONPATH=side)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    os.environ["CTCAL_PEER_CT_PATH"] = "installed"

import compressed_tensors  # noqa: E402
from compressed_tensors.compressors import ModelCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationConfig  # noqa: E402
from compressed_tensors.transform import TransformConfig  # noqa: E402
from pydantic import ConfigDict  # noqa: E402
from transformers import AutoConfig  # noqa: E402
from transformers.utils.quantization_config import CompressedTensorsConfig  # noqa: E402

CT = compressed_tensors.__version__
print(f"compressed-tensors {CT} from {os.path.dirname(compressed_tensors.__file__)}")
if CLAIMED and os.environ["CTCAL_PEER_CT_PATH"] != "installed":
    pu.check(os.path.dirname(compressed_tensors.__file__).startswith(os.environ["CTCAL_PEER_CT_PATH"]),
             "the side-installed compressed-tensors was not the one imported")


class StrictQuantizationConfig(QuantizationConfig):
    model_config = ConfigDict(extra="forbid")


# Keys ModelCompressor.update_config writes around QuantizationConfig.model_dump(exclude quant_method).
WRITER_KEYS = {"version", "quant_method", "sparsity_config", "transform_config"}
CTCAL_KEYS = {"provider"}


def as_written(obj):
    """What json.dump writes for a pydantic dump (str enums as their values, dtypes as names)."""
    return json.loads(json.dumps(obj, default=str))


def check_output(name, out):
    qc = json.load(open(os.path.join(out, "config.json")))["quantization_config"]
    qc_fields = set(QuantizationConfig.model_fields) - {"quant_method", "run_compressed"}
    extra = set(qc) - qc_fields - WRITER_KEYS
    pu.check(extra == CTCAL_KEYS, f"{name}: keys beyond compressed-tensors' layout: {sorted(extra)}, "
             f"expected only {sorted(CTCAL_KEYS)}")
    missing = (qc_fields | WRITER_KEYS) - set(qc)
    pu.check(not missing, f"{name}: keys compressed-tensors {CT} writes and ctcal does not: {sorted(missing)}")
    body = {k: v for k, v in qc.items() if k not in WRITER_KEYS | CTCAL_KEYS}
    try:
        parsed = StrictQuantizationConfig.model_validate(body)
    except Exception as e:  # noqa: BLE001 - pydantic's ValidationError and CT's ValueErrors
        pu.check(False, f"{name}: QuantizationConfig rejects ctcal's config: {e}")
        return
    dumped = as_written(parsed.model_dump(exclude=["quant_method"]))
    for k in sorted(set(dumped) | set(body)):
        pu.check(dumped.get(k) == body.get(k),
                 f"{name}: {k}: compressed-tensors {CT} would write {json.dumps(dumped.get(k))}, ctcal wrote "
                 f"{json.dumps(body.get(k))}")
    pu.check(qc["quant_method"] == "compressed-tensors", f"{name}: quant_method {qc['quant_method']}")
    pu.check(qc.get("sparsity_config") == {}, f"{name}: sparsity_config {qc.get('sparsity_config')!r}")
    tc = qc.get("transform_config") or {}
    if tc:
        try:
            tparsed = TransformConfig.model_validate(tc)
            tdumped = as_written(tparsed.model_dump())
            pu.check(tdumped == tc, f"{name}: transform_config: compressed-tensors would write "
                     f"{json.dumps(tdumped)}, ctcal wrote {json.dumps(tc)}")
        except Exception as e:  # noqa: BLE001
            pu.check(False, f"{name}: TransformConfig rejects ctcal's transform_config: {e}")
    pu.check(not hasattr(ModelCompressor, "from_pretrained"),
             "ModelCompressor.from_pretrained exists again: test it on the directory too")
    try:
        hf_cfg = AutoConfig.from_pretrained(out)
        comp = ModelCompressor.from_compression_config(
            CompressedTensorsConfig.from_dict(hf_cfg.quantization_config))
    except Exception as e:  # noqa: BLE001
        pu.check(False, f"{name}: ModelCompressor.from_compression_config raised {type(e).__name__}: {e}")
        return
    if pu.check(comp is not None and comp.quantization_config is not None,
                f"{name}: ModelCompressor.from_pretrained found no quantization config"):
        pu.check(as_written(comp.quantization_config.model_dump(exclude=["quant_method"])) == dumped,
                 f"{name}: ModelCompressor holds a different quantization config")
        # The peer's behaviour, recorded so that a change shows: transformers 5.17's
        # CompressedTensorsConfig has no transform_config; it passes the key on as an extra kwarg
        # to QuantizationConfig, which ignores it, so the compressor (and the loaded model) never
        # sees R2/R3. docs/testing.md states it.
        pu.check(comp.transform_config is None,
                 f"{name}: transformers now hands transform_config to compressed-tensors "
                 f"({comp.transform_config!r}): R3/R2 outputs may now load with their rotation; update "
                 "tests/peer/transformers_loads.py and docs/testing.md")
    print(f"{name}: parsed (kv_cache_scheme={'yes' if qc.get('kv_cache_scheme') else 'no'}, "
          f"config_groups={sorted(qc['config_groups'])}, transform_config={sorted(tc)})", flush=True)


model = pu.model_dir("stories260K")
recipes = sorted(glob.glob(os.path.join(SRC, "recipes", "*.yaml"))) + \
    sorted(glob.glob(os.path.join(SRC, "tests", "peer", "recipes", "*.yaml")))
pu.check(len(recipes) >= 8, f"only {len(recipes)} recipes found")
with tempfile.TemporaryDirectory() as tmp:
    rows = pu.calibration_ids(BIN, model, 8, 64)
    ids = os.path.join(tmp, "ids.jsonl")
    pu.write_jsonl(rows, ids)
    for recipe in recipes:
        name = os.path.relpath(recipe, SRC)
        out = os.path.join(tmp, os.path.basename(recipe)[:-5])
        pu.calibrate(BIN, recipe, model, ids, out, len(rows), 64)
        check_output(name, out)
    # Outputs that already carry scales, calibrated again with another recipe: the input's weight
    # description is kept and its attention group / kv_cache_scheme replaced, in one config.
    for first, second in (("recipes/fp8_w8a8_fp8_kv.yaml", "recipes/fp8_kv_per_head.yaml"),
                          ("tests/peer/recipes/fp8_attention.yaml", "recipes/fp8_kv_per_head.yaml"),
                          ("recipes/fp8_kv_per_tensor.yaml", "tests/peer/recipes/fp8_attention.yaml")):
        inp = os.path.join(tmp, os.path.basename(first)[:-5])
        out = inp + "-then-" + os.path.basename(second)[:-5]
        pu.calibrate(BIN, os.path.join(SRC, second), inp, ids, out, len(rows), 64)
        check_output(f"{first} then {second}", out)
pu.finish(f"ct_parses_outputs (compressed-tensors {CT}, {len(recipes)} recipes)")
