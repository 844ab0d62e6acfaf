"""PDF: the text of each page with PDFium (``pypdfium2``), pages joined by a blank line.

PDFium was chosen on ``benchmarks/loaders.py``: as faithful as pypdf and pdfminer.six on generated
files and much faster (on two real pdfTeX manuals about 12 times pypdf's speed and over 20 times
pdfminer.six's; 3.6 and 34 times on 40 generated pages), and it marks a word hyphenated
at a line break with a control character, so dropping control characters joins the word again
("man-" + "agement" is "management", where the other two leave both halves). It also spells out
ligature code points (U+FB01 "ﬁ" is "fi"), which pypdf and pdfminer.six pass through, so ragkit
needs no ligature table of its own.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ragkit.errors import CorruptFileError, EncryptedFileError
from ragkit.loaders._common import clean_text, tidy
from ragkit.types import Section

# PDFium is not thread-safe: one document at a time per process.
_PDFIUM_LOCK = threading.Lock()
_PAGE_SEPARATOR = "\n\n"


def load_pdf(path: Path, data: bytes) -> tuple[str, tuple[Section, ...], dict[str, Any]]:
    """Text, one section per page (``page`` 1-based) and metadata ``pages`` and ``title`` (one line)."""
    from ragkit._deps import require

    pdfium = require("pypdfium2", purpose="reading PDF files")
    with _PDFIUM_LOCK:
        try:
            # The empty password is tried first: a PDF with only an owner password opens.
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as e:
            code = getattr(e, "err_code", None)  # pypdfium2 5; before it, PDFium's last error says it
            if code is None:
                code = pdfium.raw.FPDF_GetLastError()
            if code in (pdfium.raw.FPDF_ERR_PASSWORD, pdfium.raw.FPDF_ERR_SECURITY):
                raise EncryptedFileError(path, "the PDF is encrypted and needs a password to open") from e
            raise CorruptFileError(path, f"not a readable PDF, damaged or truncated ({e})") from e
        try:
            pages = [_page_text(pdf, i) for i in range(len(pdf))]
            title = tidy(clean_text(pdf.get_metadata_value("Title") or ""))  # "My  Title" is "My Title"
        except pdfium.PdfiumError as e:
            raise CorruptFileError(path, f"a page of the PDF cannot be read ({e})") from e
        finally:
            pdf.close()
    sections = []
    offset = 0
    for number, page in enumerate(pages, 1):
        sections.append(Section(start=offset, end=offset + len(page), page=number))
        offset += len(page) + len(_PAGE_SEPARATOR)
    metadata: dict[str, Any] = {"format": "pdf", "pages": len(pages)}
    if title:
        metadata["title"] = title
    return _PAGE_SEPARATOR.join(pages), tuple(sections), metadata


def _page_text(pdf: Any, index: int) -> str:
    page = pdf[index]
    try:
        textpage = page.get_textpage()
        try:
            raw = textpage.get_text_bounded()
        finally:
            textpage.close()
    finally:
        page.close()
    lines = clean_text(raw).split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")
