"""vLLM 0.34.0 as the judge of ctcal's serving verdicts (issue 26): each checkpoint is parsed, built
and loaded by vLLM's own code on this CPU, under the serve line ctcal prints, and what vLLM did is
compared with what `ctcal inspect --json` says it does (serving.vllm).

Exercised (vLLM's own functions, run here):
- the serve line: EngineArgs.add_cli_args' parser (engine/arg_utils.py; --kv-cache-dtype-skip-layers
  is nargs="+") and EngineArgs.create_engine_config;
- CompressedTensorsConfig.from_config and CompressedTensorsKVCacheMethod.validate_kv_cache_scheme
  (layers/quantization/compressed_tensors/compressed_tensors.py);
- model construction: Attention.__init__'s kv_cache_dtype decision (skip layers, auto -> fp8),
  get_quant_method, create_weights (layers/attention/attention.py);
- DefaultModelLoader: the model's load_weights with its hf_to_vllm_mapper, get_cache_scale_mapper
  and AutoWeightsLoader (models/utils.py), then process_weights_after_loading
  (layers/quantization/kv_cache.py): the scales each Attention layer ends with.
Stubbed: the attention backend's selection and impl (vllm_cpu_stubs.py says why and what).

Run inside the peer venv with $VENV/vllm-0.34.0 first on PYTHONPATH (enter() does that).
"""
import json
import os
import shlex
import subprocess
import sys

import peer_util as pu

HERE = os.path.dirname(os.path.abspath(__file__))


def enter():
    """Re-executes the script in the peer venv with vLLM 0.34.0 (and its compressed-tensors 0.17.0)
    first on the path, on the CPU platform; skips (77) when the venv or the judge is absent."""
    if os.environ.get("CTCAL_VLLM_JUDGE") == "1":
        return
    venv = pu.venv_path()
    side = os.path.join(venv, "vllm-0.34.0")
    py = os.path.join(venv, "bin", "python")
    if not os.path.isdir(side) or not any(f.startswith(".ctcal-complete") for f in os.listdir(side)):
        pu.skip(f"the vLLM judge is not installed at {side} (run scripts/peer_venv.sh)")
    env = dict(os.environ, CTCAL_VLLM_JUDGE="1", PYTHONPATH=os.pathsep.join([side, HERE]),
               VLLM_TARGET_DEVICE="cpu", CUDA_VISIBLE_DEVICES="", CTCAL_PEER_CT_PATH=side,
               VLLM_LOGGING_LEVEL=os.environ.get("VLLM_LOGGING_LEVEL", "ERROR"), TOKENIZERS_PARALLELISM="false")
    os.execve(py, [py, sys.argv[0], *sys.argv[1:]], env)


def _init_distributed():
    """A one-process gloo group under the current vLLM config: initialize_model_parallel creates the
    expert-parallel group only for MoE configs, so each load starts its own and _end_distributed
    ends it."""
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init_distributed_environment(world_size=1, rank=0, distributed_init_method=f"tcp://127.0.0.1:{port}",
                                 local_rank=0, backend="gloo")
    initialize_model_parallel(1, 1)


def _end_distributed():
    from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel
    destroy_model_parallel()
    destroy_distributed_environment()


