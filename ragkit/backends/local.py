"""The local backend (the default): SQLite is the truth, FAISS and BM25 are derived from it.

Documents, chunks, metadata and chunk vectors live in one SQLite file (:class:`~ragkit.store.SQLiteStore`).
The FAISS index and the BM25 index are built from it, kept in step with every write, saved beside it
with the store's generation, and rebuilt from it whenever they are missing, stale or corrupt.

In a directory (after :meth:`Pipeline.save <ragkit.Pipeline.save>` or a load), the store is
``store-<tag>.sqlite`` and the derived files are ``vectors-<tag>.faiss`` (+ ``.json``) and
``lexical-<tag>/``; ``manifest.json`` says which are current (see :mod:`ragkit.persistence`).
Opening and saving a directory is :mod:`ragkit.backends.local_files`.

Each chunk keeps its ``location`` and ``header`` (:class:`~ragkit.types.Chunk`); the BM25 index is
built from the chunk texts alone, never the headers, as PostgreSQL's ``tsvector`` is.

Example:
    >>> from ragkit.backends import LocalBackend
    >>> from ragkit.index import FaissIndex
    >>> backend = LocalBackend(FaissIndex("flat"), lexical=False)
    >>> backend.count_documents()
    0
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragkit import persistence
from ragkit._sync import RWLock
from ragkit.backends.base import Upsert, check_delete_filter, check_vectors, empty_hits
from ragkit.backends.local_files import LocalFilesMixin
from ragkit.errors import ConfigError, InputTypeError, IntegrityError, ReadOnlyError
from ragkit.filters import Node, parse_filter
from ragkit.persistence import DirLock, storage_errors
from ragkit.store import SQLiteStore
from ragkit.types import Chunk, Document

__all__ = ["LocalBackend"]

logger = logging.getLogger("ragkit")


class LocalBackend(LocalFilesMixin):
    """SQLite + FAISS + BM25 in this process; saved as files in a directory.

    Args:
        index: the vector index; ``None`` is ``FaissIndex()`` (exact while small, HNSW once large).
        lexical: keep a BM25 index for ``mode="lexical"`` / ``"hybrid"`` (``True``), none
            (``False``), or a configured :class:`~ragkit.lexical.BM25Index` to use its settings.

    The derived indexes catch up with the store lazily (first search or write after a change).
    Searches run concurrently; writes and rebuilds take a write lock. One writer process per
    directory: the writer lock is taken at the first write or save, not at load.

    Example:
        >>> from ragkit import Pipeline
        >>> from ragkit.backends import LocalBackend
        >>> from ragkit.index import FaissIndex
        >>> pipe = Pipeline(embedder, backend=LocalBackend(FaissIndex("hnsw")))  # doctest: +SKIP
    """

    def __init__(self, index: Any = None, *, lexical: Any = True) -> None:
        if index is None:
            from ragkit.index.faiss import FaissIndex

            index = FaissIndex()
        for attr in ("add", "delete", "search", "clear", "save", "load", "__len__"):
            if not hasattr(index, attr):
                raise InputTypeError(f"index lacks {attr!r}: see ragkit.index.VectorIndex")
        self._index = index
        self._bm25_settings = self._lexical_settings(lexical)
        self._lock = RWLock()
        self._index_generation = -1
        self._bm25: Any = None
        self._bm25_generation = -1
        self._directory: Path | None = None
        self._store_name: str | None = None
        self._dir_lock: DirLock | None = None
        self.read_only = False
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = tempfile.TemporaryDirectory(prefix="ragkit-")
        self._store = SQLiteStore(Path(self._tmpdir.name) / "store.sqlite")

    @staticmethod
    def _lexical_settings(lexical: Any) -> dict[str, Any] | None:
        if lexical is True:
            return {}
        if lexical is False or lexical is None:
            return None
        spec = getattr(lexical, "spec", None)
        if not callable(spec):
            raise InputTypeError(f"lexical must be True, False or a BM25Index, got {type(lexical).__name__}")
        return dict(spec())

    # -------------------------------------------------------------------------------- derived state

    def _sync_index(self) -> None:
        """Rebuild the vector index from the store when it does not reflect the store's generation."""
        if self._store.generation == self._index_generation:
            return
        with self._lock.write():
            generation = self._store.generation
            if generation == self._index_generation:
                return
            started = time.perf_counter()
            self._index.clear()
            for ids, vectors in self._store.iter_vectors():
                self._index.add(ids, vectors)
            self._index_generation = generation
            if len(self._index):
                logger.info(
                    "rebuilt the vector index from the store: %d vectors in %.2fs",
                    len(self._index),
                    time.perf_counter() - started,
                )

    def _lexical_index(self) -> Any:
        """The BM25 index, rebuilt from the store when stale (never once per added batch)."""
        if self._bm25_settings is None:
            raise ConfigError(
                "this pipeline keeps no BM25 index (LocalBackend(lexical=False)); "
                "mode='lexical'/'hybrid' need one"
            )
        if self._bm25 is not None and self._bm25_generation == self._store.generation:
            return self._bm25
        with self._lock.write():
            generation = self._store.generation
            if self._bm25 is None or self._bm25_generation != generation:
                from ragkit.lexical import BM25Index

                ids: list[np.ndarray] = []
                texts: list[str] = []
                for page_ids, page_texts in self._store.iter_texts(headers=False):
                    ids.append(page_ids)
                    texts.extend(page_texts)
                # A new object, swapped in whole: concurrent searches keep using the old one meanwhile.
                bm25 = BM25Index(**self._bm25_settings)
                bm25.build(np.concatenate(ids) if ids else np.zeros(0, np.int64), texts)
                self._bm25, self._bm25_generation = bm25, generation
        return self._bm25

    # ----------------------------------------------------------------------------------- identity

    @property
    def directory(self) -> Path | None:
        """The directory this backend is saved in, or ``None`` while it lives in a temporary file."""
        return self._directory

    @property
    def index(self) -> Any:
        """The derived vector index (a :class:`~ragkit.index.FaissIndex` by default)."""
        return self._index

    @property
    def lexical(self) -> bool:
        """Whether a BM25 index is kept."""
        return self._bm25_settings is not None

    def __repr__(self) -> str:
        where = str(self._directory) if self._directory else "in memory"
        return f"LocalBackend({where}, index={self._index!r}, lexical={self.lexical})"

    @property
    def generation(self) -> int:
        return self._store.generation

    def get_meta(self, key: str) -> Any:
        return self._store.get_meta(key)

    def set_meta(self, key: str, value: Any) -> None:
        self.acquire_writer()
        self._store.set_meta(key, value)

    # ---------------------------------------------------------------------------------------- reads

    def count_documents(self) -> int:
        return self._store.count_documents()

    def count_chunks(self) -> int:
        return self._store.count_chunks()

    def get_document(self, doc_id: str) -> Document | None:
        return self._store.get_document(doc_id)

    def iter_documents(self) -> Iterator[Document]:
        return self._store.iter_documents()

    def document_states(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        return self._store.document_states(doc_ids)

    def vectors_for_hashes(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        return self._store.vectors_for_hashes(hashes)

    def get_chunks(self, vids: Sequence[int]) -> dict[int, Chunk]:
        return self._store.get_chunks(vids)

    def get_vectors(self, vids: Sequence[int]) -> dict[int, np.ndarray]:
        return self._store.get_vectors(vids)

    def chunk_vids(self, doc_id: str) -> list[tuple[int, int]]:
        return self._store.chunk_vids(doc_id)

    def iter_texts(self, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, list[str]]]:
        return self._store.iter_texts(batch_size)

    def iter_vectors(self, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self._store.iter_vectors(batch_size)

    def count_matching(self, filter: Node | Mapping[str, Any] | None) -> int:
        node = parse_filter(filter)
        return self.count_chunks() if node is None else len(self._store.filter_ids(node))

    # --------------------------------------------------------------------------------------- writes

    def acquire_writer(self) -> None:
        """Take the directory's writer lock and a writable store, once, before the first write.

        Raises:
            ReadOnlyError: opened with ``read_only=True``.
            LockError: another writer (this process or another) holds the directory.
            IntegrityError: another pipeline was saved over the directory since this one opened it.
        """
        if self.read_only:
            raise ReadOnlyError("this pipeline was loaded with read_only=True")
        if self._dir_lock is not None and not self._dir_lock.held:
            self._dir_lock.acquire()
            try:
                current = persistence.read_manifest(self._directory)  # type: ignore[arg-type]
                if current.backend.get("store") != self._store_name:
                    raise IntegrityError(
                        f"{self._directory} was saved over by another pipeline since this one opened it: "
                        "load it again to write to it"
                    )
            except BaseException:
                self._dir_lock.release()
                raise
        if self._store.read_only:
            with storage_errors(f"opening {self._store.path} for writing"):
                self._store.enable_writes()  # in place: threads reading the store are not disturbed

    def _check(self, upserts: Sequence[Upsert]) -> None:
        dim = getattr(self._index, "dim", None)
        for item in upserts:
            if len(item.chunks):
                width = dim if dim is not None else item.vectors.shape[1]
                check_vectors(item.vectors, dim=width, names=[c.id for c in item.chunks])
                dim = width

    def _apply(self, removed: Sequence[int], added: Sequence[int], vectors: Sequence[np.ndarray]) -> None:
        """Bring the vector index in step with a committed store write (under the write lock)."""
        try:
            if removed:
                self._index.delete(np.asarray(removed, dtype=np.int64))
            if added:
                self._index.add(np.asarray(added, dtype=np.int64), np.stack(vectors))
            self._index_generation = self._store.generation
        except BaseException:
            self._index_generation = -1  # rebuilt from the store on next use
            raise

    def write(
        self, upserts: Sequence[Upsert], metadata_updates: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        self.acquire_writer()
        self._check(upserts)
        self._sync_index()
        with self._lock.write():
            result = self._store.write(upserts, metadata_updates)
            self._apply(result.removed_ids, result.added_ids, result.added_vectors)

    def delete(self, doc_ids: Sequence[str]) -> int:
        self.acquire_writer()
        self._sync_index()
        with self._lock.write():
            deleted, removed = self._store.delete_documents(list(doc_ids))
            self._apply(removed, [], [])
        return deleted

    def delete_matching(self, filter: Node | Mapping[str, Any]) -> int:
        node = check_delete_filter(filter)  # before the writer lock: a bad filter takes nothing
        self.acquire_writer()
        self._sync_index()
        with self._lock.write():
            deleted, removed = self._store.delete_documents(filter=node)
            self._apply(removed, [], [])
        return deleted

    def update_metadata(self, doc_id: str, metadata: Mapping[str, Any]) -> bool:
        self.acquire_writer()
        self._sync_index()
        with self._lock.write():
            found = self._store.update_metadata(doc_id, metadata)
            self._apply([], [], [])
        return found

    def replace_vectors(self, pages: Iterable[tuple[np.ndarray, np.ndarray]], fingerprint: Any) -> None:
        self.acquire_writer()

        def checked() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            dim = None
            for ids, vectors in pages:
                v = np.asarray(vectors)
                dim = dim if dim is not None else (v.shape[1] if v.ndim == 2 else 0)
                yield ids, check_vectors(v, dim=dim, names=[f"chunk {int(i)}" for i in ids])

        self._store.replace_vectors(checked(), {"fingerprint": fingerprint})
        with self._lock.write():
            self._index.clear()
            if hasattr(self._index, "spec") and hasattr(type(self._index), "from_spec"):
                # A fresh twin without a fixed dim: the new embedder may have another size.
                self._index = type(self._index).from_spec({**self._index.spec(), "dim": None})
            self._index_generation = -1
        self._sync_index()

    # --------------------------------------------------------------------------------------- search

    def _allowed(self, filter: Node | Mapping[str, Any] | None) -> np.ndarray | None:
        node = parse_filter(filter)
        return None if node is None else self._store.filter_ids(node)

    def dense_search(
        self, vectors: np.ndarray, k: int, *, filter: Node | Mapping[str, Any] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        q = np.asarray(vectors, dtype=np.float32)
        q = q[None, :] if q.ndim == 1 else q
        self._sync_index()
        allowed = self._allowed(filter)
        with self._lock.read():
            size = len(self._index) if allowed is None else len(allowed)
            k = min(int(k), size)  # k far above the collection costs what the collection costs
            if not k or not len(q):
                return empty_hits(len(q))
            if getattr(self._index, "compressed", False):  # codes propose, the store's float32 ranks
                from ragkit.index.rescore import search_rescored

                depth, fetch = self._index.rescore, self._store.get_vectors
                return search_rescored(self._index, q, k, depth=depth, vectors_of=fetch, allowed_ids=allowed)
            scores, ids = self._index.search(q, k, allowed_ids=allowed)
        return [(s[i >= 0], i[i >= 0]) for s, i in zip(scores, ids, strict=True)]

    def lexical_search(
        self, query: str, k: int, *, filter: Node | Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        bm25 = self._lexical_index()
        allowed = self._allowed(filter)
        k = min(int(k), len(bm25) if allowed is None else len(allowed))
        if not k:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        return bm25.search(query, k, allowed_ids=allowed)

    def close(self) -> None:
        """Release the writer lock and close the store (idempotent)."""
        if self._dir_lock is not None:
            self._dir_lock.release()
        self._store.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
