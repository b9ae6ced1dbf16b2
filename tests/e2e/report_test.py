#!/usr/bin/env python3
"""`ctcal eval --report` and `ctcal calibrate --report`, checked as a person reads them: headless
Chromium renders each page at 1280 px, and the test asserts on the rendered DOM and its geometry:

- every chart has a title, an x and a y axis label, and a legend, all outside the plot area and
  inside the chart (measured with getBoundingClientRect on the laid-out page);
- tick labels are round numbers: equally spaced by 1, 2 or 5 x 10^k, each a multiple of the step;
- the eval metrics table holds every run, with its scheme in words and the K/V SQNR the terminal
  table prints; SQNR panels are split by number format; the metrics are defined; zero points of
  the asymmetric run are shown; every checkpoint run has activation-range charts;
- the calibrate page has the plan, Q/K/V range charts, the representable range = scale x 448;
- footers hold ctcal's version, the seed, the UTC date and sha256 of the inputs, which match.
The pages themselves are checked to hold no script and no network reference; the test measures a
copy with one measuring script appended. Skips (77) when Chromium is not installed
(`scripts/install_deps.sh --with-chromium` installs it; CI does).

usage: report_test.py CTCAL_BINARY SOURCE_DIR
"""
import datetime
import hashlib
import html.parser
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(__file__))
from e2e_util import SKIP, check, failures, finish, stories260k  # noqa: E402

BIN, SRC = sys.argv[1], sys.argv[2]
MODEL, TEXT = stories260k(SRC)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RECIPES = os.path.join(SRC, "recipes")

# Appended to a copy of each page: lays out every chart's parts and writes their boxes (CSS px)
# into the DOM, where --dump-dom returns them.
MEASURE = """<script>
const box = e => { if (!e) return null; const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
const txt = e => e ? e.textContent : null;
const charts = [...document.querySelectorAll('svg.chart')].map(svg => ({
  title: txt(svg.querySelector('.chart-title')), titlebox: box(svg.querySelector('.chart-title')), svg: box(svg), plot: box(svg.querySelector('.plot-area')),
  xlabel: {text: txt(svg.querySelector('.x-label')), box: box(svg.querySelector('.x-label'))},
  ylabel: {text: txt(svg.querySelector('.y-label')), box: box(svg.querySelector('.y-label'))},
  legend: [...svg.querySelectorAll('.legend-item')].map(e => ({text: txt(e.querySelector('text')), box: box(e)})),
  yticks: [...svg.querySelectorAll('.y-ticks .tick')].map(e => ({text: e.textContent, box: box(e)})),
  xticks: [...svg.querySelectorAll('.x-ticks .tick')].map(e => ({text: e.textContent, box: box(e)})),
}));
const pre = document.createElement('pre');
pre.id = 'geometry';
pre.textContent = JSON.stringify({width: document.documentElement.clientWidth, charts});
document.body.appendChild(pre);
</script>"""


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, dict(attrs), parent, [], ""

    def classes(self):
        return self.attrs.get("class", "").split()

    def all_text(self):
        return self.text + "".join(c.all_text() for c in self.children)

    def find_all(self, pred):
        out = []
        for c in self.children:
            if pred(c):
                out.append(c)
            out += c.find_all(pred)
        return out


class Dom(html.parser.HTMLParser):
    """The DOM Chromium serialized, as a tree of Nodes (the standard library has no DOM for HTML)."""
    VOID = {"meta", "br", "img", "input", "link", "hr", "col", "source", "wbr"}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", {})
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        n = Node(tag, attrs, self.cur)
        self.cur.children.append(n)
        if tag not in self.VOID:
            self.cur = n

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent
        if n is not self.root:
            self.cur = n.parent

    def handle_data(self, data):
        # Text after a child goes to a text node of its own, so all_text keeps document order.
        t = Node("#text", {}, self.cur)
        t.text = data
        self.cur.children.append(t)


def by_tag(root, tag, cls=None):
    return root.find_all(lambda n: n.tag == tag and (cls is None or cls in n.classes()))


def chromium(args, timeout=180):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--hide-scrollbars", f"--user-data-dir={tmp}/profile", "--window-size=1280,2000"] + args,
                          capture_output=True, text=True, timeout=timeout)


def run(args):
    r = subprocess.run([BIN, "-q"] + args, capture_output=True, text=True)
    check(r.returncode == 0, f"ctcal {' '.join(args[:2])}: exit {r.returncode}: {r.stderr[-800:]}")
    return r


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def inside(a, outer, slack=0.5):
    return a[0] >= outer[0] - slack and a[1] >= outer[1] - slack and a[2] <= outer[2] + slack and a[3] <= outer[3] + slack


