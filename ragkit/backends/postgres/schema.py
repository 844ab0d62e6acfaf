"""The tables of a PostgreSQL backend: DDL, the meta table, the dimension, the HNSW index, pgvector checks.

Schema changes (creating the tables, typing the embedding column on the first write, building the
HNSW index) are serialised across processes by an advisory lock keyed on the table name, so many
processes may open a new table at once. Opening an older table for writing migrates it in place
(:meth:`Schema.migrate`); opening it read-only reads it as it is. :class:`Schema` also keeps what
this process knows of the table (dimension, HNSW layout, language, pgvector version) and re-reads it
when it goes stale.

Example:
    >>> from ragkit.backends.postgres.options import make_options
    >>> Schema(make_options("host=db", table="kb")).names["docs"]
    'kb_documents'
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ragkit.backends.postgres.connection import psycopg
from ragkit.backends.postgres.options import MAX_DIM, MAX_HNSW_HALFVEC, MAX_HNSW_VECTOR, Options
from ragkit.errors import ConfigError, IndexMismatchError, IntegrityError

__all__ = ["RESERVED_META", "SCHEMA_VERSION", "Schema"]

logger = logging.getLogger("ragkit")

# 1: ragkit 0.1. 2: chunks have ``location jsonb`` and ``header text`` (defaults '{}' and ''), and
# their ``hash`` is that of ``header + text`` (for a version-1 chunk, without a header, the same).
SCHEMA_VERSION = 2
_READABLE = (1, 2)
# Meta keys ragkit maintains itself: set_meta refuses them.
RESERVED_META = frozenset({"generation", "schema_version", "dim", "language", "hnsw"})


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


class Schema:
    """DDL and table state of one backend (``options.table`` and the tables named after it).

    Args:
        options: the backend's settings.
        read_only: never create or alter anything.

    Example:
        >>> from ragkit.backends.postgres.options import make_options
        >>> Schema(make_options("host=db", table="kb")).qualified("chunks")
        '"kb"'
    """

    def __init__(self, options: Options, *, read_only: bool = False) -> None:
        table = options.table
        self.options = options
        self.table = table
        self.read_only = read_only
        self.names = {
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
        self.requested_dim = options.dim
        self.dim: int | None = None
        self.halfvec = False
        self.bit = False  # the HNSW index is on binary_quantize(embedding)::bit(dim)
        self.hnsw_ready = False
        self.language = "english"
        self.pgvector_version: tuple[int, ...] = (0,)
        self.vector_oid = 0
        self.version = SCHEMA_VERSION  # the table's; a reader of a version-1 table reads defaults
        self.lock = threading.Lock()
        self._cache: dict[str, Any] = {}
        self.statements: dict[tuple[Any, ...], str] = {}  # search statements by shape (search.py)
        if options.dim is not None:
            self.hnsw_halfvec(options.dim)  # refuse a dimension HNSW cannot index before connecting

    # ------------------------------------------------------------------------------------ names

    def sql(self, template: str, **extra: Any) -> Any:
        """``template`` with ``{chunks}``, ``{docs}``, ``{meta}``, ... replaced by quoted identifiers."""
        from psycopg import sql

        if not extra:
            cached = self._cache.get(template)
            if cached is None:
                names = {k: sql.Identifier(v) for k, v in self.names.items()}
                cached = self._cache[template] = sql.SQL(template).format(**names)
            return cached
        names = {k: sql.Identifier(v) for k, v in self.names.items()}
        return sql.SQL(template).format(**names, **extra)

    def qualified(self, name: str) -> str:
        """A table's name quoted for ``regclass`` (names match ``[a-z_][a-z0-9_]*``: nothing to escape)."""
        return '"' + self.names[name] + '"'

    def lock_key(self, what: str) -> str:
        """The advisory-lock key of an exclusive operation on this table."""
        return f"ragkit:{what}:{self.table}"

    @property
    def iterative_scans(self) -> bool:
        """Whether the server's pgvector has iterative index scans (0.8+)."""
        return self.pgvector_version >= (0, 8, 0)

    # ------------------------------------------------------------------------------- dimensions

    def check_dim(self, dim: int) -> None:
        """Refuse a dimension that pgvector cannot store, or that this table's HNSW index cannot hold."""
        if dim > MAX_DIM:
            raise ConfigError(f"pgvector holds at most {MAX_DIM} dimensions, got {dim}")
        self.hnsw_halfvec(dim)

    def hnsw_halfvec(self, dim: int) -> bool:
        """Whether the HNSW index of a ``dim``-dimensional table is built on halfvec; raise if impossible."""
        if self.options.index != "hnsw" or self.options.compression == "bit":
            return False  # bit: HNSW holds 64,000 dimensions, more than the vector type's 16,000
        if dim > MAX_HNSW_HALFVEC:
            raise ConfigError(
                f"pgvector's HNSW index holds at most {MAX_HNSW_HALFVEC} dimensions (as halfvec), these "
                f"vectors have {dim}: give the embedder a Matryoshka dim <= {MAX_HNSW_HALFVEC} (for "
                "Qwen3-Embedding, e.g. dim=2048 or 1024), or use PostgresBackend(..., index='exact')"
            )
        if self.options.halfvec is False and dim > MAX_HNSW_VECTOR:
            raise ConfigError(
                f"pgvector's HNSW index holds at most {MAX_HNSW_VECTOR} dimensions of vector, these have "
                f"{dim}: leave halfvec=None (half-precision index) or lower the embedder's dim"
            )
        return dim > MAX_HNSW_VECTOR if self.options.halfvec is None else self.options.halfvec

    @property
    def compressed(self) -> bool:
        """Whether the HNSW index holds a lossy copy of the vectors (halfvec or bit), to be rescored."""
        return self.halfvec or self.bit

    def forget_dim(self) -> None:
        """Another process changed the dimension: re-read it on next use."""
        self.dim, self.hnsw_ready = None, False

    # ------------------------------------------------------------------------------------ setup

    def setup(self, conn: Any) -> None:
        """Check pgvector, create the tables (unless read-only), and read the table's state."""
        pg = psycopg()
        from psycopg.types import TypeInfo

        self._ensure_extension(conn)
        try:
            if not self.read_only:
                self._create(conn)
            self._load_state(conn)
            if not self.read_only and self.dim is None and self.requested_dim is not None:
                self.fix_dim(conn, self.requested_dim)
            if not self.read_only and self.dim is not None and self.options.index == "hnsw":
                self.ensure_hnsw(conn)
        except pg.errors.UndefinedTable as e:
            raise ConfigError(
                f"no ragkit tables named {self.table!r} in this database: open it once without "
                "read_only=True to create them"
            ) from e
        except (pg.errors.UndefinedColumn, pg.errors.WrongObjectType) as e:
            raise IntegrityError(f"table {self.table!r} exists but is not a ragkit table: {e}") from e
        info = TypeInfo.fetch(conn, "vector")
        if info is None:
            raise ConfigError("the vector type is not on the search_path of this connection")
        self.vector_oid = info.oid

    def _ensure_extension(self, conn: Any) -> None:
        pg = psycopg()
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
            except pg.errors.InsufficientPrivilege as e:
                raise ConfigError(
                    f"the pgvector extension is not enabled in database {conn.info.dbname!r} and role "
                    f"{conn.info.user!r} may not create it (CREATE EXTENSION vector needs a superuser, or "
                    "the database owner where an administrator has made it trusted): have an "
                    "administrator run `CREATE EXTENSION vector;` in that database once"
                ) from e
            except (pg.errors.UndefinedFile, pg.errors.FeatureNotSupported) as e:
                raise ConfigError(
                    "pgvector is not installed on the PostgreSQL server (no extension 'vector'): install "
                    "it there (e.g. the postgresql-<version>-pgvector package or the pgvector/pgvector "
                    f"Docker image), then retry: {e}"
                ) from e
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        self.pgvector_version = _version(row[0])
        if self.options.index == "hnsw" and self.pgvector_version < (0, 5, 0):
            raise ConfigError(f"index='hnsw' needs pgvector >= 0.5 (the server has {row[0]}): upgrade it")
        if self.options.compression == "bit" and self.pgvector_version < (0, 7, 0):
            raise ConfigError(f"compression='bit' needs pgvector >= 0.7 (the server has {row[0]})")
        if not self.iterative_scans:
            logger.warning(
                "pgvector %s has no iterative index scans (0.8+): filtered searches on %s run exactly",
                row[0],
                self.table,
            )

    def _create(self, conn: Any) -> None:
        from psycopg import sql

        pg = psycopg()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self.lock_key("schema")])
            conn.execute(
                self.sql("CREATE TABLE IF NOT EXISTS {meta} (key text PRIMARY KEY, value jsonb NOT NULL)")
            )
            row = conn.execute(self.sql("SELECT value FROM {meta} WHERE key = 'language'")).fetchone()
            language = row[0] if row is not None else (self.options.language or "english")
            try:
                with conn.transaction():
                    conn.execute("SELECT %s::regconfig", [language])
            except pg.errors.UndefinedObject as e:
                known = [r[0] for r in conn.execute("SELECT cfgname FROM pg_ts_config ORDER BY 1")]
                raise ConfigError(f"unknown text-search language {language!r}; the server has {known}") from e
            conn.execute(
                self.sql(
                    "CREATE TABLE IF NOT EXISTS {docs} ("
                    " seq bigint GENERATED ALWAYS AS IDENTITY,"
                    " id text PRIMARY KEY,"
                    " text text NOT NULL,"
                    " metadata json NOT NULL,"
                    " hash text NOT NULL)"
                )
            )
            conn.execute(self.sql("CREATE UNIQUE INDEX IF NOT EXISTS {seq_idx} ON {docs} (seq)"))
            conn.execute(
                self.sql(
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
                    " location jsonb NOT NULL DEFAULT '{{}}',"
                    " header text NOT NULL DEFAULT '',"
                    " tsv tsvector GENERATED ALWAYS AS (to_tsvector({language}::regconfig, text)) STORED,"
                    " UNIQUE (doc_id, n))",
                    language=sql.Literal(language),
                )
            )
            conn.execute(self.sql("CREATE INDEX IF NOT EXISTS {hash_idx} ON {chunks} (hash)"))
            conn.execute(self.sql("CREATE INDEX IF NOT EXISTS {tsv_idx} ON {chunks} USING gin (tsv)"))
            conn.execute(
                self.sql(
                    "CREATE INDEX IF NOT EXISTS {md_idx} ON {chunks} USING gin (metadata jsonb_path_ops)"
                )
            )
            conn.execute(
                self.sql(
                    "INSERT INTO {meta} VALUES ('generation', '0'), ('schema_version', %s), "
                    "('language', to_jsonb(%s::text)) ON CONFLICT (key) DO NOTHING"
                ),
                [json.dumps(SCHEMA_VERSION), language],
            )
            self.migrate(conn)

    def migrate(self, conn: Any) -> None:
        """Bring an older table to :data:`SCHEMA_VERSION`, inside the caller's transaction (which
        holds the schema lock), so a failure leaves it as it was.

        Version 1 gains the chunk columns ``location`` and ``header`` with their defaults (no
        table rewrite: PostgreSQL 11+ stores a constant default in the catalog). Every hash stays
        valid, since a chunk without a header hashes as its text. The generation is not bumped:
        what readers see does not change. A version newer than this ragkit's is left alone
        (:meth:`setup` then refuses it).
        """
        row = conn.execute(self.sql("SELECT value FROM {meta} WHERE key = 'schema_version'")).fetchone()
        if row is None or row[0] != 1:
            return
        conn.execute(
            self.sql(
                "ALTER TABLE {chunks} ADD COLUMN IF NOT EXISTS location jsonb NOT NULL DEFAULT '{{}}', "
                "ADD COLUMN IF NOT EXISTS header text NOT NULL DEFAULT ''"
            )
        )
        self.upsert_meta(conn, "schema_version", json.dumps(SCHEMA_VERSION))
        logger.info("table %s: migrated from ragkit schema version 1 to %d", self.table, SCHEMA_VERSION)

    def read_meta(self, conn: Any, keys: Sequence[str]) -> dict[str, Any]:
        """``{key: JSON value}`` of the meta rows that exist among ``keys``."""
        rows = conn.execute(self.sql("SELECT key, value FROM {meta} WHERE key = ANY(%s)"), [list(keys)])
        return dict(rows.fetchall())

    def upsert_meta(self, conn: Any, key: str, text: str) -> None:
        """Set a meta row to the JSON ``text``."""
        conn.execute(
            self.sql(
                "INSERT INTO {meta} VALUES (%s, %s::jsonb) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ),
            [key, text],
        )

    def _load_state(self, conn: Any) -> None:
        meta = self.read_meta(conn, ["schema_version", "language", "dim", "hnsw"])
        version = meta.get("schema_version")
        if isinstance(version, bool) or version not in _READABLE:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            raise IntegrityError(
                f"table {self.table!r}: unsupported ragkit schema version {version!r} (this ragkit reads "
                f"{_READABLE[0]} to {SCHEMA_VERSION}){': upgrade ragkit' if newer else ''}"
            )
        self.version = int(version)
        self.language = meta.get("language") or "english"
        if self.options.language is not None and self.options.language != self.language:
            raise ConfigError(
                f"table {self.table!r} was created with language={self.language!r}, not "
                f"{self.options.language!r}: leave language=None, or use another table"
            )
        self.apply_dim(meta.get("dim"), meta.get("hnsw"), conn)

    def apply_dim(self, dim: int | None, hnsw: Mapping[str, Any] | None, conn: Any) -> None:
        """Adopt the table's dimension and HNSW layout (as read from its meta table)."""
        if dim is not None and self.requested_dim is not None and dim != self.requested_dim:
            raise IndexMismatchError(
                f"table {self.table!r} holds {dim}-dimensional vectors, not {self.requested_dim}: "
                "vectors of different sizes come from different embedders; use another table, or reindex"
            )
        if dim is not None and not (hnsw or {}).get("bit"):
            self.hnsw_halfvec(dim)
        self.dim = dim
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [self.qualified("hnsw")]).fetchone()[0]
        self.hnsw_ready = bool(exists and hnsw)
        index = self.options.index
        if self.hnsw_ready:
            assert hnsw is not None
            self.halfvec = bool(hnsw["halfvec"])
            self.bit = bool(hnsw.get("bit", False))
            built = "bit" if self.bit else "halfvec" if self.halfvec else None
            wanted = self.options.compression
            if index == "hnsw" and wanted is not None and wanted != built:
                raise ConfigError(
                    f"table {self.table!r} has an HNSW index with compression={built!r}, not {wanted!r}: "
                    "leave compression=None to use it, or use another table (the index is built once)"
                )
            if index == "hnsw" and self.options.halfvec is not None and self.options.halfvec != self.halfvec:
                raise ConfigError(
                    f"table {self.table!r} has an HNSW index with halfvec={self.halfvec}: leave halfvec=None"
                )
            built = (hnsw["m"], hnsw["ef_construction"])
            if index == "hnsw" and built != (self.options.m, self.options.ef_construction):
                logger.warning(
                    "table %s: its HNSW index has m=%s, ef_construction=%s (asked: %s, %s); using it",
                    self.table,
                    *built,
                    self.options.m,
                    self.options.ef_construction,
                )
        elif index == "hnsw" and dim is not None and self.read_only:
            logger.warning("table %s has no HNSW index yet: searches run exactly", self.table)

    def fix_dim(self, conn: Any, dim: int) -> None:
        """Type the embedding column as ``vector(dim)`` (first write to a new table), then index it."""
        from psycopg import sql

        self.check_dim(dim)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self.lock_key("schema")])
            meta = self.read_meta(conn, ["dim", "hnsw"])
            if meta.get("dim") is None:
                conn.execute(
                    self.sql(
                        "ALTER TABLE {chunks} ALTER COLUMN embedding TYPE vector({dim})", dim=sql.Literal(dim)
                    )
                )
                conn.execute(self.sql("INSERT INTO {meta} VALUES ('dim', %s::jsonb)"), [json.dumps(dim)])
                meta["dim"] = dim
            self.apply_dim(meta["dim"], meta.get("hnsw"), conn)
        if self.options.index == "hnsw":
            self.ensure_hnsw(conn)

    def hnsw_ddl(self, halfvec: bool, dim: int) -> Any:
        """``CREATE INDEX`` of the HNSW graph: on ``embedding``, ``embedding::halfvec(dim)``, or its sign
        bits ``binary_quantize(embedding)::bit(dim)`` (Hamming distance) for ``compression="bit"``."""
        from psycopg import sql

        if self.options.compression == "bit":
            column = sql.SQL("(binary_quantize(embedding)::bit({})) bit_hamming_ops").format(sql.Literal(dim))
        elif halfvec:
            column = sql.SQL("(embedding::halfvec({})) halfvec_cosine_ops").format(sql.Literal(dim))
        else:
            column = sql.SQL("embedding vector_cosine_ops")
        return self.sql(
            "CREATE INDEX IF NOT EXISTS {hnsw} ON {chunks} USING hnsw ({column}) "
            "WITH (m = {m}, ef_construction = {efc})",
            column=column,
            m=sql.Literal(self.options.m),
            efc=sql.Literal(self.options.ef_construction),
        )

    def build_hnsw(self, conn: Any, dim: int) -> None:
        """Build the HNSW index inside the caller's transaction and record its layout."""
        halfvec = self.hnsw_halfvec(dim)
        conn.execute("SELECT set_config('statement_timeout', '0', true)")  # index builds are exempt
        conn.execute(self.hnsw_ddl(halfvec, dim))
        bit = self.options.compression == "bit"
        layout = {"m": self.options.m, "ef_construction": self.options.ef_construction, "halfvec": halfvec}
        if bit:
            layout["bit"] = True
        self.upsert_meta(conn, "hnsw", json.dumps(layout))
        self.hnsw_ready, self.halfvec, self.bit = True, halfvec, bit

    def ensure_hnsw(self, conn: Any) -> None:
        """Build the HNSW index if the table has none (in bulk: much faster than row-by-row inserts)."""
        if self.hnsw_ready:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self.lock_key("schema")])
            meta = self.read_meta(conn, ["dim", "hnsw"])
            self.apply_dim(meta.get("dim"), meta.get("hnsw"), conn)
            if self.hnsw_ready or self.dim is None:
                return
            n = self.count(conn, "chunks")
            started = time.perf_counter()
            self.build_hnsw(conn, self.dim)
        if n:
            logger.info(
                "built the HNSW index of %s over %d vectors in %.1fs",
                self.table,
                n,
                time.perf_counter() - started,
            )

    def chunk_columns(self, alias: str = "c") -> str:
        """The SQL that reads a chunk's ``location::text, header`` (their defaults on a version-1 table),
        as a fragment of a :meth:`sql` template (braces doubled).

        Example:
            >>> from ragkit.backends.postgres.options import make_options
            >>> Schema(make_options("host=db", table="kb")).chunk_columns()
            'c.location::text, c.header'
        """
        if self.version < 2:
            return "'{{}}', ''"
        return f"{alias}.location::text, {alias}.header"

    def embedded_text(self) -> str:
        """The SQL of what the embedder saw of a chunk: ``header || text`` (``text`` on version 1)."""
        return "header || text" if self.version >= 2 else "text"

    def count(self, conn: Any, name: str) -> int:
        """``count(*)`` of one of the tables (``"chunks"``, ``"docs"``)."""
        return int(conn.execute(self.sql("SELECT count(*) FROM {" + name + "}")).fetchone()[0])

    # ------------------------------------------------------------------------- kept current

    def ensure_dim(self, connect: Callable[[], Any], dim: int) -> None:
        """Fix the table's dimension on the first vectors; refuse vectors of another size."""
        if self.dim is None:
            with self.lock:
                if self.dim is None:
                    with connect() as conn:
                        self.fix_dim(conn, dim)
        if self.dim != dim:
            raise IndexMismatchError(
                f"table {self.table!r} holds {self.dim}-dimensional vectors, these have {dim}: vectors of "
                "different sizes come from different embedders; use another table, or reindex"
            )

    def refresh_dim(self, conn: Any) -> int | None:
        """The table's dimension, re-read while unknown (another process may have written first)."""
        if self.dim is None:
            meta = self.read_meta(conn, ["dim", "hnsw"])
            if meta.get("dim") is not None:
                with self.lock:
                    self.apply_dim(meta["dim"], meta.get("hnsw"), conn)
        return self.dim

    def integrity_check(self, conn: Any) -> None:
        """Raise :class:`IntegrityError` unless the schema version and the column's dimension agree."""
        meta = self.read_meta(conn, ["schema_version", "dim"])
        if meta.get("schema_version") != self.version:
            raise IntegrityError(
                f"table {self.table!r}: schema version {meta.get('schema_version')!r}, this backend opened "
                f"it at {self.version} (migrated since by a writer?): open it again"
            )
        typmod = conn.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
            [self.qualified("chunks")],
        ).fetchone()
        if typmod is None:
            raise IntegrityError(f"table {self.table!r} has no embedding column")
        column_dim = None if typmod[0] < 0 else typmod[0]
        if column_dim != meta.get("dim"):
            raise IntegrityError(
                f"table {self.table!r}: the embedding column holds dim {column_dim}, "
                f"the metadata says {meta.get('dim')}"
            )

    def drop(self, conn: Any) -> None:
        """Drop every table of this backend (one transaction, under the schema lock)."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self.lock_key("schema")])
            conn.execute(self.sql("DROP TABLE IF EXISTS {chunks}, {docs}, {meta}, {staging} CASCADE"))
        self.forget_dim()
