#!/usr/bin/env python3
"""`ctcal eval --report` and `ctcal calibrate --report`: one self-contained HTML file (no scripts,
no external URLs) with inline SVG plots; headless Chromium renders it to a screenshot that is
not blank (many non-white pixels, several colours). Skips (77) when Chromium is not installed
(`scripts/install_deps.sh --with-chromium` installs it; CI does).

usage: report_test.py CTCAL_BINARY SOURCE_DIR
"""
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(__file__))
from e2e_util import check, failures, finish, stories260k  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
MODEL, TEXT = stories260k(SRC)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def png_pixels(path):
    """Decodes an 8-bit RGB/RGBA PNG (what Chromium writes) with zlib only: (width, height, rows)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


def render(html, png):
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp}/profile", "--window-size=1200,1400", f"--screenshot={png}",
                        "file://" + html], capture_output=True, text=True, timeout=120)
    return r


tmp = tempfile.mkdtemp(prefix="ctcal-report-")
try:
    calib = os.path.join(tmp, "calib.txt")
    stories = open(TEXT).read().split("<|endoftext|>\n")
    open(calib, "w").write("<|endoftext|>\n".join(stories[:50]))
    held = os.path.join(tmp, "held.txt")
    open(held, "w").write("<|endoftext|>\n".join(stories[50:]))
    eval_html = os.path.join(tmp, "eval.html")
    r = subprocess.run([BIN, "-q", "eval", "--model", MODEL, "--dataset", held, "--calibration-dataset", calib,
                        "--recipe", os.path.join(SRC, "recipes", "fp8_kv_per_head.yaml"),
                        "--recipe", os.path.join(SRC, "recipes", "int4_kv_asym_per_head.yaml"),
                        "--num-samples", "6", "--max-seq-length", "96", "--report", eval_html], capture_output=True, text=True)
    check(r.returncode == 0, f"eval --report: {r.stderr[-800:]}")
    cal_html = os.path.join(tmp, "cal.html")
    r = subprocess.run([BIN, "-q", "calibrate", os.path.join(SRC, "recipes", "r3_fp8_attention.yaml"), "--model", MODEL,
                        "--dataset", calib, "--num-samples", "6", "--max-seq-length", "96",
                        "--output", os.path.join(tmp, "out"), "--report", cal_html], capture_output=True, text=True)
    check(r.returncode == 0, f"calibrate --report: {r.stderr[-800:]}")
    for html, svgs in ((eval_html, 4), (cal_html, 3)):
        text = open(html).read()
        check(text.count("<svg") >= svgs, f"{html}: {text.count('<svg')} charts, expected >= {svgs}")
        check("<script" not in text and not re.search(r"(src|href)=\"https?:", text), f"{html}: not self-contained")
    check("SQNR" in open(eval_html).read() and "&Delta;NLL" in open(eval_html).read(), "eval report: SQNR and metrics table")
    if not CHROMIUM:
        print("chromium not installed: rendering not checked (install with scripts/install_deps.sh --with-chromium)")
        sys.exit(77 if not failures else 1)
    for html in (eval_html, cal_html):
        png = html + ".png"
        r = render(html, png)
        check(os.path.exists(png), f"chromium wrote no screenshot: {r.stderr[-800:]}")
        if os.path.exists(png):
            w, h, bpp, rows = png_pixels(png)
            ink, colours = 0, set()
            for row in rows:
                for x in range(0, w * bpp, bpp * 2):
                    px = row[x:x + 3]
                    if px != b"\xff\xff\xff":
                        ink += 1
                        colours.add(px)
            frac = ink / (w * h / 2)
            print(f"{os.path.basename(png)}: {w}x{h}, {100 * frac:.1f}% non-white, {len(colours)} colours")
            check(frac > 0.01 and len(colours) > 8, f"{png} looks blank")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
finish("report")
