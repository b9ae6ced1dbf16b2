#!/usr/bin/env python3
"""Golden data for ctcal's FP8 weight quantization and its readers of quantized weights, made with
compressed-tensors itself (the reference), on the CPU.

Pinned versions (a scratch venv outside the repository):

    python3 -m venv /root/.cache/ctcal/ct-venv
    /root/.cache/ctcal/ct-venv/bin/pip install torch==2.15.0 compressed-tensors==0.20.1 safetensors==0.8.0
    /root/.cache/ctcal/ct-venv/bin/python tests/golden/make_quantized_golden.py --out tests/golden/data/quantized

For each case it makes small random weights (seeded, with a few outliers so that channels and
blocks differ), computes the weight qparams as llm-compressor's min-max observer does
(per-strategy amin/amax, then compressed-tensors' `calculate_qparams`, with `generate_gparam` for
NVFP4's global scale), compresses them with the compressor of the format
(`BaseCompressor.get_value_from_registry(format).compress`) and decompresses them again
(`.decompress`). It writes `<case>.safetensors` with

    orig                     the weight before quantization (its dtype)
    layer.<compressed names> exactly what compressed-tensors stores for module `layer`
    expected.weight          compressed-tensors' decompressed weight (its dtype)
    expected.weight_with_args  (block cases) `dequantize` given the args' block_structure

and `cases.json` with, per case, the format, the weight's dtype and the `weights`
QuantizationArgs as compressed-tensors dumps them.
"""
import argparse
import json
import os

import compressed_tensors
import torch
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.lifecycle.forward import dequantize
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam
from safetensors.torch import save_file

# name, format, weight dtype, shape, weights args. (compressed-tensors 0.20 dropped GPTQ's g_idx,
# so activation-ordered groups have no reference here; a unit test covers ctcal's g_idx reading.)
CASES = [
    ("fp8_tensor_bf16", "float-quantized", torch.bfloat16, (48, 64),
     dict(num_bits=8, type="float", strategy="tensor", symmetric=True)),
    ("fp8_tensor_f32", "float-quantized", torch.float32, (48, 64),
     dict(num_bits=8, type="float", strategy="tensor", symmetric=True)),
    ("fp8_channel_bf16", "float-quantized", torch.bfloat16, (48, 64),
     dict(num_bits=8, type="float", strategy="channel", symmetric=True)),
    ("fp8_channel_f16", "float-quantized", torch.float16, (40, 72),
     dict(num_bits=8, type="float", strategy="channel", symmetric=True)),
    ("fp8_block_bf16", "float-quantized", torch.bfloat16, (64, 96),
     dict(num_bits=8, type="float", strategy="block", block_structure=[16, 32], symmetric=True)),
    # Blocks that do not divide the weight (the edge blocks are partial).
    ("fp8_block128_ragged_bf16", "float-quantized", torch.bfloat16, (192, 160),
     dict(num_bits=8, type="float", strategy="block", block_structure=[128, 128], symmetric=True)),
    ("int4_group_sym_bf16", "pack-quantized", torch.bfloat16, (32, 128),
     dict(num_bits=4, type="int", strategy="group", group_size=32, symmetric=True)),
    ("int4_group_asym_bf16", "pack-quantized", torch.bfloat16, (40, 128),
     dict(num_bits=4, type="int", strategy="group", group_size=32, symmetric=False)),
    ("int8_channel_pack_bf16", "pack-quantized", torch.bfloat16, (24, 40),
     dict(num_bits=8, type="int", strategy="channel", symmetric=True)),
    ("int8_channel_asym_pack_f16", "pack-quantized", torch.float16, (36, 40),
     dict(num_bits=8, type="int", strategy="channel", symmetric=False)),
    ("int3_group_pack_bf16", "pack-quantized", torch.bfloat16, (16, 96),
     dict(num_bits=3, type="int", strategy="group", group_size=32, symmetric=True)),
    ("int8_channel_naive_bf16", "naive-quantized", torch.bfloat16, (24, 40),
     dict(num_bits=8, type="int", strategy="channel", symmetric=True)),
    ("int8_tensor_asym_naive_f32", "naive-quantized", torch.float32, (24, 40),
     dict(num_bits=8, type="int", strategy="tensor", symmetric=False)),
    ("fp8_channel_naive_bf16", "naive-quantized", torch.bfloat16, (24, 40),
     dict(num_bits=8, type="float", strategy="channel", symmetric=True)),
    ("nvfp4_bf16", "nvfp4-pack-quantized", torch.bfloat16, (32, 64),
     dict(num_bits=4, type="float", strategy="tensor_group", group_size=16, symmetric=True,
          scale_dtype=torch.float8_e4m3fn, zp_dtype=torch.float8_e4m3fn)),
]