def png_pixels(path):
    """An 8-bit RGB/RGBA PNG (what Chromium writes), decoded with zlib alone: (width, height,
    share of non-white pixels, number of distinct colours), sampling every other pixel."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h, bpp = 8, b"", 0, 0, 3
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
    prev, ink, colours = bytearray(stride), 0, set()
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
        if y % 2 == 0:
            for x in range(0, stride, bpp * 2):
                px = bytes(line[x:x + 3])
                if px != b"\xff\xff\xff":
                    ink += 1
                    colours.add(px)
        prev = line
    return w, h, ink / max(1, (w // 2) * (h // 2)), len(colours)


def round_ticks(labels, what):
    """Labels a reader interpolates between: equal steps of 1, 2 or 5 x 10^k, each a multiple of it."""
    try:
        v = [float(t) for t in labels]
    except ValueError:
        check(False, f"{what}: tick labels {labels} are not numbers")
        return
    check(len(v) >= 2, f"{what}: {len(v)} ticks")
    if len(v) < 2:
        return
    steps = [b - a for a, b in zip(v, v[1:])]
    step = steps[0]
    check(step > 0 and all(math.isclose(s, step, rel_tol=1e-6) for s in steps), f"{what}: uneven ticks {labels}")
    if step <= 0:
        return
    mant = step / 10 ** math.floor(math.log10(step) + 1e-9)
    check(any(math.isclose(mant, m, rel_tol=1e-6) for m in (1, 2, 5)), f"{what}: step {step} is not 1/2/5 x 10^k ({labels})")
    check(all(abs(x / step - round(x / step)) < 1e-6 for x in v), f"{what}: ticks {labels} are not multiples of {step}")


def check_charts(name, geometry, expect_min):
    charts = geometry["charts"]
    check(len(charts) >= expect_min, f"{name}: {len(charts)} charts, expected >= {expect_min}")
    for c in charts:
        what = f"{name}: chart '{c['title']}'"
        check(bool(c["title"]), f"{name}: a chart without a title")
        check(c["titlebox"] is None or (inside(c["titlebox"], c["svg"]) and not overlaps(c["titlebox"], c["plot"] or [0, 0, 0, 0])),
              f"{what}: title cut off or on the plot area")
        check(c["plot"] is not None, f"{what}: no plot area")
        if c["plot"] is None:
            continue
        check(c["svg"][2] <= geometry["width"] + 0.5, f"{what}: wider than the 1280 px page ({c['svg']})")
        for axis in ("xlabel", "ylabel"):
            lab = c[axis]
            check(bool(lab["text"] and lab["text"].strip()), f"{what}: no {axis}")
            if lab["box"]:
                check(not overlaps(lab["box"], c["plot"]), f"{what}: {axis} '{lab['text']}' on the plot area")
                check(inside(lab["box"], c["svg"]), f"{what}: {axis} '{lab['text']}' cut off")
        check(len(c["legend"]) >= 1, f"{what}: no legend")
        for item in c["legend"]:
            check(bool(item["text"]), f"{what}: an empty legend entry")
            check(not overlaps(item["box"], c["plot"]), f"{what}: legend '{item['text']}' {item['box']} sits on the plot area {c['plot']}")
            check(inside(item["box"], c["svg"]), f"{what}: legend '{item['text']}' {item['box']} cut off by the chart {c['svg']}")
        for a, b in zip(c["legend"], c["legend"][1:]):
            check(not overlaps(a["box"], b["box"]), f"{what}: legend entries '{a['text']}' and '{b['text']}' overlap")
        for axis in ("yticks", "xticks"):
            ticks = c[axis]
            round_ticks([t["text"] for t in ticks], f"{what} {axis}")
            for t in ticks:
                check(inside(t["box"], c["svg"]) and not overlaps(t["box"], c["plot"]), f"{what}: tick '{t['text']}' misplaced")
            for a, b in zip(ticks, ticks[1:]):
                check(not overlaps(a["box"], b["box"]), f"{what}: tick labels '{a['text']}' and '{b['text']}' overlap")
        check(all(float(t["text"]) == int(float(t["text"])) for t in c["xticks"]), f"{what}: layer ticks are not integers")


def render(html_path, expect_charts):
    """Chromium's DOM of the page and the chart geometry of its measured copy."""
    r = chromium(["--dump-dom", "file://" + html_path])
    check(r.returncode == 0 and "</html>" in r.stdout, f"chromium --dump-dom {html_path}: {r.stderr[-600:]}")
    dom = Dom(r.stdout).root
    measured = html_path + ".measured.html"
    page = open(html_path, encoding="utf-8").read()
    open(measured, "w", encoding="utf-8").write(page.replace("</body>", MEASURE + "</body>"))
    r = chromium(["--dump-dom", "file://" + measured])
    pre = [n for n in by_tag(Dom(r.stdout).root, "pre") if n.attrs.get("id") == "geometry"]
    check(len(pre) == 1, f"{html_path}: the measuring script wrote nothing: {r.stderr[-600:]}")
    geometry = json.loads(pre[0].all_text()) if pre else {"width": 1280, "charts": []}
    check_charts(os.path.basename(html_path), geometry, expect_charts)
    png = html_path + ".png"
    chromium([f"--screenshot={png}", "file://" + html_path])
    check(os.path.exists(png), f"{html_path}: chromium wrote no screenshot")
    if os.path.exists(png):
        w, h, ink, colours = png_pixels(png)
        print(f"{os.path.basename(png)}: {w}x{h}, {100 * ink:.1f}% non-white, {colours} colours")
        check(ink > 0.02 and colours > 8, f"{png} looks blank")
    return dom, geometry


