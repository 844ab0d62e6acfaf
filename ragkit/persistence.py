"""Saved pipelines on disk: the manifest (read, verify, commit), atomic writes, checksums and the writer lock.

A saved pipeline is a directory. ``manifest.json`` is its commit point: every other file a save
writes carries a fresh tag in its name (``store-<tag>.sqlite``, ``vectors-<tag>.faiss``,
``lexical-<tag>/``), so a save never touches a file the current manifest points to, and the new
manifest replaces the old one in one ``os.replace`` after everything it names is on disk (fsync).
A crash at any point leaves the previous save or the new one loadable, never a mix. Files that no
manifest names any more are removed after the commit.

The manifest records checksums of the *derived* files (the vector and BM25 indexes); a derived file
that is missing or fails its checksum is rebuilt from the store with a warning. The store itself is
the source of truth and is live (a writer commits to it between saves), so it is checked by SQLite
(``quick_check``) and by the counts, not by a checksum.

One writer per directory: :class:`DirLock` is an exclusive ``flock`` on ``.lock``, taken at the
first write (not at load), naming its holder truthfully.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> write_atomic(root / "note.txt", b"hello")
    >>> (root / "note.txt").read_bytes()
    b'hello'
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ragkit.errors import IntegrityError, LockError, StorageError

__all__ = [
    "Counts",
    "DirLock",
    "FORMAT_VERSION",
    "FileInfo",
    "MANIFEST",
    "Manifest",
    "commit_manifest",
    "committed",
    "describe_files",
    "fsync_path",
    "new_tag",
    "read_manifest",
    "remove_tagged",
    "remove_unreferenced",
    "storage_errors",
    "verify_files",
    "write_atomic",
]

logger = logging.getLogger("ragkit")

# 1: ragkit 0.1. 2: tagged file names, the backend entry. 3: chunks keep a location and a header
# (the SQLite store's schema 2, migrated in place from schema 1 by the first write; a format-2
# directory reads as it is, its chunks without location or header).
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
# What a save of this ragkit names its files: <kind>-<generation>-<10 hex digits>, plus temporary
# files. Only these, and the names the previous manifest listed, are ever removed from a directory.
_TAGGED = r"(store|vectors|lexical)-\d+-[0-9a-f]{10}"
_DEBRIS = re.compile(rf"^(\.?{_TAGGED}[A-Za-z0-9._-]*|\.manifest\.json\.\d+\.\d+\.tmp)$")
# A file name in a manifest: one plain path segment, never a way out of the directory.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")

# Called with a stage name at each step of a save; tests set it to simulate a crash at that point.
save_hook: Callable[[str], None] | None = None


def hook(stage: str) -> None:
    """Report a save stage to :data:`save_hook` (fault-injection tests kill the process there)."""
    if save_hook is not None:
        save_hook(stage)


# ------------------------------------------------------------------------------------------- files


def new_tag(generation: int) -> str:
    """A name tag no earlier save of any pipeline used: the generation plus random digits.

    Example:
        >>> new_tag(7).startswith("7-")
        True
    """
    return f"{generation}-{os.urandom(5).hex()}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a rename is durable once its directory is synced).

    Example:
        >>> import tempfile
        >>> fsync_path(Path(tempfile.mkdtemp()))
    """
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | Callable[[Path], None]) -> None:
    """Write ``data`` (bytes, or a function that writes a given path) to ``path`` atomically.

    The content goes to a temporary file beside ``path``, is fsynced, then renamed over ``path``;
    the directory is fsynced too. A crash leaves the old file or the new one, never a part.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.json"
        >>> write_atomic(p, lambda tmp: tmp.write_text("{}"))
        >>> p.read_text()
        '{}'
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)


@contextlib.contextmanager
def storage_errors(what: str) -> Any:
    """Turn an ``OSError`` (disk full, permissions, a read-only filesystem) into :class:`StorageError`.

    Example:
        >>> with storage_errors("saving"):
        ...     pass
    """
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        reason = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else str(e)
        raise StorageError(f"{what} failed: {reason}; the previous save is still intact") from e


class FileInfo(BaseModel):
    """A file's size and sha256, as the manifest records them."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


