"""What every loader shares: decoding bytes, cleaning text, and turning headings into sections."""

from __future__ import annotations

import codecs
import logging
from collections.abc import Iterable
from pathlib import Path

from ragkit.types import Section

logger = logging.getLogger("ragkit.loaders")

# C0 controls other than tab and newline carry no text (PDF extractors emit NUL and \x02 for a hyphen
# at a line break; PostgreSQL cannot store NUL). Vertical tab and form feed are line breaks.
_CONTROLS = {c: None for c in range(0x20) if c not in (0x09, 0x0A, 0x0B, 0x0C)}
_CONTROLS.update({0x0B: "\n", 0x0C: "\n", 0x7F: None, 0xAD: None})  # U+00AD: an invisible hyphenation hint
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def clean_text(text: str) -> str:
    """Universal newlines, no C0 control character but tab and newline, and no soft hyphen (U+00AD)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").translate(_CONTROLS)


def decode(data: bytes, path: Path, encoding: str | None = None) -> tuple[str, int]:
    """Text of a file and its number of undecodable byte sequences (0 for a clean file).

    UTF-8 unless a byte-order mark says UTF-16 or UTF-32 (the mark is dropped) or ``encoding`` is
    given (a BOM still wins). Bytes that are not valid in that encoding become U+FFFD, one per bad
    sequence, with one warning per file; loaders report the count as ``metadata["decode_errors"]``.
    """
    for bom, name in _BOMS:
        if data.startswith(bom):
            data, encoding = data[len(bom) :], name
            break
    encoding = encoding or "utf-8"
    try:
        return clean_text(data.decode(encoding)), 0
    except UnicodeDecodeError as e:
        text = data.decode(encoding, errors="replace")
        errors = len(text) - len(data.decode(encoding, errors="ignore"))  # one U+FFFD per bad sequence
        logger.warning(
            "%s: not valid %s (%d undecodable byte sequence(s), the first at byte %d); read as U+FFFD",
            path,
            encoding,
            errors,
            e.start,
        )
        return clean_text(text), errors


def tidy(text: str) -> str:
    """Runs of whitespace (any Unicode space, a no-break space included) as one space, ends stripped."""
    return " ".join(text.split())


def sections_from_headings(text: str, headings: Iterable[tuple[int, int, str]]) -> tuple[Section, ...]:
    """One section per heading, from the heading's first character to the next heading.

    ``headings`` are ``(offset, level, title)`` in text order; a smaller level is an outer heading.
    A section includes its heading line and ends before the next heading of any level, trailing
    whitespace excluded, so sections never overlap. Its ``headings`` are the path down to and
    including its own heading. Text before the first heading belongs to no section.
    """
    marks = list(headings)
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    for i, (start, level, title) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        end = start + len(text[start:stop].rstrip())
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title))
        sections.append(Section(start=start, end=end, headings=tuple(t for _, t in path)))
    return tuple(sections)


class TextBuilder:
    """Assemble extracted blocks into one text, remembering where each heading starts.

    Blocks are joined by a blank line unless a block asks to follow the previous one on the next
    line (list items, table rows). ``build`` gives the text and its sections.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._headings: list[tuple[int, int, str]] = []

    def add(self, block: str, *, tight: bool = False) -> None:
        """Append a block (skipped if blank); ``tight`` joins it with one newline instead of two."""
        if not block.strip():
            return
        if self._parts:
            sep = "\n" if tight else "\n\n"
            self._parts.append(sep)
            self._length += len(sep)
        self._parts.append(block)
        self._length += len(block)

    def heading(self, level: int, title: str) -> None:
        """Append a heading block that opens a section at ``level`` (smaller is outer)."""
        title = tidy(title)
        if not title:
            return
        self.add(title)
        self._headings.append((self._length - len(title), level, title))

    def build(self) -> tuple[str, tuple[Section, ...]]:
        text = "".join(self._parts)
        return text, sections_from_headings(text, self._headings)
