"""Plain text, reStructuredText and Markdown: the source text itself, with headings as sections.

The text is the file decoded (:func:`~ragkit.loaders._common.decode`: UTF-8, or UTF-16/32 by its
byte-order mark), with universal newlines and no control characters but tab and newline (nor soft
hyphens); markup is kept as written, so offsets point into the source. A file that is not valid
UTF-8 (Latin-1, say) is read with U+FFFD for each bad byte sequence, and ``metadata["decode_errors"]``
says how many there were. YAML front matter stays in a Markdown text (it is
not a heading). ``title`` is the first level-1 heading in Markdown, the first section title in reST.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragkit.loaders._common import decode, sections_from_headings
from ragkit.loaders._markup import markdown_headings, rst_headings
from ragkit.types import Section


def load_plain(path: Path, data: bytes, fmt: str) -> tuple[str, tuple[Section, ...], dict[str, Any]]:
    """Text, sections (none for plain text) and metadata (``title``, ``decode_errors`` when there are)."""
    text, errors = decode(data, path)
    metadata: dict[str, Any] = {"format": fmt}
    if errors:
        metadata["decode_errors"] = errors
    if fmt == "text":
        return text, (), metadata
    if fmt == "markdown":
        headings = markdown_headings(text)
        title = next((t for _, level, t in headings if level == 1 and t), None)
    else:
        headings = rst_headings(text)
        title = headings[0][2] if headings else None
    if title:
        metadata["title"] = title
    return text, sections_from_headings(text, headings), metadata
