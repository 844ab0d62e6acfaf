"""How hits look: a short ``repr`` in a terminal, a compact table in Jupyter, records for pandas.

:class:`~ragkit.SearchResults` and :class:`~ragkit.Hit` call these; so do the notebooks. Nothing here
imports pandas or matplotlib until a function that needs them is called.

Example:
    >>> from ragkit import Hit, SearchResults
    >>> hit = Hit(id="a#0", doc_id="a", text="Paris is the capital of France.", start=0, end=31,
    ...           score=0.8123, rank=1, dense_score=0.8123)
    >>> print(results_repr(SearchResults([hit], query="capital?", timings={"total": 0.0123})))
    SearchResults('capital?': 1 hit, 12.3 ms)
       1. 0.8123  a#0  Paris is the capital of France.
    >>> hit_records([hit])[0]["dense_score"]
    0.8123
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["hit_records", "hits_html", "results_repr", "snippet"]

_STAGES = ("dense_score", "lexical_score", "fused_score", "rerank_score")
_REPR_ROWS = 10  # hits shown by repr(); the rest are counted


def snippet(text: str, width: int = 60) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis.

    Example:
        >>> snippet("a  b\\n c " * 20, width=12)
        'a b c a b c…'
    """
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def hit_records(hits: Iterable[Any]) -> list[dict[str, Any]]:
    """One plain dict per hit: rank, ids, scores of every stage, offsets, text and metadata.

    Example:
        >>> hit_records([])
        []
    """
    keys = ("rank", "id", "doc_id", "score", *_STAGES, "start", "end", "text", "metadata")
    return [{key: getattr(h, key) for key in keys} for h in hits]


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
    ids = [h.id for h in results[:_REPR_ROWS]]
    width = max((len(i) for i in ids), default=0)
    lines = [head]
    for hit in results[:_REPR_ROWS]:
        lines.append(f"  {hit.rank:>2}. {hit.score:.4f}  {hit.id:<{width}}  {snippet(hit.text)}")
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
    offsets, the start of the text and the metadata. Everything is escaped.

    Example:
        >>> "<table" in hits_html([], query="q")
        True
    """
    stages = [s for s in _STAGES if any(getattr(h, s) is not None for h in hits)]
    header = ["rank", "score", *(s.removesuffix("_score") for s in stages), "id", "span", "text", "metadata"]
    rows = []
    for h in hits:
        cells = [h.rank, h.score, *(getattr(h, s) for s in stages), h.id, f"{h.start}:{h.end}"]
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
