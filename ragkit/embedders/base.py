"""The ``Embedder`` protocol and the helpers every embedder shares.

Any object with ``dim``, ``fingerprint``, ``embed_documents`` and ``embed_queries`` is an embedder;
nothing needs to inherit from anything. ``count_tokens`` and ``max_length`` (used by the chunker),
``token_counts(texts, *, query=False, instruction=None) -> list[int]`` (the tokens the model reads per
text, which ``ragkit serve`` budgets batches and caps request costs with) and ``spec()`` (how to rebuild
the embedder when a saved pipeline is loaded) are optional.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ragkit.errors import ConfigError, InputTypeError, InvalidInputError
from ragkit.types import check_text

__all__ = [
    "DEFAULT_QWEN3_TASK",
    "Embedder",
    "canonical_model_name",
    "check_texts",
    "l2_normalize",
    "truncate_dim",
]

DEFAULT_QWEN3_TASK = "Given a web search query, retrieve relevant passages that answer the query"


@runtime_checkable
class Embedder(Protocol):
    """What a pipeline needs from an embedding model.

    ``embed_documents`` and ``embed_queries`` return float32 arrays of shape ``(len(texts), dim)``
    whose rows are L2-normalised. ``fingerprint`` is a dict that is equal for two embedders exactly
    when their vectors are comparable (same model, dimension, pooling, normalisation, templates).

    Example:
        >>> import numpy as np
        >>> class Tiny:
        ...     dim = 2
        ...     fingerprint = {"model": "tiny", "dim": 2}
        ...     def embed_documents(self, texts):
        ...         return np.tile(np.float32([1, 0]), (len(texts), 1))
        ...     def embed_queries(self, texts, instruction=None):
        ...         return self.embed_documents(texts)
        >>> isinstance(Tiny(), Embedder)
        True
    """

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> dict[str, Any]: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray: ...


def canonical_model_name(name: str) -> str:
    """The model name used in fingerprints: the last path component, lower-cased.

    Hub ids, provider spellings and local directories of one model agree.

    Example:
        >>> canonical_model_name("Qwen/Qwen3-Embedding-4B")
        'qwen3-embedding-4b'
        >>> canonical_model_name("/models/Qwen3-Embedding-4B/")
        'qwen3-embedding-4b'
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"a model name must be a non-empty str, got {name!r}")
    return name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()


def check_texts(texts: Any, what: str = "texts") -> list[str]:
    """Return ``texts`` as a list of ``str``; raise a clear error for a bare string or a non-str item.

    Each item must be UTF-8 encodable (a lone surrogate raises :class:`InvalidInputError`).

    Example:
        >>> check_texts(("a", ""))
        ['a', '']
    """
    if isinstance(texts, str):
        raise InputTypeError(f"{what} must be a list of str, not a single str: wrap it as [text]")
    if isinstance(texts, (bytes, bytearray)) or texts is None:
        raise InputTypeError(f"{what} must be a list of str, got {type(texts).__name__}")
    try:
        items = list(texts)
    except TypeError as e:
        raise InputTypeError(f"{what} must be a list of str, got {type(texts).__name__}") from e
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise InputTypeError(f"{what}[{i}] must be a str, got {type(t).__name__}")
        check_text(t, f"{what}[{i}]")
    return items


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; an all-zero row stays zero."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norms, np.finfo(np.float32).tiny)


def truncate_dim(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """Matryoshka truncation: keep the first ``dim`` components, then re-normalise."""
    if dim is None or dim == vectors.shape[-1]:
        return l2_normalize(vectors)
    if dim > vectors.shape[-1]:
        raise InvalidInputError(f"dim={dim} exceeds the model's {vectors.shape[-1]} dimensions")
    return l2_normalize(vectors[..., :dim])