def make_weight(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g, dtype=torch.float64) * 0.05
    # Outliers, and one row and one column scaled up, so per-channel/block scales differ.
    idx = torch.randint(0, w.numel(), (max(1, w.numel() // 200),), generator=g)
    w.view(-1)[idx] *= 20.0
    w[1] *= 4.0
    w[:, 3] *= 3.0
    return w.to(dtype)


def observe(w, args):
    """min/max per qparam as llm-compressor's min-max observers reduce a weight."""
    rows, cols = w.shape
    s = args.strategy
    if s == "tensor":
        return w.amin().reshape(1), w.amax().reshape(1)
    if s == "channel":
        return w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    if s in ("group", "tensor_group"):
        g = w.reshape(rows, cols // args.group_size, args.group_size)
        return g.amin(dim=-1), g.amax(dim=-1)
    if s == "block":
        bh, bw = args.block_structure
        pr, pc = (-rows) % bh, (-cols) % bw
        p = torch.nn.functional.pad(w, (0, pc, 0, pr))
        b = p.reshape(p.shape[0] // bh, bh, p.shape[1] // bw, bw)
        return b.amin(dim=(1, 3)), b.amax(dim=(1, 3))
    raise ValueError(s)


def make_case(i, name, fmt, dtype, shape, wargs, out_dir):
    args = QuantizationArgs(**wargs)
    scheme = QuantizationScheme(targets=["Linear"], weights=args, format=fmt)
    w = make_weight(shape, dtype, 1000 + i)
    sd = {"weight": w.clone()}
    mn, mx = observe(w, args)
    global_scale = None
    if fmt == "nvfp4-pack-quantized":
        global_scale = generate_gparam(w.amin(), w.amax()).reshape(1)
        sd["weight_global_scale"] = global_scale
    scale, zp = calculate_qparams(mn, mx, args, global_scale=global_scale)
    sd["weight_scale"] = scale
    sd["weight_zero_point"] = zp
    compressor = BaseCompressor.get_value_from_registry(fmt)
    compressed = compressor.compress(dict(sd), scheme)
    decompressed = compressor.decompress(dict(compressed), scheme)
    tensors = {"orig": w.contiguous()}
    for k, v in compressed.items():
        tensors["layer." + k] = v.contiguous()
    tensors["expected.weight"] = decompressed["weight"].contiguous()
    if args.strategy == "block":
        # decompress infers blocks from the scale's shape (rows // scale rows), which is wrong
        # when blocks do not divide the weight; dequantize with the args uses block_structure,
        # as vLLM does.
        tensors["expected.weight_with_args"] = dequantize(
            x_q=compressed["weight"], scale=compressed["weight_scale"], args=args).contiguous()
    save_file(tensors, os.path.join(out_dir, name + ".safetensors"), metadata={"format": "pt"})
    return {
        "format": fmt,
        "dtype": str(dtype).replace("torch.", ""),
        "weights": args.model_dump(mode="json"),
        "tensors": {k: [str(v.dtype).replace("torch.", ""), list(v.shape)] for k, v in tensors.items()},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    manifest = {"compressed_tensors": compressed_tensors.__version__, "torch": torch.__version__,
                "cases": {}}
    for i, (name, fmt, dtype, shape, wargs) in enumerate(CASES):
        manifest["cases"][name] = make_case(i, name, fmt, dtype, shape, wargs, a.out)
        print(name, "ok")
    with open(os.path.join(a.out, "cases.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
