"""How hits look: a short ``repr`` in a terminal, a compact table in Jupyter, records for pandas.

:class:`~ragkit.SearchResults` and :class:`~ragkit.Hit` call these; so do the notebooks. Nothing here
imports pandas or matplotlib until a function that needs them is called.

A hit's ``location`` (where in its document the chunk came from) is shown as a short label
(:func:`location_label`: ``p. 3``, ``Install > From source``) in the repr and the HTML table, and
kept as the dict itself in the records. The contextual ``header`` is not shown: it is derived from
the document's title and the location, and stays on the hit (``hit.header``).

Example:
    >>> from ragkit import Hit, SearchResults
    >>> hit = Hit(id="a#0", doc_id="a", text="Paris is the capital of France.", start=0, end=31,
    ...           score=0.8123, rank=1, dense_score=0.8123)
    >>> print(results_repr(SearchResults([hit], query="capital?", timings={"total": 0.0123})))
    SearchResults('capital?': 1 hit, 12.3 ms)
       1. 0.8123  a#0  Paris is the capital of France.
    >>> hit_records([hit])[0]["dense_score"]
    0.8123
    >>> hit.model_copy(update={"location": {"page": 3}})
    Hit(rank=1, score=0.8123, dense_score=0.8123, id='a#0', location='p. 3', text='Paris is the capital of…')
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["RECORD_KEYS", "hit_records", "hit_repr", "hits_html", "location_label", "results_repr", "snippet"]

_STAGES = ("dense_score", "lexical_score", "fused_score", "rerank_score")
_REPR_ROWS = 10  # hits shown by repr(); the rest are counted
#: The keys of :func:`hit_records` (and the columns of ``SearchResults.to_pandas()``), in order.
RECORD_KEYS = ("rank", "id", "doc_id", "score", *_STAGES, "start", "end", "text", "metadata", "location")


def snippet(text: str, width: int = 60) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis.

    Example:
        >>> snippet("a  b\\n c " * 20, width=12)
        'a b c a b c…'
    """
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def location_label(location: Mapping[str, Any]) -> str:
    """A chunk's location in a few words: its page or pages, then its heading path, then any other key.

    ``page`` (an int) reads ``p. 3``; ``pages`` (a list of ints) ``pp. 3-4``; ``heading`` (a str)
    as it is; other keys as ``key=value``. An empty location is ``""``.

    Example:
        >>> location_label({"page": 3, "pages": [3, 4], "heading": "Install > From source"})
        'pp. 3-4, Install > From source'
        >>> location_label({})
        ''
    """
    parts: list[str] = []
    shown: set[str] = set()
    page, pages, heading = location.get("page"), location.get("pages"), location.get("heading")
    if isinstance(pages, list) and pages and all(isinstance(p, int) for p in pages):
        # The chunker writes "page" (the first) beside "pages" for a chunk across pages: one label.
        first, last = min(pages), max(pages)
        parts.append(f"p. {first}" if first == last else f"pp. {first}-{last}")
        shown.update(("pages", "page") if page == first else ("pages",))
    elif isinstance(page, int) and not isinstance(page, bool):
        parts.append(f"p. {page}")
        shown.add("page")
    if isinstance(heading, str):
        parts.append(heading)
        shown.add("heading")
    for key, value in location.items():
        if key not in shown:
            parts.append(f"{key}={json.dumps(value, ensure_ascii=False, default=str)}")
    return ", ".join(parts)


def hit_repr(hit: Any) -> str:
    """``Hit(rank=..., score=..., <each stage that scored it>, id=..., location=..., text=...)``;
    ``location`` only when the hit has one.

    Example:
        >>> from ragkit import Hit
        >>> hit_repr(Hit(id="a#0", doc_id="a", text="x", start=0, end=1, score=0.5, rank=1))
        "Hit(rank=1, score=0.5000, id='a#0', text='x')"
    """
    stages = "".join(f", {name}={value:.4f}" for name in _STAGES if (value := getattr(hit, name)) is not None)
    where = f", location={snippet(label, 40)!r}" if (label := location_label(hit.location)) else ""
    text = snippet(hit.text, 24 if where else 40)
    return f"Hit(rank={hit.rank}, score={hit.score:.4f}{stages}, id={hit.id!r}{where}, text={text!r})"


def hit_records(hits: Iterable[Any]) -> list[dict[str, Any]]:
    """One plain dict per hit (:data:`RECORD_KEYS`): rank, ids, scores of every stage, offsets, text,
    metadata and location (the dict, ``{}`` when the chunk has none).

    Example:
        >>> hit_records([])
        []
    """
    return [{key: getattr(h, key) for key in RECORD_KEYS} for h in hits]


def results_repr(results: Any) -> str:
    """The query, the hit count and the total time, then one line per hit (at most ten).

    Example:
        >>> from ragkit import SearchResults
        >>> results_repr(SearchResults([], query="q"))
        "SearchResults('q': 0 hits)"
    """
    total = results.timings.get("total")
    count = f"{len(results)} hit" + ("" if len(results) == 1 else "s")
    head = f"SearchResults({results.query!r}: {count}" + (f", {total * 1000:.1f} ms)" if total else ")")
    shown = results[:_REPR_ROWS]
    width = max((len(h.id) for h in shown), default=0)
    labels = [snippet(location_label(h.location), 24) for h in shown]
    where = max((len(label) for label in labels), default=0)
    lines = [head]
    for hit, label in zip(shown, labels, strict=True):
        place = (f"[{label}]" if label else "").ljust(where + 2) + "  " if where else ""
        text = snippet(hit.text, 60 - (where + 4 if where else 0))
        lines.append(f"  {hit.rank:>2}. {hit.score:.4f}  {hit.id:<{width}}  {place}{text}")
    if len(results) > _REPR_ROWS:
        lines.append(f"  ... {len(results) - _REPR_ROWS} more")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return html.escape(snippet(json.dumps(value, ensure_ascii=False, default=str), 60))
    return html.escape(str(value))


def hits_html(
    hits: Sequence[Any], *, query: str | None = None, timings: dict[str, float] | None = None
) -> str:
    """An HTML table of hits for Jupyter: rank, score, each stage's score that any hit has, ids,
    offsets, the location (when any hit has one), the start of the text and the metadata.
    Everything is escaped.

    Example:
        >>> "<table" in hits_html([], query="q")
        True
    """
    stages = [s for s in _STAGES if any(getattr(h, s) is not None for h in hits)]
    located = any(h.location for h in hits)
    header = ["rank", "score", *(s.removesuffix("_score") for s in stages), "id", "span"]
    header += ["location"] * located + ["text", "metadata"]
    rows = []
    for h in hits:
        cells = [h.rank, h.score, *(getattr(h, s) for s in stages), h.id, f"{h.start}:{h.end}"]
        cells += [snippet(location_label(h.location), 60)] * located
        row = "".join(f"<td>{_cell(c)}</td>" for c in cells)
        row += f'<td style="text-align:left">{html.escape(snippet(h.text, 120))}</td>'
        row += f'<td style="text-align:left">{_cell(h.metadata or None)}</td>'
        rows.append(f"<tr>{row}</tr>")
    caption = ""
    if query is not None:
        total = (timings or {}).get("total")
        took = f", {total * 1000:.1f} ms" if total else ""
        caption = f"<caption>{html.escape(query)}: {len(hits)} hits{took}</caption>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
