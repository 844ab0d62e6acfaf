"""PostgreSQL + pgvector: one vector index *and* document store shared by many processes and machines.

``PgVectorIndex`` keeps what the SQLite store keeps (documents, chunks, metadata, content hashes,
chunk vectors) in PostgreSQL, with an HNSW index on cosine distance and a full-text (``tsvector``)
index for lexical search. Every application replica points at the same database, so they all see
one index; nothing is derived or saved beside it.

Tables (``table`` is the chunk table; the others take it as a prefix)::

    {table}_meta       key text PRIMARY KEY, value jsonb          -- generation, dim, fingerprint, ...
    {table}_documents  id, text, metadata json (exact text), hash
    {table}            vid bigint identity, doc_id, n, text, start, end, hash,
                       metadata jsonb (a copy of the document's), embedding vector(dim),
                       tsv tsvector GENERATED from text          -- HNSW, GIN(tsv), GIN(metadata)

The document metadata is copied onto each chunk row so that a filtered search is a single-table
query: the filter, the vector ``ORDER BY`` and pgvector's iterative index scan run together,
instead of a join the planner may order badly. ``update_metadata`` rewrites both copies in one
transaction.

Filters (DESIGN.md "Filters") compile to parameterised SQL over ``jsonb``; keys and values only
ever travel as bound parameters:

* equality and ``$in`` use containment, ``metadata @> '{"a": {"b": v}}' OR metadata @> '{"a":
  {"b": [v]}}'`` (the second form is "a list holding v"). Containment compares JSON types as
  such (1 == 1.0, 1 != "1", true != 1) and can use the GIN index on ``metadata``;
* ``$exists``/``$ne`` test ``metadata -> 'a' -> 'b'`` with ``text`` parameters: ``->`` with a text
  key reads object fields only (never an array position, unlike ``#>``), which is SQLite's
  ``$."a"."b"`` exactly;
* ``$gt``/``$gte``/``$lt``/``$lte`` look at the value, or at each element of a list, comparing
  numbers as ``jsonb`` numbers and strings byte-wise (``COLLATE "C"``, as SQLite does).

Example:
    >>> import numpy as np
    >>> from ragkit.index import PgVectorIndex
    >>> index = PgVectorIndex("postgresql://app@db/rag", dim=4)   # doctest: +SKIP
    >>> index.add([1, 2], np.float32([[1, 0, 0, 0], [0, 1, 0, 0]]))  # doctest: +SKIP
    >>> index.search(np.float32([[1, 0.1, 0, 0]]), k=1)[1].tolist()  # doctest: +SKIP
    [[1]]
"""

from __future__ import annotations

import json
import logging
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit.errors import (
    ConfigError,
    IndexMismatchError,
    InputTypeError,
    IntegrityError,
    InvalidInputError,
    ReadOnlyError,
    UnavailableError,
)
from ragkit.index.base import check_vectors
from ragkit.store import WriteResult, check_filter_scalar, filter_key_parts, text_hash
from ragkit.types import Chunk, Document

__all__ = ["PgVectorIndex", "compile_pg_filter"]

logger = logging.getLogger("ragkit")

SCHEMA_VERSION = 1
_FORMAT = "ragkit-pgvector"
_FORMAT_VERSION = 1
_INDEXES = ("hnsw", "exact")
# 50 characters leave room for the derived names ("_documents", "_staging", ...) under PostgreSQL's 63.
_TABLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,49}$")
_LANGUAGE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# pgvector's limits: the vector type holds 16,000 dimensions; HNSW indexes 2,000 (vector) / 4,000 (halfvec).
_MAX_DIM = 16_000
_MAX_HNSW_VECTOR = 2_000
_MAX_HNSW_HALFVEC = 4_000
_MAX_EF_SEARCH = 1_000
_RESERVED_META = frozenset({"generation", "schema_version", "dim", "language", "hnsw"})
_POOL_TIMEOUT = 30.0
_CONNECT_TIMEOUT = 10
_WRITE_ATTEMPTS = 3

# Called with a stage name inside write transactions; tests set it to kill a writer mid-upsert.
_write_hook: Callable[[str], None] | None = None


def _psycopg() -> Any:
    return require("psycopg", purpose="PgVectorIndex")


def _hook(stage: str) -> None:
    if _write_hook is not None:
        _write_hook(stage)


# ---------------------------------------------------------------------------------------------- filters


def _nested(parts: list[str], value: Any) -> str:
    """``{"a": {"b": value}}`` as JSON text: a containment pattern for the dotted key ``a.b``."""
    for part in reversed(parts):
        value = {part: value}
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _eq_any(column: str, parts: list[str], values: list[Any], params: list[Any]) -> str:
    # `@>` with a scalar matches the scalar; with a one-element list it matches a list holding it.
    # (PostgreSQL's "an array contains a primitive" exception applies at the top level only.)
    terms = []
    for value in values:
        terms.append(f"{column} @> %s::jsonb OR {column} @> %s::jsonb")
        params.extend([_nested(parts, value), _nested(parts, [value])])
    return "(" + " OR ".join(terms) + ")"


def _field(column: str, parts: list[str], params: list[Any]) -> str:
    # `-> text` reads an object field and yields NULL on anything else: never an array position.
    params.extend(parts)
    return "(" + column + "".join(" -> %s::text" for _ in parts) + ")"


def _compare(op: str, column: str, parts: list[str], value: Any, key: str, params: list[Any]) -> str:
    sql_op = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
    if isinstance(value, bool) or value is None:
        raise InvalidInputError(f"{op} on {key!r} needs a number or a str, got {value!r}")
    if isinstance(value, (int, float)):
        kind, operand = "number", json.dumps(value)  # as jsonb: a float8 parameter would round to 15 digits

        def test(x: str) -> str:
            return f"{x} {sql_op} %s::jsonb"
    else:
        kind, operand = "string", value

        def test(x: str) -> str:
            return f"({x} #>> '{{}}') COLLATE \"C\" {sql_op} %s::text"  # byte order, as SQLite

    # A scalar is compared directly (the common case, and cheap); a list when any element of that
    # JSON type compares; objects, nested lists and other types never.
    # (Each occurrence of the field in the SQL text takes its own parameters, in text order.)
    typed = _field(column, parts, params)
    compared = _field(column, parts, params)
    params.append(operand)
    elements = _field(column, parts, params)
    params.append(operand)
    return (
        f"(CASE jsonb_typeof({typed}) WHEN '{kind}' THEN {test(compared)} "
        f"WHEN 'array' THEN EXISTS (SELECT 1 FROM jsonb_array_elements({elements}) AS e(x) "
        f"WHERE jsonb_typeof(e.x) = '{kind}' AND {test('e.x')}) ELSE FALSE END)"
    )


def compile_pg_filter(filter: Mapping[str, Any] | None, column: str = "c.metadata") -> tuple[str, list[Any]]:
    """Translate a metadata filter into a PostgreSQL condition over a ``jsonb`` column, and its parameters.

    Same operators and semantics as :func:`ragkit.store.compile_filter` (equality, ``$in``, ``$ne``,
    ``$gt``/``$gte``/``$lt``/``$lte``, ``$exists``; implicit AND; dotted keys; type-sensitive; a
    missing field matches nothing but ``{"$exists": False}``). The SQL text depends only on the
    filter's shape; every key and value is a ``%s`` parameter.

    Example:
        >>> sql, params = compile_pg_filter({"lang": "en"})
        >>> sql
        '(c.metadata @> %s::jsonb OR c.metadata @> %s::jsonb)'
        >>> params
        ['{"lang": "en"}', '{"lang": ["en"]}']
    """
    if filter is None:
        return "TRUE", []
    if not isinstance(filter, Mapping):
        raise InvalidInputError(f"filter must be a dict, got {type(filter).__name__}")
    clauses: list[str] = []
    params: list[Any] = []
    for key, spec in filter.items():
        parts = filter_key_parts(key)
        if isinstance(spec, Mapping) and (
            not spec or not all(isinstance(k, str) and k.startswith("$") for k in spec)
        ):
            raise InvalidInputError(
                f"filter on {key!r}: a dict value must hold operators ($in, $ne, $gt, ...); "
                "reach nested fields with dotted keys such as 'a.b'"
            )
        ops = spec if isinstance(spec, Mapping) else {"$eq": spec}
        for op, value in ops.items():
            if op == "$eq":
                clauses.append(_eq_any(column, parts, [check_filter_scalar(value, key)], params))
            elif op == "$in":
                if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                    raise InvalidInputError(f"$in on {key!r} needs a list of values, got {value!r}")
                values = [check_filter_scalar(v, key) for v in value]
                clauses.append(_eq_any(column, parts, values, params) if values else "FALSE")
            elif op == "$ne":
                eq = _eq_any(column, parts, [check_filter_scalar(value, key)], params)
                clauses.append(f"(NOT {eq} AND {_field(column, parts, params)} IS NOT NULL)")
            elif op in ("$gt", "$gte", "$lt", "$lte"):
                clauses.append(_compare(op, column, parts, check_filter_scalar(value, key), key, params))
            elif op == "$exists":
                if not isinstance(value, bool):
                    raise InvalidInputError(f"$exists on {key!r} needs true or false, got {value!r}")
                clauses.append(f"({_field(column, parts, params)} IS {'NOT ' if value else ''}NULL)")
            else:
                raise InvalidInputError(
                    f"unknown filter operator {op!r} on {key!r}: use $in, $ne, $gt, $gte, $lt, $lte, $exists"
                )
    return (" AND ".join(clauses) or "TRUE"), params


