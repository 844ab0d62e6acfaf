"""Opening and saving a :class:`~ragkit.backends.LocalBackend` directory: the store and the derived files.

A save writes the store (a consistent SQLite backup, unless the directory already is its home), the
FAISS index and the BM25 index, each under the save's fresh tag, at one generation of the store
(:meth:`LocalFilesMixin._snapshot`), then lets the caller commit the manifest. An open checks the
store against the manifest and loads the derived files when they are current and intact.

Example:
    >>> from ragkit.backends import LocalBackend
    >>> backend = LocalBackend.open(Path("my-index"), read_manifest(Path("my-index")),
    ...                             read_only=True)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ragkit import persistence
from ragkit._sync import RWLock
from ragkit.backends.base import SavedBackend
from ragkit.errors import ConfigError, InputTypeError, IntegrityError, ReadOnlyError
from ragkit.persistence import DirLock, Manifest, storage_errors
from ragkit.store import SQLiteStore

__all__ = ["LocalFilesMixin"]

logger = logging.getLogger("ragkit")

_B = TypeVar("_B", bound="LocalFilesMixin")

# Generation changes a save tolerates before it snapshots under the write lock.
_SNAPSHOT_TRIES = 5


def _safe_name(entry: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = entry.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not persistence.SAFE_NAME.match(value) or ".." in value:
        raise IntegrityError(f"the manifest's backend.{key} is not a valid file name: {value!r}")
    return value


class LocalFilesMixin:
    """The opening and saving half of :class:`~ragkit.backends.LocalBackend` (see its docstring)."""

    _index: Any
    _bm25: Any
    _bm25_settings: dict[str, Any] | None
    _bm25_generation: int
    _index_generation: int
    _lock: RWLock
    _store: SQLiteStore
    _directory: Path | None
    _store_name: str | None
    _dir_lock: DirLock | None
    _tmpdir: Any
    read_only: bool
    lexical: bool
    _sync_index: Callable[[], None]
    _lexical_index: Callable[[], Any]
    acquire_writer: Callable[[], None]

    # ------------------------------------------------------------------------------------ opening

    @classmethod
    def open(cls: type[_B], root: Path, manifest: Manifest, *, read_only: bool) -> _B:
        """Open a saved directory (the store read-only until the first write).

        Raises:
            IntegrityError: the store is damaged or does not match the manifest.

        Example:
            >>> backend = LocalBackend.open(Path("my-index"), read_manifest(Path("my-index")),
            ...                             read_only=True)  # doctest: +SKIP
        """
        from ragkit.index.faiss import FaissIndex

        entry = manifest.backend
        store_name = _safe_name(entry, "store")
        index_spec = entry.get("index") or {}
        try:
            # dim=None: the index takes its size from the vectors (a reindex may change it).
            spec = {k: v for k, v in index_spec.items() if k != "class"}
            index = FaissIndex.from_spec({**spec, "dim": None})
        except (ConfigError, InputTypeError, TypeError) as e:
            raise IntegrityError(f"the manifest's vector index settings are invalid: {e}") from e
        lexical = entry.get("lexical_settings", {}) if entry.get("lexical_enabled", True) else None
        self = cls.__new__(cls)
        self._index = index
        self._bm25_settings = dict(lexical) if isinstance(lexical, Mapping) else None
        self._lock = RWLock()
        self._index_generation = self._bm25_generation = -1
        self._bm25 = None
        self._tmpdir = None
        self._directory, self._store_name = root, store_name
        self._dir_lock = DirLock(root, owner=self)
        self.read_only = read_only
        store_path = root / store_name
        if not store_path.is_file():
            raise IntegrityError(f"{store_path} is missing: the directory is incomplete")
        self._store = SQLiteStore(store_path, read_only=True)
        try:
            self._check_store(manifest)
            self._load_derived(root, manifest)
        except BaseException:
            self._store.close()
            raise
        return self

    def _check_store(self, manifest: Manifest) -> None:
        """The store belongs to the manifest: same generation, counts and fingerprint, or newer.

        A store ahead of its manifest (batches or a reindex committed after the last save) is the
        source of truth; the pipeline checks the embedder against its fingerprint.
        """
        store = self._store
        store.integrity_check()
        generation, documents, chunks, fingerprint = store.state()  # one consistent read
        if generation < manifest.generation:
            raise IntegrityError(
                f"the store (generation {generation}) is older than the manifest ({manifest.generation}): "
                "the store file was replaced or rolled back"
            )
        if generation == manifest.generation:
            if fingerprint is not None and fingerprint != manifest.fingerprint:
                raise IntegrityError(
                    "the manifest's fingerprint differs from the store's: the files do not belong together"
                )
            counts = {"documents": documents, "chunks": chunks}
            saved = manifest.counts.model_dump()
            if counts != saved:
                raise IntegrityError(f"counts differ: the store holds {counts}, the manifest says {saved}")

    def _load_derived(self, root: Path, manifest: Manifest) -> None:
        """Load the saved derived indexes when current and intact; otherwise they are rebuilt lazily."""
        entry = manifest.backend
        current = self._store.generation == manifest.generation
        if not current:
            logger.info("%s: the store moved on since the last save; rebuilding the derived indexes", root)
            return
        vectors = _safe_name(entry, "vectors", optional=True)
        if vectors and persistence.verify_files(root, manifest.files, vectors):
            try:
                self._index.load(root / vectors)
                expected = manifest.counts.chunks
                if len(self._index) != expected:
                    raise IntegrityError(f"{vectors} holds {len(self._index)} vectors, not {expected}")
                self._index_generation = manifest.generation
            except (IntegrityError, OSError) as e:
                logger.warning("%s: cannot use %s (%s); rebuilding it from the store", root, vectors, e)
                self._index.clear()
        lexical = _safe_name(entry, "lexical", optional=True)
        wanted = self._bm25_settings is not None and lexical
        if wanted and persistence.verify_files(root, manifest.files, lexical):
            from ragkit.lexical import BM25Index

            bm25 = BM25Index()
            try:
                bm25.load(root / lexical)
                if len(bm25) != manifest.counts.chunks:
                    raise IntegrityError(f"{lexical} holds {len(bm25)} chunks, the manifest says otherwise")
            except (IntegrityError, OSError) as e:
                logger.warning("%s: cannot use %s (%s); rebuilding it from the store", root, lexical, e)
                return
            self._bm25, self._bm25_generation = bm25, manifest.generation
            self._bm25_settings = bm25.spec()

    # ---------------------------------------------------------------------------------- persistence

    def _same_directory(self, directory: Path) -> bool:
        if self._directory is None:
            return False
        with contextlib.suppress(OSError):
            return os.path.samefile(self._directory, directory)
        return False

    def save(self, directory: Path, tag: str, commit: Callable[[SavedBackend], None]) -> SavedBackend:
        """Write the store (when the directory is not already its home) and the derived indexes,
        commit, then move this backend into ``directory``. See :meth:`Backend.save`."""
        same = self._same_directory(directory)
        lock = self._dir_lock
        if same:
            self.acquire_writer()
        else:
            if self.read_only:
                raise ReadOnlyError("this pipeline was loaded with read_only=True")
            lock = DirLock(directory, owner=self)
            lock.acquire()
        # Into another directory the store moves: no write may land in the old one between the copy
        # and the switch, so the write lock is held throughout (searches wait for this one save).
        held = self._lock.write() if not same else contextlib.nullcontext()
        try:
            with held:
                with storage_errors(f"saving to {directory}"):
                    saved = self._snapshot(directory, tag, copy_store=not same)
                commit(saved)
                self._bind(directory, saved, lock)
        except BaseException:
            saved_now = locals().get("saved")
            if saved_now is None or not persistence.committed(directory, saved_now.entry):
                if lock is not self._dir_lock:
                    lock.release()
                persistence.remove_tagged(directory, tag)
                raise
            with self._lock.write():
                self._bind(directory, saved, lock)
            raise
        return saved

    def _snapshot(self, directory: Path, tag: str, *, copy_store: bool) -> SavedBackend:
        for attempt in range(_SNAPSHOT_TRIES + 1):
            self._sync_index()
            if self.lexical:
                self._lexical_index()
            last = attempt == _SNAPSHOT_TRIES
            with self._lock.write() if last else self._lock.read():
                generation = self._store.generation
                if last:  # nothing can move now: bring both indexes to this generation
                    self._sync_index()
                    if self.lexical:
                        self._lexical_index()
                if generation == self._index_generation and (
                    not self.lexical or generation == self._bm25_generation
                ):
                    return self._write_files(directory, tag, generation, copy_store=copy_store)
        raise AssertionError("unreachable")

    def _write_files(self, directory: Path, tag: str, generation: int, *, copy_store: bool) -> SavedBackend:
        if copy_store:
            store_name = f"store-{tag}.sqlite"
            tmp = directory / f".{store_name}.tmp"
            self._store.backup_to(tmp)
            persistence.fsync_path(tmp)
            os.replace(tmp, directory / store_name)
            persistence.fsync_path(directory)
        else:
            store_name = self._store_name or "store.sqlite"
            self._store.checkpoint()
            persistence.fsync_path(directory / store_name)
        persistence.hook("store-saved")
        vectors = f"vectors-{tag}.faiss"
        self._index.save(directory / vectors)
        persistence.hook("vectors-saved")
        derived = [vectors, vectors + ".json"]
        keep = [store_name, vectors, vectors + ".json"]
        lexical = None
        if self._bm25 is not None and self.lexical:
            lexical = f"lexical-{tag}"
            self._bm25.save(directory / lexical)
            derived.append(lexical)
            keep.append(lexical)
        persistence.hook("lexical-saved")
        entry = {
            "kind": "local",
            "store": store_name,
            "vectors": vectors,
            "index": self._index.spec(),
            "lexical": lexical,
            "lexical_enabled": self.lexical,
            "lexical_settings": self._bm25_settings,
        }
        return SavedBackend(
            entry,
            derived=derived,
            keep=keep,
            generation=generation,
            documents=self._store.count_documents(),
            chunks=self._store.count_chunks(),
        )

    def _bind(self, directory: Path, saved: SavedBackend, lock: DirLock | None) -> None:
        """Make ``directory`` this backend's home once its manifest names ``saved``."""
        if lock is self._dir_lock:
            return
        store_name = saved.entry["store"]
        with storage_errors(f"opening {directory / store_name}"):
            new_store = SQLiteStore(directory / store_name)
        old_store, old_lock, old_tmp = self._store, self._dir_lock, self._tmpdir
        self._store, self._dir_lock, self._tmpdir = new_store, lock, None
        self._directory, self._store_name = directory, store_name
        if old_lock is not None:
            old_lock.release()
        # Not closed here: a thread may be reading it right now. Its connections close when the
        # last reference goes, and its temporary directory (if any) goes with it.
        old_store._keepalive = old_tmp
