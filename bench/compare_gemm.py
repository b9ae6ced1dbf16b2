#!/usr/bin/env python3
"""The CPU bf16 projection GEMMs alone, ctcal against PyTorch, on the same CPU in the same run
(issue 17, item 6: where ctcal's CPU bf16 path loses to transformers at 16 threads).

    python3 bench/compare_gemm.py --gemm-bench "COMMAND" [--threads 16] [--rows 2048] [--shape 8b|1b]

COMMAND runs gemm_bench, e.g. ".device_bin/run.sh gemm_bench" (scripts/pack_for_device.sh).
Prints gemm_bench's figures (ctcal's fixed tiles and oneDNN's threaded matmul), then PyTorch's
x @ w.T in bf16 (what transformers' bf16 Linear runs) for the same shapes, best of 5.
"""
import argparse
import shlex
import subprocess
import time

import torch

SHAPES = {"8b": [("q/o", 4096, 4096), ("k/v", 1024, 4096), ("gate/up", 14336, 4096), ("down", 4096, 14336)],
          "1b": [("q/o", 2048, 2048), ("k/v", 512, 2048), ("gate/up", 8192, 2048), ("down", 2048, 8192)]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gemm-bench", required=True)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--shape", choices=list(SHAPES), default="8b")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    out = subprocess.run([*shlex.split(a.gemm_bench), "--threads", str(a.threads), "--rows", str(a.rows),
                          "--shape", a.shape, "--reps", str(a.reps)], capture_output=True, text=True)
    print(out.stdout + out.stderr, end="", flush=True)
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} threads, oneDNN {torch.backends.mkldnn.version() if hasattr(torch.backends.mkldnn, 'version') else '?'}")
    g = torch.Generator().manual_seed(0)
    for name, n_out, n_in in SHAPES[a.shape]:
        x = (torch.randn(a.rows, n_in, generator=g) * 0.02).to(torch.bfloat16)  # [rows, in]
        w = (torch.randn(n_out, n_in, generator=g) * 0.02).to(torch.bfloat16)   # [out, in]
        torch.nn.functional.linear(x, w)  # warm-up
        best = 1e30
        for _ in range(a.reps):
            t0 = time.perf_counter()
            torch.nn.functional.linear(x, w)  # [rows, out], bf16 out (fp32 accumulation)
            best = min(best, time.perf_counter() - t0)
        flop = 2.0 * a.rows * n_out * n_in
        print(f"torch    {name:8s} [{a.rows} x {n_in}] x [{n_out} x {n_in}]^T: {best * 1e3:.2f} ms {flop / best / 1e12:.2f} TFLOP/s", flush=True)


if __name__ == "__main__":
    main()
