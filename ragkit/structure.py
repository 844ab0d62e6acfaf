"""A document's structure as the chunker uses it: where to cut, where a chunk came from, its header.

Loaders (:mod:`ragkit.loaders`) describe a document's structure as :class:`~ragkit.types.Section`
spans: PDF pages, the text under each heading. :class:`~ragkit.chunking.RecursiveChunker` reads them
through this module:

- **Segments.** The text is cut into segments where the heading path changes, and no chunk crosses
  from one segment into the next: a hit under ``"Install > From source"`` holds text of that section
  only, and its overlap never reaches back into the section before. A section that holds only its
  heading and is followed by one of its own subsections (a parent heading with no text of its own,
  such as ``# Install`` right before ``## From source``; a setext or reST title with its underline,
  however many lines) joins the segment after it, so that a heading is never a chunk on its own.
  Text that no section covers (a heading line a loader left out of both sections around it) belongs
  to the section after it. Text before the first section that is more than that section's heading
  (a preamble) belongs to no section: no heading path, ``{}`` as its location, and it joins
  nothing, however short. A document without sections is one segment.
- **Soft cuts.** Inside a segment, a section start with the same heading path (a new PDF page) is the
  strongest cut point the chunker knows, stronger than a blank line.
- **Locations.** :func:`chunk_location` gives each chunk ``{"page": p}`` (the page where it starts)
  with ``"pages": [first, last]`` when it runs over a page break, and ``{"heading": "A > B"}``, the
  heading path of its segment. A document without sections gives ``{}``.
- **Headers.** :func:`contextual_header` is what ``RecursiveChunker(contextual_headers=True)`` embeds
  in front of each chunk: the document's title and the heading path, one per line, then a blank line.

Example:
    >>> from ragkit.types import Document, Section
    >>> text = "# Install\\n## From source\\nRun make.\\n# Usage\\nCall it."
    >>> doc = Document(text=text, sections=[
    ...     Section(start=0, end=10, headings=("Install",)),
    ...     Section(start=10, end=34, headings=("Install", "From source")),
    ...     Section(start=35, end=52, headings=("Usage",))])
    >>> [(text[s.start:s.end].strip(), heading_path(s.headings)) for s in segments(doc)]
    [('# Install\\n## From source\\nRun make.', 'Install > From source'), ('# Usage\\nCall it.', 'Usage')]
    >>> contextual_header("Manual", ("Install", "From source"))
    'Manual\\nInstall > From source\\n\\n'
"""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ragkit.types import Document, Section

__all__ = [
    "HEADING_SEPARATOR",
    "Segment",
    "chunk_location",
    "contextual_header",
    "fit_header",
    "heading_path",
    "segments",
]

logger = logging.getLogger("ragkit")

HEADING_SEPARATOR = " > "
"""What joins the headings of a path in :attr:`Chunk.location` ``["heading"]`` and in headers."""


@dataclass(frozen=True)
class Segment:
    """A stretch of a document that no chunk crosses out of: ``text[start:end]`` under one heading path.

    Attributes:
        start: the first character (segments tile the text: each starts where the one before ends).
        end: one past the last character.
        headings: the heading path of the text in it (of the subsection, when a parent heading
            joined it).
        cuts: offsets inside the segment where a section starts (a page break): the chunker's
            strongest cut points.
    """

    start: int
    end: int
    headings: tuple[str, ...] = ()
    cuts: tuple[int, ...] = ()


def heading_path(headings: Sequence[str]) -> str:
    """A heading path as one line, outermost first: ``"Install > From source"``.

    Example:
        >>> heading_path(("Install", "From source")), heading_path(())
        ('Install > From source', '')
    """
    return HEADING_SEPARATOR.join(" ".join(h.split()) for h in headings)


def contextual_header(title: Any, headings: Sequence[str]) -> str:
    """The header embedded in front of a chunk: the title, the heading path, then a blank line.

    Each part is on one line (whitespace collapsed) and left out when empty; a title that is not a
    ``str`` is left out, and so is a title that the heading path already starts with (a Word
    document's Title style and a Markdown or HTML page's h1 are the first heading). No title and no
    headings: ``""``.

    Example:
        >>> contextual_header("A study of  indexing", ())
        'A study of indexing\\n\\n'
        >>> contextual_header(None, ("Usage",))
        'Usage\\n\\n'
        >>> contextual_header("Guide", ("Guide", "Install"))
        'Guide > Install\\n\\n'
        >>> contextual_header("", ())
        ''
    """
    name = " ".join(title.split()) if isinstance(title, str) else ""
    if headings and name == " ".join(str(headings[0]).split()):
        name = ""
    lines = [name, heading_path(headings)]
    kept = [line for line in lines if line]
    return "\n".join(kept) + "\n\n" if kept else ""


def fit_header(header: str, count: Callable[[str], int], most: int) -> str:
    """``header`` cut at its end so that ``count(header) <= most``; ``""`` when nothing of it fits.

    The blank line that ends a header stays; the chunker gives a header at most half of its
    ``chunk_size``, so the text always keeps the other half.

    Example:
        >>> fit_header("A long title\\n\\n", len, 10)
        'A long\\n\\n'
        >>> fit_header("Short\\n\\n", len, 8), fit_header("Title\\n\\n", len, 2)
        ('Short\\n\\n', '')
    """
    if not header or count(header) <= most:
        return header
    core = header.removesuffix("\n\n")

    def fits(n: int) -> bool:
        kept = core[:n].rstrip()
        return bool(kept) and count(kept + "\n\n") <= most

    lo, hi = 0, len(core)  # the longest prefix that fits, by bisection (counts grow with the prefix)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    if not fits(lo):
        return ""
    inside_word = 0 < lo < len(core) and not core[lo - 1].isspace() and not core[lo].isspace()
    if inside_word and " " in core[:lo].strip():
        lo = core[:lo].rstrip().rindex(" ")  # end at a word: "Install > Fr" helps no one
    kept = core[:lo].rstrip()
    logger.debug("contextual header cut to %d of %d characters to fit %d", len(kept), len(core), most)
    return kept + "\n\n"