def describe_files(root: Path, names: Iterable[str]) -> dict[str, FileInfo]:
    """Checksums of ``names`` (files, or directories whose files are all listed), fsynced first.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp()); _ = (root / "a").write_text("x")
        >>> describe_files(root, ["a"])["a"].size
        1
    """
    out: dict[str, FileInfo] = {}
    for name in names:
        base = root / name
        paths = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
        for p in paths:
            fsync_path(p)
            out[p.relative_to(root).as_posix()] = FileInfo(sha256=sha256_file(p), size=p.stat().st_size)
        if base.is_dir():
            fsync_path(base)
    return out


def verify_files(root: Path, files: Mapping[str, FileInfo], prefix: str) -> bool:
    """Whether every recorded file under ``prefix`` is present and intact; a warning says why not.

    Example:
        >>> import tempfile
        >>> verify_files(Path(tempfile.mkdtemp()), {}, "vectors-1.faiss")
        False
    """
    names = [n for n in files if n == prefix or n.startswith((prefix + ".", prefix + "/"))]
    if not names:
        return False
    for name in names:
        path = root / name
        try:
            info = path.lstat()  # a link or a device (a FIFO, /dev/zero) is never read
            ok = (
                stat.S_ISREG(info.st_mode)
                and info.st_size == files[name].size
                and sha256_file(path) == files[name].sha256
            )
        except OSError:
            logger.warning("%s: derived file %s is missing; rebuilding it from the store", root, name)
            return False
        if not ok:
            logger.warning(
                "%s: derived file %s fails its checksum (truncated or edited); rebuilding it from the store",
                root,
                name,
            )
            return False
    return True


def committed(root: Path, backend_entry: Mapping[str, Any]) -> bool:
    """Whether ``root``'s manifest names ``backend_entry`` (a save that failed after its commit point).

    Example:
        >>> import tempfile
        >>> committed(Path(tempfile.mkdtemp()), {"kind": "local"})
        False
    """
    try:
        return read_manifest(root).backend == dict(backend_entry)
    except IntegrityError:
        return False


def remove_tagged(root: Path, tag: str) -> None:
    """Remove what a failed save wrote: every entry whose name carries its (random) tag.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp()); _ = (root / "vectors-3-0123456789.faiss").write_text("x")
        >>> remove_tagged(root, "3-0123456789"); list(root.iterdir())
        []
    """
    for p in root.glob(f"*{tag}*"):
        with contextlib.suppress(OSError):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()


def remove_unreferenced(root: Path, keep: Iterable[str], previous: Iterable[str] = ()) -> None:
    """Remove what no manifest names any more: the names the ``previous`` manifest owned, and the
    files and debris of this ragkit's tagged saves, unless ``keep`` names them. Never anything else
    (a user's ``vectors-notes.md`` beside the index stays).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp()); _ = (root / "vectors-1-0123456789.faiss").write_text("x")
        >>> _ = (root / "vectors-notes.md").write_text("mine")
        >>> remove_unreferenced(root, []); [p.name for p in root.iterdir()]
        ['vectors-notes.md']
    """
    kept = {Path(k).parts[0] for k in keep}
    owned = {Path(k).parts[0] for k in previous}
    owned |= {f"{name}{suffix}" for name in owned for suffix in ("-wal", "-shm", "-journal")}
    for p in list(root.iterdir()):
        base = p.name[: -len(p.name.rsplit("-", 1)[1]) - 1] if p.name.endswith(("-wal", "-shm")) else p.name
        if p.name in kept or base in kept or not (p.name in owned or _DEBRIS.match(p.name)):
            continue
        with contextlib.suppress(OSError):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()


