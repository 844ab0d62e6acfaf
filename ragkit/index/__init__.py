"""Vector indexes: FAISS (default, embedded) and PostgreSQL + pgvector (shared, for scale-out).

Example:
    >>> import numpy as np
    >>> from ragkit.index import FaissIndex
    >>> index = FaissIndex(kind="flat")
    >>> index.add(np.array([7]), np.float32([[1.0, 0.0]]))
    >>> index.search(np.float32([[1.0, 0.0]]), k=1)[1].tolist()
    [[7]]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ragkit.index.base import VectorIndex

if TYPE_CHECKING:
    from ragkit.index.faiss import FaissIndex
    from ragkit.index.pgvector import PgVectorIndex

__all__ = ["FaissIndex", "PgVectorIndex", "VectorIndex"]

_LAZY = {"FaissIndex": "ragkit.index.faiss", "PgVectorIndex": "ragkit.index.pgvector"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ragkit.index' has no attribute {name!r}")
