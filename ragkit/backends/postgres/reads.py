"""Reads of a PostgreSQL backend: state, documents, chunks, vectors, pages for reindexing.

Each read takes a pooled connection for one statement (a page, for the iterators), so readers never
hold a connection between calls and see every commit of every process at once.

Example:
    >>> backend.get_document("faq-1").metadata          # doctest: +SKIP
    {'lang': 'en'}
    >>> backend.get_vectors([41])[41].dtype             # doctest: +SKIP
    dtype('float32')
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ragkit.backends.postgres.checks import as_vids, check_k, check_str_list, check_text
from ragkit.backends.postgres.connection import Database
from ragkit.backends.postgres.schema import Schema
from ragkit.backends.rows import chunk_from_row
from ragkit.types import Chunk, Document

__all__ = ["ReadsMixin"]


class ReadsMixin:
    """The read methods of :class:`~ragkit.backends.PostgresBackend` (see the Backend protocol)."""

    _db: Database
    _schema: Schema

    def _current_dim(self) -> int | None:
        """The table's dimension; read from the server only while unknown (no query once known)."""
        if self._schema.dim is None:
            with self._db.connection() as conn:
                self._schema.refresh_dim(conn)
        return self._schema.dim

    @property
    def generation(self) -> int:
        """A counter bumped by every write transaction, from any process.

        Example:
            >>> backend.generation                            # doctest: +SKIP
            17
        """
        with self._db.connection() as conn:
            return int(self._schema.read_meta(conn, ["generation"])["generation"])

    def get_meta(self, key: str) -> Any:
        """A JSON value stored under ``key`` in the meta table, or ``None``.

        Example:
            >>> backend.get_meta("fingerprint")               # doctest: +SKIP
            {'model': 'qwen3-embedding-0.6b', 'dim': 1024, ...}
        """
        check_text(key, "key")
        with self._db.connection() as conn:
            return self._schema.read_meta(conn, [key]).get(key)

    def count_documents(self) -> int:
        """How many documents the table holds."""
        with self._db.connection() as conn:
            return self._schema.count(conn, "docs")

    def count_chunks(self) -> int:
        """How many chunks (vectors) the table holds."""
        with self._db.connection() as conn:
            return self._schema.count(conn, "chunks")

    def get_document(self, doc_id: str) -> Document | None:
        """The document with this id, or ``None``."""
        check_text(doc_id, "doc_id")
        with self._db.connection() as conn:
            row = conn.execute(
                self._schema.sql("SELECT id, text, metadata::text FROM {docs} WHERE id = %s"), [doc_id]
            ).fetchone()
        return None if row is None else Document(id=row[0], text=row[1], metadata=json.loads(row[2]))

    def iter_documents(self, batch_size: int = 512) -> Iterator[Document]:
        """Documents in insertion order (a re-written document moves to the end), in pages."""
        batch_size = check_k(batch_size, "batch_size")
        statement = self._schema.sql(
            "SELECT seq, id, text, metadata::text FROM {docs} WHERE seq > %s ORDER BY seq LIMIT %s"
        )
        last = 0
        while True:
            with self._db.connection() as conn:
                rows = conn.execute(statement, [last, batch_size]).fetchall()
            if not rows:
                return
            for seq, doc_id, text, metadata in rows:
                last = seq
                yield Document(id=doc_id, text=text, metadata=json.loads(metadata))

    def document_states(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``{doc_id: (document hash, metadata JSON)}`` for the ids that exist (the canonical JSON as
        written)."""
        ids = check_str_list(doc_ids, "doc_ids")
        if not ids:
            return {}
        with self._db.connection() as conn:
            rows = conn.execute(
                self._schema.sql("SELECT id, hash, metadata::text FROM {docs} WHERE id = ANY(%s)"), [ids]
            )
            return {doc_id: (h, md) for doc_id, h, md in rows}

    def vectors_for_hashes(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """A stored vector for each chunk text hash that has one (the embedding cache)."""
        wanted = sorted(set(check_str_list(hashes, "hashes")))
        if not wanted:
            return {}
        with self._db.connection() as conn:
            rows = conn.execute(
                self._schema.sql(
                    "SELECT DISTINCT ON (hash) hash, embedding FROM {chunks} WHERE hash = ANY(%s)"
                ),
                [wanted],
                binary=True,
            )
            return dict(rows.fetchall())

    def get_chunks(self, vids: Sequence[int]) -> dict[int, Chunk]:
        """Chunks by vector id, with their document's metadata, their location and header; ids that
        no longer exist are absent."""
        ids = as_vids(vids)
        if not ids:
            return {}
        with self._db.connection() as conn:
            rows = conn.execute(
                self._schema.sql(
                    'SELECT c.vid, c.doc_id, c.n, c.text, c.start, c."end", d.metadata::text, '
                    + self._schema.chunk_columns("c")
                    + " FROM {chunks} c JOIN {docs} d ON d.id = c.doc_id WHERE c.vid = ANY(%s)"
                ),
                [ids],
            ).fetchall()
        return {vid: chunk_from_row(*row) for vid, *row in rows}

    def get_vectors(self, vids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored float32 vectors by vector id; ids that no longer exist are absent.

        Example:
            >>> backend.get_vectors([1, 2])[1].shape          # doctest: +SKIP
            (1024,)
        """
        ids = as_vids(vids)
        if not ids:
            return {}
        with self._db.connection() as conn:
            rows = conn.execute(
                self._schema.sql("SELECT vid, embedding FROM {chunks} WHERE vid = ANY(%s)"),
                [ids],
                binary=True,
            )
            return {int(vid): vector for vid, vector in rows}

    def chunk_vids(self, doc_id: str) -> list[tuple[int, int]]:
        """``[(n, vid), ...]`` of one document, in chunk order."""
        check_text(doc_id, "doc_id")
        with self._db.connection() as conn:
            rows = conn.execute(
                self._schema.sql("SELECT n, vid FROM {chunks} WHERE doc_id = %s ORDER BY n"), [doc_id]
            )
            return [(int(n), int(v)) for n, v in rows]

    def _pages(self, column: str, batch_size: int) -> Iterator[list[tuple[Any, Any]]]:
        batch_size = check_k(batch_size, "batch_size")
        statement = self._schema.sql(
            "SELECT vid, " + column + " FROM {chunks} WHERE vid > %s ORDER BY vid LIMIT %s"
        )
        last = 0
        while True:
            with self._db.connection() as conn:
                rows = conn.execute(statement, [last, batch_size], binary=True).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield rows

    def iter_texts(self, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, list[str]]]:
        """``(vids, texts)`` pages over every chunk, in vector-id order: what the embedder saw
        (``header + text``), for reindexing."""
        for rows in self._pages(self._schema.embedded_text(), batch_size):
            yield np.fromiter((r[0] for r in rows), np.int64, len(rows)), [r[1] for r in rows]

    def iter_vectors(self, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(vids, vectors)`` pages over every chunk, in vector-id order (float32, as stored).

        Example:
            >>> vids, vectors = next(backend.iter_vectors())  # doctest: +SKIP
        """
        for rows in self._pages("embedding", batch_size):
            yield np.fromiter((r[0] for r in rows), np.int64, len(rows)), np.stack([r[1] for r in rows])
