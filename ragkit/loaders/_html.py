"""HTML: the main content of a page as text, with its heading structure, parsed with lxml.

Page furniture is dropped first, from the whole body: ``nav``, ``aside``, ``footer``, ``script``,
``style``, ``noscript``, ``template``, embedded media, form controls (``input``, ``select``,
``textarea``, ``label``; the text of a ``form`` or ``button`` is kept: ASP.NET wraps whole pages in
a form, accordions put questions in buttons), the ARIA landmarks ``navigation``, ``banner``,
``contentinfo``, ``complementary`` and ``search``, hidden elements (not ``hidden="until-found"``,
a closed accordion's text), the page ``<header>`` (one not inside ``main``, ``article`` or
``section`` that is a child of the body, holds no heading, or is named ``site-header`` or
``masthead``; a post's header with its title is kept), and elements whose class or id names page
furniture. A name counts only as a whole: after placement words (``site-``,
``main-``, ``top-``) a furniture word (cookie, consent, newsletter, share, social, breadcrumbs,
sidebar, related, ad, popup, modal, nav, navbar, menu) followed only by furniture words
(``cookie-banner``, ``share-buttons``, ``main-nav``), never ``related-work``,
``content-sidebar-wrap`` or ``informed-consent``. A name never drops a heading, ``main``,
``article`` or ``section``, an element that holds the page's h1, or an id made from the element's
own heading (``<div id="cookies"><h2>Cookies</h2>``); a nav or menu name drops only an element whose
words are mostly links.

Then the content is the remaining page's one ``<main>`` (or ``role="main"``), else its one
``<article>`` (articles nested in an article, comments say, count as part of it), else the closest
element holding all its articles, else the ``<body>``.

Paragraphs and other blocks are separated by a blank line; list items (``- `` or ``1. ``, numbered
from ``<ol start>``) and table rows (cells separated by tabs) by one newline; ``<pre>`` keeps its
line breaks (a ``<br>`` in it too) and spaces, elsewhere runs of whitespace become one space.
``h1``-``h6`` open sections. A layout table (a cell holds a heading or a nested table, or a one-row
or one-column table's cell holds paragraphs or lists) is read as blocks, cell after cell.

The encoding is the byte-order mark's, else ``<meta charset>``'s (a UTF-16 label there means UTF-8,
as the HTML standard says), else UTF-8; bad bytes are U+FFFD, counted in ``decode_errors``.

An extractor of its own rather than trafilatura or readability-lxml, on ``benchmarks/loaders.py``:
on three page layouts with known content it reproduced every word and nothing else (trafilatura
dropped a byline, readability let share links through, and both let a cookie banner through on a
long page), and it was the fastest of the three (2-17 times trafilatura's speed, 1.6-3 times
readability's, on that page and on real ones). It also keeps the heading structure, which both
flatten to text.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any

from ragkit.errors import CorruptFileError
from ragkit.loaders._common import TextBuilder, clean_text, decode, tidy
from ragkit.types import Section

_DROP_TAGS = {
    "script", "style", "noscript", "template", "svg", "math", "iframe", "object", "embed", "canvas",
    "video", "audio", "map", "input", "select", "option", "optgroup", "datalist", "textarea", "label",
    "nav", "aside", "footer", "dialog", "head", "link", "meta", "title",
}  # fmt: skip
_DROP_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "dialog", "alertdialog",
               "menu", "menubar", "toolbar"}  # fmt: skip
# Class and id names, token by token (split at "-" and "_"): a name is boilerplate when, after
# optional placement words ("site-", "main-", "top-"), it starts with a furniture word and every
# further word is furniture too ("cookie-banner", "social-share-buttons", "sidebar", "main-nav"),
# never when a word of its own follows ("related-work", "content-sidebar-wrap", "informed-consent").
_PLACES = {"site", "main", "page", "global", "primary", "secondary", "top", "bottom", "left", "right",
           "mobile", "desktop", "js", "header", "footer", "sticky", "fixed"}  # fmt: skip
_FURNITURE = {
    "cookie", "cookies", "consent", "gdpr", "newsletter", "subscribe", "share", "sharing", "social",
    "breadcrumb", "breadcrumbs", "sidebar", "related", "advert", "advertisement", "ads", "ad", "popup",
    "modal", "skip", "nav", "navbar", "navigation", "menu", "topbar",
}  # fmt: skip
_FURNITURE_PARTS = _FURNITURE | {
    "banner", "notice", "bar", "box", "buttons", "button", "links", "link", "icons", "widget",
    "widgets", "area", "container", "wrapper", "wrap", "block", "panel", "list", "posts", "articles",
    "items", "signup", "form", "overlay", "dialog", "popin", "toggle", "trail", "slot", "unit",
    "content", "inner", "module", "to", "tools", "tool", "toolbar", "group", "row", "holder",
    "primary", "secondary", "left", "right", "main", "top", "bottom",
}  # fmt: skip
_NAVIGATION = {"nav", "navbar", "navigation", "menu", "topbar", "breadcrumb", "breadcrumbs"}
_NAME_PARTS = re.compile(r"[-_]+")
_SITE_HEADER = {"site-header", "masthead", "global-header", "site-head", "siteheader"}
_NEVER_NAMED = {"h1", "h2", "h3", "h4", "h5", "h6", "main", "article", "section", "body", "html"}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_BLOCKS = {
    "p", "div", "section", "article", "main", "header", "ul", "ol", "dl", "dt", "dd", "blockquote",
    "figure", "figcaption", "hr", "address", "details", "summary", "center", "body", "html", "caption",
    "fieldset", "legend", "hgroup", "search", "form",
}  # fmt: skip
_LAYOUT_CELL = {"td", "th", "tr", "tbody", "thead", "tfoot"}  # blocks inside a layout table
_SPACED = {"br", "li", "tr", "td", "th", "table", "pre"}  # elements that separate words in a flat text
_ANY_HEADING = ".//h1 | .//h2 | .//h3 | .//h4 | .//h5 | .//h6"
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([-\w.:]+)""", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_BREAK = "\x00"  # stands for <br> inside a block: text nodes never hold NUL (clean_text drops it)
_OWN_CELLS = "./tr/td | ./tr/th | ./*[self::thead or self::tbody or self::tfoot]/tr/*[self::td or self::th]"