def serve_args(command, ckpt):
    """`vllm serve DIR FLAGS...` -> vLLM's own parser's EngineArgs."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    tokens = shlex.split(command) if command else ["vllm", "serve", ckpt]
    assert tokens[:2] == ["vllm", "serve"], f"not a vllm serve line: {command}"
    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    args = parser.parse_args(["--model", tokens[2], *tokens[3:]])
    return EngineArgs.from_cli_args(args)


def load(ckpt, command):
    """Builds and loads `ckpt` with vLLM under `command`. Returns {"error": (name, message, chain)}
    or {"layers": {index: {"cache", "k", "v", "q"}}, "params": set of parameter names}."""
    import vllm_cpu_stubs  # installs the stub (see its docstring)
    vllm_cpu_stubs.SELECTED.clear()
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.layers.attention import Attention
    from vllm.model_executor.model_loader import get_model
    from vllm.model_executor.models.utils import extract_layer_index
    try:
        engine_args = serve_args(command, ckpt)
        config = engine_args.create_engine_config()
        with set_current_vllm_config(config):
            _init_distributed()  # vLLM's CustomOps and parallel groups read the current config
            try:
                model = get_model(vllm_config=config)
            finally:
                _end_distributed()
    except Exception as e:  # noqa: BLE001 - any exception is a load failure to compare
        chain, x = [], e
        while x is not None and len(chain) < 6:
            chain.append(type(x).__name__)
            x = x.__cause__ or x.__context__
        return {"error": (type(e).__name__, str(e).splitlines()[0][:2000] if str(e) else "", chain),
                "skip_layers": None}
    layers = {}
    for name, m in model.named_modules():
        if isinstance(m, Attention):
            layers[extract_layer_index(name)] = {
                "module": name, "cache": m.kv_cache_dtype,
                "k": m._k_scale.detach().float().flatten().tolist(),
                "v": m._v_scale.detach().float().flatten().tolist(),
                "q": m._q_scale.detach().float().flatten().tolist()}
    return {"layers": layers, "params": {n for n, _ in model.named_parameters()},
            "backends": sorted(set(vllm_cpu_stubs.SELECTED)),
            "skip_layers": list(engine_args.kv_cache_dtype_skip_layers or [])}


# Refusals of vLLM's CPU platform, which the GPU platform `vllm serve` runs on does not make: the
# CPU MoE kernels take bf16 only on CPUs with AVX512-BF16/AMX (this machine's AMD EPYC has neither).
CPU_ONLY_REFUSALS = ("No Unquantized MoE backend supports the deployment configuration",
                     "Unsupported FP8 MoE backend: NONE",  # FP8 experts: CUDA kernels only
                     "Failed to find a kernel that can implement the WNA16 linear layer",  # Marlin/Machete
                     # ungated experts (Nemotron-H's relu2 MoE): fused_moe/config.py, CUDA/XPU/ROCm only
                     "is_act_and_mul=False is supported only for CUDA, XPU and ROCm")


def stored_scales(ckpt):
    """Every *_scale tensor of the checkpoint as a flat float list."""
    from safetensors import safe_open
    out = {}
    for f in sorted(os.listdir(ckpt)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(ckpt, f), framework="pt") as st:
                for n in st.keys():
                    if n.endswith(("_scale", "kv_scale")) and "weight_scale" not in n and "input_scale" not in n:
                        out[n] = st.get_tensor(n).float().flatten().tolist()
    return out


def close(a, b):
    return len(a) == len(b) and all(abs(x - y) <= 1e-7 * max(1.0, abs(y)) for x, y in zip(a, b))


def compare_layers(label, claimed, got, stored, kv_heads, heads):
    """ctcal's per-layer claims against what vLLM's layers hold after loading."""
    bad = []
    if sorted(got) != [l["layer"] for l in claimed]:
        return [f"{label}: vLLM built attention layers {sorted(got)}, ctcal lists {[l['layer'] for l in claimed]}"]
    for c in claimed:
        g = got[c["layer"]]
        if g["cache"] != c["cache"]:
            bad.append(f"{label}: layer {c['layer']}: vLLM's KV cache dtype is {g['cache']}, ctcal says {c['cache']}")
        if c["cache"] != "fp8":
            continue
        module = c["module"]  # the checkpoint's attention module (gpt-oss's vLLM names it differently)
        for site in ("k", "v", "q"):
            claim = c[site]
            if claim == "1.0":
                want = [1.0] * len(g[site])
            elif claim == "checkpoint kv_scale":
                want = stored.get(f"{module}.kv_scale")
            elif claim == "checkpoint":
                want = stored.get(f"{module}.{site}_scale") or stored.get(f"{module}.{site}_proj.{site}_scale")
                if want is not None and site == "q" and len(want) == heads and heads != kv_heads:
                    # The attn_head loader reduces q by max over each GQA group (create_weights).
                    group = heads // kv_heads
                    want = [max(want[i * group:(i + 1) * group]) for i in range(kv_heads)]
            else:
                bad.append(f"{label}: layer {c['layer']} {site}: unknown claim {claim!r}")
                continue
            if want is None or not close(g[site], want):
                bad.append(f"{label}: layer {c['layer']} {site}_scale: vLLM holds {g[site][:4]}, ctcal says {claim} "
                           f"({None if want is None else want[:4]})")
    return bad


def judge(binary, ckpt, label):
    """Disagreements between ctcal's verdict on `ckpt` and vLLM 0.34.0, as a list of strings, and a
    one-line summary of what vLLM did."""
    r = subprocess.run([binary, "inspect", ckpt, "--json"], capture_output=True, text=True)
    doc = json.loads(r.stdout)
    v = doc["serving"]["vllm"]
    bad = []
    if v.get("engine") != "vllm 0.34.0":
        bad.append(f"{label}: the verdict encodes {v.get('engine')}, the judge is vLLM 0.34.0")
    cfg = json.load(open(os.path.join(ckpt, "config.json")))
    qc = cfg.get("quantization_config")
    # The pure decision functions, on the quantization_config alone.
    if qc and qc.get("quant_method") == "compressed-tensors":
        from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import (
            CompressedTensorsConfig, CompressedTensorsKVCacheMethod)
        try:
            CompressedTensorsKVCacheMethod.validate_kv_cache_scheme(qc.get("kv_cache_scheme"))
            CompressedTensorsConfig.from_config(json.loads(json.dumps(qc)))
            parsed = None
        except Exception as e:  # noqa: BLE001
            parsed = type(e).__name__
        claimed = (v["load_error"] or {}).get("exception")
        if parsed and claimed != parsed:
            bad.append(f"{label}: vLLM's config functions raise {parsed}; ctcal's verdict says {claimed}")
    res = load(ckpt, v["command"])
    claimed_layers, note = v["kv_layers"], ""
    if "error" in res and "--kv-cache-dtype nvfp4" in (v["command"] or "") and \
            "No module named 'flashinfer'" in res["error"][1]:
        # vLLM 0.34 builds an NVFP4 KV cache with FlashInfer only (v1/attention/backends/flashinfer.py), which
        # this CPU venv lacks. What the checkpoint decides is still judged: it loads as the FP8-declared
        # checkpoint it is, and every layer's _k_scale / _v_scale holds the stored s unchanged (the same
        # process_weights_after_loading an NVFP4 cache reads its decode multipliers from).
        res = load(ckpt, v["command"].replace(" --kv-cache-dtype nvfp4", ""))
        claimed_layers = [dict(l, cache="fp8") if l["cache"] == "nvfp4" else l for l in v["kv_layers"]]
        note = "NVFP4 cache not built here (no flashinfer), judged without the flag: "
    if "error" in res and any(m in res["error"][1] for m in CPU_ONLY_REFUSALS):
        # This CPU, not the GPU `vllm serve` runs on, lacks the kernel: nothing to judge here.
        return bad, "NOT JUDGED (this CPU platform lacks the kernel): " + res["error"][1][:120]
    if "error" in res and "No valid attention backend" in res["error"][1] and \
            "'TRITON_ATTN': ['head_size not supported'" in res["error"][1]:
        # The tiny golden model's head size (16), which Triton's kernels refuse and no served model has.
        return bad, "NOT JUDGED (the tiny model's head size): " + res["error"][1][:160]
    if "error" in res:
        name, msg, chain = res["error"]
        summary = f"vLLM raised {name}: {msg[:160]}"
        if v["loadable"]:
            bad.append(f"{label}: ctcal says loadable; vLLM raised {' <- '.join(chain)}: {msg}")
        elif (v["load_error"] or {}).get("exception") not in chain:
            bad.append(f"{label}: ctcal names {v['load_error']}, vLLM raised {' <- '.join(chain)}: {msg}")
        elif name == "ValueError" and v["load_error"].get("tensor") and \
                v["load_error"]["tensor"].rsplit(".", 2)[-2] not in msg:
            bad.append(f"{label}: ctcal names tensor {v['load_error']['tensor']}, vLLM's message: {msg}")
        return bad, summary
    summary = note + f"loaded ({'/'.join(res['backends']) or 'backend cached'}); skip layers {res['skip_layers']}; caches " + \
              "".join("8" if l["cache"].startswith("fp8") else "-" for _, l in sorted(res["layers"].items()))
    if not v["loadable"]:
        bad.append(f"{label}: ctcal says vLLM cannot load it ({v['load_error']}); vLLM loaded it")
        return bad, summary
    if any("R3" in p or "q_attn" in p or "k_cache" in p for p in res["params"]):
        bad.append(f"{label}: vLLM holds a rotation parameter; ctcal says none is applied")
    if not claimed_layers:
        return bad, summary
    stored = stored_scales(ckpt)
    text = cfg.get("text_config", cfg)
    heads = text.get("num_attention_heads")
    kv_heads = text.get("num_key_value_heads") or heads
    bad += compare_layers(label, claimed_layers, res["layers"], stored, kv_heads, heads)
    if v.get("without_skip_flag"):
        # The same checkpoint served without the skip-layers flag: what inspect warns about.
        res2 = load(ckpt, f"vllm serve {shlex.quote(ckpt)}")
        if "error" in res2:
            bad.append(f"{label}: without the skip flag vLLM raised {res2['error']}")
        else:
            bad += compare_layers(label + " (without the skip flag)", v["without_skip_flag"]["kv_layers"],
                                  res2["layers"], stored, kv_heads, heads)
    return bad, summary
