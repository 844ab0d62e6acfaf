"""ragkit: retrieval for RAG systems, chunk → embed → index → retrieve → rerank, in one ``Pipeline``.

Example:
    >>> from ragkit import Pipeline, Document
    >>> from ragkit.embedders import Qwen3Embedder          # doctest: +SKIP
    >>> pipe = Pipeline(Qwen3Embedder("Qwen/Qwen3-Embedding-0.6B"))  # doctest: +SKIP
    >>> pipe.add([Document(id="a", text="Paris is the capital of France.")])  # doctest: +SKIP
    >>> pipe.search("capital of France", k=1)[0].doc_id       # doctest: +SKIP
    'a'

Heavy dependencies (torch, transformers, faiss, bm25s) are imported only when a component that needs
them is used, so ``import ragkit`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragkit.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    CorruptFileError,
    EncryptedFileError,
    IndexMismatchError,
    InputTooLongError,
    InputTypeError,
    IntegrityError,
    InvalidInputError,
    LoaderError,
    LockError,
    MissingDependencyError,
    RagkitError,
    RagkitWarning,
    RateLimitError,
    ReadOnlyError,
    RemoteError,
    StorageError,
    UnavailableError,
    UnsupportedFormatError,
)
from ragkit.types import Chunk, Document, Hit, SearchResults, Section

if TYPE_CHECKING:
    from ragkit.chunking import RecursiveChunker
    from ragkit.pipeline import Pipeline

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "Chunk",
    "ConfigError",
    "CorruptFileError",
    "Document",
    "EncryptedFileError",
    "Hit",
    "IndexMismatchError",
    "InputTooLongError",
    "InputTypeError",
    "IntegrityError",
    "InvalidInputError",
    "LoaderError",
    "LockError",
    "MissingDependencyError",
    "Pipeline",
    "RagkitError",
    "RagkitWarning",
    "RateLimitError",
    "ReadOnlyError",
    "RecursiveChunker",
    "RemoteError",
    "SearchResults",
    "Section",
    "StorageError",
    "UnavailableError",
    "UnsupportedFormatError",
    "__version__",
]

_LAZY = {"Pipeline": "ragkit.pipeline", "RecursiveChunker": "ragkit.chunking"}


def __getattr__(name: str) -> Any:
    # Pipeline pulls in the store and index modules; load them on first use only.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ragkit' has no attribute {name!r}")
