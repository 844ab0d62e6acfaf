"""Searches of a PostgreSQL backend: dense (HNSW or exact), lexical (full text), counts, query plans.

A metadata filter compiles to parameterised SQL (:func:`ragkit.backends.postgres_filter.postgres_where`)
evaluated in the same statement as the vector ``ORDER BY``, so it applies before the top-k cut.
Filtered HNSW searches use pgvector 0.8's iterative index scans, and any query that still comes back
with fewer than ``k`` hits is recomputed exactly: a search returns ``k`` hits whenever ``k`` chunks
match. A ``k`` above 1,000 (``hnsw.ef_search``'s cap) is first clamped to the number of matching
chunks, so ``k=10**9`` costs what the collection costs.

Example:
    >>> [(scores, vids)] = backend.dense_search(query[None], 10, filter={"lang": "en"})  # doctest: +SKIP
    >>> scores, vids = backend.lexical_search('refund -"gift card"', 20)               # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ragkit.backends.base import check_vectors, empty_hits
from ragkit.backends.postgres.checks import LIMIT_MAX, as_filter, check_k, check_text
from ragkit.backends.postgres.connection import Database
from ragkit.backends.postgres.options import MAX_EF_SEARCH
from ragkit.backends.postgres.schema import Schema
from ragkit.backends.postgres_filter import postgres_where
from ragkit.errors import InvalidInputError
from ragkit.filters import Node

__all__ = ["SearchMixin"]

logger = logging.getLogger("ragkit")

_Hits = list[tuple[Any, ...]]


def _where(node: Node | None) -> tuple[str, list[Any]]:
    if node is None:
        return "TRUE", []
    where, params = postgres_where(node, column="c.metadata")
    return where, list(params)


class SearchMixin:
    """The search methods of :class:`~ragkit.backends.PostgresBackend` (see the Backend protocol)."""

    _db: Database
    _schema: Schema
    _current_dim: Callable[[], int | None]  # ReadsMixin's

    def count_matching(self, filter: Node | dict[str, Any] | None) -> int:
        """How many chunks match ``filter`` (a parsed filter or a filter dict; ``None``: all).

        Example:
            >>> backend.count_matching({"lang": "en", "year": {"$gte": 2020}})  # doctest: +SKIP
            1204
        """
        from psycopg import sql

        where, params = _where(as_filter(filter))
        statement = self._schema.sql("SELECT count(*) FROM {chunks} c WHERE ") + sql.SQL(where)
        with self._db.connection() as conn:
            return int(conn.execute(statement, params).fetchone()[0])

    # ------------------------------------------------------------------------------------- dense

    def _statement(self, conn: Any, hnsw: bool, where: str, explain: bool) -> str:
        """The search statement's text, composed once per shape (psycopg would re-quote it per call)."""
        from psycopg import sql

        schema = self._schema
        coded = "bit" if hnsw and schema.bit else "halfvec" if hnsw and schema.halfvec else None
        key = (coded, schema.dim if coded else None, where, explain)
        text = schema.statements.get(key)
        if text is None:
            # The ORDER BY must match the index expression for the planner to walk HNSW.
            d = sql.Literal(schema.dim)
            if coded == "bit":
                order = sql.SQL("(binary_quantize(c.embedding)::bit({d})) <~> binary_quantize(%s::vector)")
            elif coded == "halfvec":
                order = sql.SQL("(c.embedding::halfvec({d})) <=> (%s::vector::halfvec({d}))")
            else:
                order = sql.SQL("distance")
            statement = (
                schema.sql("SELECT c.vid, c.embedding <=> %s AS distance FROM {chunks} c WHERE ")
                + sql.SQL(where)
                + sql.SQL(" ORDER BY ")
                + order.format(d=d)
                + sql.SQL(" LIMIT %s")
            )
            if coded:
                # The compressed index proposes k * rescore candidates; their float32 distance ranks them.
                statement = sql.SQL("SELECT vid, distance FROM (") + statement
                statement += sql.SQL(") r ORDER BY distance, vid LIMIT %s")
            statement = sql.SQL("EXPLAIN " if explain else "") + statement
            text = statement.as_string(conn)
            if len(schema.statements) >= 256:  # filters of many shapes: keep the cache bounded
                schema.statements.clear()
            schema.statements[key] = text
        return text

    def _run(
        self, q: np.ndarray, k: int, where: str, params: list[Any], hnsw: bool, *, explain: bool = False
    ) -> list[_Hits]:
        schema = self._schema
        settings: list[str] = []
        coded = hnsw and schema.compressed
        width = min(MAX_EF_SEARCH, k * schema.options.rescore) if coded else k
        if hnsw:
            settings += ["hnsw.ef_search", str(min(MAX_EF_SEARCH, max(schema.options.ef_search, width)))]
            if schema.iterative_scans:
                settings += ["hnsw.iterative_scan", "relaxed_order"]
                settings += ["hnsw.max_scan_tuples", str(schema.options.max_scan_tuples)]
        else:
            # Exact: never the ANN index (HNSW is only ever an index scan; bitmap scans of the GIN
            # and btree indexes stay available to the filter).
            settings += ["enable_indexscan", "off"]
        configure = "SELECT " + ", ".join(["set_config(%s, %s, true)"] * (len(settings) // 2))
        extra = [max(width, k)] if coded else []  # the candidates' LIMIT, before the final one
        # Transaction-local settings (safe behind PgBouncer's transaction pooling). One query is
        # sent plainly; several are pipelined (one round trip for all of them).
        with self._db.connection() as conn, conn.transaction():
            statement = self._statement(conn, hnsw, where, explain)
            conn.execute(configure, settings)
            if len(q) == 1:
                args = [q[0], *params, *([q[0], *extra] if coded else []), k]
                return [conn.execute(statement, args, binary=not explain).fetchall()]
            with conn.pipeline():
                cursors = [
                    conn.execute(
                        statement, [vec, *params, *([vec, *extra] if coded else []), k], binary=not explain
                    )
                    for vec in q
                ]
            return [cur.fetchall() for cur in cursors]

    def _plan(self, vectors: Any, k: Any, filter: Any) -> tuple[np.ndarray, int, Node | None, int | None]:
        """Validate a dense search: ``(queries, k, parsed filter, table dim)``."""
        k = check_k(k)
        node = as_filter(filter)
        try:
            q = np.asarray(vectors)
        except (TypeError, ValueError) as e:  # ragged lists
            raise InvalidInputError(f"query vectors must be an (n, dim) array: {e}") from e
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2:
            raise InvalidInputError(f"query vectors must be (n, dim) or (dim,), got shape {q.shape}")
        dim = self._current_dim()
        width = q.shape[1] if q.ndim == 2 else -1
        q = check_vectors(
            q, dim=dim if dim is not None else width, names=[f"query {i}" for i in range(len(q))]
        )
        return q, k, node, dim

    def _use_hnsw(self, node: Node | None, k: int) -> bool:
        schema = self._schema
        return (
            schema.options.index == "hnsw"
            and schema.hnsw_ready
            and (schema.iterative_scans or (node is None and k <= MAX_EF_SEARCH))
        )

    def dense_search(
        self, vectors: np.ndarray, k: int, *, filter: Node | dict[str, Any] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``k`` nearest chunks of each query by cosine, optionally among those matching ``filter``.

        Args:
            vectors: ``(n, dim)`` queries (or one ``(dim,)`` query), finite and non-zero.
            k: hits per query; more than the matching chunks gives all of them.
            filter: a parsed filter (:func:`ragkit.filters.parse_filter`) or a filter dict.

        Returns:
            Per query, ``(scores, vids)``: float32 cosines and int64 vector ids, best first (ties
            by ascending id), at most ``k``, no padding.

        Example:
            >>> [(scores, vids)] = backend.dense_search(np.float32([[0.1, 0.9]]), 5)  # doctest: +SKIP
        """
        q, k, node, dim = self._plan(vectors, k, filter)
        if dim is None or not len(q):
            return empty_hits(len(q))
        where, params = _where(node)
        hnsw = self._use_hnsw(node, k)
        if k > MAX_EF_SEARCH:
            # Beyond hnsw.ef_search's cap: bound k by what matches, and when that is everything,
            # sort it exactly (what the collection costs, whatever k asked).
            matching = self.count_matching(node)
            if matching == 0:
                return empty_hits(len(q))
            hnsw = hnsw and k < matching
            k = min(k, matching)
        results = self._run(q, k, where, params, hnsw)
        short = [i for i, r in enumerate(results) if len(r) < k]
        if hnsw and short:
            # Fewer than k: either fewer rows match, or the scan gave up; exact search settles it.
            logger.debug("%s: %d short queries recomputed exactly", self._schema.table, len(short))
            for i, r in zip(short, self._run(q[short], k, where, params, False), strict=True):
                results[i] = r
        out = []
        for hits in results:
            # relaxed_order returns nearly sorted hits: sort by exact distance, ties by id.
            hits.sort(key=lambda h: (h[1], h[0]))
            hits = hits[:k]
            vids = np.fromiter((h[0] for h in hits), np.int64, len(hits))
            distances = np.fromiter((h[1] for h in hits), np.float64, len(hits))
            out.append(((1.0 - distances).astype(np.float32), vids))
        return out

    def explain(self, vector: Any, k: int = 10, *, filter: Node | dict[str, Any] | None = None) -> str:
        """PostgreSQL's plan for one dense search (``EXPLAIN``), to see whether it walks the HNSW index.

        With a selective filter that the GIN index on ``metadata`` can serve, the planner may
        prefer to fetch the matching rows and sort them exactly; that is usually right.

        Example:
            >>> print(backend.explain(query_vector, 10, filter={"year": {"$gte": 2024}}))  # doctest: +SKIP
            Limit ...  ->  Index Scan using ragkit_chunks_hnsw on ragkit_chunks c ...
        """
        q, k, node, dim = self._plan(vector, k, filter)
        if dim is None:
            raise InvalidInputError(f"table {self._schema.table!r} holds no vectors yet")
        k = min(k, LIMIT_MAX)
        where, params = _where(node)
        rows = self._run(q[:1], k, where, params, self._use_hnsw(node, k), explain=True)[0]
        return "\n".join(r[0] for r in rows)

    # ----------------------------------------------------------------------------------- lexical

    def lexical_search(
        self, query: str, k: int, *, filter: Node | dict[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Full-text search: chunks matching ``websearch_to_tsquery(language, query)``, best first.

        Scores are ``ts_rank_cd`` (cover density), ties ordered by ascending id. Only matching
        chunks are returned, so the arrays may be shorter than ``k``; the filter applies before
        the top-k cut. Every process sees the same lexical index (a GIN index on a generated
        ``tsvector`` column).

        Returns:
            ``(scores, vids)``: 1-D float32 and int64 arrays.

        Example:
            >>> scores, vids = backend.lexical_search('refund -"gift card"', k=20)  # doctest: +SKIP
        """
        from psycopg import sql

        check_text(query, "query")
        k = min(check_k(k), LIMIT_MAX)
        where, params = _where(as_filter(filter))
        statement = (
            self._schema.sql(
                "SELECT c.vid, ts_rank_cd(c.tsv, q.query) AS score FROM {chunks} c, "
                "websearch_to_tsquery(%s::regconfig, %s) AS q(query) WHERE c.tsv @@ q.query AND "
            )
            + sql.SQL(where)
            + sql.SQL(" ORDER BY score DESC, c.vid LIMIT %s")
        )
        with self._db.connection() as conn:
            rows = conn.execute(statement, [self._schema.language, query, *params, k]).fetchall()
        return (
            np.fromiter((r[1] for r in rows), np.float32, len(rows)),
            np.fromiter((r[0] for r in rows), np.int64, len(rows)),
        )
