"""Embedders: local (transformers + torch) and remote (OpenAI-compatible ``/v1/embeddings``).

Example:
    >>> from ragkit.embedders import Qwen3Embedder       # doctest: +SKIP
    >>> emb = Qwen3Embedder("Qwen/Qwen3-Embedding-0.6B", dim=256)  # doctest: +SKIP
    >>> emb.embed_queries(["what is ragkit?"]).shape     # doctest: +SKIP
    (1, 256)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ragkit.embedders.base import DEFAULT_QWEN3_TASK, Embedder

if TYPE_CHECKING:
    from ragkit.embedders.remote import OpenAIEmbedder
    from ragkit.embedders.transformers import Qwen3Embedder, TransformersEmbedder

__all__ = ["DEFAULT_QWEN3_TASK", "Embedder", "OpenAIEmbedder", "Qwen3Embedder", "TransformersEmbedder"]

_LAZY = {
    "OpenAIEmbedder": "ragkit.embedders.remote",
    "Qwen3Embedder": "ragkit.embedders.transformers",
    "TransformersEmbedder": "ragkit.embedders.transformers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ragkit.embedders' has no attribute {name!r}")
