#!/usr/bin/env python3
"""NVFP4 KV-cache quantization golden data (issue 31), made on the CPU with the peer venv
(torch 2.14, numpy) and vLLM 0.34.0's Python sources:

    PYTHONPATH=$(scripts/peer_venv.sh)/vllm-0.34.0 $(scripts/peer_venv.sh)/bin/python \
        tests/golden/make_nvfp4_golden.py --out tests/golden/data/nvfp4

An implementation of FlashInfer's nvfp4_append_quantize_block (include/flashinfer/page.cuh, the
Hopper FA2 path vLLM 0.34 writes the NVFP4 KV cache with) independent of ctcal's: numpy float32
arithmetic in the kernel's order (amax / (6 * s); 1 / (sf * s); x * that), the block scale
through torch.float8_e4m3fn after a clamp to +-448 (satfinite), and E2M1 as the nearest of the
eight magnitudes with ties to the even code (a table, not the kernel's threshold chain).

Writes nvfp4.safetensors:
  e4m3_in f32 [M], e4m3_code u8 [M]            E4M3 satfinite conversions (ties, subnormals, saturation, NaN)
  e2m1_in f32 [P], e2m1_code u8 [P]            E2M1 round-to-nearest-even satfinite conversions
  x f32 [N, 16], s f32 [N]                     blocks and their per-tensor decode multiplier s
  sf u8 [N], codes u8 [N, 16], decoded f32 [N, 16], saturated u8 [N], flushed u8 [N]
  vllm_sf u8 [N], vllm_q f32 [N, 16]           vLLM's ref_nvfp4_quant (nvfp4_emulation_utils.py) of each block
                                               with global_scale = float32(1 / s) (its encode-scale convention)
  near_boundary u8 [N]                         1 where, in float64, the exact amax / (6 s) or some x / (sf s)
                                               lies within 2^-20 (relative) of an E4M3 / E2M1 rounding midpoint:
                                               where two fp32 operation orders may round apart
Read by nvfp4_golden_test.cpp (bit-exact against the FlashInfer formulas; against vLLM's reference
exact except on near_boundary blocks).
"""
import argparse
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
F32 = np.float32


def e4m3_codes(v):
    """float32 array -> E4M3 (fn) codes, satfinite: clamp to +-448 then torch's RNE cast (NaN stays NaN)."""
    t = torch.from_numpy(np.asarray(v, dtype=np.float32).copy())
    t = torch.where(torch.isnan(t), t, t.clamp(-448.0, 448.0))
    return t.to(torch.float8_e4m3fn).view(torch.uint8).numpy()


def e4m3_values(codes):
    return torch.from_numpy(np.asarray(codes, dtype=np.uint8)).view(torch.float8_e4m3fn).to(torch.float32).numpy()


def e2m1_codes(v):
    """Nearest E2M1 magnitude, ties to the even index, saturating at 6; sign bit from the sign of v."""
    v = np.asarray(v, dtype=np.float64)
    m = np.abs(v)
    d = np.abs(m[..., None] - E2M1)  # [..., 8]
    best = d.min(axis=-1, keepdims=True)
    tie = (d == best)
    # Among the (at most two) nearest, the even index wins.
    idx = np.where(tie & (np.arange(8) % 2 == 0), np.arange(8), 99).min(axis=-1)
    idx = np.where(idx == 99, d.argmin(axis=-1), idx)
    idx = np.where(m >= 6.0, 7, idx)
    return (idx | np.where(np.signbit(v), 8, 0)).astype(np.uint8)


def e2m1_value(codes):
    codes = np.asarray(codes)
    return np.where(codes & 8, -1.0, 1.0) * E2M1[codes & 7]


