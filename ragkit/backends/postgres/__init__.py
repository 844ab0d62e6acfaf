"""PostgreSQL + pgvector: one storage backend shared by many processes and machines.

:class:`PostgresBackend` implements :class:`~ragkit.backends.Backend`: documents, chunks, metadata,
content hashes and chunk vectors live in PostgreSQL, with an HNSW index on cosine distance and a
full-text (``tsvector``) index for lexical search. Every application replica points at the same
database, so they all see one index; a saved pipeline directory only records which table to reach.

The package is split by job: :mod:`.options` (settings), :mod:`.connection` (pool, error mapping,
write transactions), :mod:`.schema` (DDL, dimension, HNSW), :mod:`.reads`, :mod:`.writes` and
:mod:`.search`. Nothing here imports psycopg until a backend is created.

Example:
    >>> from ragkit.backends import PostgresBackend
    >>> backend = PostgresBackend("postgresql://app@db/rag", table="support_kb", dim=1024)  # doctest: +SKIP
    >>> backend.count_documents()                                                      # doctest: +SKIP
    0
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ragkit._deps import require
from ragkit._secrets import redact_dsn
from ragkit.backends.base import SavedBackend
from ragkit.backends.postgres.connection import Database
from ragkit.backends.postgres.options import Options, make_options, options_from_entry
from ragkit.backends.postgres.reads import ReadsMixin
from ragkit.backends.postgres.schema import SCHEMA_VERSION, Schema
from ragkit.backends.postgres.search import SearchMixin
from ragkit.backends.postgres.writes import WritesMixin
from ragkit.errors import ConfigError, IndexMismatchError

__all__ = ["PostgresBackend", "SCHEMA_VERSION"]


class PostgresBackend(ReadsMixin, WritesMixin, SearchMixin):
    """A storage backend in PostgreSQL + pgvector, shared by every process that opens the same table.

    Tables (``table`` is the chunk table; the others take it as a prefix)::

        {table}_meta       key text PRIMARY KEY, value jsonb          -- generation, dim, fingerprint, ...
        {table}_documents  seq, id, text, metadata json (exact text), hash
        {table}            vid bigint identity, doc_id, n, text, start, end, hash (of header + text),
                           metadata jsonb (a copy of the document's), embedding vector(dim),
                           location jsonb, header text,
                           tsv tsvector GENERATED from text          -- HNSW, GIN(tsv), GIN(metadata)

    A table of an older ragkit (schema version 1, without ``location`` and ``header``) is migrated
    in place, in one transaction, when it is opened for writing; opened read-only it is read as it
    is, its chunks with ``location == {}`` and ``header == ""``. Lexical search (the ``tsvector``)
    sees the chunk text, not the header; filters see the document metadata, not the location.

    The document metadata is copied onto each chunk row so that a filtered search is a single-table
    query: the filter, the vector ``ORDER BY`` and pgvector's iterative index scan run together,
    instead of a join the planner may order badly. Metadata updates rewrite both copies in one
    transaction. Filters compile to parameterised SQL over ``jsonb``
    (:func:`ragkit.backends.postgres_filter.postgres_where`): keys and values only ever travel as
    bound parameters.

    Search:
        Cosine distance (``vector_cosine_ops``); scores are ``1 - distance``. ``index="hnsw"``
        builds pgvector's HNSW index (``m``, ``ef_construction``) and searches it with
        ``hnsw.ef_search = min(1000, max(ef_search, k))``; ``index="exact"`` never uses it (a
        sequential scan, exact results). Filtered HNSW searches use pgvector 0.8's iterative index
        scans (``hnsw.iterative_scan = relaxed_order``, up to ``max_scan_tuples`` tuples; results
        are re-sorted by exact distance), and any query that still comes back with fewer than ``k``
        hits is recomputed exactly, so a search returns ``k`` hits whenever ``k`` chunks match. With
        pgvector older than 0.8, filtered queries are always computed exactly. A ``k`` far above
        the collection is clamped to the number of matching chunks.

    Dimensions:
        HNSW indexes at most 2,000 dimensions of ``vector``; from 2,001 to 4,000 the index is built
        on ``embedding::halfvec(dim)`` (half precision in the index only: the table keeps float32,
        and scores are computed from it). Above 4,000 (Qwen3-Embedding-8B's 4,096) HNSW is refused:
        use a Matryoshka ``dim`` of at most 4,000 on the embedder, or ``index="exact"``.

    Compression:
        ``compression="halfvec"`` (2 bytes a dimension, the same as ``halfvec=True``) or ``"bit"``
        (one bit a dimension, 32x smaller than float32: ``binary_quantize(embedding)::bit(dim)``
        with ``bit_hamming_ops``, pgvector 0.7+, any dimension up to 16,000) builds the HNSW index
        on a compressed copy of the vectors while the table keeps float32. A search takes the
        ``k * rescore`` nearest candidates by the compressed distance (filters applied before that
        cut) and re-orders them by the exact ``embedding <=> query`` in the same statement, so
        scores are exact; short results are recomputed exactly as always. Fixed for the table when
        its index is built: ``compression=None`` uses whatever index the table has, and another
        explicit value than the table's raises :class:`~ragkit.errors.ConfigError`.

    Bulk loads:
        pgvector inserts into an HNSW graph one vector at a time (a few hundred per second per
        core at dim 384), while ``CREATE INDEX`` builds it in bulk, in parallel, several times
        faster. For a large first load, open the table with ``index="exact"``, load, then open it
        with ``index="hnsw"``: the index is built then (give the server ``maintenance_work_mem``
        large enough to hold the graph).

    Processes:
        Each instance holds a ``psycopg_pool.ConnectionPool`` (thread-safe). Create instances after
        forking (in each worker), not before. Every write is one transaction that also bumps the
        ``generation`` counter; writers lock documents in id order, and a deadlock is retried.
        PostgreSQL serialises writers itself, so :meth:`acquire_writer` takes no lock. Schema
        creation is serialised with an advisory lock, so many processes may open a new table at once.

    Saved directories:
        :meth:`save` records :meth:`spec` (the DSN without any password) in the manifest and writes
        no file. A saved directory is untrusted input: libpq would send ``PGPASSWORD`` or
        ``~/.pgpass`` credentials to whatever host it names, so :meth:`from_saved` refuses to
        connect unless ``trust_hosts=True``; pass your own backend to ``Pipeline.load`` instead,
        which checks it against the directory with :meth:`check_saved`.

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
        compression: ``None``, ``"halfvec"`` or ``"bit"``: what the HNSW index holds (see above).
        rescore: candidates per hit that a compressed (halfvec or bit) index hands to the exact
            re-ordering (1..1000; the candidates are capped at 1,000).
        read_only: no DDL, no writes (:class:`~ragkit.errors.ReadOnlyError`); sessions are
            read-only too.

    Raises:
        ConfigError: an option out of range, pgvector missing or not creatable with this role, a
            dimension HNSW cannot index, a language the server does not know.
        IndexMismatchError: ``dim`` differs from the dimension of the existing table.
        UnavailableError: the server cannot be reached.
        MissingDependencyError: psycopg is not installed (``pip install 'ragkit[pg]'``).

    Example:
        >>> from ragkit import Pipeline
        >>> from ragkit.backends import PostgresBackend
        >>> pg = PostgresBackend("postgresql://app@db.internal/rag", dim=1024)  # doctest: +SKIP
        >>> pipe = Pipeline(embedder, backend=pg)                               # doctest: +SKIP
        >>> pipe.search("refund policy", k=5, filter={"lang": "en"})           # doctest: +SKIP
    """

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
        compression: str | None = None,
        rescore: int = 4,
        read_only: bool = False,
    ) -> None:
        self._db = None  # type: ignore[assignment]  # close() and __del__ work however far __init__ got
        options = make_options(
            dsn,
            table=table,
            dim=dim,
            index=index,
            m=m,
            ef_construction=ef_construction,
            ef_search=ef_search,
            halfvec=halfvec,
            language=language,
            max_scan_tuples=max_scan_tuples,
            pool_size=pool_size,
            statement_timeout=statement_timeout,
            compression=compression,
            rescore=rescore,
        )
        self._init(options, read_only=bool(read_only))

    def _init(self, options: Options, *, read_only: bool) -> None:
        self._options = options
        self.table = options.table
        self.index = options.index
        self.read_only = read_only
        require("psycopg", purpose="PostgresBackend")
        require("psycopg_pool", purpose="PostgresBackend")
        schema = Schema(options, read_only=read_only)
        db = Database(
            options, read_only=read_only, meta_table=schema.names["meta"], on_dim_mismatch=schema.forget_dim
        )
        self._schema = schema
        with db.connect() as conn, db.errors():
            schema.setup(conn)
        db.open(schema.vector_oid)
        self._db = db

    # ----------------------------------------------------------------------------------- saved

    @classmethod
    def from_saved(cls, entry: Mapping[str, Any], *, read_only: bool, trust_hosts: bool) -> PostgresBackend:
        """Open the table a saved directory's manifest entry names, if its host may be trusted.

        The entry is untrusted input: connecting would send this process's ``PGPASSWORD`` or
        ``~/.pgpass`` credentials to whatever host it names. So unless ``trust_hosts`` is true
        this raises :class:`~ragkit.errors.ConfigError`; the usual way is to open the backend
        yourself and pass it to ``Pipeline.load(..., backend=...)``.

        Raises:
            IntegrityError: the entry is malformed. ConfigError: ``trust_hosts`` is false.

        Example:
            >>> entry = {"kind": "postgres", "spec": {"dsn": "host=db user=app", "table": "kb"}}
            >>> try:
            ...     PostgresBackend.from_saved(entry, read_only=True, trust_hosts=False)
            ... except ConfigError as e:
            ...     print(str(e)[:69])
            this directory's PostgreSQL backend is table 'kb' at host=db user=app
        """
        options = options_from_entry(entry)
        if trust_hosts is not True:
            raise ConfigError(
                f"this directory's PostgreSQL backend is table {options.table!r} at "
                f"{redact_dsn(options.dsn)}; ragkit does not connect to a host named by a saved directory "
                "(libpq would send it your PGPASSWORD / .pgpass credentials): pass "
                f"backend=PostgresBackend(dsn, table={options.table!r}) to Pipeline.load, or "
                "trust_hosts=True if you trust where this directory came from"
            )
        backend = cls.__new__(cls)
        backend._db = None  # type: ignore[assignment]
        backend._init(options, read_only=bool(read_only))
        return backend

    def check_saved(self, entry: Mapping[str, Any]) -> None:
        """Check that a saved directory's manifest entry names this backend's table (and dimension).

        Raises:
            IntegrityError: the entry is malformed.
            IndexMismatchError: the directory was saved with another table, or another dimension.

        Example:
            >>> entry = {"kind": "postgres", "spec": {"dsn": "host=db", "table": "kb"}}
            >>> backend.check_saved(entry)  # doctest: +SKIP
        """
        saved = options_from_entry(entry)
        if saved.table != self.table:
            raise IndexMismatchError(
                f"the directory was saved with PostgreSQL table {saved.table!r} "
                f"({redact_dsn(saved.dsn)}), this backend is table {self.table!r}"
            )
        dim = self._current_dim()
        if saved.dim is not None and dim is not None and saved.dim != dim:
            raise IndexMismatchError(
                f"the directory was saved when table {self.table!r} held dim {saved.dim}, it holds {dim}"
            )

    def spec(self) -> dict[str, Any]:
        """How to reopen this backend (``PostgresBackend(**spec)``); the DSN comes without any password.

        Example:
            >>> PostgresBackend("host=db user=app password=s3cret", dim=8).spec()["dsn"]  # doctest: +SKIP
            'host=db user=app'
        """
        spec = dataclasses.asdict(self._options)
        spec["dsn"] = redact_dsn(self._options.dsn)
        spec["dim"] = self._schema.dim if self._schema.dim is not None else self._options.dim
        spec["language"] = self._schema.language
        return spec

    def save(self, directory: Path, tag: str, commit: Callable[[SavedBackend], None]) -> SavedBackend:
        """Commit the manifest entry ``{"kind": "postgres", "spec": spec()}``; writes no file of its own.

        The data lives in PostgreSQL, so the directory only records which table to reach (the DSN
        without any password); ``commit`` writes the manifest, which reads the generation and the
        counts from this backend. See :meth:`Backend.save <ragkit.backends.Backend.save>`.

        Example:
            >>> saved = backend.save(Path("my-index"), "t1", commit=lambda saved: None)  # doctest: +SKIP
            >>> saved.entry["kind"]                                                     # doctest: +SKIP
            'postgres'
        """
        saved = SavedBackend(entry={"kind": "postgres", "spec": json.loads(json.dumps(self.spec()))})
        commit(saved)
        return saved

    def acquire_writer(self) -> None:
        """Nothing to take (PostgreSQL serialises writers); :class:`ReadOnlyError` when read-only."""
        self._db.check_writable()

    # ------------------------------------------------------------------------------ properties

    @property
    def dim(self) -> int | None:
        """The vector size of the table, or ``None`` before the first vectors."""
        return self._current_dim()

    @property
    def pgvector_version(self) -> str:
        """The pgvector extension version on the server, such as ``"0.8.2"``."""
        return ".".join(map(str, self._schema.pgvector_version))

    def integrity_check(self) -> None:
        """Raise :class:`~ragkit.errors.IntegrityError` unless the schema version and the dimension agree."""
        with self._db.connection() as conn:
            self._schema.integrity_check(conn)

    def drop(self) -> None:
        """Drop the tables of this backend and everything in them (tests, resets). Irreversible.

        Example:
            >>> PostgresBackend(dsn, table="scratch").drop()  # doctest: +SKIP
        """
        self._db.check_writable()
        with self._db.connection() as conn:
            self._schema.drop(conn)

    # ------------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the connection pool (idempotent)."""
        db = self.__dict__.get("_db")
        if db is not None:
            db.close()

    def __enter__(self) -> PostgresBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        schema = self.__dict__.get("_schema")
        dim = schema.dim if schema is not None else None
        return (
            f"PostgresBackend({redact_dsn(self._options.dsn)!r}, table={self.table!r}, dim={dim}, "
            f"index={self.index!r}, read_only={self.read_only})"
        )
