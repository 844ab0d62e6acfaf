"""Which library ragkit.loaders uses for each format: text fidelity against the known source, and speed.

PDF: PDFium (``pypdfium2``, ragkit's choice), ``pypdf`` and ``pdfminer.six`` on PDFs written by fpdf2
and reportlab (base-14 and embedded TrueType fonts, ragged and justified lines, ligature code
points, a 40-page document), and on the real PDFs found under /usr/share/doc (pdfTeX manuals on
Debian; their source text is unknown, so words, ligature code points, control characters and
agreement with PDFium are reported). HTML: ragkit's own extractor (lxml), ``trafilatura`` and
``readability-lxml`` on pages of three layouts with known main content, and a 300-article page for
speed, and real pages if the machine has some (the rustdoc book that rustup installs): speed,
words and agreement only. Word: ragkit's python-docx loader against the written paragraphs.

Fidelity is over words (the text split on whitespace, so layout line breaks do not count):
``similarity`` is difflib's ratio between the source's and the extractor's word sequences (1.0 only
when identical), ``recall`` the share of source words found in order, ``precision`` the share of
extracted words that belong to the source (boilerplate lowers it). Every candidate's output gets the
same light cleanup before scoring (C0 control characters, list markers and table rules dropped);
ligatures are left as each library gives them, and "ragkit" rows show what ``load_file`` returns.
Timings are the best of ``--reps`` runs after one untimed warm-up run, the candidates interleaved in
one process.

Run:
    .venv/bin/python benchmarks/loaders.py            # writes loaders.json and loaders.md
    .venv/bin/python benchmarks/loaders.py --quick    # one rep, fewer pages (the test suite's smoke run)
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import loader_files as lf  # noqa: E402
from index_search import cpu_model_and_flags  # noqa: E402

from ragkit.loaders import load_file  # noqa: E402

_C0 = {c: None for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)}
_LIGATURE = re.compile("[\ufb00-\ufb06]")
_LAYOUT = re.compile(r"[-*\u2022]|\d{1,3}[.)]|[|:-]+")


def words(text: str) -> list[str]:
    # List markers ("- ", "1. ") and table rules ("|", "|---|") are layout, not words: an extractor that
    # writes them is not penalised.
    return [w for w in text.translate(_C0).split() if not _LAYOUT.fullmatch(w)]


def fidelity(reference: str, got: str) -> dict[str, float]:
    ref, out = words(reference), words(got)
    matcher = difflib.SequenceMatcher(None, ref, out, autojunk=False)
    matched = sum(block.size for block in matcher.get_matching_blocks())
    return {
        "similarity": round(matcher.ratio(), 4),
        "recall": round(matched / len(ref), 4) if ref else 1.0,
        "precision": round(matched / len(out), 4) if out else 0.0,
    }


def best_time(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    fn()  # untimed: imports and first-use caches are paid before the clock starts
    best, result = float("inf"), None
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


# --- PDF ---------------------------------------------------------------------------------------------


def pdf_pypdfium2(path: Path) -> str:
    import pypdfium2

    pdf = pypdfium2.PdfDocument(str(path))
    try:
        return "\n\n".join(pdf[i].get_textpage().get_text_bounded() for i in range(len(pdf)))
    finally:
        pdf.close()


def pdf_pypdf(path: Path) -> str:
    import pypdf

    return "\n\n".join(page.extract_text() for page in pypdf.PdfReader(str(path)).pages)


def pdf_pdfminer(path: Path) -> str:
    from pdfminer.high_level import extract_text

    return extract_text(str(path))


def pdf_ragkit(path: Path) -> str:
    return load_file(path)[0].text


PDF_CANDIDATES = {"pypdfium2": pdf_pypdfium2, "pypdf": pdf_pypdf, "pdfminer.six": pdf_pdfminer}


def long_pages(n: int) -> list[str]:
    rng = random.Random(13)
    vocab = (
        "retrieval index chunk embedding query passage rerank score vector token document page "
        "office efficient fluffy section heading table figure result"
    ).split()
    pages = []
    for p in range(n):
        paras = [" ".join(rng.choice(vocab) for _ in range(rng.randint(40, 90))) + "." for _ in range(4)]
        pages.append(f"Page heading {p + 1}\n\n" + "\n\n".join(paras))
    return pages


def pdf_corpus(folder: Path, quick: bool) -> dict[str, tuple[Path, str]]:
    pages = long_pages(8 if quick else 40)
    specs = {
        "fpdf2 Helvetica": ({"writer": "fpdf2"}, lf.PAGES),
        "fpdf2 Helvetica justified": ({"writer": "fpdf2", "justify": True}, lf.PAGES),
        "fpdf2 DejaVu (TrueType subset)": ({"writer": "fpdf2", "unicode_font": True}, lf.PAGES),
        "reportlab Helvetica": ({"writer": "reportlab"}, lf.PAGES),
        "reportlab DejaVu (TrueType subset)": ({"writer": "reportlab", "unicode_font": True}, lf.PAGES),
        "fpdf2 ligature code points": (
            {"writer": "fpdf2", "unicode_font": True},
            ["The \ufb01nal \ufb02ow of e\ufb03cient o\ufb00ers \ufb01lls the \ufb01eld."],
        ),
        f"fpdf2 {len(pages)} pages": ({"writer": "fpdf2", "justify": True}, pages),
    }
    corpus = {}
    for i, (name, (kwargs, text)) in enumerate(specs.items()):
        path = lf.write_pdf(folder / f"gen{i}.pdf", text, **kwargs)
        reference = "\n\n".join(text)
        if "ligature" in name:
            reference = reference.translate(
                str.maketrans({"\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb00": "ff"})
            )
        corpus[name] = (path, reference)
    return corpus


def bench_pdf(folder: Path, reps: int, quick: bool) -> dict[str, Any]:
    generated = {}
    candidates = {**PDF_CANDIDATES, "ragkit": pdf_ragkit}
    for name, (path, reference) in pdf_corpus(folder, quick).items():
        row = {}
        for cand, fn in candidates.items():
            seconds, text = best_time(lambda fn=fn, path=path: fn(path), reps)
            row[cand] = {**fidelity(reference, text), "seconds": round(seconds, 5)}
        generated[name] = row
    real = {}
    docs = sorted(Path("/usr/share/doc").glob("**/*.pdf"))[: 1 if quick else 4]
    for path in docs:
        row = {}
        texts = {}
        for cand, fn in candidates.items():
            seconds, text = best_time(lambda fn=fn, path=path: fn(path), reps)
            texts[cand] = text
            row[cand] = {
                "seconds": round(seconds, 4),
                "words": len(words(text)),
                "ligature_code_points": len(_LIGATURE.findall(text)),
                "control_chars": sum(1 for ch in text if ord(ch) < 0x20 and ch not in "\t\n\r"),
                "words_ending_in_hyphen": sum(1 for w in words(text) if w.endswith("-")),
            }
        for cand in candidates:
            row[cand]["similarity_to_pypdfium2"] = fidelity(texts["pypdfium2"], texts[cand])["similarity"]
        import pypdfium2

        row["pages"] = len(pypdfium2.PdfDocument(str(path)))
        real[str(path)] = row
    return {"generated": generated, "real": real}


# --- HTML --------------------------------------------------------------------------------------------

DOCS_PAGE = """<!doctype html><html><head><title>API reference</title>
<script>var _paq = window._paq || []; _paq.push(['trackPageView']);</script>
<style>.sidebar{width:20%}</style></head><body>
<a class="skip-link" href="#content">Skip to content</a>
<div class="topbar"><nav><a href="/">Home</a> <a href="/blog">Blog</a> <a href="/jobs">Jobs</a></nav></div>
<div class="wrapper">
<div class="sidebar" role="navigation"><ul><li><a href="#a">Overview</a></li>
<li><a href="#b">Tutorials</a></li><li><a href="#c">Changelog</a></li></ul></div>
<div role="main" id="content">
<h1>Pipeline.search</h1>
<p>Search the index and return the best hits for a query.</p>
<h2>Parameters</h2>
<table><tr><th>name</th><th>meaning</th></tr><tr><td>k</td><td>how many hits to return</td></tr></table>
<h2>Example</h2>
<pre>hits = pipe.search("capital of France", k=3)</pre>
<p>The hits come back best first.</p>
</div></div>
<footer><p>Built with love. Licensed under Apache-2.0. Imprint</p></footer>
</body></html>"""
DOCS_TEXT = (
    "Pipeline.search\n\nSearch the index and return the best hits for a query.\n\nParameters\n\n"
    "name meaning k how many hits to return\n\nExample\n\n"
    'hits = pipe.search("capital of France", k=3)\n\nThe hits come back best first.'
)
DOCS_BOILERPLATE = ["Skip", "Blog", "Jobs", "Overview", "Tutorials", "Changelog", "Imprint", "_paq", "width"]
DOCS_HEADINGS = ["Pipeline.search", "Parameters", "Example"]

NEWS_PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>Local library opens late</title>
<link rel="stylesheet" href="/main.css"><script src="/ads.js"></script></head><body>
<div id="gdpr-consent">This site uses cookies. <a href="#">Manage settings</a></div>
<div class="masthead"><header><h2>The Daily Bugle</h2><nav><a href="/world">World</a>
<a href="/sport">Sport</a><a href="/weather">Weather</a></nav></header></div>
<article><header><h1>Local library opens late on Fridays</h1><p class="byline">By A. Reporter</p></header>
<p>From next month the central library stays open until nine on Fridays.</p>
<p>The council says evening visits doubled last year, mostly students revising for exams.</p>
<h2>Reactions</h2><p>Readers welcomed the change; staff asked for more hands.</p>
<div class="share-tools"><a>Share on Facebook</a><a>Share on X</a></div></article>
<aside><h3>Most read</h3><ol><li>Storm warning for the coast</li><li>Derby ends in a draw</li></ol></aside>
<section class="comments"><h3>Comments</h3><p>First!</p></section>
<footer>Contact us. Advertise with us.</footer><script>loadAds();</script></body></html>"""
NEWS_TEXT = (
    "Local library opens late on Fridays\n\nBy A. Reporter\n\n"
    "From next month the central library stays open until nine on Fridays.\n\n"
    "The council says evening visits doubled last year, mostly students revising for exams.\n\n"
    "Reactions\n\nReaders welcomed the change; staff asked for more hands."
)
NEWS_BOILERPLATE = [
    "cookies",
    "Manage",
    "Bugle",
    "Weather",
    "Facebook",
    "Storm",
    "Derby",
    "First!",
    "Advertise",
    "loadAds",
]
NEWS_HEADINGS = ["Local library opens late on Fridays", "Reactions"]


