#!/usr/bin/env python3
"""ctcal vs a transformers forward (what llm-compressor's calibration runs) on the same CPU,
same samples, same thread count. Run on the GPU machine (transformers 5.17, PyTorch 2.11) with
ctcal's calib_bench carried along:

    python3 bench/compare_transformers.py --calib-bench "COMMAND" [--shape 1b|8b] [--threads 2 16]
        [--samples 8] [--seq 512] [--dtypes fp32 bf16] [--dir DIR]

COMMAND runs calib_bench, e.g. ".device_bin/run.sh calib_bench" (scripts/pack_for_device.sh).

Builds a Llama-3.2-1B-shaped model (hidden 2048, 16 layers, 32/8 heads, head_dim 64,
intermediate 8192, vocab 128256; --shape 8b: Llama-3.1-8B's hidden 4096, 32 layers, 32/8 heads,
head_dim 128, intermediate 14336) with random weights, saves it as bf16 safetensors (unless DIR
holds a checkpoint already: `calib_bench make` writes an 8B one in seconds), then times:
transformers fp32 and bf16 forward of the decoder (no lm_head, as llm-compressor's calibration
context drops it), and ctcal's fp32 and bf16 calibration passes, for each thread count (--dtypes
bf16: the bf16 runs only; an 8B fp32 pair takes minutes). With --bf16-attention-off, ctcal's bf16
mode also runs with fp32 attention (its numerics before issue 17), in the same run. Set
CTCAL_CPU_PROFILE=1 for ctcal's time per phase.
"""
import argparse
import os
import shlex
import subprocess
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib-bench", required=True)
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 16])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--shape", choices=["1b", "8b"], default="1b")
    ap.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    ap.add_argument("--bf16-attention-off", action="store_true")
    ap.add_argument("--dir")
    a = ap.parse_args()
    a.dir = a.dir or f"/tmp/llama{a.shape}-random"
    shape = (dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, head_dim=64, tie_word_embeddings=True)
             if a.shape == "1b" else
             dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, head_dim=128, tie_word_embeddings=False))
    cfg = LlamaConfig(num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, max_position_embeddings=4096,
                      rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, **shape)
    if not os.path.exists(os.path.join(a.dir, "config.json")):
        torch.manual_seed(0)
        LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(a.dir)
    print("cpu:", open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": "), flush=True)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, cfg.vocab_size, (a.samples, a.seq), generator=g)
    tokens = a.samples * a.seq
    for threads in a.threads:
        torch.set_num_threads(threads)
        for dtype in [{"fp32": torch.float32, "bf16": torch.bfloat16}[d] for d in a.dtypes]:
            model = LlamaForCausalLM.from_pretrained(a.dir, dtype=dtype).eval()
            with torch.no_grad():
                model.model(ids[:1, :64], use_cache=False)  # warm-up
                t0 = time.perf_counter()
                for i in range(a.samples):  # batch_size 1, as llm-compressor calibrates
                    model.model(ids[i:i + 1], use_cache=False)
                dt = time.perf_counter() - t0
            print(f"transformers {str(dtype).split('.')[1]:9s} threads {threads:2d}: {tokens / dt:8.1f} tokens/s ({dt:.1f} s)", flush=True)
            del model
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
        modes = [([], "fp32"), (["--bf16", "1"], "bf16")]
        if a.bf16_attention_off:
            modes.append((["--bf16", "1", "--bf16-attention", "0"], "bf16, fp32 attention"))
        for extra, name in [m for m in modes if m[1].split(",")[0] in a.dtypes]:
            out = subprocess.run([*shlex.split(a.calib_bench), "run", a.dir, "--samples", str(a.samples), "--seq", str(a.seq),
                                  "--threads", str(threads), *extra], capture_output=True, text=True, env=env)
            print(f"ctcal {name} threads {threads:2d}:\n" + out.stdout + out.stderr, flush=True)


if __name__ == "__main__":
    main()