# ---------------------------------------------------------------------------------------- manifest


class Counts(BaseModel):
    """Documents and chunks a save holds."""

    model_config = ConfigDict(extra="forbid")

    documents: int = Field(ge=0)
    chunks: int = Field(ge=0)


class Manifest(BaseModel):
    """The commit record of a saved pipeline (``manifest.json``).

    Attributes:
        format_version: the layout of the directory (this ragkit writes 3, reads 1 to 3).
        fingerprint: the embedder's fingerprint; vectors of another one are not comparable.
        embedder, reranker, chunker: registry entries to rebuild them (``None``: pass them to load).
        backend: the backend's own entry; ``backend["kind"]`` is ``"local"`` or ``"postgres"``.
        generation, counts: the state the save holds.
        files: checksums of the derived files.
        owned: the names (files and directories) this save consists of; the next save removes them
            once they are no longer needed.

    Example:
        >>> m = Manifest(fingerprint={"model": "m"}, backend={"kind": "local"}, generation=0,
        ...              counts=Counts(documents=0, chunks=0))
        >>> m.format_version
        3
    """

    model_config = ConfigDict(extra="ignore")

    format_version: int = FORMAT_VERSION
    ragkit_version: str = ""
    fingerprint: dict[str, Any]
    embedder: dict[str, Any] | None = None
    reranker: dict[str, Any] | None = None
    chunker: dict[str, Any] | None = None
    backend: dict[str, Any]
    generation: int = Field(ge=0)
    counts: Counts
    files: dict[str, FileInfo] = Field(default_factory=dict)
    owned: list[str] = Field(default_factory=list)
    saved_at: float = 0.0

    @field_validator("files", "owned")
    @classmethod
    def _plain_names(cls, value: Any) -> Any:
        # Untrusted input: every name stays inside the directory (no "..", no absolute path).
        for name in value:
            if not all(SAFE_NAME.match(part) for part in str(name).split("/")):
                raise ValueError(f"{name!r} is not a file name inside the directory")
        return value

    @property
    def kind(self) -> str:
        """The backend kind (``"local"`` or ``"postgres"``)."""
        return str(self.backend.get("kind"))


def _upgrade_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """A format-1 manifest (ragkit 0.1) in the format-2 shape; the files stay as they are."""
    index = raw.get("index")
    if not isinstance(index, dict):
        raise IntegrityError("the format-1 manifest has no valid 'index' entry")
    spec = index.get("spec") if isinstance(index.get("spec"), dict) else {}
    if index.get("shared"):
        backend: dict[str, Any] = {"kind": "postgres", "spec": dict(spec.get("spec") or {})}
    else:
        lexical = raw.get("lexical")
        backend = {
            "kind": "local",
            "store": "store.sqlite",
            "vectors": index.get("file"),
            "index": dict(spec.get("spec") or {}),
            "lexical": lexical.get("dir") if isinstance(lexical, dict) else None,
            "lexical_enabled": isinstance(lexical, dict),
        }
        owned = ["store.sqlite", *(Path(name).parts[0] for name in raw.get("files") or {})]
        return {**raw, "backend": backend, "owned": sorted(set(owned))}
    return {**raw, "backend": backend}