def _extends(child: tuple[str, ...], parent: tuple[str, ...]) -> bool:
    """Whether ``child`` is a subsection's path of ``parent``; text under no heading (``()``, the text
    before the first heading) is no one's parent."""
    return bool(parent) and len(child) > len(parent) and child[: len(parent)] == parent


def _letters(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def _is_heading(text: str, headings: tuple[str, ...]) -> bool:
    """Whether ``text`` holds only the words of the last heading of ``headings`` (or of all of them)
    and markup: ``# Install``, a setext or reST title and its underline, however many lines."""
    letters = _letters(text)
    return bool(headings) and letters in (_letters(headings[-1]), _letters("".join(headings)))


def _heading_only(own: str, headings: tuple[str, ...]) -> bool:
    """Whether a segment's text (stripped) counts as only its heading: a single line (a segment
    starts at its heading, so one line is the heading line, ``# Install``), or its heading's words
    and markup over several lines (a setext or reST title with its underline)."""
    return len(own.splitlines()) <= 1 or _is_heading(own, headings)


def segments(doc: Document) -> list[Segment]:
    """The segments of a document: where its heading path changes, no chunk crosses.

    Example:
        >>> from ragkit.types import Document, Section
        >>> segments(Document(text="plain text"))
        [Segment(start=0, end=10, headings=(), cuts=())]
        >>> pages = Document(text="page one\\n\\npage two", sections=[
        ...     Section(start=0, end=8, page=1), Section(start=10, end=18, page=2)])
        >>> segments(pages)
        [Segment(start=0, end=18, headings=(), cuts=(8,))]
    """
    text = doc.text
    sections = [s for s in doc.sections if s.start < s.end]
    if not sections:
        return [Segment(0, len(text))]
    # Blocks tile the text: each section with the uncovered text before it (a heading line a loader
    # left out of both sections around it); text before the first section is a block of its own
    # (under no heading), unless it is only the first section's heading.
    starts = [s.start for s in sections]
    headings = [s.headings for s in sections]
    before = text[: starts[0]]
    if before.strip() and not _is_heading(before, headings[0]):
        starts, headings = [0, *starts], [(), *headings]
    else:
        starts[0] = 0
    for n in range(len(sections) - 1, 0, -1):
        starts[len(starts) - len(sections) + n] = sections[n - 1].end
    ends = [*starts[1:], len(text)]
    grouped: list[Segment] = []
    for start, end, path in zip(starts, ends, headings, strict=True):
        if grouped and grouped[-1].headings == path:  # the same path: a soft cut (a page break)
            last = grouped[-1]
            grouped[-1] = Segment(last.start, end, path, (*last.cuts, start))
        else:
            grouped.append(Segment(start, end, path))
    return _join_parents(text, grouped)


def _join_parents(text: str, parts: list[Segment]) -> list[Segment]:
    """Join a segment that is only its heading (no text of its own) to the next one when that is one
    of its subsections; the joined segment takes the subsection's path. Not a cut: the heading stays
    with the text under it. Text before the first heading is under no heading and joins nothing."""
    joined: list[Segment] = []
    carried: Segment | None = None
    for n, part in enumerate(parts):
        own = text[part.start : part.end].strip()
        if carried is not None:
            part = Segment(carried.start, part.end, part.headings, (*carried.cuts, *part.cuts))
            carried = None
        heading_only = _heading_only(own, parts[n].headings)
        if heading_only and n + 1 < len(parts) and _extends(parts[n + 1].headings, parts[n].headings):
            carried = part
        else:
            joined.append(part)
    return joined


def chunk_location(sections: Sequence[Section], start: int, end: int, headings: Sequence[str]) -> dict:
    """Where a chunk ``text[start:end]`` came from: its page(s) and the heading path of its segment.

    ``{"page": p}`` is the page of the first section with a page that the chunk overlaps;
    ``"pages": [first, last]`` is added when it overlaps more than one page. ``{"heading": path}``
    is :func:`heading_path` of ``headings`` when there are any. Neither: ``{}``.

    Example:
        >>> from ragkit.types import Section
        >>> pages = [Section(start=0, end=8, page=1), Section(start=10, end=18, page=2)]
        >>> chunk_location(pages, 4, 14, ()), chunk_location(pages, 0, 8, ("Intro",))
        ({'page': 1, 'pages': [1, 2]}, {'page': 1, 'heading': 'Intro'})
        >>> chunk_location([], 0, 5, ())
        {}
    """
    location: dict[str, Any] = {}
    starts = [s.start for s in sections]
    lo = max(bisect_right(starts, start) - 1, 0)
    hi = bisect_left(starts, end)
    pages = [s.page for s in sections[lo:hi] if s.page is not None and s.start < end and s.end > start]
    if pages:
        location["page"] = pages[0]
        if pages[-1] != pages[0]:
            location["pages"] = [pages[0], pages[-1]]
    path = heading_path(headings)
    if path:
        location["heading"] = path
    return location
