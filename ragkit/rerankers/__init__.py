"""Rerankers: local Qwen3-Reranker (yes/no scoring) and remote rerank APIs (Cohere/Jina/vLLM/TEI shapes).

Example:
    >>> from ragkit.rerankers import Qwen3Reranker       # doctest: +SKIP
    >>> rr = Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
    >>> rr.score("capital of France", ["Paris is..."])  # doctest: +SKIP
    array([0.98], dtype=float32)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ragkit.rerankers.base import Reranker, rerank

if TYPE_CHECKING:
    from ragkit.rerankers.qwen3 import Qwen3Reranker
    from ragkit.rerankers.remote import RemoteReranker

__all__ = ["Qwen3Reranker", "RemoteReranker", "Reranker", "rerank"]

_LAZY = {"Qwen3Reranker": "ragkit.rerankers.qwen3", "RemoteReranker": "ragkit.rerankers.remote"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ragkit.rerankers' has no attribute {name!r}")
