#!/usr/bin/env python3
"""ctcal --device cuda against transformers' bf16 forward on the same GPU, in the same run.

Runs on the GPU machine (scripts/gpu_remote.sh bench SHAPE). Writes a random-weight bf16
Llama-shaped checkpoint (the layout save_pretrained writes), random token ids, then times:
  transformers: LlamaForCausalLM bf16 on the GPU, batch 1, each sample's full forward (with
                lm_head, what llm-compressor's calibration runs) and the decoder alone (model.model);
  ctcal:        calibrate --device cuda with the FP8 per-head KV recipe, page cache warm (the files
                were just written and read), then cold (each shard dropped with posix_fadvise).
Prints tokens/s and the ratios; writes gpu_bench_<shape>.json to --out.
"""
import argparse, json, os, subprocess, sys, time

SHAPES = {  # hidden, intermediate, layers, heads, kv heads, vocab, tied
    "1b": (2048, 8192, 16, 32, 8, 128256, True),
    "8b": (4096, 14336, 32, 32, 8, 128256, False),
    "70b8": (8192, 28672, 8, 64, 8, 128256, False),  # Llama-3.1-70B's layer shape, 8 of its 80 layers
}


# ctcal's runs, in order: page cache warm or cold, with CTCAL_CUDA_PROFILE's phase times, and A/B
# variants. The chunk-size and eager-module-loading variants measured no better (2026-12-02) and
# run only when asked for (--runs).
RUNS = ("warm", "cold", "warm, phases timed", "warm, phases timed, blocked attention",
        "warm, phases timed, separate GEMMs", "warm, phases timed, 32768-token chunks",
        "warm, phases timed, 8192-token chunks", "warm, phases timed, eager module loading", "warm again")
DEFAULT_RUNS = tuple(r for r in RUNS if "chunks" not in r and "eager" not in r)


def write_model(path, shape):
    import torch
    from safetensors.torch import save_file
    h, f, n_layers, nh, nkv, vocab, tied = SHAPES[shape]
    d = h // nh
    os.makedirs(path, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
           "intermediate_size": f, "num_hidden_layers": n_layers, "num_attention_heads": nh,
           "num_key_value_heads": nkv, "head_dim": d, "vocab_size": vocab, "max_position_embeddings": 131072,
           "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": tied, "torch_dtype": "bfloat16",
           "hidden_act": "silu", "attention_bias": False, "mlp_bias": False}
    json.dump(cfg, open(f"{path}/config.json", "w"), indent=1)
    g = torch.Generator(device="cuda").manual_seed(0)

    def rnd(*s, std=0.02):
        return (torch.randn(*s, generator=g, device="cuda", dtype=torch.float32) * std).to(torch.bfloat16).cpu()

    index, shard, shard_bytes, n = {}, {}, 0, 0

    def flush():
        nonlocal shard, shard_bytes, n
        if not shard:
            return
        name = f"model-{n:05d}.safetensors"
        save_file(shard, f"{path}/{name}", metadata={"format": "pt"})
        for k in shard:
            index[k] = name
        shard, shard_bytes, n = {}, 0, n + 1

    def put(name, t):
        nonlocal shard_bytes
        shard[name] = t
        shard_bytes += t.numel() * 2
        if shard_bytes > 4 << 30:
            flush()

    put("model.embed_tokens.weight", rnd(vocab, h))
    for l in range(n_layers):
        p = f"model.layers.{l}."
        put(p + "input_layernorm.weight", torch.ones(h, dtype=torch.bfloat16))
        put(p + "post_attention_layernorm.weight", torch.ones(h, dtype=torch.bfloat16))
        put(p + "self_attn.q_proj.weight", rnd(nh * d, h))
        put(p + "self_attn.k_proj.weight", rnd(nkv * d, h))
        put(p + "self_attn.v_proj.weight", rnd(nkv * d, h))
        put(p + "self_attn.o_proj.weight", rnd(h, nh * d))
        put(p + "mlp.gate_proj.weight", rnd(f, h))
        put(p + "mlp.up_proj.weight", rnd(f, h))
        put(p + "mlp.down_proj.weight", rnd(h, f))
    put("model.norm.weight", torch.ones(h, dtype=torch.bfloat16))
    if not tied:
        put("lm_head.weight", rnd(vocab, h))
    flush()
    json.dump({"metadata": {}, "weight_map": index}, open(f"{path}/model.safetensors.index.json", "w"))


