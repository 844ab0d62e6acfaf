"""Storage backends: where a pipeline's documents, chunks and vectors live, and how they are searched.

``LocalBackend`` (SQLite + FAISS + BM25, embedded; the default) and ``PostgresBackend``
(PostgreSQL + pgvector, shared by many processes). Both implement :class:`Backend`.

Example:
    >>> from ragkit.backends import LocalBackend
    >>> from ragkit.index import FaissIndex
    >>> backend = LocalBackend(index=FaissIndex("hnsw"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragkit.backends.base import Backend
from ragkit.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from ragkit.backends.local import LocalBackend
    from ragkit.backends.postgres import PostgresBackend

__all__ = ["Backend", "LocalBackend", "PostgresBackend", "open_saved"]

_LAZY = {"LocalBackend": "ragkit.backends.local", "PostgresBackend": "ragkit.backends.postgres"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ragkit.backends' has no attribute {name!r}")


def open_saved(
    root: Path, manifest: Any, *, read_only: bool, trust_hosts: bool, backend: Any = None
) -> Backend:
    """The backend of a saved directory, chosen by the manifest's ``backend.kind``.

    A local directory opens its own files. A PostgreSQL directory is reached only through the
    ``backend`` the caller passes (checked to be the saved table), or, with ``trust_hosts=True``,
    through the connection settings the directory names: a DSN from an untrusted directory is never
    connected to on its own (libpq would send ``PGPASSWORD`` to any host it names).

    Raises:
        IntegrityError: an unknown backend kind. ConfigError: a ``backend`` that does not fit.

    Example:
        >>> from ragkit.persistence import read_manifest
        >>> b = open_saved(Path("idx"), read_manifest(Path("idx")), read_only=True,
        ...                trust_hosts=False)  # doctest: +SKIP
    """
    kind = manifest.kind
    if backend is not None:
        check = getattr(backend, "check_saved", None)
        if not callable(check):
            raise ConfigError(
                f"this directory holds a {kind} index, opened from its own files: leave backend=None"
            )
        check(manifest.backend)
        return backend
    if kind == "local":
        from ragkit.backends.local import LocalBackend

        return LocalBackend.open(root, manifest, read_only=read_only)
    if kind == "postgres":
        from ragkit.backends.postgres import PostgresBackend

        return PostgresBackend.from_saved(manifest.backend, read_only=read_only, trust_hosts=trust_hosts)
    raise IntegrityError(f"{root}: unknown backend kind {kind!r} in the manifest")