def self_contained(path):
    text = open(path, encoding="utf-8").read()
    check("<script" not in text.lower(), f"{path}: holds a script")
    check(not re.search(r"(src|href|url)\s*[=(]\s*[\"']?\s*(https?:)?//", text), f"{path}: refers to the network")


def footer_facts(dom):
    f = by_tag(dom, "footer", "provenance")
    check(len(f) == 1, "no provenance footer")
    facts = {}
    for dd in (by_tag(f[0], "dd") if f else []):
        facts.setdefault(dd.attrs.get("data-key"), []).append(dd.all_text().strip())
    return facts


def check_footer(name, dom, version, seed, hashes):
    facts = footer_facts(dom)
    check(facts.get("version") == [version], f"{name}: footer version {facts.get('version')} != {version}")
    check(facts.get("seed", [""])[0].startswith(str(seed)), f"{name}: footer seed {facts.get('seed')}")
    date = facts.get("date", [""])[0]
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", date)
    check(m is not None, f"{name}: footer date '{date}' is not 'YYYY-MM-DD HH:MM:SS UTC'")
    if m:
        written = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.timezone.utc)
        age = (datetime.datetime.now(datetime.timezone.utc) - written).total_seconds()
        check(-5 < age < 900, f"{name}: footer date {date} is not now (UTC)")
    shas = facts.get("sha256", [])
    for h in hashes:
        check(h in shas, f"{name}: footer lacks sha256 {h}")


