"""Diversity: maximal marginal relevance (Carbonell & Goldstein, SIGIR 1998) over candidate vectors.

``Pipeline.search(..., diversity=λ)`` re-selects the first-stage candidates greedily: each step takes
the candidate that maximises ``(1 - λ) * relevance - λ * max_similarity_to_the_ones_taken``, where
relevance is the candidate's first-stage score (cosine, BM25 or fused) min-max normalised to [0, 1]
over the candidates, and similarity is the cosine between the stored chunk vectors. ``λ = 0`` keeps
the relevance order; ``λ = 1`` takes the most relevant candidate first and then always the one least
like those already taken. Ties go to the more relevant candidate, so the result is deterministic.

Example:
    >>> import numpy as np
    >>> vectors = np.float32([[1, 0], [0.99, 0.14], [0, 1]])   # the first two are near-duplicates
    >>> mmr([0.9, 0.85, 0.5], vectors, 2, diversity=0.0)
    [0, 1]
    >>> mmr([0.9, 0.85, 0.5], vectors, 2, diversity=0.5)
    [0, 2]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ragkit.errors import InvalidInputError

__all__ = ["check_diversity", "mmr"]


def check_diversity(diversity: Any) -> float | None:
    """``diversity`` as a float in [0, 1], ``None`` for ``None`` or 0 (MMR off), or an error.

    Example:
        >>> check_diversity(0.3), check_diversity(0)
        (0.3, None)
    """
    if diversity is None:
        return None
    if isinstance(diversity, bool) or not isinstance(diversity, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"diversity must be a number in [0, 1], got {diversity!r}")
    value = float(diversity)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise InvalidInputError(
            f"diversity must be in [0, 1] (0: relevance order, 1: most diverse), got {diversity!r}"
        )
    return value or None


def mmr(
    relevance: Sequence[float] | np.ndarray, vectors: np.ndarray, k: int, *, diversity: float
) -> list[int]:
    """Positions of ``k`` candidates (fewer if there are fewer), in maximal-marginal-relevance order.

    Args:
        relevance: one score per candidate, any scale (it is min-max normalised here).
        vectors: one vector per candidate, shape ``(n, dim)``; normalised here, so any length works.
        k: how many to pick.
        diversity: λ in [0, 1].

    Returns:
        Indices into ``relevance``, in pick order.

    Raises:
        InvalidInputError: shapes that do not match, non-finite scores, or λ outside [0, 1].

    Example:
        >>> mmr([3.0, 2.0], np.float32([[1, 0], [1, 0]]), 5, diversity=1.0)
        [0, 1]
    """
    lam = check_diversity(diversity) or 0.0
    rel = np.asarray(relevance, dtype=np.float64).reshape(-1)
    vec = np.asarray(vectors, dtype=np.float32)
    n = len(rel)
    if vec.ndim != 2 or len(vec) != n:
        raise InvalidInputError(
            f"mmr needs one vector per candidate: {n} scores, vectors of shape {vec.shape}"
        )
    if not np.isfinite(rel).all():
        raise InvalidInputError("mmr: relevance scores must be finite")
    k = min(int(k), n)
    if k <= 0:
        return []
    low, high = (float(rel.min()), float(rel.max()))
    rel = np.ones(n) if high == low else (rel - low) / (high - low)
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    unit = vec / np.where(norms > 0, norms, 1.0)
    max_sim = np.zeros(n, dtype=np.float64)  # nothing taken yet: the first pick is the most relevant
    taken = np.zeros(n, dtype=bool)
    order: list[int] = []
    for _ in range(k):
        score = (1.0 - lam) * rel - lam * max_sim
        score[taken] = -np.inf
        # np.argmax takes the first maximum; ties then go to higher relevance, then earlier position.
        best = np.flatnonzero(score == score.max())
        pick = int(best[np.argmax(rel[best])])
        order.append(pick)
        taken[pick] = True
        sims = unit @ unit[pick]
        max_sim = sims if len(order) == 1 else np.maximum(max_sim, sims)
    return order
