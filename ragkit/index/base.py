"""The ``VectorIndex`` protocol: int64 ids in, (scores, ids) out."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ragkit.errors import InvalidInputError

__all__ = ["VectorIndex", "check_vectors"]


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
