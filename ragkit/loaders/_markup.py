"""Headings of Markdown and reStructuredText sources, found by scanning lines (no parser needed).

Markdown: ATX (``# Title``) and setext (a paragraph underlined with ``===`` or ``---``) headings, the
CommonMark way: not inside fenced or indented code, HTML blocks or YAML front matter; an underline
after a list item or block quote line is no heading; list items and their indentation are followed.
A heading on the same line as a list or quote marker (``- # Title``, ``> # Title``) is not seen, but
a paragraph after it is no lazy continuation: underlined, it is a heading.
The tests hold the scanner to markdown-it-py on random documents.

reST: a title line underlined (optionally also overlined) with one punctuation character repeated
at least as long as the title; levels follow the order in which adornment styles first appear, as
docutils does.

Both give ``(offset, level, title)`` triples for :func:`~ragkit.loaders._common.sections_from_headings`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_ATX = re.compile(r" {0,3}(#{1,6})(?=[ \t]|$)(.*)")
_ATX_CLOSE = re.compile(r"(?:^|[ \t]+)#+[ \t]*$")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*")
_BREAK = re.compile(r" {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*")
_QUOTE = re.compile(r" {0,3}>")
_QUOTE_MARKERS = re.compile(r"^(?: {0,3}> ?)+")
# The ones that may interrupt a paragraph: a quote, a bullet item with text, an ordered item from 1.
_INTERRUPTS = re.compile(r" {0,3}(?:>|[-+*][ \t]+\S|1[.)](?:[ \t]+\S))")
# HTML blocks (CommonMark kinds 1-6 may interrupt a paragraph, kind 7 may not); no heading inside.
_HTML_INTERRUPTS = re.compile(
    r" {0,3}(?:<(?:script|pre|style|textarea)(?:[\s>]|$)|<!--|<\?|<![A-Za-z]|<!\[CDATA\[|"
    r"</?(?:address|article|aside|base|basefont|blockquote|body|caption|center|col|colgroup|dd|details|"
    r"dialog|dir|div|dl|dt|fieldset|figcaption|figure|footer|form|frame|frameset|h[1-6]|head|header|hr|"
    r"html|iframe|legend|li|link|main|menu|menuitem|nav|noframes|ol|optgroup|option|p|param|search|"
    r"section|summary|table|tbody|td|tfoot|th|thead|title|tr|track|ul)(?:[\s/>]|$))",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r" {0,3}(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)")
_ITEM_PARTS = re.compile(r"( {0,3})([-+*]|\d{1,9}[.)])( *)(.*)")
# CommonMark kinds 1-5 end at a marker, not at a blank line.
_RAW_TAGS = ("script", "pre", "style", "textarea")
_RAW_CLOSERS = tuple(f"</{tag}>" for tag in _RAW_TAGS)  # any of them closes any raw block
_HTML_CLOSERS = [(f"<{tag}", _RAW_CLOSERS) for tag in _RAW_TAGS] + [
    ("<!--", ("-->",)),
    ("<?", ("?>",)),
    ("<![cdata[", ("]]>",)),
    ("<!", (">",)),
]
_HTML_TAG_LINE = re.compile(r" {0,3}</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>[ \t]*")
_RST_ADORNMENT = re.compile(r"([!-/:-@\[-`{-~])\1+[ \t]*")


def _lines(text: str) -> Iterator[tuple[int, str]]:
    offset = 0
    for line in text.split("\n"):
        yield offset, line
        offset += len(line) + 1


def markdown_headings(text: str) -> list[tuple[int, int, str]]:
    """``(offset, level, title)`` of each Markdown heading, in order.

    Example:
        >>> markdown_headings("# A\\n\\n```\\n# not a heading\\n```\\nB\\n-\\n")
        [(0, 1, 'A'), (29, 2, 'B')]
    """
    lines = list(_lines(text))
    headings: list[tuple[int, int, str]] = []
    i = _front_matter_end(lines)
    fence: tuple[str, int] | None = None  # (character, length) of the open code fence
    paragraph: list[tuple[int, str]] = []  # the lines of the open paragraph, which may become a heading
    in_container = False  # in a quote or list item: lazy lines continue it, an underline is no heading
    in_html: tuple[str, ...] | None = None  # in an HTML block: the markers that end it (none: a blank line)
    items: list[int] = []  # the content column of each open list item, outermost first
    empty_item = False  # the last line was a list marker with no text (a blank line then ends it)
    while i < len(lines):
        offset, line = lines[i]
        i += 1
        if fence is not None:
            m = _FENCE.fullmatch(line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= fence[1] and not m.group(2).strip():
                fence = None
            continue
        if in_html is not None:
            if in_html:  # kinds 1-5: the line that holds the closing marker is the block's last
                if any(marker in line.lower() for marker in in_html):
                    in_html = None
                continue
            if line.strip():
                continue  # kinds 6-7 end at a blank line, handled below
        if not line.strip():
            paragraph, in_container, in_html = [], False, None
            if empty_item:
                items.pop()
            empty_item = False
            continue
        empty_item = False
        indent = _indent(line)
        item = _LIST_ITEM.match(line)
        starts_block = (
            _ATX.fullmatch(line)
            or _FENCE.fullmatch(line)
            or _BREAK.fullmatch(line)
            or _HTML_INTERRUPTS.match(line)
            or _QUOTE.match(line)
        )
        if starts_block or not (paragraph or in_container):
            while items and indent < items[-1]:
                items.pop()  # a block that starts left of an item's content closes that item
        m = _FENCE.fullmatch(line)
        if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
            fence, paragraph, in_container = (m.group(1)[0], len(m.group(1))), [], False
            continue
        m = _ATX.fullmatch(line)
        if m:
            title = _ATX_CLOSE.sub("", m.group(2)).strip()
            if title:  # an empty heading ("#") names no section
                headings.append((offset, len(m.group(1)), title))
            paragraph, in_container = [], False
            continue
        if paragraph and _SETEXT.fullmatch(line):
            title = " ".join(part.strip() for _, part in paragraph)
            headings.append((paragraph[0][0], 1 if line.strip()[0] == "=" else 2, title))
            paragraph = []
            continue
        if _BREAK.fullmatch(line):
            paragraph, in_container = [], False
            continue
        if paragraph or in_container or items:
            # A paragraph's next line, a lazy continuation, another item or quote line, or an open
            # item's indented content: only an HTML block, a quote or an item may break in.
            if _HTML_INTERRUPTS.match(line) and not (items and not paragraph and not in_container):
                paragraph, in_container, in_html = [], False, _html_end(line)
            elif item and (not paragraph or _INTERRUPTS.match(line)):
                paragraph = []
                empty_item = _open_item(items, line, indent)
                in_container = not empty_item  # an empty item has no text for lazy lines to continue
            elif not paragraph and not in_container and _QUOTE.match(line):
                in_container = _quote_continues(line)
            elif paragraph and _INTERRUPTS.match(line):
                paragraph, in_container = [], _quote_continues(line) if _QUOTE.match(line) else True
            elif paragraph:
                paragraph.append((offset, line))
            else:
                in_container = _quote_continues(line) if _QUOTE.match(line) else True
            continue
        if indent >= 4:
            continue  # indented code: only a paragraph's continuation lines may be indented this far
        if _HTML_INTERRUPTS.match(line) or _HTML_TAG_LINE.fullmatch(line):
            in_html = _html_end(line)
        elif item:
            empty_item = _open_item(items, line, indent)
            in_container = not empty_item
        elif _QUOTE.match(line):
            in_container = _quote_continues(line)
        else:
            paragraph = [(offset, line)]
    return headings


def _quote_continues(line: str) -> bool:
    """Whether a quote line leaves a paragraph open that a next, unquoted line lazily continues.

    A quoted heading, rule or code fence, or a bare ``>``, does not: a line after it starts a new
    block outside the quote, which an underline can make a setext heading.
    """
    rest = _QUOTE_MARKERS.sub("", line, count=1)
    if not rest.strip():
        return False
    return not (_ATX.fullmatch(rest) or _BREAK.fullmatch(rest) or _FENCE.fullmatch(rest))


def _indent(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip())


def _open_item(items: list[int], line: str, indent: int) -> bool:
    """Record the list item that ``line`` opens; True when the item has no text on this line."""
    while items and indent < items[-1]:
        items.pop()
    m = _ITEM_PARTS.match(line.expandtabs(4))
    assert m is not None  # the caller matched _LIST_ITEM
    column, spaces = len(m.group(1)) + len(m.group(2)), len(m.group(3))
    empty = not m.group(4).strip()
    items.append(column + (1 if empty or spaces > 4 else spaces))
    return empty


def _html_end(line: str) -> tuple[str, ...] | None:
    """The markers that end the HTML block ``line`` opens (none: the next blank line ends it).

    None when the block ends on this very line.
    """
    lowered = line.lower().lstrip()
    for opener, closers in _HTML_CLOSERS:
        if lowered.startswith(opener):
            rest = lowered[len(opener) :]
            return None if any(marker in rest for marker in closers) else closers
    return ()


def _front_matter_end(lines: list[tuple[int, str]]) -> int:
    """Index of the first line after YAML front matter (``---`` ... ``---`` at the very top), else 0."""
    if not lines or lines[0][1].rstrip() != "---":
        return 0
    for i in range(1, len(lines)):
        if lines[i][1].rstrip() in ("---", "..."):
            return i + 1
    return 0


def rst_headings(text: str) -> list[tuple[int, int, str]]:
    """``(offset, level, title)`` of each reStructuredText section title, in order.

    Example:
        >>> rst_headings("=====\\nGuide\\n=====\\n\\nInstall\\n-------\\n")
        [(0, 1, 'Guide'), (19, 2, 'Install')]
    """
    lines = list(_lines(text))
    styles: list[tuple[str, bool]] = []  # adornment (character, overlined) in order of first use
    headings: list[tuple[int, int, str]] = []
    i = 0
    while i < len(lines):
        found = _rst_title(lines, i)
        if found is None:
            i += 1
            continue
        title, style, used = found
        if style not in styles:
            styles.append(style)
        headings.append((lines[i][0], styles.index(style) + 1, title))
        i += used
    return headings


def _rst_title(lines: list[tuple[int, str]], i: int) -> tuple[str, tuple[str, bool], int] | None:
    """The title starting at line ``i``: its text, adornment style and number of lines, or None."""
    previous_blank = i == 0 or not lines[i - 1][1].strip()
    if not previous_blank or i + 1 >= len(lines):
        return None
    first, second = lines[i][1], lines[i + 1][1]
    over = _RST_ADORNMENT.fullmatch(first)
    if over and i + 2 < len(lines):
        under = _RST_ADORNMENT.fullmatch(lines[i + 2][1])
        title = second.strip()
        if (
            under
            and under.group(1) == over.group(1)
            and title
            and not _RST_ADORNMENT.fullmatch(second)
            and len(first.rstrip()) >= len(title)
        ):
            return title, (over.group(1), True), 3
    if over or not first.strip() or first[0].isspace():
        return None
    under = _RST_ADORNMENT.fullmatch(second)
    if under and len(second.rstrip()) >= len(first.rstrip()):
        return first.strip(), (under.group(1), False), 2
    return None