def time_transformers(path, ids, passes):
    """Seconds per pass over all samples, `passes` passes each (the peer's best pass is what the
    ratios use: its 1B speed moved 1.7x between single-pass runs)."""
    import torch
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map="cuda")
    model.eval()
    x = [torch.tensor([s], device="cuda") for s in ids]
    out = {}
    with torch.no_grad():
        for name, fn in (("full", model), ("decoder", model.model)):
            for s in x[:2]:
                fn(s)  # warm-up
            out[name] = []
            for _ in range(passes):
                torch.cuda.synchronize()
                t = time.perf_counter()
                for s in x:
                    fn(s)
                torch.cuda.synchronize()
                out[name].append(time.perf_counter() - t)
    del model
    torch.cuda.empty_cache()
    return out


def torch_gemm_floor(shape, samples, seq):
    """transformers' projection GEMMs alone: torch.nn.functional.linear in bf16 on one sample's
    [seq, in] rows at a time, every projection of every layer (q, k, v, o, gate, up, down), back to
    back: the floor of its forward at the clocks the GPU sustains."""
    import torch
    import torch.nn.functional as F
    h, f, n_layers, nh, nkv, _, _ = SHAPES[shape]
    d = h // nh
    g = torch.Generator(device="cuda").manual_seed(1)
    w = {k: (torch.randn(o, i, generator=g, device="cuda") * 0.02).to(torch.bfloat16)
         for k, (o, i) in {"q": (nh * d, h), "k": (nkv * d, h), "v": (nkv * d, h), "o": (h, nh * d),
                           "gate": (f, h), "up": (f, h), "down": (h, f)}.items()}
    xh = (torch.randn(seq, h, generator=g, device="cuda")).to(torch.bfloat16)
    xf = (torch.randn(seq, f, generator=g, device="cuda")).to(torch.bfloat16)

    def forward():
        with torch.no_grad():
            for _ in range(samples):
                for _ in range(n_layers):
                    for k in ("q", "k", "v", "gate", "up"):
                        F.linear(xh, w[k])
                    F.linear(xh, w["o"])
                    F.linear(xf, w["down"])
    forward()
    torch.cuda.synchronize()
    t = time.perf_counter()
    forward()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def drop_cache(path):
    for name in os.listdir(path):
        if name.endswith(".safetensors"):
            fd = os.open(f"{path}/{name}", os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def run_ctcal(ctcal, recipe, path, data, n, seq, out_dir, profile=False, blocked=False, separate=False, chunk=None,
              eager=False):
    env = dict(os.environ)
    if eager:  # every kernel module loaded with the context instead of at its first launch
        env["CUDA_MODULE_LOADING"] = "EAGER"
    if chunk:  # rows per chunk other than the default, for comparison
        env["CTCAL_CUDA_CHUNK_TOKENS"] = str(chunk)
    if profile:
        env["CTCAL_CUDA_PROFILE"] = "1"
    if blocked:  # the cuBLAS-blocked attention instead of the fused kernel, for comparison
        env["CTCAL_CUDA_ATTENTION"] = "blocked"
    if separate:  # one GEMM per projection instead of the fused q|k|v, for comparison
        env["CTCAL_CUDA_FUSED_GEMMS"] = "0"
    t = time.perf_counter()
    p = subprocess.run([ctcal, "calibrate", recipe, "--model", path, "--dataset", data, "--output", out_dir,
                        "--overwrite", "--num-samples", str(n), "--max-seq-length", str(seq), "--no-shuffle",
                        "--device", "cuda"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"ctcal failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    rep = json.load(open(f"{out_dir}/ctcal_report.json"))
    lines = [l for l in (p.stdout + p.stderr).splitlines() if "cuda:" in l and any(w in l for w in ("layers in", "per phase", "host thread", "setup:", "before layer 0"))]
    return {"wall_s": wall, "calibration_s": rep["timings"]["calibration_s"], "tokens": rep["tokens"],
            "cuda_log": "\n   ".join(lines)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctcal", required=True)
    ap.add_argument("--shape", choices=SHAPES, default="1b")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--work", default="/tmp/ctcal-gpu-bench")
    ap.add_argument("--out", default=".")
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--runs", default="", help="the ctcal runs, ;-separated, from RUNS (default: DEFAULT_RUNS)")
    ap.add_argument("--passes", type=int, default=3, help="transformers' passes over the samples (best and median reported)")
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = f"{a.work}/{a.shape}"
    t = time.perf_counter()
    if not os.path.exists(f"{path}/model.safetensors.index.json"):
        write_model(path, a.shape)
    print(f"[{a.shape}] checkpoint ready in {time.perf_counter() - t:.1f} s", flush=True)
    import random
    rng = random.Random(0)
    vocab = SHAPES[a.shape][5]
    ids = [[rng.randrange(vocab) for _ in range(a.seq)] for _ in range(a.samples)]
    data = f"{a.work}/ids_{a.samples}x{a.seq}.jsonl"
    with open(data, "w") as fh:
        for s in ids:
            fh.write(json.dumps({"input_ids": s}) + "\n")
    tokens = a.samples * a.seq
    res = {"shape": a.shape, "samples": a.samples, "seq": a.seq, "tokens": tokens}
    if not a.no_transformers:
        tf = time_transformers(path, ids, a.passes)
        for name in ("full", "decoder"):
            ts = sorted(tf[name])
            res[f"transformers_{name}_tok_s"] = tokens / ts[0]  # its best pass
            res[f"transformers_{name}_passes_tok_s"] = [tokens / t for t in tf[name]]
        print(f"[{a.shape}] transformers bf16, best of {a.passes} passes (median): full forward "
              f"{res['transformers_full_tok_s']:.0f} ({tokens / sorted(tf['full'])[len(tf['full']) // 2]:.0f}) tok/s, "
              f"decoder only {res['transformers_decoder_tok_s']:.0f} ({tokens / sorted(tf['decoder'])[len(tf['decoder']) // 2]:.0f}) tok/s",
              flush=True)
        tg = torch_gemm_floor(a.shape, a.samples, a.seq)
        res["transformers_gemm_floor_s"] = tg
        print(f"[{a.shape}] GEMM floor, transformers' projections alone (torch bf16 linear, {a.seq} rows a call): "
              f"{tg:.3f} s ({tokens / tg:.0f} tok/s at most)", flush=True)
    # ctcal's projection GEMMs alone, the layer loop's calls (bench/projection_gemm_bench).
    pgb = os.path.join(os.path.dirname(a.ctcal), "projection_gemm_bench")
    if os.path.exists(pgb):
        h, f, n_layers, nh, nkv, _, _ = SHAPES[a.shape]
        d = h // nh
        p = subprocess.run([pgb, "--hidden", str(h), "--q-dim", str(nh * d), "--kv-dim", str(nkv * d),
                            "--intermediate", str(f), "--tokens", str(tokens), "--layers", str(n_layers), "--reps", "1"],
                           capture_output=True, text=True)
        floor = [l for l in p.stdout.splitlines() if l.startswith("GEMM floor")]
        res["ctcal_gemm_floor"] = floor[0] if floor else p.stdout + p.stderr
        print(f"[{a.shape}] ctcal {res['ctcal_gemm_floor']}", flush=True)
    recipe = f"{root}/recipes/fp8_kv_per_head.yaml"
    for cache in RUNS:
        if cache not in (a.runs.split(";") if a.runs else DEFAULT_RUNS):
            continue
        if cache == "cold":
            drop_cache(path)
        r = run_ctcal(a.ctcal, recipe, path, data, a.samples, a.seq, f"{a.work}/out_{a.shape}",
                      profile="phases" in cache, blocked="blocked" in cache, separate="separate" in cache,
                      chunk=32768 if "32768" in cache else 8192 if "8192" in cache else None, eager="eager" in cache)
        res[f"ctcal_{cache}"] = r
        line = (f"[{a.shape}] ctcal cuda, {cache} page cache: calibration {r['calibration_s']:.2f} s "
                f"({tokens / r['calibration_s']:.0f} tok/s), whole command {r['wall_s']:.2f} s")
        if "transformers_full_tok_s" in res:
            line += (f"; vs transformers full forward {tokens / r['calibration_s'] / res['transformers_full_tok_s']:.2f}x,"
                     f" decoder only {tokens / r['calibration_s'] / res['transformers_decoder_tok_s']:.2f}x")
        print(line + "\n   " + r["cuda_log"], flush=True)
    json.dump(res, open(f"{a.out}/gpu_bench_{a.shape}.json", "w"), indent=1)


if __name__ == "__main__":
    main()
