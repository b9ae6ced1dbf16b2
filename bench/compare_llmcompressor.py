#!/usr/bin/env python3
"""ctcal against the real peer: llm-compressor's `oneshot` and `ctcal calibrate` (fp32 and
`--compute-dtype bf16`) on the same CPU cores, the same random bf16 model, the same token ids
(batch size 1, no padding), the same recipe (FP8 per-tensor KV, static_minmax), in one run.
This is a benchmark, not a test: it prints tokens/s and ratios.

Run with the peer venv's interpreter (scripts/peer_venv.sh prints its path):

    $(scripts/peer_venv.sh)/bin/python bench/compare_llmcompressor.py --ctcal build/app/ctcal \
        [--shape bench123m|llama1b] [--samples 32] [--seq 512] [--threads 2]

Shapes: `bench123m` is calib_bench's default model (hidden 1024, 8 layers, 16/4 heads, head_dim
64, intermediate 2816, vocab 32000, untied: 123M parameters); `llama1b` is Llama-3.2-1B's shape
(hidden 2048, 16 layers, 32/8 heads, head_dim 64, intermediate 8192, vocab 128256, tied). Weights
are random (transformers' init, seed 0), saved as bf16 like hub checkpoints.

Timed: each tool's whole job as a user runs it, from a model directory and token ids to a
written checkpoint: for llm-compressor, from_pretrained + oneshot + save_pretrained; for ctcal, the
`ctcal calibrate` process. The calibration phase alone is printed too (oneshot's call; ctcal's
`timings` from ctcal_report.json). llm-compressor loads the model with dtype="auto" (bf16), as
its examples do: that is the peer's normal speed, and bf16 on a CPU without AMX is not faster
than fp32 in PyTorch, so it is also run with dtype=float32 and the faster of the two is the one
the ratios use.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SHAPES = {
    "bench123m": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                      num_key_value_heads=4, head_dim=64, vocab_size=32000, tie_word_embeddings=False),
    "llama1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True),
}
RECIPE = """quant_stage:
  quant_modifiers:
    QuantizationModifier:
      kv_cache_scheme: {num_bits: 8, type: float, symmetric: true, strategy: tensor, dynamic: false, observer: static_minmax}
"""


def make_model(shape, d):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    if os.path.exists(os.path.join(d, "config.json")):
        return
    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, rms_norm_eps=1e-5,
                      rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
    torch.manual_seed(0)
    with torch.device("cpu"):
        LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(d)


def run_oneshot(model_dir, ids, recipe, out, dtype, threads, max_len):
    """One llm-compressor job in a fresh process (so that one run's memory and thread pools do
    not carry into the next); returns (total_s, oneshot_s)."""
    code = f"""
import json, sys, time, torch
torch.set_num_threads({threads})
t0 = time.perf_counter()
from datasets import Dataset
from llmcompressor import oneshot
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
# oneshot wants a processor even for token ids (it reads pad/eos from it and tokenizes nothing);
# the random model has no tokenizer, so a minimal real one carries those attributes.
tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({{"<unk>": 0, "<s>": 1, "</s>": 2}}, unk_token="<unk>")),
                              unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>", model_max_length={max_len})
ids = json.load(open({ids!r}))
model = AutoModelForCausalLM.from_pretrained({model_dir!r}, dtype={dtype!r})
t1 = time.perf_counter()
oneshot(model=model, dataset=Dataset.from_dict({{"input_ids": ids}}), recipe={recipe!r},
        num_calibration_samples=len(ids), max_seq_length={max_len}, shuffle_calibration_samples=False,
        batch_size=1, processor=tok)
t2 = time.perf_counter()
model.save_pretrained({out!r}, save_compressed=True)
t3 = time.perf_counter()
print(json.dumps({{"total": t3 - t0, "oneshot": t2 - t1}}))
"""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=str(threads))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"oneshot failed:\n{r.stderr[-4000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return res["total"], res["oneshot"]


def run_ctcal(binary, model_dir, jsonl, recipe, out, threads, n, max_len, extra):
    t0 = time.perf_counter()
    r = subprocess.run([binary, "calibrate", recipe, "--model", model_dir, "--dataset", jsonl, "--no-shuffle",
                        "--num-samples", str(n), "--max-seq-length", str(max_len), "--threads", str(threads),
                        "--output", out, "--overwrite", "-q", *extra], capture_output=True, text=True)
    total = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"ctcal failed:\n{r.stderr[-4000:]}")
    timings = json.load(open(os.path.join(out, "ctcal_report.json"))).get("timings", {})
    return total, timings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctcal", required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="bench123m")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", help="model directory (made if absent); default /tmp/ctcal-bench-<shape>")
    ap.add_argument("--peer-dtypes", nargs="+", default=["bfloat16", "float32"])
    a = ap.parse_args()
    import torch
    import llmcompressor
    d = a.dir or f"/tmp/ctcal-bench-{a.shape}"
    make_model(a.shape, d)
    cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t")
    print(f"cpu: {cpu}; threads {a.threads}; model {a.shape} ({d}); {a.samples} x {a.seq} tokens; "
          f"llmcompressor {llmcompressor.__version__}, torch {torch.__version__}", flush=True)
    g = torch.Generator().manual_seed(7)
    vocab = SHAPES[a.shape]["vocab_size"]
    ids = torch.randint(0, vocab, (a.samples, a.seq), generator=g).tolist()
    tokens = a.samples * a.seq
    work = tempfile.mkdtemp(prefix="ctcal-bench-")
    try:
        jsonl = os.path.join(work, "ids.jsonl")
        with open(jsonl, "w") as f:
            f.writelines(json.dumps({"input_ids": r}) + "\n" for r in ids)
        with open(os.path.join(work, "ids.json"), "w") as f:
            json.dump(ids, f)
        recipe = os.path.join(work, "recipe.yaml")
        with open(recipe, "w") as f:
            f.write(RECIPE)
        results = {}
        for name, extra in (("ctcal fp32", []), ("ctcal bf16", ["--compute-dtype", "bf16"])):
            total, timings = run_ctcal(a.ctcal, d, jsonl, recipe, os.path.join(work, "out-ctcal"), a.threads,
                                       a.samples, a.seq, extra)
            results[name] = total
            print(f"{name:28s}: {tokens / total:9.1f} tokens/s end to end ({total:7.1f} s); report timings {timings}",
                  flush=True)
        for dtype in a.peer_dtypes:
            total, one = run_oneshot(d, os.path.join(work, "ids.json"), recipe, os.path.join(work, "out-lc"),
                                     dtype, a.threads, a.seq)
            results[f"llm-compressor {dtype}"] = total
            print(f"{'llm-compressor ' + dtype:28s}: {tokens / total:9.1f} tokens/s end to end ({total:7.1f} s); "
                  f"oneshot() alone {one:.1f} s = {tokens / one:.1f} tokens/s", flush=True)
        peer = min(v for k, v in results.items() if k.startswith("llm-compressor"))
        for name in ("ctcal fp32", "ctcal bf16"):
            print(f"ratio {name} / fastest llm-compressor: {peer / results[name]:.2f}x", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
