"""Real files for the loader tests and benchmark, written with the writers people use.

PDFs come from fpdf2 or reportlab, Word files from python-docx, and the HTML page is laid out the way
real sites are (doctype, head with meta/link/style/script, navigation, cookie banner, an article, an
aside, a footer and an inline script at the end). Each writer is imported inside its function, so
importing this module needs none of them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

# Three pages of known text. Words such as "office", "fluffy" and "efficient" are the ones a PDF writer
# or font may turn into ligatures; the numbers and punctuation catch spacing errors.
PAGES = [
    "Retrieval basics\n\n"
    "A retriever finds the passages that answer a question. The office of a retriever is to be fast "
    "and efficient: it scores 10,000 passages in 3.5 ms and returns the top 10.\n\n"
    "Dense retrieval embeds both sides; lexical retrieval counts shared words.",
    "Chunking\n\n"
    "Documents are cut into chunks of about 512 tokens with 64 tokens of overlap, so a fluffy "
    "introduction does not drown the one sentence that matters.\n\n"
    "Each chunk keeps its page number and heading path.",
    "Reranking\n\n"
    "A cross-encoder reads the question and each candidate together and orders the first fifty "
    "candidates again; it is slower but finds the affirmative answer more often.",
]
PDF_TITLE = "Retrieval for RAG"


def _paragraphs(page: str) -> list[str]:
    return [p for p in page.split("\n\n") if p]


def write_pdf(
    path: Path,
    pages: list[str] = PAGES,
    *,
    title: str | None = PDF_TITLE,
    writer: str = "fpdf2",
    user_password: str | None = None,
    owner_password: str | None = None,
    unicode_font: bool = False,
    justify: bool = False,
) -> Path:
    """Write ``pages`` (paragraphs split by blank lines) as a PDF, one page each.

    ``writer`` is ``"fpdf2"`` or ``"reportlab"``. A ``user_password`` makes a PDF that cannot be opened
    without it; an ``owner_password`` alone makes one that opens but restricts printing and editing.
    ``unicode_font`` embeds DejaVu Sans (a subset with a ToUnicode map) instead of a base-14 font;
    ``justify`` (fpdf2) stretches the spaces of full lines (the ``Tw`` operator), as justified text does.
    """
    if writer == "fpdf2":
        _write_fpdf2(path, pages, title, user_password, owner_password, unicode_font, justify)
    elif writer == "reportlab":
        _write_reportlab(path, pages, title, user_password, owner_password, unicode_font)
    else:
        raise ValueError(f"unknown writer {writer!r}")
    return path


def _write_fpdf2(path, pages, title, user_password, owner_password, unicode_font, justify) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    if unicode_font:
        pdf.add_font("DejaVu", fname=str(DEJAVU))
        font = "DejaVu"
    else:
        font = "Helvetica"
    if user_password or owner_password:
        pdf.set_encryption(owner_password=owner_password or user_password, user_password=user_password)
    for page in pages:
        pdf.add_page()
        pdf.set_font(font, size=11)
        for para in _paragraphs(page):
            pdf.multi_cell(0, 6, para, align="J" if justify else "L", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(4)
    pdf.output(str(path))


def _write_reportlab(path, pages, title, user_password, owner_password, unicode_font) -> None:
    from reportlab.lib.pdfencrypt import StandardEncryption
    from reportlab.pdfgen.canvas import Canvas

    encrypt = None
    if user_password or owner_password:
        encrypt = StandardEncryption(user_password or "", ownerPassword=owner_password or user_password)
    canvas = Canvas(str(path), encrypt=encrypt, invariant=1)
    if title:
        canvas.setTitle(title)
    font = "Helvetica"
    if unicode_font:
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.ttfonts import TTFont

        pdfmetrics.registerFont(TTFont("DejaVu", str(DEJAVU)))
        font = "DejaVu"
    for page in pages:
        text = canvas.beginText(72, 770)
        text.setFont(font, 11)
        for para in _paragraphs(page):
            for line in textwrap.wrap(para, 85):
                text.textLine(line)
            text.textLine("")
        canvas.drawText(text)
        canvas.showPage()
    canvas.save()


def write_truncated_pdf(path: Path) -> Path:
    """A PDF cut off after its first third: no cross-reference table, no trailer."""
    write_pdf(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


DOCX_TITLE = "Ragkit Guide"
DOCX_BODY = [
    ("Title", DOCX_TITLE),
    ("Normal", "This guide shows how to install and use ragkit."),
    ("Heading 1", "Install"),
    ("Normal", "Install the package with pip."),
    ("Heading 2", "From source"),
    ("Normal", "Clone the repository and run the setup script."),
    ("table", [["Extra", "Provides"], ["loaders", "PDF, HTML and Word"], ["pg", "PostgreSQL"]]),
    ("Heading 1", "Usage"),
    ("Normal", "Build a pipeline and add documents."),
]


def write_docx(path: Path, body: list = DOCX_BODY, *, core_title: str | None = None) -> Path:
    """Write ``body`` (``(style, text)`` pairs; ``("table", rows)`` for a table) with python-docx."""
    import docx

    document = docx.Document()
    if core_title is not None:
        document.core_properties.title = core_title
    for style, content in body:
        if style == "table":
            table = document.add_table(rows=len(content), cols=len(content[0]))
            for r, row in enumerate(content):
                for c, cell in enumerate(row):
                    table.cell(r, c).text = cell
        else:
            document.add_paragraph(content, style=style)
    document.save(str(path))
    return path


# The main content of HTML_PAGE as a reader sees it, and words that only its boilerplate holds.
HTML_ARTICLE = [
    "Getting started with ragkit",
    "ragkit turns a folder of documents into a searchable index.",
    "Install",
    "Install it with pip & a virtual environment \u2014 it takes a minute.",
    "Python 3.10 or newer",
    "2 GiB of memory",
    "Search",
    "Ask a question and read the best passages first.",
]
HTML_BOILERPLATE = [
    "Pricing",
    "Careers",
    "cookies",
    "Accept",
    "Related posts",
    "Copyright",
    "gtag",
    "color",
    "Subscribe",
    "newsletter",
    "Menu",
    "dataLayer",
]
HTML_TITLE = "Getting started | ragkit docs"

HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Getting started | ragkit docs</title>
  <link rel="stylesheet" href="/static/site.css">
  <style>body { color: #333; } .nav a { margin: 0 1em; }</style>
  <script async src="https://www.googletagmanager.com/gtag/js?id=G-XYZ"></script>
  <script>window.dataLayer = window.dataLayer || []; function gtag(){dataLayer.push(arguments);}</script>
</head>
<body>
  <div id="cookie-banner" class="cookie-consent">
    We use cookies to improve your experience. <button>Accept</button>
  </div>
  <header class="site-header">
    <a class="logo" href="/">ragkit</a>
    <nav class="nav" aria-label="Main">
      <ul><li><a href="/docs">Docs</a></li><li><a href="/pricing">Pricing</a></li>
      <li><a href="/careers">Careers</a></li></ul>
      <button class="menu-toggle">Menu</button>
    </nav>
  </header>
  <main>
    <article>
      <h1>Getting started with ragkit</h1>
      <p>ragkit turns a folder of documents
         into a searchable index.</p>
      <h2>Install</h2>
      <p>Install it with <code>pip</code> &amp; a virtual environment &mdash; it takes a minute.</p>
      <ul>
        <li>Python 3.10 or newer</li>
        <li>2&nbsp;GiB of memory</li>
      </ul>
      <h2>Search</h2>
      <p>Ask a question and read the <em>best</em> passages first.</p>
      <form class="newsletter"><label>Subscribe to our newsletter</label><input type="email"></form>
    </article>
    <aside class="sidebar"><h3>Related posts</h3><ul><li><a href="/a">Pricing plans</a></li></ul></aside>
  </main>
  <footer class="site-footer">
    <p>Copyright 2026 ragkit. <a href="/privacy">Privacy</a> <a href="/careers">Careers</a></p>
  </footer>
  <noscript>Enable JavaScript to see the Menu.</noscript>
  <script>gtag('js', new Date()); gtag('config', 'G-XYZ');</script>
</body>
</html>
"""


def check_sections(doc):
    """The invariants every loader promises: in bounds, in order, non-overlapping."""
    previous_end = 0
    for s in doc.sections:
        assert 0 <= previous_end <= s.start <= s.end <= len(doc.text), (s, len(doc.text))
        previous_end = s.end
    return doc


def load_one(path, **kwargs):
    """The one document ``load_file`` gives for ``path``, its sections checked."""
    from ragkit.loaders import load_file

    docs = load_file(path, **kwargs)
    assert len(docs) == 1
    return check_sections(docs[0])