def load_html(path: Path, data: bytes) -> tuple[str, tuple[Section, ...], dict[str, Any]]:
    """The page's main content, its sections, and metadata ``title`` (``<title>``, else the first h1).

    ``decode_errors`` is in the metadata when bytes were not valid in the page's encoding.
    """
    from ragkit._deps import require

    lxml_html = require("lxml.html", purpose="reading HTML files")
    text, errors = _decode_html(data, path)
    metadata: dict[str, Any] = {"format": "html"}
    if errors:
        metadata["decode_errors"] = errors
    if not text.strip():
        return "", (), metadata
    # huge_tree: libxml2 otherwise drops text nodes over 10 MB and pages nested over 256 deep, silently.
    parser = lxml_html.HTMLParser(huge_tree=True)
    try:
        root = lxml_html.document_fromstring(_XML_DECLARATION.sub("", text), parser=parser)
    except lxml_html.etree.ParserError:  # nothing but comments or a doctype: no content
        return "", (), metadata
    fatal = [e.message for e in parser.error_log if e.level_name == "FATAL"]
    if fatal:  # a limit even huge_tree has (2,048 levels of nesting): the tree is cut, do not guess
        raise CorruptFileError(path, f"the HTML parser gave up: {fatal[0]}")
    title = tidy(" ".join(root.xpath("/html/head/title//text()")))  # not an <svg> icon's <title>
    body = root.find("body")
    body = body if body is not None else root
    _strip_boilerplate(body)  # first: a <main> in a <template> or an <article> in an <aside> is no root
    content = _content_root(body)
    if not title:
        first_h1 = content.find(".//h1")
        title = _flat_text(first_h1) if first_h1 is not None else ""
    text, sections = _Extractor().run(content)
    if title:
        metadata["title"] = title
    return text, sections, metadata


def _decode_html(data: bytes, path: Path) -> tuple[str, int]:
    # A byte-order mark wins, then <meta charset> in the first 4 KiB, then UTF-8 (with U+FFFD).
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:3] == b"\xef\xbb\xbf":
        return decode(data, path)
    m = _META_CHARSET.search(data[:4096])
    if m:
        try:
            encoding = codecs.lookup(m.group(1).decode("ascii")).name
        except LookupError:
            encoding = "utf-8"  # an unknown charset name: UTF-8 is the best guess
        # The HTML standard: a UTF-16 label in <meta> means UTF-8 (the page was read as ASCII to find
        # it, so it cannot be UTF-16); UTF-32 is no web encoding at all.
        if encoding.startswith(("utf-16", "utf-32")):
            encoding = "utf-8"
        return decode(data, path, encoding)
    return decode(data, path)