# ------------------------------------------------------------------------------------- vector adapters


def _register_vector(conn: Any, oid: int) -> None:
    """Binary adapters between 1-D numpy arrays and pgvector's ``vector`` (uint16 dim, uint16 0, >f4...).

    Written here rather than taken from the ``pgvector`` package: they are numpy-native (one
    byteswap per vector) and do not change with that package's version.
    """
    from psycopg.adapt import Dumper, Loader
    from psycopg.pq import Format

    class VectorDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: Any) -> bytes:
            a = np.asarray(obj, dtype=">f4")
            return struct.pack(">HH", a.shape[0], 0) + a.tobytes()

    class VectorLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> np.ndarray:
            return np.frombuffer(data, dtype=">f4", offset=4).astype(np.float32)

    class VectorTextLoader(Loader):
        def load(self, data: Any) -> np.ndarray:
            text = bytes(data).decode()
            return np.array(text[1:-1].split(","), dtype=np.float32) if len(text) > 2 else np.zeros(0, "f4")

    VectorDumper.oid = oid
    conn.adapters.register_dumper(np.ndarray, VectorDumper)
    conn.adapters.register_loader(oid, VectorLoader)
    conn.adapters.register_loader(oid, VectorTextLoader)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _positive_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value!r}")
    return int(value)


