"""The tables of the SQLite store, their schema versions, and the migration from older stores.

Schema versions:

* 1 (ragkit 0.1, saved formats 1 and 2): documents, and chunks with their text, offsets, content
  hash and vector;
* 2 (saved format 3): each chunk also has ``location`` (a JSON object: where in the document it
  came from, ``'{}'`` by default) and ``header`` (the contextual header embedded in front of its
  text, ``''`` by default); the chunk ``hash`` is that of ``header + text``, which for a version-1
  chunk (no header) is the hash it already has.

A writer migrates a version-1 store in place when it opens it (:func:`migrate`: two ``ALTER TABLE
... ADD COLUMN`` and the version, in one transaction, so a failure leaves version 1). A reader never
writes: it reads a version-1 store with the defaults in place of the missing columns
(:func:`chunk_columns`).

Example:
    >>> import sqlite3
    >>> conn = sqlite3.connect(":memory:")
    >>> create(conn)
    >>> read_version(conn, ":memory:")
    2
    >>> chunk_columns(1)
    "'{}', ''"
"""

from __future__ import annotations

import sqlite3

from ragkit.errors import IntegrityError

__all__ = ["SCHEMA_VERSION", "chunk_columns", "create", "migrate", "read_version"]

SCHEMA_VERSION = 2
# Versions this ragkit reads (and migrates, when it writes).
_READABLE = (1, 2)

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    vid INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    text TEXT NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    location TEXT NOT NULL DEFAULT '{}',
    header TEXT NOT NULL DEFAULT '',
    UNIQUE (doc_id, n)
);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(hash);
"""


def create(conn: sqlite3.Connection) -> None:
    """Create the tables of a new store (a no-op on an existing one) and migrate an old one; commits.

    Example:
        >>> import sqlite3
        >>> conn = sqlite3.connect(":memory:"); create(conn); create(conn)
    """
    row = None
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is not None and int(row[0]) < SCHEMA_VERSION:
        migrate(conn, int(row[0]))
    conn.executescript(_DDL)
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    conn.commit()


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a store of schema ``version`` to :data:`SCHEMA_VERSION`, in one transaction.

    The generation is not bumped: the data a reader sees does not change (a version-1 chunk reads
    as ``location == {}``, ``header == ""`` before and after).

    Raises:
        IntegrityError: a version this ragkit cannot migrate.

    Example:
        >>> import sqlite3
        >>> conn = sqlite3.connect(":memory:"); create(conn); migrate(conn, 2)
    """
    if version == SCHEMA_VERSION:
        return
    if version not in _READABLE:
        raise IntegrityError(f"cannot migrate a store of schema version {version}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(chunks)")}
        if "location" not in columns:
            conn.execute("ALTER TABLE chunks ADD COLUMN location TEXT NOT NULL DEFAULT '{}'")
        if "header" not in columns:
            conn.execute("ALTER TABLE chunks ADD COLUMN header TEXT NOT NULL DEFAULT ''")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def read_version(conn: sqlite3.Connection, path: str) -> int:
    """The schema version of an open store; :class:`IntegrityError` for one this ragkit cannot read.

    Example:
        >>> import sqlite3
        >>> read_version(sqlite3.connect(":memory:"), "x.sqlite")
        Traceback (most recent call last):
        ...
        ragkit.errors.IntegrityError: x.sqlite is not a ragkit store or is damaged: no such table: meta
    """
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as e:
        raise IntegrityError(f"{path} is not a ragkit store or is damaged: {e}") from e
    try:
        version = int(row[0]) if row is not None else None
    except ValueError:
        version = None
    if version not in _READABLE:
        newer = version is not None and version > SCHEMA_VERSION
        hint = ": it was written by a newer ragkit, upgrade ragkit to read it" if newer else ""
        raise IntegrityError(f"{path}: unsupported store schema version {row and row[0]}{hint}")
    assert version is not None
    return version


def chunk_columns(version: int, alias: str = "") -> str:
    """The SQL that reads a chunk's ``location, header`` from a store of schema ``version``
    (the defaults, as literals, where the columns do not exist yet).

    Example:
        >>> chunk_columns(2, "c")
        'c.location, c.header'
    """
    if version < 2:
        return "'{}', ''"
    prefix = f"{alias}." if alias else ""
    return f"{prefix}location, {prefix}header"
