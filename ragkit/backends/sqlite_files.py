"""Opening the SQLite store's file: read-only connections (also on a read-only filesystem) and errors.

A WAL database wants its ``-shm`` file writable even for readers. Where it cannot be (a read-only
mount), :func:`connect_read_only` opens the file ``immutable`` when no committed transaction waits
in a ``-wal`` file, else reads a private copy of the database and its WAL. :func:`storage_error`
turns SQLite's operational errors into the ragkit error that says what to do.

Example:
    >>> import sqlite3
    >>> type(storage_error("x.sqlite", sqlite3.OperationalError("database or disk is full"))).__name__
    'StorageError'
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from ragkit.errors import IntegrityError, LockError, StorageError

__all__ = ["connect_read_only", "storage_error"]

logger = logging.getLogger("ragkit")


def connect_read_only(path: Path, copy: Any = None) -> tuple[sqlite3.Connection, Any]:
    """A read-only connection to the database at ``path``, and the private copy it reads (or ``None``).

    ``copy`` is the ``tempfile.TemporaryDirectory`` an earlier call returned: the caller keeps it
    (and cleans it up) so that later connections read the same copy.

    Raises:
        IntegrityError: the file cannot be opened.

    Example:
        >>> import tempfile
        >>> db = Path(tempfile.mkdtemp()) / "s.sqlite"; sqlite3.connect(db).close()
        >>> conn, copy = connect_read_only(db); copy is None
        True
    """
    path = path.resolve()
    uri = path.as_uri()
    if copy is not None:
        uri = Path(copy.name, path.name).as_uri()
    conn = sqlite3.connect(uri + "?mode=ro", uri=True, check_same_thread=False, timeout=30)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn, copy
    except sqlite3.OperationalError as e:
        conn.close()
        if not _read_only_filesystem(path.parent):
            raise IntegrityError(f"cannot open the store {path}: {e}") from e
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        conn = sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn, copy
    import shutil
    import tempfile

    logger.info("%s: read-only filesystem with a pending WAL; reading a private copy", path)
    copy = tempfile.TemporaryDirectory(prefix="ragkit-ro-")
    for src in (path, wal):
        shutil.copyfile(src, Path(copy.name, src.name))
    return connect_read_only(path, copy)


def _read_only_filesystem(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def storage_error(path: str, e: sqlite3.OperationalError) -> Exception:
    """The ragkit error for an operational SQLite error: a full or read-only disk, a lock, or damage.

    Example:
        >>> import sqlite3
        >>> str(storage_error("s.sqlite", sqlite3.OperationalError("database is locked")))[:32]
        'the store s.sqlite stayed locked'
    """
    text = str(e)
    if "full" in text or "disk I/O" in text or "readonly" in text:
        return StorageError(f"the store {path} refused a write ({text}); nothing of it was written")
    if "locked" in text or "busy" in text:
        return LockError(f"the store {path} stayed locked by another connection for 30 s: {text}")
    return IntegrityError(f"the store {path} failed: {text}")
