"""Fusion of a dense and a lexical ranking into one: reciprocal-rank fusion and a convex combination.

``Pipeline.search(..., mode="hybrid")`` retrieves ``candidates`` chunks from each side and fuses them
with one of:

- ``"rrf"``, reciprocal-rank fusion (:func:`rrf_fuse`): ``Σ 1 / (rrf_k + rank)``. It reads ranks only,
  so it needs no calibration, but a strong dense model can lose quality to a weak lexical list.
- ``"convex"`` (:func:`convex_fuse`): each side's scores are min-max normalised to [0, 1] over that
  query's candidates, then ``alpha * dense + (1 - alpha) * lexical``; a chunk that one side did not
  return gets 0 from that side. ``alpha = 1`` is the dense ranking, ``alpha = 0`` the lexical one.
  Because of the per-query normalisation, ``alpha`` means the same on both backends, although the
  lexical score is BM25 on the local backend and PostgreSQL's ``ts_rank_cd`` on PostgreSQL: it weighs
  "how far this chunk is from the best candidate of that side, relative to the spread of that side".

Which one is the default, and its parameters, was chosen by measurement on one half of the CISI
queries and checked on the other half (``benchmarks/quality.py --sweep``; see benchmarks/README.md).

Example:
    >>> rrf_fuse([[1, 2, 3], [3, 1]])[0][0]
    1
    >>> dense, lexical = {1: 0.9, 2: 0.7, 4: 0.5}, {2: 12.0, 3: 4.0}  # cosines, BM25 scores
    >>> convex_fuse([dense, lexical], [0.5, 0.5])
    [(2, 0.75), (1, 0.5), (3, 0.0), (4, 0.0)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ragkit.errors import InputTypeError, InvalidInputError

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_FUSION",
    "DEFAULT_RRF_K",
    "FUSIONS",
    "RRF_K",
    "check_alpha",
    "convex_fuse",
    "rrf_fuse",
]

FUSIONS = ("rrf", "convex")
"""The fusion methods of hybrid search."""

#: The RRF constant of Cormack, Clarke & Büttcher (SIGIR 2009, "Reciprocal Rank Fusion outperforms
#: Condorcet and individual rank learning methods"): they found k = 60 near-optimal across TREC runs. A
#: large k flattens the curve 1/(k + rank), so one list's top hit cannot outvote agreement between
#: lists; k = 60 is also the default of Elasticsearch, OpenSearch and Vespa.
RRF_K = 60

#: Hybrid search's default fusion, and the pipeline's default RRF constant and convex weight: each
#: the best on the tuning half of CISI's judged queries, at hybrid's default depth of 100 hits per
#: side (``benchmarks/quality.py --sweep``; the held-out half's figures are in benchmarks/README.md).
DEFAULT_FUSION = "rrf"
DEFAULT_RRF_K = 30
DEFAULT_ALPHA = 0.7


def check_alpha(alpha: Any) -> float:
    """``alpha`` as a float in [0, 1], or an :class:`InvalidInputError`.

    Example:
        >>> check_alpha(1)
        1.0
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"alpha must be a number in [0, 1], got {alpha!r}")
    value = float(alpha)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise InvalidInputError(f"alpha must be in [0, 1] (the weight of the dense side), got {alpha!r}")
    return value


def _check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    out = [float(w) for w in weights]
    if len(out) != n:
        raise InvalidInputError(f"got {len(out)} weights for {n} rankings")
    if not all(np.isfinite(w) and w >= 0 for w in out):
        raise InvalidInputError(f"weights must be finite and >= 0, got {out}")
    return out


def _check_id(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (int, np.integer)):
        raise InputTypeError(f"ranking ids must be ints, got {type(raw).__name__}")
    return int(raw)


def _ordered(scores: dict[int, float], best_rank: dict[int, int]) -> list[tuple[int, float]]:
    # Ties: the best rank an id reached in any single ranking, then the smaller id; so the output is
    # deterministic and does not depend on the order of the inputs.
    order = sorted(scores, key=lambda d: (-scores[d], best_rank[d], d))
    return [(d, scores[d]) for d in order]


