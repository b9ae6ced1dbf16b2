#!/usr/bin/env python3
"""MXFP4 dequantization golden data, made by transformers 5.17's own
integrations/mxfp4.py convert_moe_packed_tensors (CPU; the peer venv of scripts/peer_venv.sh):

    $(scripts/peer_venv.sh)/bin/python tests/golden/make_mxfp4_golden.py --out tests/golden/data/mxfp4

Writes mxfp4.safetensors: `blocks` uint8 [E, R, G, 16] and `scales` uint8 [E, R, G] (every byte
value of the blocks, scale exponents 2^-37 .. 2^33), and `dequantized` float32 [E, G * 32, R], the
function's output in float32 (as gpt-oss experts are stored: [E, in, out] for gate_up_proj).
Read by mxfp4_golden_test.cpp (bit-exact).
"""
import argparse
import os

import torch
from safetensors.torch import save_file
from transformers.integrations.mxfp4 import convert_moe_packed_tensors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    g = torch.Generator().manual_seed(77)
    e, r, groups = 3, 10, 2
    blocks = torch.randint(0, 256, (e, r, groups, 16), generator=g, dtype=torch.int32).to(torch.uint8)
    blocks.view(-1)[:256] = torch.arange(256, dtype=torch.int32).to(torch.uint8)  # every code pair
    scales = torch.randint(90, 161, (e, r, groups), generator=g, dtype=torch.int32).to(torch.uint8)
    out = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)  # [E, G * 32, R]
    save_file({"blocks": blocks.contiguous(), "scales": scales.contiguous(), "dequantized": out.contiguous()},
              os.path.join(args.out, "mxfp4.safetensors"), metadata={"format": "pt"})
    print("mxfp4 golden", tuple(out.shape))


if __name__ == "__main__":
    main()
