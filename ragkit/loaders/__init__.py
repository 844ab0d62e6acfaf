"""Turn files into :class:`~ragkit.types.Document` s: clean text, structure and metadata.

One loader per format, chosen by the file's suffix (case does not matter):

- ``.pdf`` (``pdf``, PDFium): the pages joined by a blank line, one section per page (``page``,
  1-based); metadata ``pages`` and ``title`` (from the PDF's info, if set).
- ``.html``, ``.htm`` (``html``, lxml): the main content, without navigation, scripts, styles, form
  controls, asides, footers or cookie banners; sections from h1-h6; ``title`` from ``<title>``, else
  the first h1.
- ``.docx`` (``docx``, python-docx): paragraphs and tables (tab-separated rows) in order; sections
  from the Title and Heading 1-9 styles; ``title`` from the core properties, else the first heading.
- ``.md``, ``.markdown`` (``markdown``): the source as written; sections from ATX and setext
  headings (not those in code); ``title`` from the first level-1 heading.
- ``.rst`` (``rst``): the source as written; sections from section titles; ``title`` from the first.
- ``.txt``, ``.text`` (``text``): the text; no sections.
- ``.jsonl`` (``jsonl``): one Document per line, a ``{"id", "text", "metadata"}`` record.
- ``.json`` (``json``): one Document per record of a top-level array of such records.

PDF, HTML and Word need ``pip install 'ragkit[loaders]'``; the other formats need nothing.

Every metadata dict has ``format`` (except records', which keep their own metadata as written).
Text files are UTF-8, or UTF-16/32 with a byte-order mark; undecodable bytes become U+FFFD with a
warning on the ``ragkit.loaders`` logger, and the metadata says how many byte sequences were bad:
``decode_errors`` (absent when there were none; for records, on each record's Document). All text
has universal newlines and no control characters but tab and newline, and no soft hyphen (U+00AD).
An empty file is a Document with text ``""`` and no sections (a records file with no records gives
no Document).

**Sections.** A heading's section starts at its heading line (the heading is part of it) and ends
before the next heading of any level, trailing whitespace excluded; ``headings`` is the path from
the outermost heading down to its own. Text before the first heading is in no section. Sections are
in order and never overlap, and ``text[s.start:s.end]`` is exactly the section's text.

Errors (all :class:`~ragkit.errors.LoaderError`, with ``path`` and ``reason``):
:class:`~ragkit.errors.UnsupportedFormatError` for other suffixes (a legacy ``.doc`` says how to
convert it), :class:`~ragkit.errors.EncryptedFileError` for a PDF or Word file that needs a
password, :class:`~ragkit.errors.CorruptFileError` for a damaged file or records without a ``text``
string. A missing package raises :class:`~ragkit.errors.MissingDependencyError` naming
``ragkit[loaders]``. A file that cannot be read raises ``OSError``.

``load_file`` may be called from several threads; PDFs are read one at a time (PDFium is not
thread-safe).

Example:
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "guide.md").write_text("# Guide\\n\\n## Install\\n\\npip install ragkit\\n")
    >>> [doc] = load_file(folder / "guide.md", doc_id="guide.md", metadata={"lang": "en"})
    >>> doc.id, doc.metadata
    ('guide.md', {'format': 'markdown', 'title': 'Guide', 'lang': 'en'})
    >>> [(doc.text[s.start:s.end], s.headings) for s in doc.sections]
    [('# Guide', ('Guide',)), ('## Install\\n\\npip install ragkit', ('Guide', 'Install'))]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragkit.errors import InputTypeError, UnsupportedFormatError
from ragkit.types import Document, Section

__all__ = ["SUPPORTED_SUFFIXES", "format_of", "is_supported", "load_file"]

_FORMATS = {
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
    ".docx": "docx",
    ".md": "markdown",
    ".markdown": "markdown",
    ".rst": "rst",
    ".txt": "text",
    ".text": "text",
    ".jsonl": "jsonl",
    ".json": "json",
}
_RECORDS = ("jsonl", "json")
_CONVERT = {
    ".doc": "a legacy binary Word file: save it as .docx (in Word, or soffice --headless --convert-to docx)",
    ".rtf": "rich text is not read: save it as .docx or .txt",
    ".odt": "OpenDocument text is not read: save it as .docx (soffice --headless --convert-to docx)",
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_FORMATS)
"""The suffixes :func:`load_file` reads, lower-case with the dot (``".pdf"``, ``".md"``, ...)."""


def format_of(path: str | os.PathLike[str]) -> str | None:
    """The format :func:`load_file` reads ``path`` as, from its suffix, or ``None`` if unsupported.

    Example:
        >>> format_of("report.PDF"), format_of("notes.markdown"), format_of("table.xlsx")
        ('pdf', 'markdown', None)
    """
    return _FORMATS.get(Path(path).suffix.lower())


def is_supported(path: str | os.PathLike[str]) -> bool:
    """Whether :func:`load_file` reads files with this suffix (case-insensitive); the file is not opened.

    Example:
        >>> is_supported("README.TXT"), is_supported("scan.tiff")
        (True, False)
    """
    return format_of(path) is not None


def load_file(
    path: str | os.PathLike[str],
    *,
    doc_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[Document]:
    """Read one file into Documents: one for most formats, one per record for ``.jsonl`` / ``.json``.

    Args:
        path: the file; its suffix picks the loader (:data:`SUPPORTED_SUFFIXES`).
        doc_id: the Document's id; defaults to ``str(path)``. Record files ignore it: each record
            keeps its own ``id`` (or gets the content id of its text).
        metadata: merged over the loader's metadata (``format``, ``title``, ``pages``) and over each
            record's; on a clash the caller's value wins.

    Returns:
        The documents, with ``sections`` for the formats that have structure.

    Raises:
        UnsupportedFormatError: no loader reads this suffix.
        EncryptedFileError: the file needs a password (a PDF with only an owner password opens).
        CorruptFileError: the file is damaged, or a record lacks a ``text`` string.
        MissingDependencyError: the format's package is missing (``pip install 'ragkit[loaders]'``).
        OSError: the file cannot be read (missing, a directory, no permission).

    Example:
        >>> import pathlib, tempfile
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "faq.jsonl"
        >>> _ = file.write_text('{"id": "q1", "text": "Refunds take 5 days."}\\n{"text": "Hi."}\\n')
        >>> [(d.id, d.text) for d in load_file(file, metadata={"source": "faq"})]
        [('q1', 'Refunds take 5 days.'), ('17f4444f3932f8a1', 'Hi.')]
    """
    path = Path(path)
    if doc_id is not None and not isinstance(doc_id, str):
        raise InputTypeError(f"doc_id must be a str, got {type(doc_id).__name__}")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InputTypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
    fmt = format_of(path)
    if fmt is None:
        suffix = path.suffix.lower()
        reason = _CONVERT.get(suffix) or (
            f"no loader reads {suffix or 'files without a suffix'!r}; "
            f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
        raise UnsupportedFormatError(path, reason)
    data = path.read_bytes()
    if fmt in _RECORDS:
        from ragkit.loaders._records import load_records

        return load_records(path, data, fmt, metadata)
    text, sections, found = _load(path, data, fmt) if data else ("", (), {"format": fmt})
    return [
        Document(
            id=str(path) if doc_id is None else doc_id,
            text=text,
            metadata={**found, **(metadata or {})},
            sections=sections,
        )
    ]


def _load(path: Path, data: bytes, fmt: str) -> tuple[str, tuple[Section, ...], dict[str, Any]]:
    if fmt == "pdf":
        from ragkit.loaders._pdf import load_pdf

        return load_pdf(path, data)
    if fmt == "html":
        from ragkit.loaders._html import load_html

        return load_html(path, data)
    if fmt == "docx":
        from ragkit.loaders._word import load_docx

        return load_docx(path, data)
    from ragkit.loaders._plain import load_plain

    return load_plain(path, data, fmt)