def _content_root(body: Any) -> Any:
    """The one ``<main>``, else the one ``<article>`` or the closest container of several, else body."""
    mains = body.xpath(".//main | .//*[@role='main']")
    if len(mains) == 1:
        return mains[0]
    articles = body.xpath(".//article[not(ancestor::article)]")  # a comment's article is the post's
    if len(articles) == 1:
        return articles[0]
    if articles:
        common = set(articles[0].iterancestors())
        for article in articles[1:]:
            common &= set(article.iterancestors())
        return next(a for a in articles[0].iterancestors() if a in common)  # body at worst
    return body


def _strip_boilerplate(content: Any) -> None:
    from lxml import etree

    doomed = list(content.iter(etree.Comment, etree.ProcessingInstruction))  # iterwalk skips them
    walker = etree.iterwalk(content, events=("start",))
    for _, el in walker:
        if not isinstance(el.tag, str):
            continue
        if _is_boilerplate(el) or (el.tag == "header" and _is_page_header(el)):
            doomed.append(el)
            walker.skip_subtree()  # what is inside goes with it: no need to judge it
    for el in doomed:
        if el.getparent() is not None:
            el.drop_tree()  # keeps the tail text, which belongs to the parent


def _is_page_header(header: Any) -> bool:
    # The site's header: not inside main, article or section, and a child of the body, a header
    # without a heading, or one named so; a post's <header> in a <div> holds its title: kept.
    if any(a.tag in ("main", "article", "section") for a in header.iterancestors()):
        return False
    parent = header.getparent()
    if parent is None or parent.tag in ("body", "html") or not header.xpath(_ANY_HEADING):
        return True
    names = f"{header.get('class', '')} {header.get('id', '')}".lower().split()
    return any(name in _SITE_HEADER for name in names)


def _is_boilerplate(el: Any) -> bool:
    if el.tag in _DROP_TAGS:
        return True
    attrs = el.attrib
    if attrs.get("role", "").strip().lower() in _DROP_ROLES:
        return True
    hidden = attrs.get("hidden")  # "until-found": a closed accordion's text, which find-in-page opens
    if (hidden is not None and hidden.strip().lower() != "until-found") or attrs.get(
        "aria-hidden", ""
    ).lower() == "true":
        return True
    if _HIDDEN_STYLE.search(attrs.get("style", "")):
        return True
    if el.tag in _NEVER_NAMED:
        return False
    kinds = [kind for kind in map(_furniture, attrs.get("class", "").split()) if kind]
    el_id = attrs.get("id", "").strip()
    id_kind = _furniture(el_id) if el_id else None
    if id_kind and not _is_title_slug(el, el_id):
        kinds.append(id_kind)
    # A name is only a hint: an element that holds the page's h1 or its article is kept, and a
    # "menu" or "nav" that is not mostly links (a restaurant's menu) is content.
    if not kinds or (all(kind == "navigation" for kind in kinds) and not _mostly_links(el)):
        return False
    return next(el.iter("h1", "main", "article"), None) is None


def _furniture(name: str) -> str | None:
    """``"navigation"`` or ``"furniture"`` when a class or id name names page furniture, else None."""
    parts = [p for p in _NAME_PARTS.split(name.lower()) if p]
    while len(parts) > 1 and parts[0] in _PLACES:
        parts.pop(0)
    if not parts or parts[0] not in _FURNITURE or not all(p in _FURNITURE_PARTS for p in parts[1:]):
        return None
    return "navigation" if parts[0] in _NAVIGATION else "furniture"


def _is_title_slug(el: Any, el_id: str) -> bool:
    # An id made from the element's own heading ("cookies" on a privacy policy's "Cookies" section).
    heading = el.xpath(f"({_ANY_HEADING})[1]")
    return bool(heading) and _slug(heading[0].text_content()) == _slug(el_id)


def _slug(text: str) -> str:
    return re.sub(r"[\W_]+", "-", text.lower()).strip("-")


def _mostly_links(el: Any, limit: int = 2000) -> bool:
    words = 0
    for text in el.itertext():
        words += len(text.split())
        if words > limit:  # no menu is this long; and nested wrappers must not cost their square
            return False
    linked = sum(len(a.text_content().split()) for a in el.iter("a"))
    return linked * 2 >= words


