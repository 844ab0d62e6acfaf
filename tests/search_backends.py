"""The search-feature tests' shared set-up: one corpus, and a pipeline on either backend.

``search_backend`` (a fixture in conftest.py) is ``"local"`` or ``"pg"``; a test that takes it runs on
both, and the PostgreSQL case carries the ``pg`` marker.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from conftest import HashEmbedder

from ragkit import Document, Pipeline, RecursiveChunker

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def corpus(n: int, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [
        Document(
            id=f"d{i}", text=" ".join(rng.choice(WORDS, size=10)) + f" unique{i}", metadata={"group": i % 4}
        )
        for i in range(n)
    ]


def backend_pipeline(kind: Any, embedder: Any = None, **kwargs: Any) -> Pipeline:
    """A pipeline on the backend ``kind`` names: ``"local"``, or ``("pg", dsn, table)``."""
    kwargs.setdefault("chunker", RecursiveChunker(200, 20))
    embedder = embedder or HashEmbedder()
    if kind == "local":
        return Pipeline(embedder, **kwargs)
    from ragkit.backends import PostgresBackend

    _, dsn, table = kind
    return Pipeline(embedder, backend=PostgresBackend(dsn, table=table, index="exact"), **kwargs)
