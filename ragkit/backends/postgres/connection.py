"""Connections to PostgreSQL: the pool, session settings, the vector adapters, and the error mapping.

Every statement runs inside :meth:`Database.connection`, which turns psycopg's exceptions into
ragkit's (:mod:`ragkit.errors`): a caller never sees a raw driver error for something it caused.
:meth:`Database.write_tx` runs one write transaction, bumps the generation counter as its last
statement and retries deadlocks and serialisation failures.

Example:
    >>> from ragkit.backends.postgres.options import make_options
    >>> db = Database(make_options("host=db"), read_only=False, meta_table="ragkit_chunks_meta")
    >>> db.closed
    True
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit._secrets import redact_dsn
from ragkit.backends.postgres.options import Options
from ragkit.errors import (
    ConfigError,
    IndexMismatchError,
    IntegrityError,
    InvalidInputError,
    ReadOnlyError,
    UnavailableError,
)

__all__ = ["CONNECT_TIMEOUT", "Database", "POOL_TIMEOUT", "WRITE_ATTEMPTS", "psycopg", "register_vector"]

logger = logging.getLogger("ragkit")

POOL_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10
WRITE_ATTEMPTS = 3


def psycopg() -> Any:
    """The psycopg module, or :class:`~ragkit.errors.MissingDependencyError` naming the ``pg`` extra."""
    return require("psycopg", purpose="PostgresBackend")


def register_vector(conn: Any, oid: int) -> None:
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


class Database:
    """The connection pool of one backend, and the mapping of driver errors to ragkit errors.

    Args:
        options: the backend's settings (DSN, pool size, statement timeout, table for messages).
        read_only: sessions are ``default_transaction_read_only``; writes raise ReadOnlyError.
        meta_table: the ``{table}_meta`` table whose ``generation`` row :meth:`write_tx` bumps.
        on_dim_mismatch: called when the server reports vectors of another dimension than the
            table's (another process reindexed to a new dimension): the schema forgets its dim.

    Example:
        >>> with db.connection() as conn:                 # doctest: +SKIP
        ...     conn.execute("SELECT 1").fetchone()
        (1,)
    """

    def __init__(
        self,
        options: Options,
        *,
        read_only: bool,
        meta_table: str,
        on_dim_mismatch: Callable[[], None] | None = None,
    ) -> None:
        self._options = options
        self.read_only = read_only
        self.table = options.table
        self.dsn_redacted = redact_dsn(options.dsn)
        self._meta_table = meta_table
        self._on_dim_mismatch = on_dim_mismatch
        self._vector_oid = 0
        self._pool: Any = None

    # -------------------------------------------------------------------------------- lifecycle

    @property
    def closed(self) -> bool:
        """Whether the pool is closed (or was never opened)."""
        return self._pool is None

    def connect(self) -> Any:
        """One autocommit connection outside the pool (schema setup); UnavailableError if unreachable."""
        pg = psycopg()
        try:
            return pg.connect(self._options.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except pg.OperationalError as e:
            raise UnavailableError(
                f"cannot connect to PostgreSQL ({self.dsn_redacted}): {_no_secrets(e, self._options.dsn)}"
            ) from e
        except pg.ProgrammingError as e:  # an unparsable DSN
            raise ConfigError(f"invalid PostgreSQL connection string ({self.dsn_redacted}): {e}") from e

    def open(self, vector_oid: int) -> None:
        """Open the pool; every session gets the vector adapters and the backend's settings."""
        pool_mod = require("psycopg_pool", purpose="PostgresBackend")
        self._vector_oid = vector_oid
        pool = pool_mod.ConnectionPool(
            self._options.dsn,
            min_size=1,
            max_size=self._options.pool_size,
            open=False,
            configure=self._configure,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
            timeout=POOL_TIMEOUT,
            name=f"ragkit-{self.table}",
        )
        try:
            pool.open(wait=True, timeout=POOL_TIMEOUT)
        except pool_mod.PoolTimeout as e:
            pool.close()
            raise UnavailableError(f"cannot open connections to PostgreSQL ({self.dsn_redacted}): {e}") from e
        self._pool = pool

    def _configure(self, conn: Any) -> None:
        register_vector(conn, self._vector_oid)
        # Every execution planned for its own parameters: a selective filter may want a plan quite
        # unlike an unfiltered query's, and psycopg prepares the statements it sees often.
        settings = [("plan_cache_mode", "force_custom_plan")]
        if self._options.statement_timeout is not None:
            settings.append(("statement_timeout", str(max(1, round(self._options.statement_timeout * 1000)))))
        if self.read_only:
            settings.append(("default_transaction_read_only", "on"))
        conn.execute(
            "SELECT " + ", ".join("set_config(%s, %s, false)" for _ in settings),
            [x for pair in settings for x in pair],
        )

    def close(self) -> None:
        """Close the pool (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # ------------------------------------------------------------------------------ statements

    @contextmanager
    def errors(self, *, retryable: bool = False) -> Iterator[None]:
        """Map psycopg's exceptions raised inside the block to ragkit errors.

        With ``retryable``, deadlocks and serialisation failures pass through unchanged (for
        :meth:`write_tx` to retry); otherwise they are :class:`UnavailableError`.
        """
        pg = psycopg()
        errors = pg.errors
        try:
            yield
        except _rollbacks() as e:
            if retryable:
                raise
            raise UnavailableError(f"{self.table}: PostgreSQL rolled the transaction back ({e})") from e
        except errors.UniqueViolation as e:
            raise InvalidInputError(f"{self.table}: a uniqueness constraint failed: {e}") from e
        except errors.QueryCanceled as e:
            raise UnavailableError(
                "PostgreSQL cancelled a statement "
                f"(statement_timeout={self._options.statement_timeout}s): {e}"
            ) from e
        except pg.DataError as e:
            if "different vector dimensions" in str(e):
                if self._on_dim_mismatch is not None:
                    self._on_dim_mismatch()
                raise IndexMismatchError(
                    f"table {self.table!r} no longer holds vectors of this size (reindexed elsewhere?): {e}"
                ) from e
            raise InvalidInputError(f"PostgreSQL refused the data: {e}") from e
        except errors.UndefinedTable as e:
            raise IntegrityError(f"a ragkit table of {self.table!r} is gone (dropped?): {e}") from e
        except errors.ReadOnlySqlTransaction as e:
            raise ReadOnlyError(f"this PostgresBackend was opened read-only: {e}") from e
        except errors.InsufficientPrivilege as e:
            raise ConfigError(f"the PostgreSQL role may not do this on {self.table!r}: {e}") from e
        except pg.IntegrityError as e:
            raise IntegrityError(f"{self.table}: a constraint of the ragkit tables failed: {e}") from e
        except pg.OperationalError as e:
            raise UnavailableError(
                f"PostgreSQL connection failed: {_no_secrets(e, self._options.dsn)}"
            ) from e
        except UnicodeError as e:  # a lone surrogate reached the driver's encoder
            raise InvalidInputError(
                f"text that is not valid Unicode cannot be stored or searched: {e}"
            ) from e

    @contextmanager
    def connection(self, *, retryable: bool = False) -> Iterator[Any]:
        """A pooled autocommit connection, with :meth:`errors` around its use."""
        pool_mod = require("psycopg_pool", purpose="PostgresBackend")
        pool = self._pool
        if pool is None:
            raise ConfigError(f"this PostgresBackend ({self.table}) is closed")
        with self.errors(retryable=retryable):
            try:
                with pool.connection() as conn:
                    yield conn
            except pool_mod.PoolTimeout as e:
                raise UnavailableError(
                    f"no PostgreSQL connection free within {POOL_TIMEOUT:.0f}s: {e}"
                ) from e
            except pool_mod.PoolClosed as e:
                raise ConfigError(f"this PostgresBackend ({self.table}) is closed") from e

    def check_writable(self) -> None:
        """Raise :class:`ReadOnlyError` when opened with ``read_only=True``."""
        if self.read_only:
            raise ReadOnlyError(f"this PostgresBackend ({self.table}) was opened with read_only=True")

    def bump(self, conn: Any) -> None:
        """Increment the generation counter (the last statement of every write transaction)."""
        from psycopg import sql

        conn.execute(
            sql.SQL(
                "UPDATE {} SET value = to_jsonb(value::text::bigint + 1) WHERE key = 'generation'"
            ).format(sql.Identifier(self._meta_table))
        )

    def write_tx(self, body: Callable[[Any], Any]) -> Any:
        """Run ``body(conn)`` in one transaction that bumps the generation; retry deadlocks.

        On any exception the transaction rolls back: nothing of it is written.
        """
        self.check_writable()
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self.connection(retryable=True) as conn, conn.transaction():
                    result = body(conn)
                    self.bump(conn)
                return result
            except _rollbacks() as e:
                if attempt == WRITE_ATTEMPTS:
                    raise UnavailableError(
                        f"{self.table}: a write failed {WRITE_ATTEMPTS} times on {type(e).__name__} "
                        "(heavy contention on the same documents): retry later"
                    ) from e
                logger.info("%s: retrying a write after %s", self.table, type(e).__name__)
        raise AssertionError("unreachable")


def _rollbacks() -> tuple[type[Exception], ...]:
    """The errors after which a transaction may simply be retried (SQLSTATE class 40).

    psycopg derives each of them from ``OperationalError`` directly, not from ``TransactionRollback``.
    """
    errors = psycopg().errors
    return (errors.TransactionRollback, errors.SerializationFailure, errors.DeadlockDetected)


def _no_secrets(error: Exception, dsn: str) -> str:
    """The driver's message, with the DSN (should libpq echo it) replaced by its redacted form."""
    text = str(error)
    return text.replace(dsn, redact_dsn(dsn)) if dsn and dsn in text else text