def _is_layout_table(table: Any) -> bool:
    """A table laid out as the page: a cell holds a heading or a nested table, or the table has one
    row or one column and a cell holds paragraphs or lists (a data table's cells may wrap their
    text in ``<p>``, as Word and Google Docs exports do: such a table stays rows of cells)."""
    cells = table.xpath(_OWN_CELLS)
    blocks = f"{_ANY_HEADING} | .//table"
    if any(cell.xpath(blocks) for cell in cells):
        return True
    rows = table.xpath("./tr | ./*[self::thead or self::tbody or self::tfoot]/tr")
    if len(rows) != 1 and len(cells) != len(rows):
        return False
    return any(cell.xpath(".//p | .//ul | .//ol | .//dl | .//blockquote | .//div") for cell in cells)


class _Extractor:
    """Walk the content tree once (iteratively: deep pages must not hit the recursion limit)."""

    def __init__(self) -> None:
        self.builder = TextBuilder()
        self.inline: list[str] = []
        self.prefix = ""  # the marker of the list item whose text is being collected
        self.after_item = False  # the last block was a list item: the next item follows on the next line
        self.counters: list[int | None] = []  # one per open list: the next number, or None for <ul>

    def run(self, content: Any) -> tuple[str, tuple[Section, ...]]:
        from lxml import etree

        walker = etree.iterwalk(content, events=("start", "end"))
        for event, el in walker:
            tag = el.tag
            if event == "start":
                if tag == "table" and _is_layout_table(el):
                    self.flush()  # its cells are read as blocks, like divs
                elif tag in _HEADINGS or tag in ("pre", "table"):
                    self.flush()
                    self.after_item = False
                    if tag == "pre":
                        self.builder.add(_pre_text(el))
                    elif tag == "table":
                        self._table(el)
                    else:
                        self.builder.heading(_HEADINGS[tag], _flat_text(el))
                    walker.skip_subtree()
                else:
                    self._open(el)
                continue
            if tag in _BLOCKS or tag in _LAYOUT_CELL or tag in ("li", "table"):
                self.flush()
                self.prefix = ""  # an empty item leaves no marker behind
            if tag in ("ul", "ol"):
                self.counters.pop()
            elif tag == "br":
                self.inline.append(_BREAK)
            if el is not content and el.tail:
                self.inline.append(clean_text(el.tail))
        self.flush()
        return self.builder.build()

    def _open(self, el: Any) -> None:
        tag = el.tag
        if tag in _BLOCKS or tag in _LAYOUT_CELL:  # a cell here is a layout table's: data tables are skipped
            self.flush()
        if tag in ("ul", "ol"):
            self.counters.append(_list_start(el) if tag == "ol" else None)
        elif tag == "li":
            self.flush()
            number = self.counters[-1] if self.counters else None
            if number is not None and el.get("value", "").strip().lstrip("-").isdigit():
                number = int(el.get("value"))  # <li value="7"> renumbers it and the items after
            self.prefix = "- " if number is None else f"{number}. "
            if number is not None:
                self.counters[-1] = number + 1
        if el.text:
            self.inline.append(clean_text(el.text))

    def flush(self) -> None:
        lines = [tidy(line) for line in "".join(self.inline).split(_BREAK)]
        text = "\n".join(line for line in lines if line)
        self.inline = []
        if text:
            item = bool(self.prefix)
            self.builder.add(self.prefix + text, tight=item and self.after_item)
            self.prefix, self.after_item = "", item

    def _table(self, table: Any) -> None:
        caption = table.find("caption")
        if caption is not None:
            self.builder.add(_flat_text(caption))
        first = True
        # This table's own rows: a table nested in a cell is read as that cell's text.
        for row in table.xpath("./tr | ./thead/tr | ./tbody/tr | ./tfoot/tr"):
            cells = [_flat_text(cell) for cell in row if cell.tag in ("td", "th")]
            line = "\t".join(cells)
            if line.strip():
                self.builder.add(line, tight=not first)
                first = False


def _list_start(ol: Any) -> int:
    start = ol.get("start", "").strip()
    return int(start) if start.lstrip("-").isdigit() else 1


def _pre_text(pre: Any) -> str:
    """A ``<pre>`` as written: its line breaks and spaces, a ``<br>`` inside it a line break too."""
    for br in pre.iter("br"):
        br.tail = "\n" + (br.tail or "")
    return clean_text(pre.text_content()).strip("\n")


def _flat_text(el: Any) -> str:
    """The text of a heading or table cell on one line: blocks and line breaks inside it become spaces."""
    for sub in el.iterdescendants():
        if isinstance(sub.tag, str) and (sub.tag in _BLOCKS or sub.tag in _HEADINGS or sub.tag in _SPACED):
            sub.text = " " + (sub.text or "")
            sub.tail = " " + (sub.tail or "")
    return tidy(clean_text(el.text_content()))
