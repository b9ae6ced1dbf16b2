#!/usr/bin/env python3
"""The headline peer on the GPU (issue 30 item 1): llm-compressor's `oneshot` against
`ctcal calibrate --device cuda`, on the same GPU, the same random bf16 Llama-shaped checkpoint, the
same token ids (batch 1, no padding), the same recipe (FP8 per-tensor KV, static_minmax), in one run.

Runs on the GPU machine from a copy of this tree carrying .gpu-bundle (scripts/gpu_bundle.sh) and
llm-compressor's wheels (docs/performance.md says which; the machine has torch 2.11 and
transformers 5.17):

    python3 bench/gpu_llmcompressor.py --ctcal .gpu-bundle/bin/ctcal --shape 8b [--samples 64] [--seq 2048]

Timed, each tool's whole job as a user runs it, page cache warm for both (the files were just
written): llm-compressor: a fresh Python process's imports, from_pretrained(dtype="auto",
device_map="cuda"), oneshot and save_pretrained; ctcal: the `ctcal calibrate` process. oneshot's
own call is printed too, and ctcal's calibration phase (ctcal_report.json). Then the two outputs'
k/v scales are compared: the largest relative difference per layer (bf16 forwards on the same GPU,
cuBLAS in both, so differences are rounding, not method: both are max|x| / 448).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_bench import SHAPES, write_model  # noqa: E402

RECIPE = """quant_stage:
  quant_modifiers:
    QuantizationModifier:
      kv_cache_scheme: {num_bits: 8, type: float, symmetric: true, strategy: tensor, dynamic: false, observer: static_minmax}
"""


def run_oneshot(model_dir, ids_path, recipe, out, max_len, n):
    """One llm-compressor job in a fresh process; returns (total_s, oneshot_s)."""
    code = f"""
import json, time
t0 = time.perf_counter()
import torch
from datasets import Dataset
from llmcompressor import oneshot
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
# oneshot wants a processor even for token ids (it reads pad/eos from it and tokenizes nothing);
# the random model has no tokenizer, so a minimal real one carries those attributes.
tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({{"<unk>": 0, "<s>": 1, "</s>": 2}}, unk_token="<unk>")),
                              unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>", model_max_length={max_len})
ids = json.load(open({ids_path!r}))
model = AutoModelForCausalLM.from_pretrained({model_dir!r}, dtype="auto", device_map="cuda")
torch.cuda.synchronize()
t1 = time.perf_counter()
oneshot(model=model, dataset=Dataset.from_dict({{"input_ids": ids}}), recipe={recipe!r},
        num_calibration_samples={n}, max_seq_length={max_len}, shuffle_calibration_samples=False,
        batch_size=1, processor=tok)
torch.cuda.synchronize()
t2 = time.perf_counter()
model.save_pretrained({out!r}, save_compressed=True)
t3 = time.perf_counter()
print(json.dumps({{"total": t3 - t0, "oneshot": t2 - t1}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"oneshot failed:\n{r.stderr[-4000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return res["total"], res["oneshot"]


def kv_scales(d):
    from safetensors.torch import load_file
    out = {}
    for f in os.listdir(d):
        if f.endswith(".safetensors"):
            out.update({k: v.float() for k, v in load_file(os.path.join(d, f)).items()
                        if k.endswith(("self_attn.k_scale", "self_attn.v_scale"))})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctcal", required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--dir", help="model directory (made if absent); default /tmp/ctcal-gpu-<shape>")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    a = ap.parse_args()
    import torch
    import llmcompressor
    import compressed_tensors
    import transformers
    d = a.dir or f"/tmp/ctcal-gpu-{a.shape}"
    if not os.path.isfile(os.path.join(d, "config.json")):
        t0 = time.perf_counter()
        write_model(d, a.shape)
        print(f"wrote the random {a.shape} checkpoint in {time.perf_counter() - t0:.1f} s", flush=True)
    gpu = torch.cuda.get_device_name(0)
    print(f"gpu: {gpu}; model {a.shape} ({d}); {a.samples} x {a.seq} tokens; llmcompressor "
          f"{llmcompressor.__version__}, compressed-tensors {compressed_tensors.__version__}, transformers "
          f"{transformers.__version__}, torch {torch.__version__}", flush=True)
    vocab = SHAPES[a.shape][5]
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, vocab, (a.samples, a.seq), generator=g).tolist()
    tokens = a.samples * a.seq
    work = tempfile.mkdtemp(prefix="ctcal-gpu-peer-")
    try:
        jsonl, ids_json, recipe = (os.path.join(work, n) for n in ("ids.jsonl", "ids.json", "recipe.yaml"))
        with open(jsonl, "w") as f:
            f.writelines(json.dumps({"input_ids": r}) + "\n" for r in ids)
        with open(ids_json, "w") as f:
            json.dump(ids, f)
        with open(recipe, "w") as f:
            f.write(RECIPE)
        out_c, out_l = os.path.join(work, "out-ctcal"), os.path.join(work, "out-lc")
        t0 = time.perf_counter()
        r = subprocess.run([a.ctcal, "calibrate", recipe, "--model", d, "--dataset", jsonl, "--no-shuffle",
                            "--num-samples", str(a.samples), "--max-seq-length", str(a.seq), "--device", "cuda",
                            "--output", out_c, "--overwrite", "-q"], capture_output=True, text=True)
        ctcal_total = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"ctcal failed:\n{r.stderr[-4000:]}")
        timings = json.load(open(os.path.join(out_c, "ctcal_report.json"))).get("timings", {})
        print(f"ctcal --device cuda   : {ctcal_total:7.2f} s whole command ({tokens / ctcal_total:9.0f} tokens/s); "
              f"calibration {timings.get('calibration_s', float('nan')):.2f} s", flush=True)
        lc_total, lc_oneshot = run_oneshot(d, ids_json, RECIPE, out_l, a.seq, a.samples)
        print(f"llm-compressor oneshot: {lc_total:7.2f} s whole job ({tokens / lc_total:9.0f} tokens/s); "
              f"oneshot() alone {lc_oneshot:.2f} s", flush=True)
        sc, sl = kv_scales(out_c), kv_scales(out_l)
        if not sc or sc.keys() != sl.keys():
            raise SystemExit(f"the outputs hold different k/v scales: ctcal {sorted(sc)[:4]}, llm-compressor {sorted(sl)[:4]}")
        worst = max((abs(sc[k] - sl[k]).max() / abs(sl[k]).max()).item() for k in sc)
        ratio = lc_total / ctcal_total
        print(f"ratio: ctcal is {ratio:.1f}x faster end to end (oneshot alone vs ctcal's whole command: "
              f"{lc_oneshot / ctcal_total:.1f}x); k/v scales: {len(sc)} tensors, largest relative difference "
              f"{worst:.3g}", flush=True)
        json.dump({"gpu": gpu, "shape": a.shape, "samples": a.samples, "seq": a.seq, "ctcal_total_s": ctcal_total,
                   "ctcal_calibration_s": timings.get("calibration_s"), "llmcompressor_total_s": lc_total,
                   "llmcompressor_oneshot_s": lc_oneshot, "ratio": ratio, "kv_scale_max_rel_diff": worst},
                  open(os.path.join(a.out, f"gpu_llmcompressor_{a.shape}.json"), "w"), indent=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