def read_manifest(root: Path) -> Manifest:
    """Read and validate ``root/manifest.json``, upgrading format 1 in memory.

    Format 2 and 3 manifests have the same fields; what changed is the store's schema, which the
    store reads (and migrates when written) itself (:mod:`ragkit.backends.sqlite_schema`).

    Raises:
        IntegrityError: no manifest, unreadable JSON, a missing or mistyped field, or a format
            newer than this ragkit reads.

    Example:
        >>> import tempfile
        >>> read_manifest(Path(tempfile.mkdtemp()))
        Traceback (most recent call last):
        ...
        ragkit.errors.IntegrityError: ... holds no manifest.json: not a saved ragkit pipeline
    """
    path = root / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise IntegrityError(f"{root} holds no {MANIFEST}: not a saved ragkit pipeline") from e
    except (OSError, ValueError) as e:
        raise IntegrityError(f"{path} is unreadable: {e}") from e
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if isinstance(version, bool) or not isinstance(version, int):
        raise IntegrityError(f"{path} has no format_version")
    if version > FORMAT_VERSION:
        raise IntegrityError(
            f"{root} was saved by a newer ragkit (format {version}, this one reads {FORMAT_VERSION}): "
            "upgrade ragkit to load it"
        )
    if version < 1:
        raise IntegrityError(f"{root}: format {version} predates ragkit 0.1 and cannot be migrated")
    if version == 1:
        raw = _upgrade_v1(raw)
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise IntegrityError(f"{path} is damaged: {where}: {first['msg']}") from e
    if not isinstance(manifest.backend.get("kind"), str):
        raise IntegrityError(f"{path} is damaged: backend.kind is missing")
    return manifest


def commit_manifest(root: Path, manifest: Manifest) -> None:
    """Write the manifest atomically: the commit point of a save.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> commit_manifest(root, Manifest(fingerprint={}, backend={"kind": "local"}, generation=0,
        ...                                counts=Counts(documents=0, chunks=0)))
        >>> read_manifest(root).generation
        0
    """
    manifest = manifest.model_copy(update={"format_version": FORMAT_VERSION, "saved_at": time.time()})
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False)

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")
        hook("manifest-written")  # written, not yet renamed over the old one

    hook("manifest-writing")
    write_atomic(root / MANIFEST, write)
    hook("committed")


# -------------------------------------------------------------------------------------------- lock

# Locks this process holds, by directory: a second lock attempt in the same process would otherwise
# be refused by flock and blamed on "another process".
_held: dict[str, weakref.ReferenceType[Any]] = {}
_held_lock = threading.Lock()


class DirLock:
    """The writer lock of a directory: an exclusive, non-blocking ``flock`` on ``directory/.lock``.

    Held from a pipeline's first write until it closes. A second writer, in this process or
    another, gets a :class:`LockError` naming the holder. The lock dies with its process (a crash
    never leaves a stale lock).

    Example:
        >>> import tempfile
        >>> class Writer: ...
        >>> writer = Writer()
        >>> lock = DirLock(Path(tempfile.mkdtemp()), owner=writer)
        >>> lock.acquire(); lock.release()
    """

    def __init__(self, directory: Path, owner: Any) -> None:
        self.directory = directory
        self.path = directory / LOCK_FILE
        self._owner = weakref.ref(owner)
        self._fd: int | None = None
        self._key = os.path.realpath(directory)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        import fcntl

        with _held_lock:
            other = _held.get(self._key)
            if other is not None and other() is not None and other() is not self._owner():
                raise LockError(
                    f"{self.directory} is being written by another Pipeline in this process (pid "
                    f"{os.getpid()}); close that one (pipe.close()) or write through it"
                )
            with storage_errors(f"locking {self.directory}"):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                pid = None
                with contextlib.suppress(OSError, ValueError):
                    pid = int(os.pread(fd, 32, 0).decode().strip())
                os.close(fd)
                who = (
                    f"another Pipeline in this process (pid {pid})"
                    if pid == os.getpid()
                    else f"another process{f' (pid {pid})' if pid else ''}"
                )
                raise LockError(
                    f"{who} is writing to {self.directory}; open it with "
                    "Pipeline.load(path, read_only=True) to read, or wait for that writer to close"
                ) from e
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
            self._fd = fd
            owner = self._owner()
            if owner is not None:
                _held[self._key] = weakref.ref(owner)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        with _held_lock:
            other = _held.get(self._key)
            if other is not None and other() in (None, self._owner()):
                del _held[self._key]
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
