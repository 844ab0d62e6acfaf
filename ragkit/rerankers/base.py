"""The ``Reranker`` protocol and :func:`rerank`, the helper built on it.

Optional beyond ``score``: ``token_counts(query, documents) -> list[int]``, the tokens each (query,
document) prompt takes as the model reads it, which ``ragkit serve`` budgets batches and caps request
costs with (without it: the reranker's ``count_tokens``, else characters / 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ragkit.embedders.base import check_texts
from ragkit.errors import InvalidInputError
from ragkit.types import Hit, check_text

__all__ = ["Reranker", "rerank"]


@runtime_checkable
class Reranker(Protocol):
    """Anything that scores documents against a query; higher means more relevant.

    Example:
        >>> import numpy as np
        >>> class Overlap:
        ...     def score(self, query, documents):
        ...         q = set(query.split())
        ...         return np.float32([len(q & set(d.split())) for d in documents])
        >>> isinstance(Overlap(), Reranker)
        True
    """

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray: ...


def rerank(
    reranker: Reranker, query: str, hits_or_texts: Sequence[Hit] | Sequence[str], *, k: int | None = None
) -> list[Hit]:
    """Score candidates with ``reranker`` and return the best ``k`` as hits, best first.

    Hits keep their first-stage scores and get ``rerank_score`` (and ``score``) set; plain strings
    become hits whose ``doc_id`` is their position in the input.

    Example:
        >>> import numpy as np
        >>> class Length:
        ...     def score(self, query, documents):
        ...         return np.float32([len(d) for d in documents])
        >>> [h.text for h in rerank(Length(), "q", ["a", "abc", "ab"], k=2)]
        ['abc', 'ab']
    """
    check_text(query, "query")
    if k is not None and (not isinstance(k, int) or k < 1):
        raise InvalidInputError(f"k must be a positive int or None, got {k!r}")
    items = list(hits_or_texts)
    if all(isinstance(h, Hit) for h in items):
        hits = [h.model_copy() for h in items]  # type: ignore[union-attr]
    else:
        texts = check_texts(items, "hits_or_texts")
        hits = [
            Hit(id=f"{i}#0", doc_id=str(i), text=t, start=0, end=len(t), score=0.0)
            for i, t in enumerate(texts)
        ]
    if not hits:
        return []
    scores = np.asarray(reranker.score(query, [h.text for h in hits]), dtype=np.float32)
    if scores.shape != (len(hits),):
        raise InvalidInputError(f"reranker returned shape {scores.shape} for {len(hits)} documents")
    # Stable sort: ties keep the first-stage order.
    order = np.argsort(-scores, kind="stable")[: k or len(hits)]
    out = []
    for rank, i in enumerate(order, start=1):
        hit = hits[int(i)]
        hit.score = hit.rerank_score = float(scores[i])
        hit.rank = rank
        out.append(hit)
    return out
