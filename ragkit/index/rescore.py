"""Exact rescoring: a compressed index proposes candidates, the exact float32 vectors rank them.

A compressed index (:class:`~ragkit.index.FaissIndex` with ``compression="int8"`` or ``"pq"``)
scores its codes, not the vectors. :func:`search_rescored` asks it for ``k * depth`` candidates per
query (the filter applied before that cut), reads their float32 vectors through ``vectors_of`` (the
local backend passes its store's), and keeps the ``k`` best by exact cosine. The returned scores are
therefore exact; what compression can cost is recall (a true neighbour that the codes rank below
the ``k * depth`` cut).

Example:
    >>> import numpy as np
    >>> xb = np.float32([[1, 0], [0.6, 0.8], [0, 1]])
    >>> candidates = np.array([[2, 1, 0]])  # what an index proposed, in its (approximate) order
    >>> [(scores, ids)] = rescore_exact(np.float32([[1, 0]]), candidates, 2, lambda ids: xb[ids])
    >>> ids.tolist(), [round(float(s), 2) for s in scores]
    ([0, 1], [1.0, 0.6])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ragkit.errors import IntegrityError
from ragkit.index.base import as_ids, unit_rows

__all__ = ["rescore_exact", "search_rescored"]

# Queries scored together (their candidates' vectors are gathered into one (rows, width, dim) block).
_BLOCK = 64

VectorsOf = Callable[[np.ndarray], Any]


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms > 0, norms, 1)


def rescore_exact(
    queries: Any, candidates: np.ndarray, k: int, vectors_of: VectorsOf
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``k`` best of each row of ``candidates`` by exact cosine with its query.

    Args:
        queries: ``(n, dim)`` query vectors (scaled to unit length here).
        candidates: ``(n, width)`` int64 ids, ``-1`` for an empty slot.
        k: hits kept per query.
        vectors_of: given a sorted array of unique ids, their float32 vectors as an array of the
            same length, or a mapping ``{id: vector}`` (the store's ``get_vectors``); any scale.

    Returns:
        Per query, ``(scores, ids)``: float32 cosines and int64 ids, best first (ties by ascending
        id), at most ``k``, no padding.

    Raises:
        IntegrityError: ``vectors_of`` lacks a candidate's vector.

    Example:
        >>> import numpy as np
        >>> xb = np.float32([[3, 4], [1, 0]])
        >>> rescore_exact(np.float32([[1, 0]]), np.array([[0, 1]]), 1, lambda ids: xb[ids])[0][1].tolist()
        [1]
    """
    q = unit_rows(queries, "query vectors")
    cand = np.asarray(candidates, dtype=np.int64).reshape(len(q), -1)
    uniq = np.unique(cand[cand >= 0])
    got = vectors_of(uniq) if len(uniq) else np.empty((0, q.shape[1]), np.float32)
    if isinstance(got, dict):
        missing = [int(i) for i in uniq if int(i) not in got]
        if missing:
            raise IntegrityError(f"no stored vector for candidate ids {missing[:5]}: index and store differ")
        got = np.stack([got[int(i)] for i in uniq]) if len(uniq) else np.empty((0, q.shape[1]), np.float32)
    vectors = _unit(got)
    if vectors.shape != (len(uniq), q.shape[1]):
        raise IntegrityError(f"vectors_of gave {vectors.shape} for {len(uniq)} ids of dim {q.shape[1]}")
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(q), _BLOCK):
        rows = cand[start : start + _BLOCK]
        pos = np.searchsorted(uniq, np.maximum(rows, 0)) if len(uniq) else np.zeros_like(rows)
        if len(uniq):
            s = np.einsum("bd,bwd->bw", q[start : start + _BLOCK], vectors[pos])
        else:
            s = np.zeros(rows.shape, np.float32)
        for srow, irow in zip(s, rows, strict=True):
            valid = irow >= 0
            ids, scores = irow[valid], srow[valid].astype(np.float32)
            ids, first = np.unique(ids, return_index=True)  # a row may repeat an id: count it once
            scores = scores[first]
            order = np.lexsort((ids, -scores))[:k]
            out.append((scores[order], ids[order]))
    return out


def search_rescored(
    index: Any,
    queries: Any,
    k: int,
    *,
    depth: int,
    vectors_of: VectorsOf,
    allowed_ids: Any = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Search ``index`` for ``k * depth`` candidates per query, then rank them exactly.

    ``allowed_ids`` filters before the candidate cut (the index's own guarantee), so a row holds
    ``min(k, live allowed vectors)`` hits; an allowed set no larger than ``k * depth`` is scored
    whole, without the index. ``allowed_ids`` must be live ids of the index (as a store's filter
    gives them).

    Returns:
        Per query, ``(scores, ids)`` as :func:`rescore_exact` gives them.

    Example:
        >>> import numpy as np
        >>> from ragkit.index import FaissIndex
        >>> xb = np.float32([[1, 0], [0.6, 0.8], [0, 1]])
        >>> index = FaissIndex("flat")
        >>> index.add(np.arange(3), xb)
        >>> hits = search_rescored(index, xb[:1], 2, depth=2, vectors_of=lambda ids: xb[ids])
        >>> hits[0][1].tolist()
        [0, 1]
    """
    q = unit_rows(queries, "query vectors")
    allowed = None if allowed_ids is None else np.unique(as_ids(allowed_ids, "allowed_ids"))
    size = len(index) if allowed is None else len(allowed)
    width = min(size, int(k) * int(depth))
    if not width or not len(q):
        return [(np.zeros(0, np.float32), np.zeros(0, np.int64)) for _ in range(len(q))]
    if allowed is not None and len(allowed) <= width:
        candidates = np.broadcast_to(allowed, (len(q), len(allowed)))
    else:
        _, candidates = index.search(q, width, allowed_ids=allowed)
    return rescore_exact(q, candidates, int(k), vectors_of)
