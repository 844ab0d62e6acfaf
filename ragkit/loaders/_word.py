"""Word .docx with python-docx: paragraphs and tables in document order, headings as sections.

The ``Title`` style is level 0 and ``Heading 1`` to ``Heading 9`` levels 1 to 9, so a section under
"From source" (Heading 2) inside "Install" (Heading 1) of a titled document has the path
``(title, "Install", "From source")``. A table becomes one line per row with cells separated by tabs;
a cell merged across columns is one cell, and a cell merged down several rows has its text in its
first row only (an empty cell below keeps the columns). Line breaks and paragraphs inside a cell
become spaces, and a table nested in a cell is read into that cell's text, row after row. Page
headers, footers, comments, text boxes and content controls (where Word puts a table of contents or a
cover page) are not read.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

from ragkit.errors import CorruptFileError, EncryptedFileError
from ragkit.loaders._common import TextBuilder, clean_text, tidy
from ragkit.types import Section

_HEADING_STYLE = re.compile(r"heading ([1-9])", re.IGNORECASE)
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # a compound file: legacy .doc, or an encrypted .docx
_ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")


def load_docx(path: Path, data: bytes) -> tuple[str, tuple[Section, ...], dict[str, Any]]:
    """Text, heading sections and metadata ``title`` (core properties, else the first title/heading)."""
    from ragkit._deps import require

    docx = require("docx", purpose="reading Word files")
    if data.startswith(_OLE_MAGIC):
        if _ENCRYPTED_STREAM in data:
            raise EncryptedFileError(path, "the Word file is encrypted and needs a password to open")
        raise CorruptFileError(path, "a legacy binary Word file (.doc) named .docx: save it as .docx")
    from docx.opc.exceptions import PackageNotFoundError
    from lxml.etree import XMLSyntaxError

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError, PackageNotFoundError, XMLSyntaxError) as e:
        raise CorruptFileError(path, f"not a readable .docx file, damaged or truncated ({e})") from e
    # Style names by id, read once: python-docx's paragraph.style searches styles.xml on every call.
    styles = {style.style_id: style.name or "" for style in document.styles}
    builder = TextBuilder()
    first_title = None
    for block in document.iter_inner_content():
        if isinstance(block, docx.table.Table):
            _add_table(builder, block)
            continue
        text = clean_text(block.text).strip()
        level = _heading_level(styles.get(block._p.style or "", ""))
        if level is None:
            builder.add(text)
            continue
        builder.heading(level, text)
        if first_title is None and tidy(text):
            first_title = tidy(text)
    text, sections = builder.build()
    metadata: dict[str, Any] = {"format": "docx"}
    title = tidy(clean_text(document.core_properties.title or "")) or first_title
    if title:
        metadata["title"] = title
    return text, sections, metadata


def _heading_level(name: str) -> int | None:
    if name.lower() == "title":
        return 0
    m = _HEADING_STYLE.fullmatch(name)
    return int(m.group(1)) if m else None


def _add_table(builder: TextBuilder, table: Any) -> None:
    first = True
    for line in _table_lines(table):
        if line.strip():
            builder.add(line, tight=not first)
            first = False


def _table_lines(table: Any) -> list[str]:
    from docx.table import _Cell

    lines = []
    for tr in table._tbl.tr_lst:
        cells = []
        for tc in tr.tc_lst:  # one per cell as written: a horizontal merge is one w:tc already
            if tc.vMerge == "continue":  # the rows below the first of a vertical merge
                cells.append("")
                continue
            cells.append(_cell_text(_Cell(tc, table)))
        lines.append("\t".join(cells))
    return lines


def _cell_text(cell: Any) -> str:
    import docx

    parts = []
    for block in cell.iter_inner_content():
        if isinstance(block, docx.table.Table):
            parts.extend(_table_lines(block))
        else:
            parts.append(block.text)
    return tidy(clean_text(" ".join(parts)))
