"""The search paths of :class:`~ragkit.index.FaissIndex`: selector-filtered FAISS search, exact scoring.

Example:
    >>> import faiss, numpy as np
    >>> from ragkit.index.faiss_build import build
    >>> index, _ = build(faiss, "flat", np.array([4, 7]), np.float32([[1, 0], [0, 1]]))
    >>> exact_search(index, np.float32([[0, 1]]), 1, np.array([4, 7]))[1].tolist()
    [[7]]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["approx_search", "exact_search"]

# Vectors reconstructed at a time by the exact path (8192 x 1024 float32 = 32 MiB).
_GATHER_CHUNK = 8192


def approx_search(
    faiss: Any,
    index: Any,
    active: str,
    q: np.ndarray,
    k: int,
    cand: np.ndarray | None,
    n_cand: int,
    *,
    tombs: np.ndarray,
    ef_search: int,
    nprobe: int,
    nlist: int | None,
    l2: bool = False,
    exhaustive: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Search ``index`` (its ``active`` kind) among ``cand`` (``None``: all but ``tombs``).

    ``n_cand`` is how many live vectors qualify: the search is widened by ``ntotal / n_cand``
    (HNSW's ``ef_search``, IVF's ``nprobe``; ``exhaustive`` visits every IVF list). ``l2``: the
    structure scores by squared L2, turned into cosines. Returns ``(scores, ids)`` padded with
    ``-inf`` / ``-1``.
    """
    # Keep every selector referenced until the search returns: FAISS holds raw pointers.
    sel = dead = batch = None
    if cand is not None:
        sel = batch = faiss.IDSelectorBatch(len(cand), faiss.swig_ptr(cand))
    elif len(tombs):
        dead = faiss.IDSelectorBatch(len(tombs), faiss.swig_ptr(tombs))
        sel = batch = faiss.IDSelectorNot(dead)
    # A filter passing a fraction f of the stored vectors starves the search of hits by about
    # 1/f, so the search is widened by that factor.
    widen = index.ntotal / n_cand
    if active == "hnsw":
        ef = min(max(index.ntotal, k), math.ceil(max(ef_search, k) * widen))
        params = faiss.SearchParametersHNSW(efSearch=ef)
    elif active == "ivf":
        nprobe = nlist if exhaustive else min(nlist, math.ceil(nprobe * widen))
        params = faiss.SearchParametersIVF(nprobe=nprobe)
    else:
        params = faiss.SearchParameters()
    if active == "ivf":  # IVF stores the caller's ids itself
        if sel is not None:
            params.sel = sel
        scores, labels = index.search(q, k, params=params)
    else:
        # Search the structure inside the IndexIDMap2 and map positions to ids here: the wrapper's
        # own label mapping is an OpenMP loop that costs milliseconds per call on a busy machine,
        # more than the search itself.
        if sel is not None:
            params.sel = sel = faiss.IDSelectorTranslated(index.id_map, batch)
        scores, labels = faiss.downcast_index(index.index).search(q, k, params=params)
        positions = faiss.rev_swig_ptr(index.id_map.data(), index.ntotal)
        labels = np.where(labels >= 0, positions[np.maximum(labels, 0)], -1)
    if l2:
        scores = 1 - scores / 2  # squared L2 between unit vectors -> cosine
    scores[labels < 0] = -np.inf
    return scores, labels


def exact_search(index: Any, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score ``q`` against the stored vectors of ``ids`` (all live), in chunks: ``(scores, ids)``.

    The vectors are what ``index.reconstruct_batch`` gives: exact for float32 storage, the
    codes' decoded values for a compressed one.
    """
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    for start in range(0, len(ids), _GATHER_CHUNK):
        chunk = ids[start : start + _GATHER_CHUNK]
        s = np.concatenate([best_s, q @ index.reconstruct_batch(chunk).T], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(chunk, (len(q), len(chunk)))], axis=1)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(s, top, axis=1)
        best_i = np.take_along_axis(i, top, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)
