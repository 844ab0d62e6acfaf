"""Walking a folder for :mod:`ragkit.folder`: which files to index, and why the others are left out.

The walk never follows a symlink out of the folder unless asked, never enters a directory twice
(symlink loops end), skips hidden entries and ragkit index directories, and gives every entry it
leaves out a reason. Paths are relative to the folder, with ``/`` separators. Also the report's
entry types and the small helpers of reading a file (its hash, an error's message).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ragkit.errors import LoaderError

#: Suffixes of files that hold records with their own ids (one document per record).
RECORD_SUFFIXES = frozenset({".json", ".jsonl"})
_HASH_BLOCK = 1 << 20
_MANIFEST_LIMIT = 1 << 22  # a ragkit manifest is a few kilobytes; a bigger manifest.json is the user's


class SkippedFile(NamedTuple):
    """A file or directory the walk left out on purpose, and why (``path`` relative to the folder)."""

    path: str
    reason: str


class FailedFile(NamedTuple):
    """A file that could not be indexed: its path (relative to the folder), the error type, the message."""

    path: str
    error: str
    message: str


class EmptyFile(NamedTuple):
    """A file that was read and gave no text (indexed, with no chunks), and why (``"no text"``)."""

    path: str
    reason: str


class FileWarning(NamedTuple):
    """A file that was indexed, but not cleanly (bytes that did not decode, read as U+FFFD)."""

    path: str
    message: str


@dataclass(frozen=True)
class Candidate:
    """A file to index: its path relative to the folder (a one-document file's id), where to read it."""

    rel: str
    path: Path

    @property
    def records(self) -> bool:
        return self.path.suffix.lower() in RECORD_SUFFIXES


@dataclass
class Walk:
    """What a walk found: the files to index, what it skipped, what failed, and the directories it
    could not list (their files are unknown, so a sync must not treat them as gone)."""

    files: list[Candidate] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    failed: list[FailedFile] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)


def walk(
    folder: Path, *, supported: Callable[[Path], bool], follow_symlinks: bool, exclude: set[Path]
) -> Walk:
    """The files under ``folder`` (resolved) to index, depth-first in name order.

    ``supported`` tells files a loader reads (by suffix); ``exclude`` holds resolved directories to
    leave out (the pipeline's own). Any directory holding a ragkit ``manifest.json`` is left out too.
    A file outside the folder (reached through a followed symlink) is indexed once, at the first path
    that reaches it in walk order; another link to the same file is skipped with the reason.
    """
    out = Walk()
    # Directories are known by device and inode, so no loop (symlinks, bind mounts) walks one twice;
    # marked when walked, so the first path in depth-first name order is the one kept.
    visited: set[tuple[int, int]] = set()
    outside_files: dict[tuple[int, int], str] = {}  # files reached through a followed link -> first path
    stack: list[tuple[Path, str, tuple[int, int], bool]] = [(folder, "", _identity(folder), False)]
    while stack:
        directory, prefix, key, outside = stack.pop()
        if key in visited:
            out.skipped.append(
                SkippedFile(prefix.rstrip("/"), "a folder already walked (a loop, or a second link)")
            )
            continue
        visited.add(key)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            where = prefix.rstrip("/") or "."
            out.failed.append(FailedFile(where, type(e).__name__, f"cannot list the folder: {os_message(e)}"))
            out.unlisted.append(where)
            continue
        subdirs: list[tuple[Path, str, tuple[int, int], bool]] = []
        for entry in entries:
            rel = prefix + entry.name
            path = Path(entry.path)
            if entry.name.startswith("."):
                out.skipped.append(SkippedFile(rel, "hidden"))
                continue
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:  # bytes that are not UTF-8, kept by Python as lone surrogates
                shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
                out.failed.append(
                    FailedFile(shown, "InvalidInputError", "the name is not valid UTF-8: rename it")
                )
                continue
            linked = outside
            try:
                if entry.is_symlink():
                    target = _target(path, folder, rel, out, follow_symlinks)
                    if target is None:
                        continue
                    is_dir, is_file, linked = target.is_dir(), target.is_file(), True
                else:
                    is_dir, is_file = (
                        entry.is_dir(follow_symlinks=False),
                        entry.is_file(follow_symlinks=False),
                    )
                if is_dir:
                    if is_index_dir(path, exclude):
                        out.skipped.append(SkippedFile(rel, "a ragkit index directory"))
                    else:
                        subdirs.append((path, rel + "/", _identity(path), linked))
                    continue
                if linked and is_file:  # outside the folder: two links to one file index it once
                    earlier = outside_files.setdefault(_identity(path), rel)
                    if earlier != rel:
                        out.skipped.append(SkippedFile(rel, f"the same file as {earlier} (another link)"))
                        continue
            except OSError as e:
                out.failed.append(FailedFile(rel, type(e).__name__, os_message(e)))
                continue
            if not is_file:
                out.skipped.append(SkippedFile(rel, "not a regular file"))
            elif not supported(path):
                out.skipped.append(
                    SkippedFile(rel, f"unsupported format ({path.suffix.lower() or 'no suffix'})")
                )
            else:
                out.files.append(Candidate(rel, path))
        stack.extend(reversed(subdirs))  # depth-first, in name order
    return out


def _target(path: Path, folder: Path, rel: str, out: Walk, follow: bool) -> Path | None:
    """The resolved target of a symlink to walk into, or ``None`` (the reason is in ``out``)."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, on Python < 3.13
        out.skipped.append(SkippedFile(rel, "broken symlink (or a symlink loop)"))
        return None
    if target == folder or folder in target.parents:
        # Its target is walked at its own path: following would index the same file twice.
        where = target.relative_to(folder).as_posix() or "."
        out.skipped.append(
            SkippedFile(rel, f"symlink to {where}, inside the folder (indexed at its own path)")
        )
        return None
    if not follow:
        out.skipped.append(
            SkippedFile(
                rel,
                f"symlink to {target}, outside the folder "
                "(followed only with --follow-symlinks, follow_symlinks=True)",
            )
        )
        return None
    return target


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()  # follows a symlink: the directory it leads to
    return st.st_dev, st.st_ino


def is_index_dir(path: Path, exclude: set[Path]) -> bool:
    """Whether ``path`` is excluded or a saved ragkit pipeline (a ``manifest.json`` with a format)."""
    try:
        if path.resolve() in exclude:
            return True
        manifest = path / "manifest.json"
        if not manifest.is_file() or manifest.stat().st_size > _MANIFEST_LIMIT:
            return False
        raw = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and "format_version" in raw and "embedder" in raw


def os_message(e: OSError) -> str:
    """An OS error's words without the path (``"Permission denied"``)."""
    return e.strerror or str(e)


def is_records(path: Any) -> bool:
    """Whether a stored path names a records file (``.jsonl``, ``.json``)."""
    return isinstance(path, str) and Path(path).suffix.lower() in RECORD_SUFFIXES


def error_message(e: BaseException) -> str:
    """What went wrong, without the path (the report names the file)."""
    if isinstance(e, LoaderError):
        return e.reason
    if isinstance(e, OSError):
        return os_message(e)
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 of the file's bytes and its size, read in blocks (memory stays flat)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size