def quantize(x, s):
    """FlashInfer's block math in numpy float32. x [N, 16] f32, s [N] f32."""
    amax = np.abs(x).max(axis=1).astype(F32)  # [N]
    ok = (amax > 0) & (s > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sf_value = np.where(ok, amax / (F32(6.0) * s), F32(0.0)).astype(F32)
    sf = e4m3_codes(sf_value)
    sfv = e4m3_values(sf)
    with np.errstate(divide="ignore"):
        out_scale = np.where(ok & (sfv > 0), F32(1.0) / (sfv * s), F32(0.0)).astype(F32)
    scaled = (x * out_scale[:, None]).astype(F32)
    codes = e2m1_codes(scaled)
    decoded = ((e2m1_value(codes).astype(F32) * sfv[:, None]).astype(F32) * s[:, None]).astype(F32)
    saturated = (sf_value > 448).astype(np.uint8)
    flushed = ((amax > 0) & (sfv == 0)).astype(np.uint8)
    return sf, codes, decoded, saturated, flushed, sfv


def near_boundary(x, s, sfv):
    """float64: does amax / (6 s) or some x / (sf s) sit within 2^-20 of a rounding midpoint?"""
    eps = 2.0 ** -20
    x64, s64 = x.astype(np.float64), s.astype(np.float64)
    amax = np.abs(x64).max(axis=1)
    v = np.where(s64 > 0, amax / (6.0 * s64), 0.0)
    near = np.zeros(len(x), dtype=bool)
    for f in (1 - eps, 1 + eps):
        near |= e4m3_codes((v * f).astype(F32)) != e4m3_codes(v.astype(F32))
    scale = sfv.astype(np.float64) * s64
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(scale[:, None] > 0, x64 / scale[:, None], 0.0)
    for f in (1 - eps, 1 + eps):
        near |= (e2m1_codes(q * f) != e2m1_codes(q)).any(axis=1)
    return near.astype(np.uint8)


def vllm_reference(x, s):
    """vLLM 0.34's ref_nvfp4_quant, block by block, global (encode) scale = float32(1 / s)."""
    from vllm.model_executor.layers.quantization.utils.nvfp4_emulation_utils import ref_nvfp4_quant
    q = np.zeros_like(x)
    sf = np.zeros(len(x), dtype=np.uint8)
    for i in range(len(x)):
        gs = torch.tensor([1.0 / float(s[i])], dtype=torch.float32)
        qi, sc = ref_nvfp4_quant(torch.from_numpy(x[i:i + 1].copy()), gs, 16)
        q[i] = qi.numpy()[0]
        sf[i] = sc.to(torch.float8_e4m3fn).view(torch.uint8).numpy().reshape(-1)[0]
    return sf, q


def edge_blocks():
    """Hand-made blocks [(x[16], s)]: every rounding rule the kernel has, at exact ties."""
    mids = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
    blocks = []
    # Ties at every E2M1 midpoint, both signs, with sf * s a power of two (exact reciprocals).
    for sf_pow, s in ((0, 1.0), (-3, 1.0), (2, 0.5), (-6, 2.0 ** -7), (5, 8.0)):
        unit = 2.0 ** sf_pow * s
        row = [6.0] + mids + [-m for m in mids] + [-6.0]
        blocks.append(([r * unit for r in row], s))
    # Just below / above each midpoint.
    row = [6.0]
    for m in mids[:7]:
        row.append(float(np.nextafter(F32(m), F32(0))))
    for m in mids[:7]:
        row.append(float(np.nextafter(F32(m), F32(10))))
    row.append(-0.0)
    blocks.append((row, 1.0))
    blocks.append(([0.0] * 16, 1.0))                       # all zero
    blocks.append(([-0.0] * 16, 1.0))                      # all negative zero
    blocks.append(([1e-4, -5e-5] + [0.0] * 14, 1.0))       # sf_value 1.7e-5 < 2^-10: flushed
    blocks.append(([6 * 2.0 ** -10, -1e-4] + [2e-4] * 14, 1.0))  # sf_value = 2^-10: tie to 0, flushed
    blocks.append(([6 * 2.0 ** -10 * 1.001] + [-3e-4] * 15, 1.0))  # just above: sf = 2^-9
    blocks.append(([6 * 3 * 2.0 ** -10] + [1e-3] * 15, 1.0))  # 3 * 2^-10: subnormal tie -> 2^-8 (even)
    blocks.append(([6.375, 1.0, -2.0] + [0.5] * 13, 1.0))  # sf_value 1.0625: tie -> 1.0 (even)
    blocks.append(([6.0 * 1.1875, -3.3] + [0.1] * 14, 1.0))  # 1.1875: tie -> 1.25 (even)
    blocks.append(([3000.0, -100.0, 7.0] + [1.0] * 13, 1.0))  # sf_value 500 > 448: saturated
    blocks.append(([6 * 448.0, 2000.0] + [-1.0] * 14, 1.0))  # sf_value = 448 exactly: not saturated
    blocks.append(([6 * 460.0, -6 * 460.0] + [10.0] * 14, 1.0))  # 448 < 460 < 464: saturated, sf 448
    blocks.append(([-5.0, -4.0, -3.0, -2.5, -1.0] + [-0.3] * 11, 1.0))  # amax from a negative value
    blocks.append(([float(v) for v in np.linspace(-7, 7, 16)], 1.0))
    return blocks


def random_blocks(rng):
    """Tensors like K/V [tokens, heads, head_dim] with outliers, at the three conventions and random s."""
    out = []
    for t in range(4):
        shape = (24, 2, 64)
        x = rng.standard_normal(shape)
        if t % 2:
            x = rng.standard_t(2.0, shape)  # heavy tails: outlier blocks
        x *= 10.0 ** rng.uniform(-2, 2)
        x[..., 5] *= 20.0  # an outlier channel, as K caches have
        x = x.astype(F32)
        amax = F32(np.abs(x).max())
        blocks = x.reshape(-1, 16)
        for s in (F32(1.0), amax / F32(448.0), amax / F32(2688.0)):
            out += [(b, float(s)) for b in blocks]
        for b in blocks[:64]:
            out.append((b, float(F32(amax * 10.0 ** rng.uniform(-5, -1)))))
    return out


def order_sensitive_blocks(rng):
    """Blocks where the kernel's operation order matters in fp32, found by search: (a) x * (1 / (sf s))
    rounds to another E2M1 code than x / (sf s); (b) amax / (6 s) rounds to another E4M3 block
    scale than vLLM's reference order (1 / s) * (amax * (1 / 6)). A reimplementation that divides,
    or reorders the scale, fails on these."""
    out = []
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    while len(out) < 12:  # (a)
        s = F32(10.0 ** rng.uniform(-3, 1))
        sfv = e4m3_values(e4m3_codes(np.array([rng.uniform(0.01, 400)], dtype=F32)))[0]
        cand = (mids[rng.integers(0, 7, 20000)] * float(sfv) * float(s) * (1 + rng.uniform(-4e-7, 4e-7, 20000))).astype(F32)
        rec = e2m1_codes((cand * (F32(1.0) / (sfv * s))).astype(F32))
        div = e2m1_codes((cand / (sfv * s)).astype(F32))
        picked = cand[rec != div][:15]
        if len(picked) == 0:
            continue
        amax = F32(6.0) * sfv * s  # sf_value rounds back to sfv (up to an ulp: checked below)
        block = np.concatenate([[amax], picked, np.zeros(15 - len(picked), dtype=F32)]).astype(F32)
        if e4m3_codes(np.array([amax / (F32(6.0) * s)], dtype=F32))[0] == e4m3_codes(np.array([sfv]))[0]:
            signs = np.where(rng.random(16) < 0.5, F32(-1), F32(1))
            out.append(((block * signs).astype(F32), float(s)))
    finite = e4m3_values(np.arange(0x01, 0x7E, dtype=np.uint8))
    e4_mids = ((finite[:-1] + finite[1:]) / 2).astype(np.float64)
    found = 0
    while found < 12:  # (b)
        s = F32(10.0 ** rng.uniform(-3, 1))
        m = e4_mids[rng.integers(0, len(e4_mids), 20000)]
        amax = (m * 6.0 * float(s) * (1 + rng.uniform(-4e-7, 4e-7, 20000))).astype(F32)
        kernel = e4m3_codes((amax / (F32(6.0) * s)).astype(F32))
        ref = e4m3_codes(((F32(1.0) / s) * (amax * F32(1.0 / 6.0))).astype(F32))
        for a in amax[kernel != ref][:2]:
            out.append(([float(a)] + rng.uniform(-float(a), float(a), 15).tolist(), float(s)))
            found += 1
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(31)

    cases = [(np.asarray(b, dtype=F32), F32(s)) for b, s in edge_blocks()] + \
            [(np.asarray(b, dtype=F32), F32(s)) for b, s in random_blocks(rng)] + \
            [(np.asarray(b, dtype=F32), F32(s)) for b, s in order_sensitive_blocks(rng)]
    x = np.stack([c[0] for c in cases]).astype(F32)  # [N, 16]
    s = np.array([c[1] for c in cases], dtype=F32)   # [N]
    sf, codes, decoded, saturated, flushed, sfv = quantize(x, s)
    vsf, vq = vllm_reference(x, s)
    near = near_boundary(x, s, sfv)

    # The conversions alone: E4M3 at every code's value, every midpoint, beyond 448, subnormals, NaN.
    all_codes = np.arange(256, dtype=np.uint8)
    vals = e4m3_values(all_codes)
    finite = np.sort(np.unique(vals[np.isfinite(vals) & (vals >= 0)]))
    mid = (finite[:-1] + finite[1:]) / 2  # exact in float32 (E4M3 has 3 mantissa bits)
    e4 = np.concatenate([finite, mid, np.nextafter(mid, F32(0)), np.nextafter(mid, F32(1e9)),
                         [448.0, 460.0, 463.99, 464.0, 500.0, 1e30, np.inf, 2.0 ** -10, 2.0 ** -11, 1e-30, np.nan],
                         rng.uniform(0, 500, 200)]).astype(F32)
    e4 = np.concatenate([e4, -e4]).astype(F32)
    # A negative NaN's code sign is left out (torch keeps it, CUDA's cvt gives the canonical 0x7F);
    # the block math never converts a NaN: fmaxf drops NaNs, so amax / (6 s) is never NaN.
    e4 = e4[~(np.isnan(e4) & np.signbit(e4))]
    e4c = e4m3_codes(e4)
    e2 = np.concatenate([E2M1, (E2M1[:-1] + E2M1[1:]) / 2, [6.5, 7.0, 100.0, np.inf, 1e-30, 0.1],
                         rng.uniform(0, 7, 200)]).astype(F32)
    e2 = np.concatenate([e2, -e2]).astype(F32)
    e2 = np.concatenate([e2, np.nextafter(e2, F32(10)), np.nextafter(e2, F32(-10))]).astype(F32)
    e2c = e2m1_codes(e2)

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    save_file({"e4m3_in": t(e4), "e4m3_code": t(e4c), "e2m1_in": t(e2), "e2m1_code": t(e2c),
               "x": t(x), "s": t(s), "sf": t(sf), "codes": t(codes), "decoded": t(decoded),
               "saturated": t(saturated), "flushed": t(flushed), "vllm_sf": t(vsf), "vllm_q": t(vq.astype(F32)),
               "near_boundary": t(near)},
              os.path.join(args.out, "nvfp4.safetensors"), metadata={"format": "pt"})
    same_sf = vsf == sf
    same_q = (vq == e2m1_value(codes)).all(axis=1)
    summary = {
        "blocks": int(len(x)), "saturated": int(saturated.sum()), "flushed": int(flushed.sum()),
        "near_boundary": int(near.sum()),
        "vllm_ref_disagrees": int((~(same_sf & same_q)).sum()),
        "vllm_ref_disagrees_off_boundary": int((~(same_sf & same_q) & (near == 0)).sum()),
        "e4m3_cases": int(len(e4)), "e2m1_cases": int(len(e2)),
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