def html_ragkit(path: Path, html: str) -> str:
    return load_file(path)[0].text


def html_trafilatura(path: Path, html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, include_comments=False, include_tables=True) or ""


def html_readability(path: Path, html: str) -> str:
    import lxml.html
    from readability import Document

    summary = Document(html).summary(html_partial=True)
    root = lxml.html.fromstring(summary)
    for el in root.iter("p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "pre", "tr", "div"):
        el.tail = "\n" + (el.tail or "")
    for el in root.iter("td", "th"):
        el.tail = " " + (el.tail or "")
    return root.text_content()


HTML_CANDIDATES = {
    "ragkit": html_ragkit,
    "trafilatura": html_trafilatura,
    "readability-lxml": html_readability,
}


def bench_html(folder: Path, reps: int, quick: bool) -> dict[str, Any]:
    article = "\n\n".join(lf.HTML_ARTICLE)
    pages = {
        "site page (nav, cookie banner, main/article, aside, footer)": (
            lf.HTML_PAGE,
            article,
            lf.HTML_BOILERPLATE,
            [lf.HTML_ARTICLE[0], "Install", "Search"],
        ),
        "docs page (div layout, role=navigation sidebar, table, pre)": (
            DOCS_PAGE,
            DOCS_TEXT,
            DOCS_BOILERPLATE,
            DOCS_HEADINGS,
        ),
        "news page (article with header, share tools, comments, aside)": (
            NEWS_PAGE,
            NEWS_TEXT,
            NEWS_BOILERPLATE,
            NEWS_HEADINGS,
        ),
    }
    copies = 30 if quick else 300
    start, end = lf.HTML_PAGE.index("<article>"), lf.HTML_PAGE.index("</article>") + len("</article>")
    big = lf.HTML_PAGE[:start] + lf.HTML_PAGE[start:end] * copies + lf.HTML_PAGE[end:]
    pages[f"big page ({copies} articles, speed)"] = (
        big,
        "\n\n".join([article] * copies),
        lf.HTML_BOILERPLATE,
        [],
    )
    results = {}
    for i, (name, (html, reference, boilerplate, headings)) in enumerate(pages.items()):
        path = folder / f"page{i}.html"
        path.write_text(html, encoding="utf-8")
        row = {}
        for cand, fn in HTML_CANDIDATES.items():
            seconds, text = best_time(lambda fn=fn, path=path, html=html: fn(path, html), reps)
            lines = {line.strip().lstrip("#").strip() for line in text.split("\n")}
            row[cand] = {
                **fidelity(reference, text),
                "boilerplate_leaked": [w for w in boilerplate if w.lower() in text.lower()],
                "headings_on_own_line": f"{sum(h in lines for h in headings)}/{len(headings)}",
                "seconds": round(seconds, 5),
            }
        results[name] = row
    return results


# Real pages whose main text is unknown (the rustdoc book and std docs ship with rustup, if present).
REAL_HTML = ["/usr/share/doc/**/*.html", "/root/.rustup/toolchains/*/share/doc/rust/html/rustdoc/**/*.html"]


def bench_html_real(reps: int, quick: bool) -> dict[str, Any]:
    import glob

    files = sorted({f for pattern in REAL_HTML for f in glob.glob(pattern, recursive=True)})[
        : 5 if quick else 40
    ]
    out: dict[str, Any] = {"pages": len(files)}
    if not files:
        return out
    texts: dict[str, list[str]] = {cand: [] for cand in HTML_CANDIDATES}
    for cand, fn in HTML_CANDIDATES.items():
        total = 0.0
        for f in files:
            html = Path(f).read_text(encoding="utf-8", errors="replace")
            seconds, text = best_time(lambda fn=fn, f=f, html=html: fn(Path(f), html), reps)
            total += seconds
            texts[cand].append(text)
        out[cand] = {
            "seconds": round(total, 4),
            "words": sum(len(words(t)) for t in texts[cand]),
            "empty_pages": sum(1 for t in texts[cand] if not t.strip()),
        }
    for cand in HTML_CANDIDATES:
        ratios = [fidelity(a, b)["similarity"] for a, b in zip(texts["ragkit"], texts[cand], strict=True)]
        out[cand]["mean_similarity_to_ragkit"] = round(sum(ratios) / len(ratios), 4)
    return out


# --- Word --------------------------------------------------------------------------------------------


def bench_docx(folder: Path, reps: int, quick: bool) -> dict[str, Any]:
    body = list(lf.DOCX_BODY)
    for n in range(20 if quick else 200):
        body += [
            ("Heading 2", f"Part {n}"),
            ("Normal", f"Paragraph {n} of the long document, efficient text."),
        ]
    path = lf.write_docx(folder / "long.docx", body)
    reference = "\n\n".join(
        "\n".join("\t".join(r) for r in content) if style == "table" else content for style, content in body
    )

    def python_docx_raw() -> str:
        import docx

        document = docx.Document(io.BytesIO(path.read_bytes()))
        return "\n\n".join(p.text for p in document.paragraphs)  # no tables: python-docx's obvious call

    out = {}
    for cand, fn in {
        "ragkit": lambda: load_file(path)[0].text,
        "python-docx paragraphs only": python_docx_raw,
    }.items():
        seconds, text = best_time(fn, reps)
        out[cand] = {**fidelity(reference, text), "seconds": round(seconds, 5)}
    return {f"python-docx file, {len(body)} blocks with a table": out}


# --- Report ------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in (
        "pypdfium2",
        "pypdf",
        "pdfminer.six",
        "lxml",
        "trafilatura",
        "readability-lxml",
        "python-docx",
        "fpdf2",
        "reportlab",
    ):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "missing"
    return found


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Loaders: text fidelity and speed per library", ""]
    m = result["machine"]
    lines += [
        f"{result['date']}, {m['cpu_model']}, {m['cpus']} CPUs, load {m['load']}, Python {m['python']}; "
        f"reps {result['reps']}. Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
    ]
    lines += [
        "## PDF, generated (known text)",
        "",
        "| file | library | similarity | recall | precision | ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, row in result["pdf"]["generated"].items():
        for cand, r in row.items():
            lines.append(
                f"| {name} | {cand} | {r['similarity']:.4f} | {r['recall']:.4f} | {r['precision']:.4f} "
                f"| {r['seconds'] * 1000:.1f} |"
            )
    lines += [
        "",
        "## PDF, real files (text unknown)",
        "",
        "| file | pages | library | ms | words | ligatures | control chars | words ending in '-' "
        "| similarity to pypdfium2 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["pdf"]["real"].items():
        for cand, r in row.items():
            if cand == "pages":
                continue
            lines.append(
                f"| {Path(name).name} | {row['pages']} | {cand} | {r['seconds'] * 1000:.1f} | {r['words']} "
                f"| {r['ligature_code_points']} | {r['control_chars']} | {r['words_ending_in_hyphen']} "
                f"| {r['similarity_to_pypdfium2']:.4f} |"
            )
    lines += [
        "",
        "## HTML (known main content)",
        "",
        "| page | extractor | similarity | recall | precision | boilerplate leaked | headings | ms |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for name, row in result["html"].items():
        for cand, r in row.items():
            leaked = ", ".join(r["boilerplate_leaked"]) or "none"
            lines.append(
                f"| {name} | {cand} | {r['similarity']:.4f} | {r['recall']:.4f} | {r['precision']:.4f} "
                f"| {leaked} | {r['headings_on_own_line']} | {r['seconds'] * 1000:.1f} |"
            )
    real = result["html_real"]
    lines += ["", f"## HTML, real pages (main text unknown): {real['pages']} pages", ""]
    if real["pages"]:
        lines += ["| extractor | ms (all pages) | words | empty pages | mean similarity to ragkit |"]
        lines += ["|---|---:|---:|---:|---:|"]
        for cand in HTML_CANDIDATES:
            r = real[cand]
            lines.append(
                f"| {cand} | {r['seconds'] * 1000:.1f} | {r['words']} | {r['empty_pages']} "
                f"| {r['mean_similarity_to_ragkit']:.4f} |"
            )
    lines += [
        "",
        "## Word",
        "",
        "| file | reader | similarity | recall | precision | ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, row in result["docx"].items():
        for cand, r in row.items():
            lines.append(
                f"| {name} | {cand} | {r['similarity']:.4f} | {r['recall']:.4f} | {r['precision']:.4f} "
                f"| {r['seconds'] * 1000:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one rep, small files (smoke run)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="loaders")
    args = parser.parse_args(argv)
    reps = 1 if args.quick else args.reps
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": {
                **cpu_model_and_flags(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load": [round(x, 2) for x in os.getloadavg()],
            },
            "versions": versions(),
            "reps": reps,
            "pdf": bench_pdf(folder, reps, args.quick),
            "html": bench_html(folder, reps, args.quick),
            "html_real": bench_html_real(reps, args.quick),
            "docx": bench_docx(folder, reps, args.quick),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
