"""Writes of a PostgreSQL backend: upserts with metadata updates, deletes, metadata, reindexing, meta keys.

Everything a write needs is validated before the first statement (texts, metadata, every vector), and
each write is one transaction that bumps the generation counter: on any error nothing is written.
Writers lock documents in id order, so concurrent writers cannot deadlock each other on documents;
PostgreSQL's own deadlock detection and :meth:`Database.write_tx`'s retries cover the rest.

Example:
    >>> backend.write([Upsert(doc, chunks, vectors)], {"other-doc": {"lang": "en"}})  # doctest: +SKIP
    >>> backend.delete(["other-doc"])                                                  # doctest: +SKIP
    1
    >>> backend.delete_matching({"lang": {"$nin": ["en", "de"]}})                     # doctest: +SKIP
    3
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragkit.backends.base import Upsert, check_delete_filter, check_vectors
from ragkit.backends.postgres.checks import as_vids, check_mapping, check_str_list, check_text
from ragkit.backends.postgres.connection import Database
from ragkit.backends.postgres.schema import RESERVED_META, Schema
from ragkit.backends.postgres_filter import postgres_where
from ragkit.backends.rows import document_hash, embed_hash, location_json
from ragkit.errors import IndexMismatchError, InputTypeError, IntegrityError, InvalidInputError
from ragkit.filters import Node, check_metadata

__all__ = ["WritesMixin"]

# Called with a stage name inside write transactions; tests set it to kill a writer mid-upsert.
_write_hook: Callable[[str], None] | None = None


def _hook(stage: str) -> None:
    if _write_hook is not None:
        _write_hook(stage)


def _verbatim(text: str) -> str:
    return text


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{what} must be JSON-serialisable without NaN/inf: {e}") from e


@dataclass
class _Prepared:
    """One validated upsert, ready for the transaction."""

    doc_id: str
    text: str
    hash: str
    metadata: str
    chunks: list[tuple[str, int, int, str, str, str]]  # text, start, end, hash, location JSON, header
    vectors: np.ndarray | None


class WritesMixin:
    """The write methods of :class:`~ragkit.backends.PostgresBackend` (see the Backend protocol)."""

    _db: Database
    _schema: Schema
    _current_dim: Callable[[], int | None]  # ReadsMixin's

    # ------------------------------------------------------------------------------------- meta

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` (one transaction); ragkit's own keys are refused.

        Example:
            >>> backend.set_meta("fingerprint", embedder.fingerprint)  # doctest: +SKIP
        """
        self._db.check_writable()
        check_text(key, "key")
        if key in RESERVED_META:
            raise InvalidInputError(f"set_meta: {key!r} is not a settable key")
        text = _json(value, f"the value of {key!r}")
        self._db.write_tx(lambda conn: self._schema.upsert_meta(conn, key, text))

    # ----------------------------------------------------------------------------------- upsert

    def _prepare(self, upserts: Sequence[Upsert]) -> tuple[list[_Prepared], int | None]:
        if isinstance(upserts, (Upsert, str, bytes, Mapping)) or not isinstance(upserts, Iterable):
            raise InputTypeError(f"upserts must be a sequence of Upsert, got {type(upserts).__name__}")
        table_dim = self._current_dim()
        dim = table_dim
        prepared: list[_Prepared] = []
        for item in upserts:
            if not isinstance(item, Upsert):
                raise InputTypeError(f"upserts must hold Upsert items, got {type(item).__name__}")
            doc = item.document
            doc_id = check_text(doc.id, "a document id")
            chunks = []
            for c in item.chunks:
                text = check_text(c.text, f"the text of chunk {c.id!r}")
                header = check_text(c.header, f"the header of chunk {c.id!r}")
                chunks.append((text, int(c.start), int(c.end), embed_hash(c), location_json(c), header))
            vectors = None
            if chunks:
                v = item.vectors
                width = v.shape[1] if v.ndim == 2 else None
                if table_dim is not None and width is not None and width != table_dim:
                    raise IndexMismatchError(
                        f"table {self._schema.table!r} holds {table_dim}-dimensional vectors, those of "
                        f"{doc_id!r} have {width}: vectors of different sizes come from different "
                        "embedders; use another table, or reindex"
                    )
                dim = width if dim is None else dim
                vectors = check_vectors(v, dim=-1 if dim is None else dim, names=[c.id for c in item.chunks])
            prepared.append(
                _Prepared(
                    doc_id=doc_id,
                    text=check_text(doc.text, f"the text of {doc_id!r}"),
                    hash=document_hash(doc),
                    metadata=check_metadata(doc.metadata),
                    chunks=chunks,
                    vectors=vectors,
                )
            )
        if dim is not None and table_dim is None:
            self._schema.check_dim(dim)
        # Within one call the last version of an id wins; documents are then locked in id order.
        last = {p.doc_id: p for p in prepared}
        return [last[k] for k in sorted(last)], (
            dim if any(p.vectors is not None for p in prepared) else None
        )

    def write(
        self, upserts: Sequence[Upsert], metadata_updates: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        """Upsert documents with their chunks and vectors, and replace the metadata of others, atomically.

        An existing document id is replaced: its old chunks go, the new ones get fresh vector ids
        from the table's sequence (never reused). ``metadata_updates`` maps ids of existing
        documents to their new metadata (text and vectors untouched; ids that do not exist are
        skipped; applied after the upserts). Every text, metadata and vector is checked before the
        first statement, and on any error nothing is written, metadata updates included.

        Raises:
            InvalidInputError: a bad vector (zero, NaN/inf, wrong shape), metadata that is not JSON,
                text with a NUL character or a lone surrogate.
            IndexMismatchError: vectors of another dimension than the table's.
            ReadOnlyError: opened with ``read_only=True``.

        Example:
            >>> backend.write([Upsert(doc, chunks, vectors)])  # doctest: +SKIP
        """
        self._db.check_writable()
        prepared, dim = self._prepare(upserts)
        updates: dict[str, str] = {}
        if metadata_updates is not None:
            for doc_id, metadata in check_mapping(metadata_updates, "metadata_updates").items():
                check_text(doc_id, "a document id in metadata_updates")
                updates[doc_id] = check_metadata(check_mapping(metadata, f"the metadata of {doc_id!r}"))
        if not prepared and not updates:
            return
        if dim is not None:
            with self._db.errors():
                self._schema.ensure_dim(self._db.connect, dim)

        def body(conn: Any) -> None:
            if prepared and updates:
                conn.execute(
                    self._schema.sql("SELECT id FROM {docs} WHERE id = ANY(%s) ORDER BY id FOR UPDATE"),
                    [sorted({p.doc_id for p in prepared} | set(updates))],
                )
            if prepared:
                self._upsert(conn, prepared)
            if updates:
                rows = sorted(updates.items())
                with conn.cursor() as cur:
                    cur.executemany(
                        self._schema.sql("UPDATE {docs} SET metadata = %s::json WHERE id = %s"),
                        [(md, doc_id) for doc_id, md in rows],
                    )
                    cur.executemany(
                        self._schema.sql("UPDATE {chunks} SET metadata = %s::jsonb WHERE doc_id = %s"),
                        [(md, doc_id) for doc_id, md in rows],
                    )
                _hook("metadata-updated")

        self._db.write_tx(body)

    def _upsert(self, conn: Any, prepared: list[_Prepared]) -> None:
        from psycopg.types.json import Jsonb

        schema = self._schema
        with conn.cursor() as cur:
            cur.executemany(
                schema.sql(
                    "INSERT INTO {docs} (id, text, metadata, hash) VALUES (%s, %s, %s::json, %s) "
                    "ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, metadata = EXCLUDED.metadata, "
                    "hash = EXCLUDED.hash, seq = DEFAULT"
                ),
                [(p.doc_id, p.text, p.metadata, p.hash) for p in prepared],
            )
        _hook("documents-upserted")
        conn.execute(
            schema.sql("DELETE FROM {chunks} WHERE doc_id = ANY(%s)"), [[p.doc_id for p in prepared]]
        )
        if any(p.chunks for p in prepared):
            # Vector ids come from the column's identity sequence, in row order.
            with conn.cursor().copy(
                schema.sql(
                    'COPY {chunks} (doc_id, n, text, start, "end", hash, metadata, embedding, location, '
                    "header) FROM STDIN (FORMAT BINARY)"
                )
            ) as copy:
                types = ["text", "int4", "text", "int4", "int4", "text", "jsonb", schema.vector_oid]
                copy.set_types([*types, "jsonb", "text"])
                for p in prepared:
                    metadata = Jsonb(p.metadata, dumps=_verbatim)  # the canonical JSON text, as is
                    assert p.vectors is not None or not p.chunks
                    for n, (text, start, end, h, location, header) in enumerate(p.chunks):
                        where = Jsonb(location, dumps=_verbatim)
                        row = (p.doc_id, n, text, start, end, h, metadata, p.vectors[n], where, header)
                        copy.write_row(row)
        _hook("chunks-written")

    # ---------------------------------------------------------------------------- delete, update

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Delete documents and their chunks (one transaction); returns how many existed.

        Example:
            >>> backend.delete(["faq-1", "no-such-id"])  # doctest: +SKIP
            1
        """
        self._db.check_writable()
        ids = sorted(set(check_str_list(doc_ids, "doc_ids")))
        if not ids:
            return 0

        def body(conn: Any) -> int:
            schema = self._schema
            conn.execute(schema.sql("SELECT id FROM {docs} WHERE id = ANY(%s) ORDER BY id FOR UPDATE"), [ids])
            conn.execute(schema.sql("DELETE FROM {chunks} WHERE doc_id = ANY(%s)"), [ids])
            return int(conn.execute(schema.sql("DELETE FROM {docs} WHERE id = ANY(%s)"), [ids]).rowcount)

        return self._db.write_tx(body)

    def delete_matching(self, filter: Node | Mapping[str, Any]) -> int:
        """Delete every document whose metadata matches ``filter``, with its chunks (one
        transaction); returns how many. Documents without chunks are matched too: the filter
        reads the documents table (its ``json`` metadata read as ``jsonb``, row by row).

        Raises:
            InvalidInputError: a bad filter, or one that matches everything by construction
                (:func:`~ragkit.backends.base.check_delete_filter`).
            ReadOnlyError: opened with ``read_only=True``.

        Example:
            >>> backend.delete_matching({"$or": [{"lang": "de"}, {"year": {"$lt": 2000}}]})  # doctest: +SKIP
            14
        """
        from psycopg import sql

        node = check_delete_filter(filter)
        self._db.check_writable()
        where, params = postgres_where(node, column="m.metadata")
        schema = self._schema
        select = (
            schema.sql("SELECT d.id FROM {docs} d, LATERAL (SELECT d.metadata::jsonb AS metadata) m WHERE ")
            + sql.SQL(where)
            + sql.SQL(" ORDER BY d.id FOR UPDATE OF d")
        )

        def body(conn: Any) -> int:
            ids = [r[0] for r in conn.execute(select, params)]  # locked in id order, as delete() does
            _hook("matching-selected")
            if not ids:
                return 0
            conn.execute(schema.sql("DELETE FROM {chunks} WHERE doc_id = ANY(%s)"), [ids])
            _hook("matching-chunks-deleted")
            return int(conn.execute(schema.sql("DELETE FROM {docs} WHERE id = ANY(%s)"), [ids]).rowcount)

        return self._db.write_tx(body)

    def update_metadata(self, doc_id: str, metadata: Mapping[str, Any]) -> bool:
        """Replace one document's metadata (and its chunks' copies); ``False`` when there is no such one.

        Example:
            >>> backend.update_metadata("faq-1", {"lang": "en", "reviewed": True})  # doctest: +SKIP
            True
        """
        self._db.check_writable()
        check_text(doc_id, "doc_id")
        text = check_metadata(check_mapping(metadata, "metadata"))

        def body(conn: Any) -> bool:
            cur = conn.execute(
                self._schema.sql("UPDATE {docs} SET metadata = %s::json WHERE id = %s"), [text, doc_id]
            )
            if cur.rowcount == 0:
                return False
            conn.execute(
                self._schema.sql("UPDATE {chunks} SET metadata = %s::jsonb WHERE doc_id = %s"), [text, doc_id]
            )
            return True

        return self._db.write_tx(body)

    # ----------------------------------------------------------------------------------- reindex

    def replace_vectors(self, pages: Iterable[tuple[np.ndarray, np.ndarray]], fingerprint: Any) -> None:
        """Swap every chunk vector for a new one and set the ``"fingerprint"`` meta key, atomically.

        ``pages`` yields ``(vids, vectors)``, covering every chunk (as :meth:`iter_texts` pages
        them). The new vectors go to a staging table first (committed page by page); the swap is
        one transaction, so a failure part-way (a bad vector, a chunk written meanwhile) leaves the
        old vectors and fingerprint in place. A new dimension retypes the column and rebuilds the
        HNSW index inside that transaction (readers wait for it); the same dimension updates rows
        in place (readers carry on).

        Raises:
            IntegrityError: chunks were added or removed while re-embedding (try again).
            InvalidInputError: a bad vector or id, vids and vectors of different lengths.

        Example:
            >>> backend.replace_vectors(pages, new_embedder.fingerprint)  # doctest: +SKIP
        """
        self._db.check_writable()
        if isinstance(pages, (str, bytes, Mapping)) or not isinstance(pages, Iterable):
            raise InputTypeError(f"pages must be an iterable of (vids, vectors), got {type(pages).__name__}")
        fingerprint_json = _json(fingerprint, "the fingerprint")
        schema = self._schema
        with self._db.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", [schema.lock_key("reindex")])
            requested = schema.requested_dim
            try:
                conn.execute(schema.sql("DROP TABLE IF EXISTS {staging}"))
                conn.execute(
                    schema.sql(
                        "CREATE UNLOGGED TABLE {staging} (vid bigint PRIMARY KEY, embedding vector NOT NULL)"
                    )
                )
                new_dim = self._stage(conn, pages)
                with conn.transaction():
                    self._swap(conn, new_dim)
                    schema.upsert_meta(conn, "fingerprint", fingerprint_json)
                    self._db.bump(conn)
            except BaseException:
                # The swap rolled back: re-read what the table really holds.
                schema.requested_dim = requested
                schema.forget_dim()
                raise
            finally:
                if not conn.broken:
                    conn.execute(schema.sql("DROP TABLE IF EXISTS {staging}"))
                    conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [schema.lock_key("reindex")])
            schema.refresh_dim(conn)

    def _stage(self, conn: Any, pages: Iterable[tuple[np.ndarray, np.ndarray]]) -> int | None:
        """COPY the new vectors into the staging table, page by page; returns their dimension."""
        schema = self._schema
        new_dim: int | None = None
        for page in pages:
            if not isinstance(page, tuple) or len(page) != 2:
                raise InputTypeError("replace_vectors: pages must yield (vids, vectors) pairs")
            ids = as_vids(page[0])
            raw = np.asarray(page[1]) if not isinstance(page[1], np.ndarray) else page[1]
            if new_dim is None and raw.ndim == 2:
                new_dim = int(raw.shape[1])
            names = [f"vector id {i}" for i in ids]
            v = check_vectors(raw, dim=-1 if new_dim is None else new_dim, names=names)
            if len(v) and new_dim is not None:
                schema.check_dim(new_dim)
            if not ids:
                continue
            with (
                conn.transaction(),
                conn.cursor().copy(
                    schema.sql("COPY {staging} (vid, embedding) FROM STDIN (FORMAT BINARY)")
                ) as copy,
            ):
                copy.set_types(["int8", schema.vector_oid])
                for i, row in zip(ids, v, strict=True):
                    copy.write_row((i, row))
        return new_dim

    def _swap(self, conn: Any, new_dim: int | None) -> None:
        """Inside the swap transaction: check coverage, then move the staged vectors in."""
        from psycopg import sql

        schema = self._schema
        conn.execute(schema.sql("LOCK TABLE {chunks} IN SHARE ROW EXCLUSIVE MODE"))
        missing = conn.execute(
            schema.sql(
                "SELECT count(*) FROM {chunks} c "
                "WHERE NOT EXISTS (SELECT 1 FROM {staging} s WHERE s.vid = c.vid)"
            )
        ).fetchone()[0]
        if missing:
            raise IntegrityError(f"reindex: {missing} chunks changed while re-embedding; try again")
        conn.execute("SELECT set_config('statement_timeout', '0', true)")
        update = schema.sql(
            "UPDATE {chunks} c SET embedding = s.embedding FROM {staging} s WHERE s.vid = c.vid"
        )
        if new_dim is None or new_dim == schema.refresh_dim(conn):
            conn.execute(update)
            return
        conn.execute(schema.sql("DROP INDEX IF EXISTS {hnsw}"))
        conn.execute(
            schema.sql(
                "ALTER TABLE {chunks} ALTER COLUMN embedding DROP NOT NULL, "
                "ALTER COLUMN embedding TYPE vector({d}) USING NULL",
                d=sql.Literal(new_dim),
            )
        )
        conn.execute(update)
        conn.execute(schema.sql("ALTER TABLE {chunks} ALTER COLUMN embedding SET NOT NULL"))
        conn.execute(schema.sql("DELETE FROM {meta} WHERE key = 'hnsw'"))
        schema.upsert_meta(conn, "dim", json.dumps(new_dim))
        schema.dim, schema.hnsw_ready, schema.requested_dim = new_dim, False, new_dim
        if schema.options.index == "hnsw":
            schema.build_hnsw(conn, new_dim)