def _as_ids(ids: Any, what: str) -> list[int]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (np.ndarray, Iterable)):
        raise InputTypeError(f"{what} must be a sequence of ints, got {type(ids).__name__}")
    a = ids if isinstance(ids, np.ndarray) else np.asarray(list(ids))
    if a.size == 0:
        return []
    if a.ndim != 1:
        raise InvalidInputError(f"{what} must be 1-D, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise InputTypeError(f"{what} must be integers, got dtype {a.dtype}")
    if a.min() < 0 or (a.dtype.kind == "u" and a.max() > np.iinfo(np.int64).max):
        raise InvalidInputError(f"{what} must be in [0, 2**63)")
    return [int(i) for i in a]


def _unit_rows(vectors: Any, what: str, dim: int | None = None) -> np.ndarray:
    v = check_vectors(vectors, dim, what=what)
    if v.size and not (np.linalg.norm(v, axis=1) > 0).all():
        raise InvalidInputError(f"{what} contain a zero vector, which has no direction (cosine undefined)")
    return v


def _metadata_json(metadata: Mapping[str, Any]) -> str:
    try:
        return json.dumps(metadata, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"metadata must be JSON-serialisable without NaN/inf: {e}") from e


def _redact(dsn: str) -> str:
    """The DSN without its password (for logs, errors and ``spec()``)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - an unparsable DSN is reported by connect() itself
        return "<unparsable dsn>"
    params.pop("password", None)
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


# ----------------------------------------------------------------------------------------------- index


class PgVectorIndex:
    """A vector index and document store in PostgreSQL + pgvector, shared by every process that opens it.

    It implements the ``VectorIndex`` protocol (``add``, ``delete``, ``search``, ``__len__``,
    ``save``, ``load``) and the store interface of :class:`ragkit.store.SQLiteStore` (``write``,
    ``get_document``, ``filter_ids``, ``generation``, ...), and adds :meth:`lexical_search`
    (PostgreSQL full-text search). ``is_store = True`` tells the :class:`~ragkit.Pipeline` to use
    it as both: no SQLite file, no FAISS or BM25 index beside it, and every replica sees every
    write as soon as it commits.

    Search:
        Cosine distance (``vector_cosine_ops``); scores are ``1 - distance``. ``index="hnsw"``
        builds pgvector's HNSW index (``m``, ``ef_construction``) and searches it with
        ``hnsw.ef_search = max(ef_search, k)``; ``index="exact"`` never uses it (a sequential scan,
        exact results). Filtered HNSW searches use pgvector 0.8's iterative index scans
        (``hnsw.iterative_scan = relaxed_order``, up to ``max_scan_tuples`` tuples; results are
        re-sorted by exact distance), and any query that still comes back with fewer than ``k``
        hits is recomputed exactly, so a search returns ``k`` hits whenever ``k`` rows match. With
        pgvector older than 0.8, filtered queries are always computed exactly.

    Dimensions:
        HNSW indexes at most 2,000 dimensions of ``vector``; from 2,001 to 4,000 the index is built
        on ``embedding::halfvec(dim)`` (half precision in the index only: the table keeps float32,
        and scores are computed from it). Above 4,000 (Qwen3-Embedding-8B's 4,096) HNSW is refused:
        use a Matryoshka ``dim`` of at most 4,000 on the embedder, or ``index="exact"``.

    Bulk loads:
        pgvector inserts into an HNSW graph one vector at a time (a few hundred per second per
        core at dim 384), while ``CREATE INDEX`` builds it in bulk, in parallel, several times
        faster. For a large first load, open the table with ``index="exact"``, load, then open it
        with ``index="hnsw"``: the index is built then (give the server ``maintenance_work_mem``
        large enough to hold the graph).

    Processes:
        Each instance holds a ``psycopg_pool.ConnectionPool`` (thread-safe). Create instances after
        forking (in each worker), not before. Every write is one transaction that also bumps the
        ``generation`` counter; writers lock documents in id order, and a deadlock or id clash is
        retried. Schema creation is serialised with an advisory lock, so many processes may open a
        new table at once.

    Args:
        dsn: a libpq connection string or URL. Keep the password out of it (``PGPASSWORD`` or
            ``~/.pgpass``) if the pipeline's manifest will be shared: :meth:`spec` drops it.
        table: the chunk table's name (``[a-z_][a-z0-9_]*``, at most 50 characters); schema-qualify
            through the DSN's ``options=-csearch_path=...``.
        dim: the vector size; ``None`` takes it from the table or from the first write.
        index: ``"hnsw"`` or ``"exact"``.
        m: HNSW graph degree (2..100).
        ef_construction: HNSW build candidate list (4..1000, at least ``2 * m``).
        ef_search: HNSW search candidate list (1..1000), raised to ``k`` per query. 100 rather than
            pgvector's 40: on 100k clustered 384-d vectors 40 gives recall@10 0.88 and 100 gives 0.97
            (benchmarks/pgvector_search.py).
        halfvec: index ``embedding::halfvec(dim)`` rather than ``embedding``; ``None`` does so
            exactly when ``dim > 2000``. Fixed for the table when its HNSW index is built.
        language: the text-search configuration of the ``tsvector`` column (``None``: the table's,
            or ``"english"`` for a new table). Fixed when the table is created.
        max_scan_tuples: how far an iterative HNSW scan may go before the exact fallback.
        pool_size: the most connections this instance opens.
        statement_timeout: seconds after which PostgreSQL cancels a statement (``None``: the
            server's setting). Index builds are exempt.
        read_only: no DDL, no writes (:class:`ReadOnlyError`); sessions are read-only too.

    Raises:
        ConfigError: an option out of range, pgvector missing or not creatable with this role, a
            dimension HNSW cannot index, a language the server does not know.
        IndexMismatchError: ``dim`` differs from the dimension of the existing table.
        UnavailableError: the server cannot be reached.

    Example:
        >>> from ragkit import Pipeline
        >>> from ragkit.index import PgVectorIndex
        >>> pg = PgVectorIndex("postgresql://app@db.internal/rag", dim=1024)  # doctest: +SKIP
        >>> pipe = Pipeline(embedder, index=pg)                                # doctest: +SKIP
        >>> pipe.search("refund policy", k=5, filter={"lang": "en"})          # doctest: +SKIP
    """

    is_store = True

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "ragkit_chunks",
        dim: int | None = None,
        index: str = "hnsw",
        m: int = 16,
        ef_construction: int = 64,
        ef_search: int = 100,
        halfvec: bool | None = None,
        language: str | None = None,
        max_scan_tuples: int = 20_000,
        pool_size: int = 4,
        statement_timeout: float | None = 60.0,
        read_only: bool = False,
    ) -> None:
        if not isinstance(dsn, str) or not dsn.strip():
            raise ConfigError("dsn must be a non-empty PostgreSQL connection string")
        if not isinstance(table, str) or not _TABLE_RE.match(table):
            raise ConfigError(
                f"table must match [a-z_][a-z0-9_]* and be at most 50 characters, got {table!r}"
            )
        if index not in _INDEXES:
            raise ConfigError(f"index must be one of {', '.join(_INDEXES)}, got {index!r}")
        if dim is not None:
            dim = _positive_int("dim", dim, 1, _MAX_DIM)
        self._m = _positive_int("m", m, 2, 100)
        self._ef_construction = _positive_int("ef_construction", ef_construction, 4, 1000)
        if self._ef_construction < 2 * self._m:
            raise ConfigError(
                f"ef_construction must be at least 2 * m = {2 * self._m}, got {ef_construction}"
            )
        self._ef_search = _positive_int("ef_search", ef_search, 1, _MAX_EF_SEARCH)
        self._max_scan_tuples = _positive_int("max_scan_tuples", max_scan_tuples)
        self._pool_size = _positive_int("pool_size", pool_size)
        if halfvec is not None and not isinstance(halfvec, bool):
            raise ConfigError(f"halfvec must be True, False or None, got {halfvec!r}")
        if halfvec and index == "exact":
            raise ConfigError(
                "halfvec=True applies to the HNSW index; index='exact' reads the float32 vectors"
            )
        if language is not None and (not isinstance(language, str) or not _LANGUAGE_RE.match(language)):
            raise ConfigError(
                f"language must name a text-search configuration such as 'english', got {language!r}"
            )
        if statement_timeout is not None and (
            isinstance(statement_timeout, bool)
            or not isinstance(statement_timeout, (int, float))
            or not statement_timeout > 0
        ):
            raise ConfigError(f"statement_timeout must be seconds > 0 or None, got {statement_timeout!r}")
        self._dsn = dsn
        self.table = table
        self.index = index
        self.read_only = bool(read_only)
        self._requested_dim = dim
        self._requested_halfvec = halfvec
        self._requested_language = language
        self._statement_timeout = None if statement_timeout is None else float(statement_timeout)
        self._names = {
            "chunks": table,
            "docs": f"{table}_documents",
            "meta": f"{table}_meta",
            "hnsw": f"{table}_hnsw",
            "staging": f"{table}_staging",
            "hash_idx": f"{table}_hash",
            "tsv_idx": f"{table}_tsv",
            "md_idx": f"{table}_metadata",
            "seq_idx": f"{table}_documents_seq",
        }
        if dim is not None:
            self._hnsw_halfvec(dim)  # refuse an HNSW dimension it cannot index before touching the server
        self._dim: int | None = None
        self._halfvec = False
        self._hnsw_ready = False
        self._language = "english"
        self._pgvector_version: tuple[int, ...] = (0,)
        self._vector_oid = 0
        self._seq = ""
        self._state_lock = threading.Lock()
        self._pool: Any = None
        self._setup()
        self._open_pool()

    # ------------------------------------------------------------------------------------- setup

    def _sql(self, template: str, **extra: Any) -> Any:
        """``template`` with ``{chunks}``, ``{docs}``, ``{meta}``, ... replaced by quoted identifiers."""
        from psycopg import sql

        names = {k: sql.Identifier(v) for k, v in self._names.items()}
        return sql.SQL(template).format(**names, **extra)

    def _hnsw_halfvec(self, dim: int) -> bool:
        """Whether the HNSW index of a ``dim``-dimensional table is built on halfvec; raise if impossible."""
        if self.index != "hnsw":
            return False
        if dim > _MAX_HNSW_HALFVEC:
            raise ConfigError(
                f"pgvector's HNSW index holds at most {_MAX_HNSW_HALFVEC} dimensions (as halfvec), these "
                f"vectors have {dim}: give the embedder a Matryoshka dim <= {_MAX_HNSW_HALFVEC} (for "
                "Qwen3-Embedding, e.g. dim=2048 or 1024), or use PgVectorIndex(..., index='exact')"
            )
        if self._requested_halfvec is False and dim > _MAX_HNSW_VECTOR:
            raise ConfigError(
                f"pgvector's HNSW index holds at most {_MAX_HNSW_VECTOR} dimensions of vector, these have "
                f"{dim}: leave halfvec=None (half-precision index) or lower the embedder's dim"
            )
        return dim > _MAX_HNSW_VECTOR if self._requested_halfvec is None else self._requested_halfvec

    def _connect(self) -> Any:
        psycopg = _psycopg()
        try:
            return psycopg.connect(self._dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT)
        except psycopg.OperationalError as e:
            raise UnavailableError(f"cannot connect to PostgreSQL ({_redact(self._dsn)}): {e}") from e

    def _lock_key(self, what: str) -> str:
        return f"ragkit:{what}:{self.table}"

    def _setup(self) -> None:
        psycopg = _psycopg()
        from psycopg.types import TypeInfo

        with self._connect() as conn:
            self._ensure_extension(conn)
            try:
                if not self.read_only:
                    self._create_schema(conn)
                self._load_state(conn)
                if not self.read_only and self._dim is None and self._requested_dim is not None:
                    self._fix_dim(conn, self._requested_dim)
                if not self.read_only and self._dim is not None and self.index == "hnsw":
                    self._ensure_hnsw(conn)
            except psycopg.errors.UndefinedTable as e:
                raise ConfigError(
                    f"no ragkit tables named {self.table!r} in this database: open it once without "
                    "read_only=True to create them"
                ) from e
            except (psycopg.errors.UndefinedColumn, psycopg.errors.WrongObjectType) as e:
                raise IntegrityError(f"table {self.table!r} exists but is not a ragkit table: {e}") from e
            info = TypeInfo.fetch(conn, "vector")
            if info is None:
                raise ConfigError("the vector type is not on the search_path of this connection")
            self._vector_oid = info.oid

    def _ensure_extension(self, conn: Any) -> None:
        psycopg = _psycopg()
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        if row is None:
            if self.read_only:
                raise ConfigError(
                    "the pgvector extension is not enabled in this database (CREATE EXTENSION vector)"
                )
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext('ragkit:create-extension'))")
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.errors.InsufficientPrivilege as e:
                user = conn.info.user
                raise ConfigError(
                    f"the pgvector extension is not enabled in database {conn.info.dbname!r} and role "
                    f"{user!r} may not create it (CREATE EXTENSION vector needs a superuser, or the "
                    "database owner where an administrator has made it trusted): have an administrator "
                    "run `CREATE EXTENSION vector;` in that database once"
                ) from e
            except (psycopg.errors.UndefinedFile, psycopg.errors.FeatureNotSupported) as e:
                raise ConfigError(
                    "pgvector is not installed on the PostgreSQL server (no extension 'vector'): install "
                    "it there (e.g. the postgresql-<version>-pgvector package or the pgvector/pgvector "
                    f"Docker image), then retry: {e}"
                ) from e
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        self._pgvector_version = _version(row[0])
        if self.index == "hnsw" and self._pgvector_version < (0, 5, 0):
            raise ConfigError(f"index='hnsw' needs pgvector >= 0.5 (the server has {row[0]}): upgrade it")
        if self._pgvector_version < (0, 8, 0):
            logger.warning(
                "pgvector %s has no iterative index scans (0.8+): filtered searches on %s run exactly",
                row[0],
                self.table,
            )

    def _create_schema(self, conn: Any) -> None:
        from psycopg import sql

        psycopg = _psycopg()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self._lock_key("schema")])
            conn.execute(
                self._sql("CREATE TABLE IF NOT EXISTS {meta} (key text PRIMARY KEY, value jsonb NOT NULL)")
            )
            row = conn.execute(self._sql("SELECT value FROM {meta} WHERE key = 'language'")).fetchone()
            language = row[0] if row is not None else (self._requested_language or "english")
            try:
                with conn.transaction():
                    conn.execute("SELECT %s::regconfig", [language])
            except psycopg.errors.UndefinedObject as e:
                known = [r[0] for r in conn.execute("SELECT cfgname FROM pg_ts_config ORDER BY 1")]
                raise ConfigError(f"unknown text-search language {language!r}; the server has {known}") from e
            conn.execute(
                self._sql(
                    "CREATE TABLE IF NOT EXISTS {docs} ("
                    " seq bigint GENERATED ALWAYS AS IDENTITY,"
                    " id text PRIMARY KEY,"
                    " text text NOT NULL,"
                    " metadata json NOT NULL,"
                    " hash text NOT NULL)"
                )
            )
            conn.execute(self._sql("CREATE UNIQUE INDEX IF NOT EXISTS {seq_idx} ON {docs} (seq)"))
            conn.execute(
                self._sql(
                    "CREATE TABLE IF NOT EXISTS {chunks} ("
                    " vid bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
                    " doc_id text REFERENCES {docs} (id) ON DELETE CASCADE,"
                    " n integer,"
                    " text text NOT NULL DEFAULT '',"
                    " start integer,"
                    ' "end" integer,'
                    " hash text,"
                    " metadata jsonb NOT NULL DEFAULT '{{}}',"
                    " embedding vector NOT NULL,"
                    " tsv tsvector GENERATED ALWAYS AS (to_tsvector({language}::regconfig, text)) STORED,"
                    " UNIQUE (doc_id, n))",
                    language=sql.Literal(language),
                )
            )
            conn.execute(self._sql("CREATE INDEX IF NOT EXISTS {hash_idx} ON {chunks} (hash)"))
            conn.execute(self._sql("CREATE INDEX IF NOT EXISTS {tsv_idx} ON {chunks} USING gin (tsv)"))
            conn.execute(
                self._sql(
                    "CREATE INDEX IF NOT EXISTS {md_idx} ON {chunks} USING gin (metadata jsonb_path_ops)"
                )
            )
            conn.execute(
                self._sql(
                    "INSERT INTO {meta} VALUES ('generation', '0'), ('schema_version', %s), "
                    "('language', to_jsonb(%s::text)) ON CONFLICT (key) DO NOTHING"
                ),
                [json.dumps(SCHEMA_VERSION), language],
            )

    def _read_meta(self, conn: Any, keys: Sequence[str]) -> dict[str, Any]:
        rows = conn.execute(self._sql("SELECT key, value FROM {meta} WHERE key = ANY(%s)"), [list(keys)])
        return dict(rows.fetchall())

    def _load_state(self, conn: Any) -> None:
        meta = self._read_meta(conn, ["schema_version", "language", "dim", "hnsw"])
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise IntegrityError(
                f"table {self.table!r}: unsupported ragkit schema version {meta.get('schema_version')!r} "
                f"(this ragkit reads {SCHEMA_VERSION})"
            )
        self._language = meta.get("language") or "english"
        if self._requested_language is not None and self._requested_language != self._language:
            raise ConfigError(
                f"table {self.table!r} was created with language={self._language!r}, not "
                f"{self._requested_language!r}: leave language=None, or use another table"
            )
        self._seq = conn.execute(
            "SELECT pg_get_serial_sequence(%s, 'vid')", [self._qualified("chunks")]
        ).fetchone()[0]
        self._apply_dim(meta.get("dim"), meta.get("hnsw"), conn)

    def _qualified(self, name: str) -> str:
        return '"' + self._names[name] + '"'  # names match _TABLE_RE: nothing to escape

    def _apply_dim(self, dim: int | None, hnsw: Mapping[str, Any] | None, conn: Any) -> None:
        """Adopt the table's dimension and HNSW layout (read from its meta table)."""
        if dim is not None and self._requested_dim is not None and dim != self._requested_dim:
            raise IndexMismatchError(
                f"table {self.table!r} holds {dim}-dimensional vectors, not {self._requested_dim}: "
                "vectors of different sizes come from different embedders; use another table, or reindex"
            )
        if dim is not None:
            self._hnsw_halfvec(dim)
        self._dim = dim
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [self._qualified("hnsw")]).fetchone()[0]
        self._hnsw_ready = bool(exists and hnsw)
        if self._hnsw_ready:
            self._halfvec = bool(hnsw["halfvec"])
            if (
                self.index == "hnsw"
                and self._requested_halfvec is not None
                and self._requested_halfvec != self._halfvec
            ):
                raise ConfigError(
                    f"table {self.table!r} has an HNSW index with halfvec={self._halfvec}: leave halfvec=None"
                )
            if self.index == "hnsw" and (hnsw["m"], hnsw["ef_construction"]) != (
                self._m,
                self._ef_construction,
            ):
                logger.warning(
                    "table %s: its HNSW index has m=%s, ef_construction=%s (asked: %s, %s); using it",
                    self.table,
                    hnsw["m"],
                    hnsw["ef_construction"],
                    self._m,
                    self._ef_construction,
                )
        elif self.index == "hnsw" and dim is not None and self.read_only:
            logger.warning("table %s has no HNSW index yet: searches run exactly", self.table)

    def _fix_dim(self, conn: Any, dim: int) -> None:
        """Type the embedding column as ``vector(dim)`` (first write to a new table), then index it."""
        from psycopg import sql

        self._hnsw_halfvec(dim)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self._lock_key("schema")])
            meta = self._read_meta(conn, ["dim", "hnsw"])
            if meta.get("dim") is None:
                conn.execute(
                    self._sql(
                        "ALTER TABLE {chunks} ALTER COLUMN embedding TYPE vector({dim})", dim=sql.Literal(dim)
                    )
                )
                conn.execute(self._sql("INSERT INTO {meta} VALUES ('dim', %s::jsonb)"), [json.dumps(dim)])
                meta["dim"] = dim
            self._apply_dim(meta["dim"], meta.get("hnsw"), conn)
        if self.index == "hnsw":
            self._ensure_hnsw(conn)

    def _ensure_hnsw(self, conn: Any) -> None:
        """Build the HNSW index if the table has none (in bulk: much faster than row-by-row inserts)."""
        if self._hnsw_ready:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self._lock_key("schema")])
            meta = self._read_meta(conn, ["dim", "hnsw"])
            self._apply_dim(meta.get("dim"), meta.get("hnsw"), conn)
            if self._hnsw_ready or self._dim is None:
                return
            halfvec = self._hnsw_halfvec(self._dim)
            n = self._count(conn, "chunks")
            started = time.perf_counter()
            conn.execute("SELECT set_config('statement_timeout', '0', true)")
            conn.execute(self._hnsw_ddl(halfvec))
            conn.execute(
                self._sql(
                    "INSERT INTO {meta} VALUES ('hnsw', %s::jsonb) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ),
                [json.dumps({"m": self._m, "ef_construction": self._ef_construction, "halfvec": halfvec})],
            )
            self._hnsw_ready, self._halfvec = True, halfvec
        if n:
            logger.info(
                "built the HNSW index of %s over %d vectors in %.1fs",
                self.table,
                n,
                time.perf_counter() - started,
            )

    def _hnsw_ddl(self, halfvec: bool) -> Any:
        from psycopg import sql

        column = (
            sql.SQL("(embedding::halfvec({})) halfvec_cosine_ops").format(sql.Literal(self._dim))
            if halfvec
            else sql.SQL("embedding vector_cosine_ops")
        )
        return self._sql(
            "CREATE INDEX IF NOT EXISTS {hnsw} ON {chunks} USING hnsw ({column}) "
            "WITH (m = {m}, ef_construction = {efc})",
            column=column,
            m=sql.Literal(self._m),
            efc=sql.Literal(self._ef_construction),
        )

    def _open_pool(self) -> None:
        pool_mod = require("psycopg_pool", purpose="PgVectorIndex")
        self._pool = pool_mod.ConnectionPool(
            self._dsn,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            configure=self._configure,
            kwargs={"autocommit": True, "connect_timeout": _CONNECT_TIMEOUT},
            timeout=_POOL_TIMEOUT,
            name=f"ragkit-{self.table}",
        )
        try:
            self._pool.open(wait=True, timeout=_POOL_TIMEOUT)
        except pool_mod.PoolTimeout as e:
            self._pool.close()
            raise UnavailableError(
                f"cannot open connections to PostgreSQL ({_redact(self._dsn)}): {e}"
            ) from e

    def _configure(self, conn: Any) -> None:
        _register_vector(conn, self._vector_oid)
        # Every execution planned for its own parameters: a selective filter may want a plan quite
        # unlike an unfiltered query's, and psycopg prepares the statements it sees often.
        settings = [("plan_cache_mode", "force_custom_plan")]
        if self._statement_timeout is not None:
            settings.append(("statement_timeout", str(max(1, round(self._statement_timeout * 1000)))))
        if self.read_only:
            settings.append(("default_transaction_read_only", "on"))
        conn.execute(
            "SELECT " + ", ".join("set_config(%s, %s, false)" for _ in settings),
            [x for pair in settings for x in pair],
        )

    # -------------------------------------------------------------------------------- connections

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        psycopg = _psycopg()
        pool_mod = require("psycopg_pool")
        if self._pool is None:
            raise ConfigError("this PgVectorIndex is closed")
        try:
            with self._pool.connection() as conn:
                yield conn
        except pool_mod.PoolTimeout as e:
            raise UnavailableError(f"no PostgreSQL connection free within {_POOL_TIMEOUT:.0f}s: {e}") from e
        except psycopg.errors.TransactionRollback:
            raise  # deadlocks and serialisation failures: _write_tx retries them
        except psycopg.DataError as e:
            if "different vector dimensions" in str(e):
                self._dim = None
                raise IndexMismatchError(
                    f"table {self.table!r} no longer holds vectors of this size (reindexed elsewhere?): {e}"
                ) from e
            raise InvalidInputError(f"PostgreSQL refused the data (NUL characters?): {e}") from e
        except psycopg.errors.QueryCanceled as e:
            raise UnavailableError(
                f"PostgreSQL cancelled a statement (statement_timeout={self._statement_timeout}s): {e}"
            ) from e
        except psycopg.errors.UndefinedTable as e:
            raise IntegrityError(f"a ragkit table of {self.table!r} is gone (dropped?): {e}") from e
        except psycopg.errors.ReadOnlySqlTransaction as e:
            raise ReadOnlyError(f"this PgVectorIndex was opened read-only: {e}") from e
        except psycopg.OperationalError as e:
            raise UnavailableError(f"PostgreSQL connection failed: {e}") from e

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError("this PgVectorIndex was opened with read_only=True")

    def _bump(self, conn: Any) -> None:
        # Last statement of every write transaction, so the counter row is locked only briefly.
        conn.execute(
            self._sql("UPDATE {meta} SET value = to_jsonb(value::text::bigint + 1) WHERE key = 'generation'")
        )

    def _write_tx(self, body: Callable[[Any], Any], *, retry_id_clash: bool = False) -> Any:
        """Run ``body(conn)`` in one transaction that bumps the generation; retry deadlocks (and id
        clashes when the ids come from the sequence)."""
        self._check_writable()
        psycopg = _psycopg()
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with self._connection() as conn, conn.transaction():
                    result = body(conn)
                    self._bump(conn)
                return result
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as e:
                if attempt == _WRITE_ATTEMPTS:
                    raise
                logger.info("%s: retrying a write after %s", self.table, type(e).__name__)
            except psycopg.errors.UniqueViolation as e:
                # A vector id taken by add() with caller-given ids: the retry draws fresh ones.
                clash = e.diag.constraint_name == f"{self.table}_pkey"
                if not (retry_id_clash and clash) or attempt == _WRITE_ATTEMPTS:
                    what = "a vector id is already in use" if clash else "a uniqueness constraint failed"
                    raise InvalidInputError(f"{self.table}: {what}: {e}") from e
                logger.info("%s: retrying a write after a vector id clash", self.table)
        raise AssertionError("unreachable")

    def _ensure_dim(self, dim: int) -> None:
        """Fix the table's dimension on the first vectors; refuse vectors of another size."""
        if self._dim is None:
            with self._state_lock:
                if self._dim is None:
                    with self._connect() as conn:
                        self._fix_dim(conn, dim)
        if self._dim != dim:
            raise IndexMismatchError(
                f"table {self.table!r} holds {self._dim}-dimensional vectors, these have {dim}: vectors of "
                "different sizes come from different embedders; use another table, or reindex"
            )

    def _refresh_dim(self) -> int | None:
        """The table's dimension, re-read while unknown (another process may have written first)."""
        if self._dim is None:
            with self._connection() as conn:
                meta = self._read_meta(conn, ["dim", "hnsw"])
                if meta.get("dim") is not None:
                    with self._state_lock:
                        self._apply_dim(meta["dim"], meta.get("hnsw"), conn)
        return self._dim

    # ------------------------------------------------------------------------------ lifecycle etc.

    def close(self) -> None:
        """Close the connection pool (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> PgVectorIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"PgVectorIndex(table={self.table!r}, dim={self._dim}, index={self.index!r})"

    @property
    def dim(self) -> int | None:
        """The vector size of the table, or ``None`` before the first vectors."""
        return self._refresh_dim()

    @property
    def pgvector_version(self) -> str:
        """The pgvector extension version on the server, such as ``"0.8.2"``."""
        return ".".join(map(str, self._pgvector_version))

    def spec(self) -> dict[str, Any]:
        """How to reopen this index (``PgVectorIndex(**spec)``); the DSN comes without its password.

        Example:
            >>> PgVectorIndex("host=db user=app password=s3cret", dim=8).spec()["dsn"]  # doctest: +SKIP
            'host=db user=app'
        """
        return {
            "dsn": _redact(self._dsn),
            "table": self.table,
            "dim": self._dim if self._dim is not None else self._requested_dim,
            "index": self.index,
            "m": self._m,
            "ef_construction": self._ef_construction,
            "ef_search": self._ef_search,
            "halfvec": self._requested_halfvec,
            "language": self._language,
            "max_scan_tuples": self._max_scan_tuples,
            "pool_size": self._pool_size,
            "statement_timeout": self._statement_timeout,
        }

    def save(self, path: str | Path) -> None:
        """Write a small JSON pointer to the table (the data itself lives in PostgreSQL).

        Example:
            >>> index.save("my-index/vectors.json")  # doctest: +SKIP
        """
        path = Path(path)
        pointer = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "spec": self.spec(),
            "generation": self.generation,
            "count": len(self),
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(pointer, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(path)

    def load(self, path: str | Path) -> None:
        """Check a pointer written by :meth:`save` against this index (same table and dimension).

        Nothing is read into memory: the vectors are in PostgreSQL.

        Raises:
            IntegrityError: not a pointer file. IndexMismatchError: another table or dimension.

        Example:
            >>> index.load("my-index/vectors.json")  # doctest: +SKIP
        """
        try:
            pointer = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise IntegrityError(f"{path} is not a readable PgVectorIndex pointer: {e}") from e
        if not isinstance(pointer, dict) or pointer.get("format") != _FORMAT:
            raise IntegrityError(f"{path} is not a PgVectorIndex pointer")
        spec = pointer.get("spec") or {}
        if spec.get("table") != self.table:
            raise IndexMismatchError(
                f"{path} points to table {spec.get('table')!r}, this index is {self.table!r}"
            )
        dim = self._refresh_dim()
        if spec.get("dim") is not None and dim is not None and spec["dim"] != dim:
            raise IndexMismatchError(f"{path} was saved at dim {spec['dim']}, the table holds {dim}")

    def drop(self) -> None:
        """Drop the three tables of this index and everything in them (tests, resets). Irreversible.

        Example:
            >>> PgVectorIndex(dsn, table="scratch").drop()  # doctest: +SKIP
        """
        self._check_writable()
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self._lock_key("schema")])
            conn.execute(self._sql("DROP TABLE IF EXISTS {chunks}, {docs}, {meta}, {staging} CASCADE"))
        self._dim, self._hnsw_ready = None, False

    # --------------------------------------------------------------------------- store: metadata

    @property
    def generation(self) -> int:
        """A counter bumped by every write transaction, from any process."""
        with self._connection() as conn:
            return int(self._read_meta(conn, ["generation"])["generation"])

    def get_meta(self, key: str) -> Any:
        """A JSON value stored under ``key`` in the metadata table, or ``None``.

        Example:
            >>> index.get_meta("fingerprint")  # doctest: +SKIP
            {'model': 'qwen3-embedding-0.6b', 'dim': 1024, ...}
        """
        with self._connection() as conn:
            return self._read_meta(conn, [key]).get(key)

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` (one transaction). ragkit's own keys are refused.

        Example:
            >>> index.set_meta("fingerprint", embedder.fingerprint)  # doctest: +SKIP
        """
        if not isinstance(key, str) or key in _RESERVED_META:
            raise InvalidInputError(f"set_meta: {key!r} is not a settable key")
        text = json.dumps(value, sort_keys=True, allow_nan=False)
        self._write_tx(
            lambda conn: conn.execute(
                self._sql(
                    "INSERT INTO {meta} VALUES (%s, %s::jsonb) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ),
                [key, text],
            )
        )

    # ------------------------------------------------------------------------------ store: reads

    def _count(self, conn: Any, name: str) -> int:
        return int(conn.execute(self._sql("SELECT count(*) FROM {" + name + "}")).fetchone()[0])

    def count_documents(self) -> int:
        """How many documents the table holds."""
        with self._connection() as conn:
            return self._count(conn, "docs")

    def count_chunks(self) -> int:
        """How many chunks (vectors) the table holds."""
        with self._connection() as conn:
            return self._count(conn, "chunks")

    def __len__(self) -> int:
        """The number of vectors (chunks)."""
        return self.count_chunks()

    def get_document(self, doc_id: str) -> Document | None:
        """The document with this id, or ``None``."""
        with self._connection() as conn:
            row = conn.execute(
                self._sql("SELECT id, text, metadata::text FROM {docs} WHERE id = %s"), [doc_id]
            ).fetchone()
        return None if row is None else Document(id=row[0], text=row[1], metadata=json.loads(row[2]))

    def iter_documents(self, batch_size: int = 512) -> Iterator[Document]:
        """Documents in insertion order, read in pages so memory stays flat."""
        last = 0
        while True:
            with self._connection() as conn:
                rows = conn.execute(
                    self._sql(
                        "SELECT seq, id, text, metadata::text FROM {docs} "
                        "WHERE seq > %s ORDER BY seq LIMIT %s"
                    ),
                    [last, batch_size],
                ).fetchall()
            if not rows:
                return
            for seq, doc_id, text, metadata in rows:
                last = seq
                yield Document(id=doc_id, text=text, metadata=json.loads(metadata))

    def document_states(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``{doc_id: (text hash, metadata JSON)}`` for the ids that exist (the JSON text as written)."""
        if not doc_ids:
            return {}
        with self._connection() as conn:
            rows = conn.execute(
                self._sql("SELECT id, hash, metadata::text FROM {docs} WHERE id = ANY(%s)"), [list(doc_ids)]
            )
            return {doc_id: (h, md) for doc_id, h, md in rows}

    def vectors_for_hashes(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Stored vectors of chunks with these content hashes (the embedding cache)."""
        hashes = sorted(set(hashes))
        if not hashes:
            return {}
        with self._connection() as conn:
            rows = conn.execute(
                self._sql("SELECT DISTINCT ON (hash) hash, embedding FROM {chunks} WHERE hash = ANY(%s)"),
                [hashes],
                binary=True,
            )
            return dict(rows.fetchall())

    def get_chunks(self, vids: Sequence[int]) -> dict[int, Chunk]:
        """Chunks by vector id (ids that no longer exist are absent from the result)."""
        ids = _as_ids(vids, "vids")
        if not ids:
            return {}
        with self._connection() as conn:
            rows = conn.execute(
                self._sql(
                    'SELECT c.vid, c.doc_id, c.n, c.text, c.start, c."end", d.metadata::text FROM {chunks} c '
                    "JOIN {docs} d ON d.id = c.doc_id WHERE c.vid = ANY(%s)"
                ),
                [ids],
            ).fetchall()
        return {
            vid: Chunk(
                id=f"{doc_id}#{n}", doc_id=doc_id, text=text, start=start, end=end, metadata=json.loads(md)
            )
            for vid, doc_id, n, text, start, end, md in rows
        }

    def chunk_vids(self, doc_id: str) -> list[tuple[int, int]]:
        """``[(n, vid), ...]`` of one document, in chunk order."""
        with self._connection() as conn:
            rows = conn.execute(
                self._sql("SELECT n, vid FROM {chunks} WHERE doc_id = %s ORDER BY n"), [doc_id]
            )
            return [(int(n), int(v)) for n, v in rows]

    def filter_ids(self, filter: Mapping[str, Any] | None) -> np.ndarray:
        """Vector ids of the chunks whose document metadata matches ``filter`` (int64, sorted).

        Example:
            >>> index.filter_ids({"lang": "en", "year": {"$gte": 2020}})  # doctest: +SKIP
            array([3, 4, 9])
        """
        from psycopg import sql

        where, params = compile_pg_filter(filter)
        query = self._sql("SELECT c.vid FROM {chunks} c WHERE ") + sql.SQL(where) + sql.SQL(" ORDER BY c.vid")
        with self._connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_vectors(self, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, vectors)`` pages over every chunk (float32, as stored)."""
        last = 0
        while True:
            with self._connection() as conn:
                rows = conn.execute(
                    self._sql("SELECT vid, embedding FROM {chunks} WHERE vid > %s ORDER BY vid LIMIT %s"),
                    [last, batch_size],
                    binary=True,
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield np.fromiter((r[0] for r in rows), np.int64, len(rows)), np.stack([r[1] for r in rows])

    def iter_texts(self, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, list[str]]]:
        """``(ids, texts)`` pages over every chunk."""
        last = 0
        while True:
            with self._connection() as conn:
                rows = conn.execute(
                    self._sql("SELECT vid, text FROM {chunks} WHERE vid > %s ORDER BY vid LIMIT %s"),
                    [last, batch_size],
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield np.fromiter((r[0] for r in rows), np.int64, len(rows)), [r[1] for r in rows]

    # ----------------------------------------------------------------------------- store: writes

    def _allocate(self, conn: Any, n: int) -> list[int]:
        rows = conn.execute("SELECT nextval(%s::regclass) FROM generate_series(1, %s)", [self._seq, n])
        return [int(r[0]) for r in rows]

    def _copy_chunks(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        from psycopg.types.json import Jsonb

        with conn.cursor().copy(
            self._sql(
                'COPY {chunks} (vid, doc_id, n, text, start, "end", hash, metadata, embedding) '
                "FROM STDIN (FORMAT BINARY)"
            )
        ) as copy:
            copy.set_types(
                ["int8", "text", "int4", "text", "int4", "int4", "text", "jsonb", self._vector_oid]
            )
            for vid, doc_id, n, text, start, end, h, metadata, vector in rows:
                copy.write_row((vid, doc_id, n, text, start, end, h, Jsonb(metadata), vector))

    def write(self, items: Sequence[tuple[Document, Sequence[Chunk], np.ndarray]]) -> WriteResult:
        """Upsert documents with their chunks and chunk vectors, in one transaction.

        A document id that exists is replaced: its old chunks are removed (their vector ids are in
        ``removed_ids``) and the new ones get fresh ids from the table's sequence (never reused).
        Documents are locked in id order, so concurrent writers cannot deadlock each other.

        Example:
            >>> result = index.write([(doc, chunks, vectors)])  # doctest: +SKIP
            >>> result.added_ids                                # doctest: +SKIP
            [41, 42]
        """
        self._check_writable()
        prepared: list[tuple[Document, list[Chunk], np.ndarray | None, str]] = []
        for doc, chunks, vectors in items:
            chunks = list(chunks)
            if len(chunks) != len(vectors):
                raise InvalidInputError(f"{doc.id!r}: {len(chunks)} chunks but {len(vectors)} vectors")
            v = _unit_rows(vectors, f"vectors of {doc.id!r}") if chunks else None
            if v is not None:
                self._ensure_dim(v.shape[1])
            prepared.append((doc, chunks, v, _metadata_json(doc.metadata)))
        # Within one call the last version of an id wins (as in the SQLite store); the stable sort
        # keeps that order while locking rows in id order.
        last = {doc.id: i for i, (doc, *_) in enumerate(prepared)}
        prepared = sorted((p for i, p in enumerate(prepared) if last[p[0].id] == i), key=lambda p: p[0].id)

        def body(conn: Any) -> WriteResult:
            result = WriteResult()
            docs = [(d.id, d.text, md, text_hash(d.text)) for d, _, _, md in prepared]
            if not docs:
                return result
            with conn.cursor() as cur:
                cur.executemany(
                    self._sql(
                        "INSERT INTO {docs} (id, text, metadata, hash) VALUES (%s, %s, %s::json, %s) "
                        "ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, metadata = EXCLUDED.metadata, "
                        "hash = EXCLUDED.hash, seq = DEFAULT"
                    ),
                    docs,
                )
            _hook("documents-upserted")
            removed = conn.execute(
                self._sql("DELETE FROM {chunks} WHERE doc_id = ANY(%s) RETURNING vid"), [[d[0] for d in docs]]
            )
            result.removed_ids.extend(int(r[0]) for r in removed)
            total = sum(len(chunks) for _, chunks, _, _ in prepared)
            vids = iter(self._allocate(conn, total) if total else [])
            rows = []
            for doc, chunks, vectors, _ in prepared:
                for n, chunk in enumerate(chunks):
                    vid = next(vids)
                    rows.append(
                        (
                            vid,
                            doc.id,
                            n,
                            chunk.text,
                            chunk.start,
                            chunk.end,
                            text_hash(chunk.text),
                            doc.metadata,
                            vectors[n],
                        )
                    )
                    result.added_ids.append(vid)
                    result.added_vectors.append(vectors[n])
            if rows:
                self._copy_chunks(conn, rows)
            _hook("chunks-written")
            return result

        return self._write_tx(body, retry_id_clash=True)

    def delete_documents(self, doc_ids: Sequence[str]) -> tuple[int, list[int]]:
        """Delete documents and their chunks; returns (documents deleted, vector ids removed)."""
        ids = sorted(set(doc_ids))
        if not ids:
            return 0, []

        def body(conn: Any) -> tuple[int, list[int]]:
            conn.execute(self._sql("SELECT id FROM {docs} WHERE id = ANY(%s) ORDER BY id FOR UPDATE"), [ids])
            removed = conn.execute(
                self._sql("DELETE FROM {chunks} WHERE doc_id = ANY(%s) RETURNING vid"), [ids]
            )
            removed_ids = [int(r[0]) for r in removed]
            deleted = conn.execute(self._sql("DELETE FROM {docs} WHERE id = ANY(%s)"), [ids]).rowcount
            return deleted, removed_ids

        return self._write_tx(body)

    def update_metadata(self, doc_id: str, metadata: Mapping[str, Any]) -> bool:
        """Replace a document's metadata (and its chunks' copies); ``False`` when there is no such one."""
        from psycopg.types.json import Jsonb

        text = _metadata_json(metadata)

        def body(conn: Any) -> bool:
            cur = conn.execute(
                self._sql("UPDATE {docs} SET metadata = %s::json WHERE id = %s"), [text, doc_id]
            )
            if cur.rowcount == 0:
                return False
            conn.execute(
                self._sql("UPDATE {chunks} SET metadata = %s WHERE doc_id = %s"),
                [Jsonb(dict(metadata)), doc_id],
            )
            return True

        return self._write_tx(body)

    def replace_vectors(
        self, pages: Iterable[tuple[np.ndarray, np.ndarray]], meta: Mapping[str, Any]
    ) -> None:
        """Swap every chunk vector for a new one and set ``meta`` keys, atomically (used by reindex).

        The new vectors go to a staging table first (committed page by page); the swap is one
        transaction, so a failure part-way leaves the old vectors and fingerprint in place. A new
        dimension retypes the column and rebuilds the HNSW index inside that transaction (readers
        wait for it); the same dimension updates rows in place (readers carry on).

        Example:
            >>> index.replace_vectors(pages, {"fingerprint": new_embedder.fingerprint})  # doctest: +SKIP
        """
        from psycopg import sql

        self._check_writable()
        for key in meta:
            if key in _RESERVED_META:
                raise InvalidInputError(f"replace_vectors: {key!r} is not a settable key")
        with self._connection() as conn:
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", [self._lock_key("reindex")])
            try:
                conn.execute(self._sql("DROP TABLE IF EXISTS {staging}"))
                conn.execute(
                    self._sql(
                        "CREATE UNLOGGED TABLE {staging} (vid bigint PRIMARY KEY, embedding vector NOT NULL)"
                    )
                )
                new_dim = None
                for ids, vectors in pages:
                    v = _unit_rows(vectors, "new vectors", new_dim)
                    new_dim = v.shape[1]
                    if new_dim > _MAX_DIM:
                        raise ConfigError(f"pgvector holds at most {_MAX_DIM} dimensions, got {new_dim}")
                    self._hnsw_halfvec(new_dim)
                    with (
                        conn.transaction(),
                        conn.cursor().copy(
                            self._sql("COPY {staging} (vid, embedding) FROM STDIN (FORMAT BINARY)")
                        ) as copy,
                    ):
                        copy.set_types(["int8", self._vector_oid])
                        for i, row in zip(_as_ids(ids, "ids"), v, strict=True):
                            copy.write_row((i, row))
                with conn.transaction():
                    conn.execute(self._sql("LOCK TABLE {chunks} IN SHARE ROW EXCLUSIVE MODE"))
                    missing = conn.execute(
                        self._sql(
                            "SELECT count(*) FROM {chunks} c WHERE NOT EXISTS "
                            "(SELECT 1 FROM {staging} s WHERE s.vid = c.vid)"
                        )
                    ).fetchone()[0]
                    if missing:
                        raise IntegrityError(
                            f"reindex: {missing} chunks changed while re-embedding; try again"
                        )
                    conn.execute("SELECT set_config('statement_timeout', '0', true)")
                    if new_dim is None or new_dim == self._refresh_dim():
                        conn.execute(
                            self._sql(
                                "UPDATE {chunks} c SET embedding = s.embedding "
                                "FROM {staging} s WHERE s.vid = c.vid"
                            )
                        )
                    else:
                        conn.execute(self._sql("DROP INDEX IF EXISTS {hnsw}"))
                        conn.execute(
                            self._sql(
                                "ALTER TABLE {chunks} ALTER COLUMN embedding DROP NOT NULL, "
                                "ALTER COLUMN embedding TYPE vector({d}) USING NULL",
                                d=sql.Literal(new_dim),
                            )
                        )
                        conn.execute(
                            self._sql(
                                "UPDATE {chunks} c SET embedding = s.embedding "
                                "FROM {staging} s WHERE s.vid = c.vid"
                            )
                        )
                        conn.execute(self._sql("ALTER TABLE {chunks} ALTER COLUMN embedding SET NOT NULL"))
                        conn.execute(self._sql("DELETE FROM {meta} WHERE key = 'hnsw'"))
                        conn.execute(
                            self._sql(
                                "INSERT INTO {meta} VALUES ('dim', %s::jsonb) "
                                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                            ),
                            [json.dumps(new_dim)],
                        )
                        self._dim, self._hnsw_ready, self._requested_dim = new_dim, False, new_dim
                        if self.index == "hnsw":
                            halfvec = self._hnsw_halfvec(new_dim)
                            conn.execute(self._hnsw_ddl(halfvec))
                            conn.execute(
                                self._sql("INSERT INTO {meta} VALUES ('hnsw', %s::jsonb)"),
                                [
                                    json.dumps(
                                        {
                                            "m": self._m,
                                            "ef_construction": self._ef_construction,
                                            "halfvec": halfvec,
                                        }
                                    )
                                ],
                            )
                            self._hnsw_ready, self._halfvec = True, halfvec
                    for key, value in meta.items():
                        conn.execute(
                            self._sql(
                                "INSERT INTO {meta} VALUES (%s, %s::jsonb) "
                                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                            ),
                            [key, json.dumps(value, sort_keys=True)],
                        )
                    self._bump(conn)
            except BaseException:
                # The swap rolled back: re-read what the table really holds.
                self._dim, self._hnsw_ready = None, False
                raise
            finally:
                if not conn.broken:
                    conn.execute(self._sql("DROP TABLE IF EXISTS {staging}"))
                    conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [self._lock_key("reindex")])
        self._refresh_dim()

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL makes each transaction durable when it commits."""

    def integrity_check(self) -> None:
        """Raise :class:`IntegrityError` unless the tables, the schema version and the dimension agree."""
        with self._connection() as conn:
            meta = self._read_meta(conn, ["schema_version", "dim"])
            if meta.get("schema_version") != SCHEMA_VERSION:
                raise IntegrityError(f"table {self.table!r}: schema version {meta.get('schema_version')!r}")
            typmod = conn.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
                [self._qualified("chunks")],
            ).fetchone()
            if typmod is None:
                raise IntegrityError(f"table {self.table!r} has no embedding column")
            column_dim = None if typmod[0] < 0 else typmod[0]
            if column_dim != meta.get("dim"):
                raise IntegrityError(
                    f"table {self.table!r}: the embedding column holds dim {column_dim}, "
                    f"the metadata says {meta.get('dim')}"
                )

    # ------------------------------------------------------------------------ VectorIndex protocol

    def add(self, ids: Any, vectors: Any) -> None:
        """Add vectors under caller-given ids, with no document (the table as a plain vector index).

        Pipelines write through :meth:`write`, which draws ids from the table's sequence; ``add``
        moves that sequence past the ids it is given, so the two can share a table.

        Raises:
            InvalidInputError: an id already present, NaN/inf or zero vectors, mismatched lengths.
            IndexMismatchError: vectors of another dimension than the table's.

        Example:
            >>> index.add([1, 2], np.float32([[1, 0], [0, 1]]))  # doctest: +SKIP
        """
        self._check_writable()
        id_list = _as_ids(ids, "ids")
        v = _unit_rows(vectors, "vectors")
        if len(id_list) != len(v):
            raise InvalidInputError(f"{len(id_list)} ids but {len(v)} vectors")
        if not id_list:
            return
        if len(set(id_list)) != len(id_list):
            raise InvalidInputError("ids must be unique")
        self._ensure_dim(v.shape[1])

        def body(conn: Any) -> None:
            with conn.cursor().copy(
                self._sql("COPY {chunks} (vid, embedding) FROM STDIN (FORMAT BINARY)")
            ) as copy:
                copy.set_types(["int8", self._vector_oid])
                for i, row in zip(id_list, v, strict=True):
                    copy.write_row((i, row))
            conn.execute(
                "SELECT setval(%s::regclass, "
                "GREATEST(%s, COALESCE(pg_sequence_last_value(%s::regclass), 1)))",
                [self._seq, max(id_list), self._seq],
            )

        self._write_tx(body)

    def delete(self, ids: Any) -> None:
        """Delete vectors by id; unknown ids are ignored.

        Example:
            >>> index.delete([2])  # doctest: +SKIP
        """
        id_list = _as_ids(ids, "ids")
        if id_list:
            self._write_tx(
                lambda conn: conn.execute(self._sql("DELETE FROM {chunks} WHERE vid = ANY(%s)"), [id_list])
            )

    def _search_sql(self, hnsw: bool, where: str, allowed: bool) -> Any:
        from psycopg import sql

        if hnsw and self._halfvec:
            order = sql.SQL("(c.embedding::halfvec({d})) <=> (%s::vector::halfvec({d}))").format(
                d=sql.Literal(self._dim)
            )
        else:
            order = sql.SQL("distance")
        return (
            self._sql("SELECT c.vid, c.embedding <=> %s AS distance FROM {chunks} c WHERE ")
            + sql.SQL(where)
            + sql.SQL(" AND c.vid = ANY(%s)" if allowed else "")
            + sql.SQL(" ORDER BY ")
            + order
            + sql.SQL(" LIMIT %s")
        )

    def _run_searches(
        self,
        q: np.ndarray,
        k: int,
        where: str,
        params: list[Any],
        allowed: list[int] | None,
        hnsw: bool,
        *,
        explain: bool = False,
    ) -> list[list[tuple[Any, ...]]]:
        from psycopg import sql

        query = self._search_sql(hnsw, where, allowed is not None)
        if explain:
            query = sql.SQL("EXPLAIN ") + query
        settings: list[str] = []
        if hnsw:
            settings += ["hnsw.ef_search", str(min(_MAX_EF_SEARCH, max(self._ef_search, k)))]
            if self._pgvector_version >= (0, 8, 0):
                settings += ["hnsw.iterative_scan", "relaxed_order"]
                settings += ["hnsw.max_scan_tuples", str(self._max_scan_tuples)]
        else:
            # Exact: never the ANN index (HNSW is only ever an index scan; bitmap scans of the GIN
            # and btree indexes stay available to the filter).
            settings += ["enable_indexscan", "off"]
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT " + ", ".join(["set_config(%s, %s, true)"] * (len(settings) // 2)), settings)
            with conn.pipeline():
                cursors = []
                for vec in q:
                    args = [vec, *params] + ([allowed] if allowed is not None else [])
                    args += [vec, k] if hnsw and self._halfvec else [k]
                    cursors.append(conn.execute(query, args, binary=not explain))
            return [cur.fetchall() for cur in cursors]

    def _plan(
        self, q: np.ndarray, k: int, filter: Mapping[str, Any] | None, allowed_ids: Any
    ) -> tuple[np.ndarray, str, list[Any], list[int] | None, bool]:
        """Validate a search and decide between the HNSW index and an exact scan."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        q = _unit_rows(q, "query vectors")
        where, params = compile_pg_filter(filter)
        allowed = None if allowed_ids is None else _as_ids(allowed_ids, "allowed_ids")
        dim = self._refresh_dim()
        if dim is not None and q.shape[1] != dim:
            raise InvalidInputError(f"query vectors have {q.shape[1]} dimensions, the index has {dim}")
        iterative = self._pgvector_version >= (0, 8, 0)
        hnsw = (
            self.index == "hnsw"
            and self._hnsw_ready
            and (iterative or (filter is None and allowed is None and k <= _MAX_EF_SEARCH))
        )
        return q, where, params, allowed, hnsw

    def explain(self, vector: Any, k: int = 10, *, filter: Mapping[str, Any] | None = None) -> str:
        """PostgreSQL's plan for one search (``EXPLAIN``), to see whether it walks the HNSW index.

        With a selective filter that the GIN index on ``metadata`` can serve, the planner may
        prefer to fetch the matching rows and sort them exactly; that is usually right.

        Example:
            >>> print(index.explain(query_vector, 10, filter={"year": {"$gte": 2024}}))  # doctest: +SKIP
            Limit ...  ->  Index Scan using ragkit_chunks_hnsw on ragkit_chunks c ...
        """
        q, where, params, allowed, hnsw = self._plan(vector, int(k), filter, None)
        if self._refresh_dim() is None:
            raise InvalidInputError(f"table {self.table!r} holds no vectors yet")
        rows = self._run_searches(q[:1], int(k), where, params, allowed, hnsw, explain=True)[0]
        return "\n".join(r[0] for r in rows)

    def search(
        self,
        vectors: Any,
        k: int,
        *,
        allowed_ids: Any = None,
        filter: Mapping[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest vectors of each query by cosine, optionally among those matching ``filter``.

        The filter is evaluated in SQL together with the vector ``ORDER BY`` (no id list crosses
        the wire). A query returns ``k`` hits whenever ``k`` rows match: filtered HNSW scans are
        iterative, and a short result is recomputed exactly.

        Args:
            vectors: ``(n, dim)`` queries (or one ``(dim,)`` query), finite and non-zero.
            k: hits per query.
            allowed_ids: restrict to these vector ids (before the top-k cut).
            filter: a metadata filter (DESIGN.md "Filters").

        Returns:
            ``(scores, ids)``: float32 cosines and int64 ids, ``(n, k)``, best first; missing hits
            are padded with ``-inf`` and ``-1``.

        Example:
            >>> scores, ids = index.search(query_vectors, k=10, filter={"lang": "en"})  # doctest: +SKIP
        """
        q, where, params, allowed, hnsw = self._plan(vectors, k, filter, allowed_ids)
        k = int(k)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        labels = np.full((len(q), k), -1, dtype=np.int64)
        if self._dim is None or not len(q) or allowed == []:
            return scores, labels
        results = self._run_searches(q, k, where, params, allowed, hnsw)
        short = [i for i, r in enumerate(results) if len(r) < k]
        if hnsw and short:
            # Fewer than k: either fewer rows match, or the scan gave up; exact search settles it.
            logger.debug("%s: %d short queries recomputed exactly", self.table, len(short))
            for i, r in zip(
                short, self._run_searches(q[short], k, where, params, allowed, False), strict=True
            ):
                results[i] = r
        for row, hits in enumerate(results):
            # relaxed_order returns nearly sorted hits: sort by exact distance, ties by id.
            hits.sort(key=lambda h: (float(h[1]), int(h[0])))
            for j, (vid, distance) in enumerate(hits[:k]):
                labels[row, j] = vid
                scores[row, j] = 1.0 - distance
        return scores, labels

    def lexical_search(
        self,
        query: str,
        k: int,
        *,
        filter: Mapping[str, Any] | None = None,
        allowed_ids: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Full-text search: chunks matching ``websearch_to_tsquery(language, query)``, best first.

        Scores are ``ts_rank_cd`` (cover density), ties ordered by ascending id. Only matching
        chunks are returned, so the arrays may be shorter than ``k``; the filter applies before
        the top-k cut. Every process sees the same lexical index (a GIN index on a generated
        ``tsvector`` column).

        Returns:
            ``(scores, ids)``: 1-D float32 and int64 arrays.

        Example:
            >>> scores, ids = index.lexical_search('refund -"gift card"', k=20)  # doctest: +SKIP
        """
        from psycopg import sql

        if not isinstance(query, str):
            raise InputTypeError(f"query must be a str, got {type(query).__name__}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        where, params = compile_pg_filter(filter)
        allowed = None if allowed_ids is None else _as_ids(allowed_ids, "allowed_ids")
        if allowed == []:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        statement = (
            self._sql(
                "SELECT c.vid, ts_rank_cd(c.tsv, q.query) AS score FROM {chunks} c, "
                "websearch_to_tsquery(%s::regconfig, %s) AS q(query) WHERE c.tsv @@ q.query AND "
            )
            + sql.SQL(where)
            + sql.SQL(" AND c.vid = ANY(%s)" if allowed is not None else "")
            + sql.SQL(" ORDER BY score DESC, c.vid LIMIT %s")
        )
        args = [self._language, query, *params] + ([allowed] if allowed is not None else []) + [int(k)]
        with self._connection() as conn:
            rows = conn.execute(statement, args).fetchall()
        return (
            np.fromiter((r[1] for r in rows), np.float32, len(rows)),
            np.fromiter((r[0] for r in rows), np.int64, len(rows)),
        )