def rrf_fuse(
    rankings: Sequence[Sequence[int]],
    *,
    rrf_k: int = RRF_K,
    weights: Sequence[float] | None = None,
) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: ``score(d) = Σ_i weights[i] / (rrf_k + rank_i(d))``, ranks from 1.

    A document absent from a ranking gets nothing from it; a repeated id within one ranking counts at
    its first (best) position only. ``rrf_k`` is the RRF constant (:data:`RRF_K` = 60, after Cormack et
    al. 2009), not a result count: every fused id is returned.

    Ties in the fused score are broken by the best rank the id reached in any single ranking, then by
    ascending id, so the output is deterministic and does not depend on the order of ``rankings``.

    Args:
        rankings: lists of ids, best first (for example dense and lexical chunk ids).
        rrf_k: the RRF constant, >= 0 (named apart from ``k``, which is a result count everywhere).
        weights: one non-negative weight per ranking; all 1 by default.

    Returns:
        ``(id, score)`` pairs, best first.

    Example:
        >>> rrf_fuse([[1, 2], [2, 3]], rrf_k=60)  # 2 is in both lists
        [(2, 0.03252247488101534), (1, 0.01639344262295082), (3, 0.016129032258064516)]
    """
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, np.integer)) or rrf_k < 0:
        raise InvalidInputError(f"rrf_k must be an int >= 0, got {rrf_k!r}")
    rankings = list(rankings)
    weight_list = _check_weights(weights, len(rankings))
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for ranking, weight in zip(rankings, weight_list, strict=True):
        if isinstance(ranking, (str, bytes)):
            raise InputTypeError("each ranking must be a sequence of int ids")
        seen: set[int] = set()
        for rank, raw in enumerate(ranking, start=1):
            doc = _check_id(raw)
            if doc in seen:
                continue
            seen.add(doc)
            scores[doc] = scores.get(doc, 0.0) + weight / (rrf_k + rank)
            best_rank[doc] = min(best_rank.get(doc, rank), rank)
    return _ordered(scores, best_rank)


def convex_fuse(
    scored: Sequence[Mapping[int, float]], weights: Sequence[float] | None = None
) -> list[tuple[int, float]]:
    """Convex combination of min-max normalised scores: ``Σ_i weights[i] * norm_i(d)``.

    Each mapping holds one ranking's ids and raw scores (dense cosines, BM25 or ``ts_rank_cd``
    values). Its scores are mapped to [0, 1] by ``(s - min) / (max - min)`` over that mapping (a
    mapping whose scores are all equal gives each of them 1); an id missing from a mapping gets 0
    from it. Hybrid search calls it with ``[dense, lexical]`` and weights ``[alpha, 1 - alpha]``.
    Ties are broken as in :func:`rrf_fuse` (best single rank, then the smaller id).

    Args:
        scored: one ``{id: score}`` mapping per ranking; iteration order is the ranking's order.
        weights: one non-negative weight per ranking; all 1 by default.

    Returns:
        ``(id, fused score)`` pairs, best first.

    Raises:
        InvalidInputError: a score is not finite, or the weights do not fit.
        InputTypeError: an id is not an int.

    Example:
        >>> convex_fuse([{7: 2.0, 8: 1.0}], [1.0])
        [(7, 1.0), (8, 0.0)]
    """
    if isinstance(scored, Mapping):
        raise InputTypeError("scored must be a sequence of {id: score} mappings, not one mapping")
    scored = list(scored)
    weight_list = _check_weights(weights, len(scored))
    fused: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for mapping, weight in zip(scored, weight_list, strict=True):
        if not isinstance(mapping, Mapping):
            raise InputTypeError(
                f"each ranking must be an {{id: score}} mapping, got {type(mapping).__name__}"
            )
        if not mapping:
            continue
        ids = [_check_id(i) for i in mapping]
        values = np.array([float(v) for v in mapping.values()], dtype=np.float64)
        if not np.isfinite(values).all():
            raise InvalidInputError("scores to fuse must be finite")
        low, high = float(values.min()), float(values.max())
        norm = np.ones_like(values) if high == low else (values - low) / (high - low)
        for rank, (doc, value) in enumerate(zip(ids, norm, strict=True), start=1):
            fused[doc] = fused.get(doc, 0.0) + weight * float(value)
            best_rank[doc] = min(best_rank.get(doc, rank), rank)
    return _ordered(fused, best_rank)
