"""The ``VectorIndex`` protocol: int64 ids in, (scores, ids) out."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ragkit.errors import InputTypeError, InvalidInputError

__all__ = ["VectorIndex", "as_ids", "check_vectors", "member", "unit_rows"]


@runtime_checkable
class VectorIndex(Protocol):
    """A nearest-neighbour index over L2-normalised float32 vectors, scored by inner product.

    ``search`` returns two ``(n_queries, k)`` arrays, scores (float32) and ids (int64); where fewer
    than ``k`` vectors qualify, the row is padded with score ``-inf`` and id ``-1``.
    ``allowed_ids`` restricts the search to those ids *before* the top-k cut, so a filtered search
    never comes back short because of the filter.
    """

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def delete(self, ids: Iterable[int]) -> None: ...

    def search(
        self, vectors: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...

    def save(self, path: str | Path) -> None: ...

    def load(self, path: str | Path) -> None: ...


def check_vectors(vectors: np.ndarray, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """Return ``vectors`` as a C-contiguous 2-D float32 array; reject NaN/inf and a wrong width."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2:
        raise InvalidInputError(f"{what} must be 2-D (n, dim), got shape {v.shape}")
    if dim is not None and v.shape[1] != dim:
        raise InvalidInputError(f"{what} have {v.shape[1]} dimensions, the index has {dim}")
    if not np.isfinite(v).all():
        raise InvalidInputError(f"{what} contain NaN or infinite values")
    return v


def as_ids(ids: Any, what: str = "ids") -> np.ndarray:
    """Normalise ids (array, list, set, range, generator of ints) to a 1-D int64 array.

    Example:
        >>> as_ids(range(3)).tolist()
        [0, 1, 2]
    """
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (np.ndarray, Iterable)):
        raise InputTypeError(f"{what} must be a sequence of ints, got {type(ids).__name__}")
    a = ids if isinstance(ids, np.ndarray) else np.asarray(list(ids))
    if a.ndim != 1:
        raise InvalidInputError(f"{what} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        return np.empty(0, dtype=np.int64)
    if a.dtype.kind not in "iu":
        raise InputTypeError(f"{what} must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.max() > np.iinfo(np.int64).max:
        raise InvalidInputError(f"{what} must fit in int64")
    a = a.astype(np.int64, copy=False)
    if a.min() < 0:
        raise InvalidInputError(f"{what} must be >= 0 (-1 marks an empty slot in search results)")
    return a


def unit_rows(vectors: Any, what: str) -> np.ndarray:
    """A float32 copy of ``vectors`` scaled to unit length, so inner products are cosines.

    Example:
        >>> unit_rows(np.float32([[3, 4]]), "v").tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """
    v = check_vectors(vectors, what=what)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if v.size and not ((norms > 0) & np.isfinite(norms)).all():
        raise InvalidInputError(f"{what} contain a zero vector, which has no direction (cosine undefined)")
    return (v / norms).astype(np.float32, copy=False)


def member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Boolean mask: which of ``values`` are in the sorted array ``sorted_set``.

    Example:
        >>> member(np.array([1, 5]), np.array([1, 2, 3])).tolist()
        [True, False]
    """
    pos = np.searchsorted(sorted_set, values)
    found = pos < len(sorted_set)
    found[found] = sorted_set[pos[found]] == values[found]
    return found
