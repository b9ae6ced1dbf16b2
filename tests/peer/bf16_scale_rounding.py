#!/usr/bin/env python3
"""bf16 scales: ctcal's single rounding against compressed-tensors' double rounding, and the real
peer on a bf16 model.

usage: bf16_scale_rounding.py CTCAL_BINARY SOURCE_DIR

A bf16 copy of stories260K (weights cast with PyTorch, config dtype bfloat16, written to a temporary
directory) is calibrated by ctcal (fp32 compute, scales stored as bf16, the model's dtype) with the
FP8 per-tensor and per-head KV recipes.

1. Same observed range, two roundings. compressed-tensors' calculate_qparams (the peer's own
   function, called here) gets the observed min/max as bf16 tensors, as its observers hold them for
   a bf16 model, and divides in bf16: absmax is rounded to bf16, then absmax/448 is rounded to bf16
   again. ctcal rounds absmax/448 once, from the fp32 observed value. Both are correctly rounded
   results of nearly the same quotient, so they are equal or one bf16 ulp apart; more than one ulp
   would be an error in ctcal's arithmetic or dtype handling. The test requires <= 1 ulp for every
   scale and prints how many differ.
2. The real peer, end to end: oneshot on the bf16 model (dtype "auto" = bf16, as llm-compressor's
   examples load hub checkpoints) computes the whole forward pass in bf16, so its observed absmax
   carries bf16 rounding from every layer. The difference is printed in bf16 ulps and bounded by
   PEER_BF16_ULPS (measured worst printed): this is the peer's bf16 forward, not a ctcal defect;
   ctcal's fp32 forward is the one within 1.2e-6 of float64 (tests/golden).
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_util as pu  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
pu.enter_venv()

import torch  # noqa: E402
from compressed_tensors.quantization import QuantizationArgs  # noqa: E402
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

import oneshot_vs_ctcal as ovc  # noqa: E402

# bf16 has 8 significant bits: one ulp is 2^-8..2^-7 relative. A bf16 forward through 5 layers
# moves an absmax by a few of those; measured worst is printed. 8 ulps (3 %) fails for a scale
# from the wrong tensor or the wrong divisor, which are off by far more.
PEER_BF16_ULPS = 8

model_dir = pu.model_dir("stories260K")
with tempfile.TemporaryDirectory() as tmp:
    bf16_dir = os.path.join(tmp, "stories260K-bf16")
    AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(torch.bfloat16).save_pretrained(bf16_dir)
    for f in ("tokenizer.model",):
        if os.path.exists(os.path.join(model_dir, f)):
            with open(os.path.join(model_dir, f), "rb") as a, open(os.path.join(bf16_dir, f), "wb") as b:
                b.write(a.read())
    rows = pu.calibration_ids(BIN, model_dir, ovc.N_SAMPLES, ovc.MAX_LEN)
    ids = os.path.join(tmp, "ids.jsonl")
    pu.write_jsonl(rows, ids)
    for rel in ("recipes/fp8_kv_per_tensor.yaml", "recipes/fp8_kv_per_head.yaml"):
        recipe = os.path.join(SRC, rel)
        out = os.path.join(tmp, "ctcal-" + os.path.basename(rel)[:-5])
        pu.calibrate(BIN, recipe, bf16_dir, ids, out, len(rows), ovc.MAX_LEN)
        written = pu.load_tensors(out)
        report = json.load(open(os.path.join(out, "ctcal_report.json")))
        args = QuantizationArgs.model_validate(report["kv_cache_scheme"])
        n = one = 0
        for layer in report["layers"]:
            for site in ("k", "v"):
                st = layer[site]
                name = f"model.layers.{layer['layer']}.self_attn.{site}_scale"
                mine = written[name]
                pu.check(mine.dtype == torch.bfloat16, f"{rel}: {name} stored as {mine.dtype}, model is bf16")
                # The observer's min/max, as the peer's observer would hold them for a bf16 model.
                lo = torch.tensor(st["observer_min"], dtype=torch.float32).to(torch.bfloat16)
                hi = torch.tensor(st["observer_max"], dtype=torch.float32).to(torch.bfloat16)
                scale, _ = calculate_qparams(lo, hi, args)
                scale = scale.reshape(mine.shape)
                pu.check(scale.dtype == torch.bfloat16, f"calculate_qparams returned {scale.dtype}")
                d = pu.ulps(mine, scale)
                n += d.numel()
                one += int((d == 1).sum())
                pu.check(int(d.max()) <= 1, f"{rel}: {name}: ctcal {mine.flatten().tolist()} vs compressed-tensors "
                         f"{scale.flatten().tolist()}: {int(d.max())} bf16 ulps")
        print(f"{rel}: {n} bf16 scales: {n - one} equal to compressed-tensors' double rounding, {one} one ulp "
              "apart (ctcal's single rounding), none further", flush=True)

        # The real peer on the bf16 model, end to end.
        peer_out = os.path.join(tmp, "peer-" + os.path.basename(rel)[:-5])
        from datasets import Dataset
        from llmcompressor import oneshot
        model = AutoModelForCausalLM.from_pretrained(bf16_dir, dtype="auto")
        pu.check(next(model.parameters()).dtype == torch.bfloat16, "the peer did not load the model as bf16")
        oneshot(model=model, dataset=Dataset.from_dict({"input_ids": rows}), recipe=recipe,
                processor=ovc.peer_tokenizer(), num_calibration_samples=len(rows), max_seq_length=ovc.MAX_LEN,
                shuffle_calibration_samples=False, batch_size=1)
        model.save_pretrained(peer_out, save_compressed=True)
        peer = pu.load_tensors(peer_out)
        worst = 0
        for name, mine in written.items():
            if name.endswith(("k_scale", "v_scale")):
                theirs = peer[name]
                pu.check(theirs.dtype == torch.bfloat16 and theirs.shape == mine.shape,
                         f"{rel}: peer {name} {theirs.dtype}{list(theirs.shape)}")
                worst = max(worst, int(pu.ulps(mine, theirs).max()))
        print(f"{rel}: llm-compressor's bf16 forward vs ctcal's fp32 forward: scales at most {worst} bf16 ulps "
              f"apart (bound {PEER_BF16_ULPS})", flush=True)
        pu.check(worst <= PEER_BF16_ULPS, f"{rel}: {worst} bf16 ulps between the peer and ctcal")
pu.finish("bf16_scale_rounding")