tmp = tempfile.mkdtemp(prefix="ctcal-report-")
try:
    stories = open(TEXT).read().split("<|endoftext|>\n")
    calib, held = os.path.join(tmp, "calib.txt"), os.path.join(tmp, "held.txt")
    open(calib, "w").write("<|endoftext|>\n".join(stories[:50]))
    open(held, "w").write("<|endoftext|>\n".join(stories[50:]))
    common = ["--model", MODEL, "--dataset", calib, "--num-samples", "6", "--max-seq-length", "96"]

    # Three checkpoints of three kinds for eval (FP8, INT4 asymmetric, R3 + FP8); two with pages.
    outs, pages = {}, {}
    for recipe in ("fp8_kv_per_tensor", "int4_kv_asym_per_head", "r3_fp8_kv", "r3_fp8_attention"):
        outs[recipe] = os.path.join(tmp, recipe)
        extra = []
        if recipe in ("int4_kv_asym_per_head", "r3_fp8_attention"):
            pages[recipe] = os.path.join(tmp, recipe + ".html")
            extra = ["--report", pages[recipe]]
        run(["calibrate", os.path.join(RECIPES, recipe + ".yaml")] + common + ["--output", outs[recipe]] + extra)
    eval_runs = [outs["fp8_kv_per_tensor"], outs["int4_kv_asym_per_head"], outs["r3_fp8_kv"]]
    on_the_fly = os.path.join(RECIPES, "fp8_kv_per_head.yaml")
    eval_html = os.path.join(tmp, "eval.html")
    args = ["eval", "--model", MODEL, "--dataset", held, "--num-samples", "6", "--max-seq-length", "96",
            "--calibration-dataset", calib, "--recipe", on_the_fly, "--report", eval_html]
    for d in eval_runs:
        args += ["--quantized", d]
    terminal = run(args).stdout
    version = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.split()[1]  # "ctcal 0.1.0 (...)"

    for p in [eval_html] + list(pages.values()):
        check(os.path.exists(p), f"{p} not written")
        if os.path.exists(p):
            self_contained(p)
    if failures:
        finish("report")
    if not CHROMIUM:
        print("skip: chromium not installed, the report's rendering is not checked "
              "(install it with: bash scripts/install_deps.sh --with-chromium)")
        sys.exit(SKIP)

    # ---- eval page
    dom, geo = render(eval_html, 8)
    rows = by_tag(dom, "tr", "run")
    names = [r.attrs.get("data-run") for r in rows]
    expected = eval_runs + [on_the_fly]  # evaluate() puts --quantized runs before --recipe ones
    check(sorted(names) == sorted(expected), f"eval: metrics table runs {names}, expected {expected}")
    scheme = {r.attrs.get("data-run"): " ".join(c.all_text() for c in by_tag(r, "td", "scheme")) for r in rows}
    for run_dir, words in ((outs["fp8_kv_per_tensor"], ("FP8 E4M3", "symmetric", "per-tensor")),
                           (outs["int4_kv_asym_per_head"], ("INT4", "asymmetric", "per-head")),
                           (outs["r3_fp8_kv"], ("FP8 E4M3", "R3 hadamard")),
                           (on_the_fly, ("FP8 E4M3", "per-head"))):
        check(all(w in scheme.get(run_dir, "") for w in words), f"eval: scheme of {run_dir} is '{scheme.get(run_dir)}', expected {words}")
    # The K/V SQNR of each run is the terminal table's, in the terminal's row order.
    term = [m.groups() for m in re.finditer(r"(-?\d+\.\d\d)dB\s+(-?\d+\.\d\d)dB\s*$", terminal, re.M)]
    html_sqnr = [(" ".join(c.all_text() for c in by_tag(r, "td", "k-sqnr")), " ".join(c.all_text() for c in by_tag(r, "td", "v-sqnr")))
                 for r in rows]
    check(term == html_sqnr, f"eval: K/V SQNR in the page {html_sqnr} != terminal {term}")
    defined = {n.attrs.get("data-metric") for n in by_tag(dom, "dt")}
    check({"nll", "delta_nll", "ppl", "kl", "top1", "sqnr"} <= defined, f"eval: metric definitions {defined}")
    # One SQNR panel per number format, each holding only its runs.
    h3 = [n.all_text() for n in by_tag(dom, "h3")]
    check("FP8 E4M3 runs" in h3 and "INT4 runs" in h3, f"eval: SQNR panels {h3}")
    for c in geo["charts"]:
        if "SQNR" in c["title"]:
            legend = {i["text"] for i in c["legend"]}
            if "INT4" in c["title"]:
                check(legend == {"int4_kv_asym_per_head"}, f"eval: INT4 panel holds {legend}")
            else:
                check(legend == {"fp8_kv_per_tensor", "r3_fp8_kv", "fp8_kv_per_head.yaml"}, f"eval: FP8 panel holds {legend}")
    # Activation ranges for every checkpoint run; zero points for the asymmetric one.
    for d in eval_runs:
        label = os.path.basename(d)
        for site in ("K", "V"):
            check(any(c["title"] == f"{label}: {site} range per layer" for c in geo["charts"]), f"eval: no {site} range chart for {label}")
    tables = by_tag(dom, "table", "ranges")
    zp_tables = [t for t in tables if "zero point" in t.all_text()]
    check(len(zp_tables) == 1, f"eval: {len(zp_tables)} range tables with zero points, expected 1 (the INT4 asym run)")
    report_int4 = json.load(open(os.path.join(outs["int4_kv_asym_per_head"], "ctcal_report.json")))
    zp0 = ", ".join(f"{z:g}" for z in report_int4["layers"][0]["k"]["zero_point"])
    check(bool(zp_tables) and zp0 in zp_tables[0].all_text(), f"eval: layer 0 K zero points {zp0} not shown")
    check("keeps no activation ranges" in dom.all_text(), "eval: the on-the-fly run does not say why it has no ranges")
    hashes = [sha256(held), sha256(calib), sha256(on_the_fly)]
    for d in eval_runs:
        rep = json.load(open(os.path.join(d, "ctcal_report.json")))
        hashes += [rep["recipe_sha256"], rep["dataset_sha256"]]
    check_footer("eval", dom, version, 42, hashes)

    # ---- calibrate pages
    for recipe, page in pages.items():
        rep = json.load(open(os.path.join(outs[recipe], "ctcal_report.json")))
        sites = ["K", "V", "Q"] if "q" in rep["layers"][0] else ["K", "V"]
        dom, geo = render(page, len(sites))
        titles = [c["title"] for c in geo["charts"]]
        check(titles == [f"{s} range per layer" for s in sites], f"{recipe}: charts {titles}")
        facts = dict(zip((n.all_text() for n in by_tag(dom, "dt")), (n.all_text() for n in by_tag(dom, "dd"))))
        check(facts.get("model") == rep["model"], f"{recipe}: plan model {facts.get('model')}")
        check(facts.get("recipe", "").endswith(recipe + ".yaml"), f"{recipe}: plan recipe {facts.get('recipe')}")
        check(facts.get("calibrated on", "").startswith(f"{rep['samples']} samples, {rep['tokens']} tokens"),
              f"{recipe}: plan samples/tokens {facts.get('calibrated on')}")
        words = {"int4_kv_asym_per_head": ("INT4 asymmetric", "per-head"),
                 "r3_fp8_attention": ("FP8 E4M3 symmetric", "Q quantized", "R3 hadamard")}[recipe]
        check(all(w in facts.get("scheme", "") for w in words), f"{recipe}: plan scheme '{facts.get('scheme')}'")
        rows = by_tag(by_tag(dom, "table", "ranges")[0], "tr")[1:]
        check(len(rows) == len(rep["layers"]) * len(sites), f"{recipe}: {len(rows)} range rows")
        if recipe == "r3_fp8_attention":
            # FP8: the representable range of layer 0's K is the stored scale x [-448, 448].
            cells = [c.all_text() for c in by_tag(rows[0], "td")]
            k_scale = rep["layers"][0]["k"]["scale"][0]
            lo, hi = (float(x) for x in cells[5].strip("[]").split(","))
            check(cells[1] == "K" and math.isclose(hi, 448 * k_scale, rel_tol=1e-3) and math.isclose(lo, -448 * k_scale, rel_tol=1e-3),
                  f"{recipe}: layer 0 K representable {cells[5]}, expected ±448 x {k_scale}")
            # static_minmax FP8 scales are absmax / 448: nothing clamped, reach 1 up to the scale's rounding.
            reach = [by_tag(r, "td")[6].all_text() for r in rows]
            check(all("clamped" not in x and abs(float(x) - 1) <= 5e-5 for x in reach), f"{recipe}: FP8 reach {reach}")
        else:
            check("zero point" in by_tag(dom, "table", "ranges")[0].all_text(), f"{recipe}: no zero points")
            # INT4 asymmetric: each head represents (q - zp) x scale for q in [-8, 7]; the reach shown is
            # the worst head's observed extreme over that range's end, recomputed here from the JSON.
            for i, row in enumerate(rows):
                cells = [c.all_text() for c in by_tag(row, "td")]
                site = rep["layers"][i // 2]["k" if cells[1] == "K" else "v"]
                worst = 0.0
                for mn, mx, s, zp in zip(site["head_min"], site["head_max"], site["scale"], site["zero_point"]):
                    lo, hi = (-8 - zp) * s, (7 - zp) * s
                    worst = max(worst, mx / hi if mx > 0 else 0, mn / lo if mn < 0 else 0)
                shown = float(cells[6].split()[0])
                check(abs(shown - worst) < 1e-4, f"{recipe}: layer {cells[0]} {cells[1]} reach {cells[6]}, expected {worst:.4f}")
                check(("clamped" in cells[6]) == (worst > 1.00005), f"{recipe}: layer {cells[0]} {cells[1]} reach {cells[6]} mislabelled")
                zps = ", ".join(f"{z + 0.0:g}" for z in site["zero_point"])
                check(cells[7] == zps, f"{recipe}: layer {cells[0]} {cells[1]} zero points '{cells[7]}', expected '{zps}'")
        # The scale-1.0 evidence pass counted clamped values: the page shows them, per layer.
        clipped = by_tag(dom, "table", "clipped")
        check(len(clipped) == 1 and len(by_tag(clipped[0], "tr")) == len(rep["layers"]) + 1 and "not computed" not in dom.all_text(),
              f"{recipe}: the clamped fractions eval counted, one row per layer, and no 'not computed'")
        check_footer(recipe, dom, version, rep["seed"], [rep["recipe_sha256"], rep["dataset_sha256"]])
finally:
    if os.environ.get("CTCAL_KEEP_REPORTS"):
        print("kept", tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
finish("report")
