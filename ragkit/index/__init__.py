"""Vector indexes: FAISS, embedded in the process (what the local backend derives from its store).

PostgreSQL + pgvector is a whole storage backend rather than an index beside a store: see
:class:`ragkit.backends.PostgresBackend`.

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

__all__ = ["FaissIndex", "VectorIndex"]

_LAZY = {"FaissIndex": "ragkit.index.faiss"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ragkit.index' has no attribute {name!r}")
