#!/usr/bin/env python3
"""Golden token ids from the reference tokenizers, on the GPU machine (tokenizers 0.23,
sentencepiece 0.2.2):

    python3 tests/golden/make_tokenizer_golden.py --data DIR_WITH_SHARED_DATA --out tests/golden/data/tokenizer

Writes, for the Llama-3 tokenizer.json (HF tokenizers) and the Llama-2 tokenizer.model
(SentencePiece): every non-empty line of WikiText-2 test plus hard strings (runs of spaces and
newlines, long numbers, contractions, accents, CJK, emoji, invalid UTF-8 replaced as Python
decodes it, special-token text), with and without special tokens. One case per line (gzipped):
`<hex of the UTF-8 text>\t<ids with special tokens>\t<ids without>`. Also times tokenizing the
whole WikiText-2 test file on one thread (MB/s) for the benchmark.
"""
import argparse
import gzip
import os
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

HARD = [
    "", " ", "  ", "   leading", "trailing   ", "a  b   c    d", "\n", "\n\n\n", " \n \n", "tab\there\t\t",
    "12345678901234567890", "3.14159 and 2,718,281", "1 22 333 4444 55555 666666",
    "don't won't I'm you're he'll we've they'd it's O'Neil", "DON'T I'M",
    "café naïve résumé Ångström façade", "ÀÉÎÕÜ àéîõü", "日本語のテキスト", "中文测试，标点。", "한국어 텍스트",
    "emoji 😀🎉👍🏽 family 👨‍👩‍👧", "Ελληνικά και русский", "עברית ערבית العربية",
    "<|begin_of_text|>hello<|end_of_text|>", "<s>text</s>", "<|eot_id|>", "<unk>",
    "mixed\r\nline endings\r", "    indented code():\n        return 1", "http://example.com/a?b=c&d=e",
    "x" * 300, "ab" * 150, " ".join(["word"] * 100), "\u00a0non-breaking\u2009thin\u3000ideographic",
    "zero\u200bwidth", "combining e\u0301 vs \u00e9",
]


def wiki_lines(path):
    with open(path, encoding="utf-8") as f:
        return [l.rstrip("\n") for l in f if l.strip()]


def write_cases(path, texts, enc_special, enc_plain):
    with gzip.open(path, "wt") as f:
        for t in texts:
            a = enc_special(t)
            b = enc_plain(t)
            f.write(f"{t.encode('utf-8').hex()}\t{' '.join(map(str, a))}\t{' '.join(map(str, b))}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    wiki_path = os.path.join(a.data, "wikitext-2-raw", "wiki.test.raw")
    texts = wiki_lines(wiki_path) + HARD
    # invalid UTF-8: what Python gives when such bytes are decoded with errors="replace"
    texts.append(b"bad \xff\xfe bytes \xc3(".decode("utf-8", errors="replace"))

    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(a.data, "llama3-tokenizer", "tokenizer.json"))
    write_cases(os.path.join(a.out, "llama3_cases.tsv.gz"), texts,
                lambda t: tok.encode(t, add_special_tokens=True).ids,
                lambda t: tok.encode(t, add_special_tokens=False).ids)
    raw = open(wiki_path, encoding="utf-8").read()
    t0 = time.perf_counter()
    n = len(tok.encode(raw, add_special_tokens=False).ids)
    dt = time.perf_counter() - t0
    lines = wiki_lines(wiki_path)
    t1 = time.perf_counter()
    for l in lines:
        tok.encode(l, add_special_tokens=False)
    dt_lines = time.perf_counter() - t1

    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.data, "llama2-tokenizer", "tokenizer.model"))
    write_cases(os.path.join(a.out, "llama2_cases.tsv.gz"), texts,
                lambda t: [sp.bos_id()] + sp.encode(t), lambda t: sp.encode(t))
    t2 = time.perf_counter()
    sp.encode(raw)
    dt_sp = time.perf_counter() - t2
    mb = len(raw.encode("utf-8")) / 1e6
    with open(os.path.join(a.out, "bench_reference.txt"), "w") as f:
        f.write(f"wiki.test.raw {mb:.3f} MB\n")
        f.write(f"hf_tokenizers_llama3_whole_file {mb / dt:.2f} MB/s ({n} tokens, {dt:.3f} s, 1 thread)\n")
        f.write(f"hf_tokenizers_llama3_per_line {mb / dt_lines:.2f} MB/s ({len(lines)} lines, {dt_lines:.3f} s)\n")
        f.write(f"sentencepiece_llama2_whole_file {mb / dt_sp:.2f} MB/s ({dt_sp:.3f} s)\n")
        import tokenizers
        f.write(f"tokenizers {tokenizers.__version__} sentencepiece {spm.__version__}\n")
    print(open(os.path.join(a.out, "bench_reference.txt")).read())


if __name__ == "__main__":
    main()
