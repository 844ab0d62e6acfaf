"""The SQLite store: documents, chunks, metadata, content hashes and chunk vectors — the source of truth.

The FAISS and BM25 indexes are derived from what is here and can always be rebuilt from it. Every
write is one transaction that also bumps a generation counter, so a reader can tell whether a derived
index saved beside the store is still current.

Each chunk keeps its ``location`` (JSON: where in the document it came from) and ``header`` (the
contextual header embedded in front of its text); its content hash is :func:`embed_hash`, the hash of
``header + text``, which is the key of the embedding cache. The tables, their versions and the
migration of older stores are in :mod:`ragkit.backends.sqlite_schema`; opening the file read-only
in :mod:`ragkit.backends.sqlite_files`.

Metadata filters (:mod:`ragkit.filters`) are translated to parameterised SQL over SQLite's JSON
functions by :func:`ragkit.backends.sqlite_filter.sqlite_where`: keys and values travel as bound
parameters, never as SQL text. They select on the *document's* metadata: a chunk's ``location`` is
not visible to filters.

Example:
    >>> import numpy as np
    >>> from ragkit.backends.base import Upsert
    >>> from ragkit.types import Document, Chunk
    >>> store = SQLiteStore(":memory:")
    >>> doc = Document(id="a", text="hello world", metadata={"lang": "en"})
    >>> chunk = Chunk(id="a#0", doc_id="a", text="hello world", start=0, end=11)
    >>> _ = store.write([Upsert(doc, (chunk,), np.ones((1, 4), np.float32))])
    >>> store.filter_ids({"lang": "en"}).tolist()
    [1]
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.backends import sqlite_schema
from ragkit.backends.base import Upsert
from ragkit.backends.rows import (
    chunk_from_row,
    document_hash,
    embed_hash,
    embed_text,
    location_json,
    text_hash,
)
from ragkit.backends.sqlite_files import connect_read_only, storage_error
from ragkit.backends.sqlite_filter import sqlite_where
from ragkit.errors import IntegrityError, InvalidInputError, ReadOnlyError
from ragkit.filters import Node, check_metadata, parse_filter
from ragkit.types import Chunk, Document

logger = logging.getLogger("ragkit")

__all__ = [
    "SQLiteStore",
    "WriteResult",
    "document_hash",
    "embed_hash",
    "embed_text",
    "location_json",
    "text_hash",
]

# ------------------------------------------------------------------------------------------------ store


class WriteResult:
    """What a write changed: the vector ids removed from and added to the derived indexes."""

    __slots__ = ("added_ids", "added_vectors", "removed_ids")

    def __init__(self) -> None:
        self.removed_ids: list[int] = []
        self.added_ids: list[int] = []
        self.added_vectors: list[np.ndarray] = []


class SQLiteStore:
    """Documents, chunks and vectors in one SQLite file (WAL mode).

    Each thread reads through its own connection; writes go through one writer connection, are
    serialised, and each is one transaction that bumps :attr:`generation`. A read-only store becomes
    writable in place (:meth:`enable_writes`), so threads reading it are never disturbed. Vector ids
    are ``INTEGER PRIMARY KEY AUTOINCREMENT``: SQLite never
    reuses them, so the derived indexes cannot confuse an old vector with a new one.

    A store of an older schema is read as it is (missing chunk columns read as their defaults)
    and migrated in place, in one transaction, when it is opened for writing.

    Args:
        path: the database file, or ``":memory:"`` (one connection, for tests and doctests).
        read_only: open without write access; every write raises :class:`ReadOnlyError`.

    Example:
        >>> store = SQLiteStore(":memory:")
        >>> store.generation, store.count_documents()
        (0, 0)
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._connections: list[sqlite3.Connection] = []
        self._shared: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._immutable_copy: Any = None
        self._keepalive: Any = None  # e.g. the temporary directory the file lives in
        self._version = sqlite_schema.SCHEMA_VERSION  # of the file; a reader of an older one reads defaults
        if self.path == ":memory:":
            self._shared = self._open()
        if not read_only:
            self.enable_writes()
        self._check_schema()

    def enable_writes(self) -> None:
        """Open the writer connection (creating the schema of a new file); reads are not disturbed.

        Raises:
            StorageError: the file cannot be written (a read-only filesystem, a full disk).
        """
        with self._write_lock:
            if self._writer is not None:
                return
            try:
                conn = self._shared or sqlite3.connect(self.path, check_same_thread=False, timeout=30)
                if self._shared is None:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=FULL")
                    conn.execute("PRAGMA foreign_keys=ON")
                    self._connections.append(conn)
                sqlite_schema.create(conn)  # migrates a store of an older schema, in one transaction
            except sqlite3.OperationalError as e:
                raise storage_error(self.path, e) from e
            except sqlite3.DatabaseError as e:
                raise IntegrityError(f"cannot open the store {self.path}: {e}") from e
            self._version = sqlite_schema.read_version(conn, self.path)
            self._writer = conn
            self.read_only = False

    # -- connections

    def _open(self) -> sqlite3.Connection:
        try:
            if self.read_only:
                conn, self._immutable_copy = connect_read_only(Path(self.path), self._immutable_copy)
            elif self.path == ":memory:":
                conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            else:
                # mode=rw: a reader thread must never create an empty store where a save removed one.
                uri = Path(self.path).resolve().as_uri() + "?mode=rw"
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as e:
            if not Path(self.path).exists() and self.path != ":memory:":
                raise IntegrityError(
                    f"the store {self.path} is gone: a newer save replaced it; reload() to see that save"
                ) from e
            raise IntegrityError(f"cannot open the store {self.path}: {e}") from e
        self._connections.append(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._shared is not None:
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open()
        return conn

    def _check_schema(self) -> None:
        self._version = sqlite_schema.read_version(self._conn(), self.path)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise ReadOnlyError("this store was opened read-only")
        with self._write_lock:
            conn = self._writer
            if conn is None:
                raise ReadOnlyError("this store was opened read-only")
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
                conn.commit()
            except BaseException as e:
                with suppress(sqlite3.Error):
                    conn.rollback()
                if isinstance(e, UnicodeEncodeError):
                    raise InvalidInputError(f"text that UTF-8 cannot encode: {e}") from e
                if isinstance(e, sqlite3.OperationalError):
                    raise storage_error(self.path, e) from e
                raise

    def close(self) -> None:
        """Close every connection (idempotent)."""
        for conn in self._connections:
            with suppress(sqlite3.Error):
                conn.close()
        self._connections.clear()
        self._shared = self._writer = None
        self._local = threading.local()
        if self._immutable_copy is not None:
            self._immutable_copy.cleanup()
            self._immutable_copy = None

    # -- metadata of the store itself

    @property
    def generation(self) -> int:
        """A counter bumped by every write transaction."""
        row = self._conn().execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0])

    def state(self) -> tuple[int, int, int, Any]:
        """``(generation, documents, chunks, fingerprint)`` read in one transaction (a consistent view)."""
        conn = self._conn()
        with self._write_lock if conn is self._shared else nullcontext():
            conn.execute("BEGIN")
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
                generation = int(row[0])
                docs = int(conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
                chunks = int(conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])
                row = conn.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
            finally:
                conn.execute("COMMIT")
        return generation, docs, chunks, None if row is None else json.loads(row[0])

    def get_meta(self, key: str) -> Any:
        """A JSON value stored under ``key`` in the store's own metadata table, or ``None``."""
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` (one transaction)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True))
            )

    # -- reads

    def count_documents(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def count_chunks(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def get_document(self, doc_id: str) -> Document | None:
        row = (
            self._conn()
            .execute("SELECT id, text, metadata FROM documents WHERE id = ?", (doc_id,))
            .fetchone()
        )
        return None if row is None else Document(id=row[0], text=row[1], metadata=json.loads(row[2]))

    def iter_documents(self, batch_size: int = 512) -> Iterator[Document]:
        """Documents in insertion order, read in pages so memory stays flat."""
        last = 0
        while True:
            rows = (
                self._conn()
                .execute(
                    "SELECT seq, id, text, metadata FROM documents WHERE seq > ? ORDER BY seq LIMIT ?",
                    (last, batch_size),
                )
                .fetchall()
            )
            if not rows:
                return
            for seq, doc_id, text, metadata in rows:
                last = seq
                yield Document(id=doc_id, text=text, metadata=json.loads(metadata))

    def document_states(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``{doc_id: (document hash, metadata JSON)}`` for the ids that exist (:func:`document_hash`)."""
        out: dict[str, tuple[str, str]] = {}
        conn = self._conn()
        for part in _batches(list(doc_ids), 500):
            marks = ",".join("?" * len(part))
            for doc_id, h, md in conn.execute(
                f"SELECT id, hash, metadata FROM documents WHERE id IN ({marks})", part
            ):
                out[doc_id] = (h, md)
        return out

    def vectors_for_hashes(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Stored vectors of chunks with these content hashes (the embedding cache)."""
        out: dict[str, np.ndarray] = {}
        conn = self._conn()
        for part in _batches(sorted(set(hashes)), 500):
            marks = ",".join("?" * len(part))
            for h, blob in conn.execute(
                f"SELECT hash, vector FROM chunks WHERE hash IN ({marks}) GROUP BY hash", part
            ):
                out[h] = np.frombuffer(blob, dtype="<f4")
        return out

    def get_chunks(self, vids: Sequence[int]) -> dict[int, Chunk]:
        """Chunks by vector id (ids that no longer exist are absent from the result)."""
        out: dict[int, Chunk] = {}
        conn = self._conn()
        extra = sqlite_schema.chunk_columns(self._version, "c")
        for part in _batches([int(v) for v in vids], 500):
            marks = ",".join("?" * len(part))
            rows = conn.execute(
                f'SELECT c.vid, c.doc_id, c.n, c.text, c.start, c."end", d.metadata, {extra} FROM chunks c '
                f"JOIN documents d ON d.id = c.doc_id WHERE c.vid IN ({marks})",
                part,
            )
            for vid, *row in rows:
                out[vid] = chunk_from_row(*row)
        return out

    def chunk_vids(self, doc_id: str) -> list[tuple[int, int]]:
        """``[(n, vid), ...]`` of one document, in chunk order."""
        rows = self._conn().execute("SELECT n, vid FROM chunks WHERE doc_id = ? ORDER BY n", (doc_id,))
        return [(int(n), int(v)) for n, v in rows]

    def filter_ids(self, filter: Node | Mapping[str, Any] | None) -> np.ndarray:
        """Vector ids of the chunks whose document metadata matches ``filter`` (int64, sorted)."""
        where, params = sqlite_where(parse_filter(filter))
        rows = self._conn().execute(
            f"SELECT c.vid FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE {where} ORDER BY c.vid",
            params,
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def get_vectors(self, vids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored vectors by vector id (ids that no longer exist are absent)."""
        out: dict[int, np.ndarray] = {}
        conn = self._conn()
        for part in _batches([int(v) for v in vids], 500):
            marks = ",".join("?" * len(part))
            for vid, blob in conn.execute(f"SELECT vid, vector FROM chunks WHERE vid IN ({marks})", part):
                out[int(vid)] = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        return out

    def iter_vectors(self, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, vectors)`` pages over every chunk, for rebuilding a vector index."""
        last = 0
        while True:
            rows = (
                self._conn()
                .execute(
                    "SELECT vid, vector FROM chunks WHERE vid > ? ORDER BY vid LIMIT ?", (last, batch_size)
                )
                .fetchall()
            )
            if not rows:
                return
            last = rows[-1][0]
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows]).astype(np.float32)
            yield ids, vectors

    def iter_texts(
        self, batch_size: int = 4096, *, headers: bool = True
    ) -> Iterator[tuple[np.ndarray, list[str]]]:
        """``(ids, texts)`` pages over every chunk: what was embedded (``header + text``, for a
        reindex), or with ``headers=False`` the stored text alone (for the lexical index)."""
        text = "header || text" if headers and self._version >= 2 else "text"
        last = 0
        while True:
            rows = (
                self._conn()
                .execute(
                    f"SELECT vid, {text} FROM chunks WHERE vid > ? ORDER BY vid LIMIT ?", (last, batch_size)
                )
                .fetchall()
            )
            if not rows:
                return
            last = rows[-1][0]
            yield np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)), [r[1] for r in rows]

    # -- writes

    def write(
        self, upserts: Sequence[Upsert], metadata_updates: Mapping[str, Mapping[str, Any]] | None = None
    ) -> WriteResult:
        """Upsert documents with their chunks and vectors, and replace other documents' metadata,
        in one transaction: on any error nothing is written.

        A document id that exists is replaced: its old chunks are removed (their vector ids are
        reported in ``removed_ids``) and the new ones get fresh vector ids.
        """
        result = WriteResult()
        # Serialised before the transaction, so that bad metadata fails before anything is written.
        rows = [
            (item, check_metadata(item.document.metadata), [location_json(c) for c in item.chunks])
            for item in upserts
        ]
        updates = [(doc_id, check_metadata(md)) for doc_id, md in (metadata_updates or {}).items()]
        with self._transaction() as conn:
            for item, metadata, locations in rows:
                doc = item.document
                old = conn.execute("SELECT vid FROM chunks WHERE doc_id = ?", (doc.id,)).fetchall()
                result.removed_ids.extend(int(r[0]) for r in old)
                conn.execute("DELETE FROM documents WHERE id = ?", (doc.id,))
                conn.execute(
                    "INSERT INTO documents (id, text, metadata, hash) VALUES (?, ?, ?, ?)",
                    (doc.id, doc.text, metadata, document_hash(doc)),
                )
                for n, (chunk, vector) in enumerate(zip(item.chunks, item.vectors, strict=True)):
                    blob = np.ascontiguousarray(vector, dtype="<f4").tobytes()
                    cur = conn.execute(
                        'INSERT INTO chunks (doc_id, n, text, start, "end", hash, vector, location, header) '
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            doc.id,
                            n,
                            chunk.text,
                            chunk.start,
                            chunk.end,
                            embed_hash(chunk),
                            blob,
                            locations[n],
                            chunk.header,
                        ),
                    )
                    result.added_ids.append(int(cur.lastrowid))
                    result.added_vectors.append(np.asarray(vector, dtype=np.float32))
            for doc_id, metadata in updates:
                conn.execute("UPDATE documents SET metadata = ? WHERE id = ?", (metadata, doc_id))
        return result

    def delete_documents(
        self, doc_ids: Sequence[str] = (), *, filter: Node | None = None
    ) -> tuple[int, list[int]]:
        """Delete documents (these ids, or every one whose metadata matches ``filter``) and their
        chunks, in one transaction; returns (documents deleted, vector ids removed)."""
        removed: list[int] = []
        deleted = 0
        where, params = sqlite_where(filter) if filter is not None else ("", [])
        with self._transaction() as conn:
            if where:
                doc_ids = [r[0] for r in conn.execute(f"SELECT d.id FROM documents d WHERE {where}", params)]
            for part in _batches(list(doc_ids), 500):
                marks = ",".join("?" * len(part))
                removed.extend(
                    int(r[0]) for r in conn.execute(f"SELECT vid FROM chunks WHERE doc_id IN ({marks})", part)
                )
                deleted += conn.execute(f"DELETE FROM documents WHERE id IN ({marks})", part).rowcount
        return deleted, removed

    def update_metadata(self, doc_id: str, metadata: Mapping[str, Any]) -> bool:
        """Replace a document's metadata; ``False`` when there is no such document."""
        text = check_metadata(metadata)  # before the transaction: bad metadata writes nothing
        with self._transaction() as conn:
            cur = conn.execute("UPDATE documents SET metadata = ? WHERE id = ?", (text, doc_id))
            return cur.rowcount > 0

    def replace_vectors(
        self, pages: Iterable[tuple[np.ndarray, np.ndarray]], meta: Mapping[str, Any]
    ) -> None:
        """Swap every chunk vector for a new one and set ``meta`` keys, atomically (used by reindex).

        The new vectors go to a staging table first; the swap itself is one transaction, so a failure
        part-way leaves the old vectors and fingerprint in place.
        """
        if self.read_only or self._writer is None:
            raise ReadOnlyError("this store was opened read-only")
        with self._write_lock:
            conn = self._writer
            try:
                conn.execute("DROP TABLE IF EXISTS staging_vectors")
                conn.execute("CREATE TABLE staging_vectors (vid INTEGER PRIMARY KEY, vector BLOB NOT NULL)")
                conn.commit()
                for ids, vectors in pages:
                    conn.executemany(
                        "INSERT INTO staging_vectors VALUES (?, ?)",
                        [
                            (int(i), np.ascontiguousarray(v, dtype="<f4").tobytes())
                            for i, v in zip(ids, vectors, strict=True)
                        ],
                    )
                    conn.commit()
                with self._transaction() as tx:
                    missing = tx.execute(
                        "SELECT COUNT(*) FROM chunks WHERE vid NOT IN (SELECT vid FROM staging_vectors)"
                    ).fetchone()[0]
                    if missing:
                        raise IntegrityError(f"reindex: {missing} chunks changed while re-embedding; retry")
                    tx.execute(
                        "UPDATE chunks SET vector = "
                        "(SELECT s.vector FROM staging_vectors s WHERE s.vid = chunks.vid)"
                    )
                    for key, value in meta.items():
                        text = json.dumps(value, sort_keys=True)
                        tx.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, text))
            except sqlite3.OperationalError as e:
                with suppress(sqlite3.Error):
                    conn.rollback()
                raise storage_error(self.path, e) from e
            finally:
                with suppress(sqlite3.Error):
                    conn.execute("DROP TABLE IF EXISTS staging_vectors")
                    conn.commit()

    # -- files

    def checkpoint(self) -> None:
        """Fold the WAL into the main file and make it durable (before a save)."""
        if not self.read_only:
            with self._write_lock:
                try:
                    if self._writer is not None:
                        self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.OperationalError as e:
                    raise storage_error(self.path, e) from e

    def backup_to(self, path: str | Path) -> None:
        """Copy the whole database, consistently, to ``path`` (SQLite's online backup)."""
        try:
            target = sqlite3.connect(str(path))
            try:
                with self._write_lock:
                    self._conn().backup(target)
                target.execute("PRAGMA journal_mode=WAL")
                target.commit()
            finally:
                target.close()
        except sqlite3.OperationalError as e:
            raise storage_error(str(path), e) from e

    def integrity_check(self) -> None:
        """Raise :class:`IntegrityError` unless SQLite's ``quick_check`` passes."""
        try:
            row = self._conn().execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as e:
            raise IntegrityError(f"the store {self.path} is damaged: {e}") from e
        if row is None or row[0] != "ok":
            raise IntegrityError(f"the store {self.path} is damaged: {row and row[0]}")


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
