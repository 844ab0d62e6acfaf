"""A folder index that stays in sync: index every file of a folder, again and again, cheaply.

:func:`index_folder` walks a folder, reads each supported file with :mod:`ragkit.loaders` and adds
the documents to a pipeline. Run it again and only what changed is read: a file whose bytes hash as
before is skipped without parsing it. With ``sync=True`` the documents of files that are gone are
removed too.

Rules, in the order a user meets them:

* **Ids.** A file's document id is its path relative to the folder, with ``/`` separators
  (``"guide/install.md"``), so ``docs``, ``/abs/docs``, ``./docs/`` and ``.`` from inside it are
  the same index. Records of a ``.jsonl`` file or a ``.json`` array keep their own ``id``. A file
  named on its own (not a folder) is indexed as a member of its parent folder: its id is its name.
  A ``#`` in a file name is kept: chunk ids are ``f"{doc_id}#{n}"`` and ragkit reads them back by
  the *last* ``#`` and stores the document id beside each chunk, so ``a#1.md`` and chunk 1 of
  ``a.md`` (``a.md#1``) never mix.
* **Tracking.** Each document carries ``metadata["file"] = {"folder", "path", "sha256", "size",
  "format"}``: the folder's resolved absolute path, the file's relative path, the SHA-256 of its
  bytes, its size in bytes and the loader's format name (and ``"partial": True`` on the records of a
  file some of whose records were refused, so that file is read, and its refusals reported, again
  next time; ``"empty": True`` on a document without text). Filters reach it with dotted keys (``{"file.folder": "/abs/docs"}``,
  ``{"file.format": "pdf"}``). A record that brings its own ``file`` metadata key is refused.
* **Sync.** ``sync=True`` removes the documents of this folder (same ``file.folder``) whose file is
  gone or is now skipped, and the records a changed ``.jsonl`` / ``.json`` file no longer holds. It
  never removes documents added another way (no ``file`` key) or from another folder. A file that
  exists but fails to load keeps its old documents, and when a subfolder cannot be listed no file's
  documents are removed in that run (its files are unknown, not gone).
* **Conflicts.** An id is never overwritten when a document from another folder or one added
  another way holds it: the file (or record) is reported in ``failed`` as ``"IdConflict"`` and the
  run goes on. Index the common parent folder to hold both, or delete the old document first.
  Within a folder, the document already stored keeps its id; in one run, files claim their ids
  (their paths) before any record, and between records the first file in walk order wins. A record
  may move from one records file to another when the first is gone or changed.
* **Skipped** (listed in :attr:`FolderReport.skipped` with the reason, never silently): hidden
  entries (a name starting with ``.``: ``.git``, ``.DS_Store``; not descended into), files no loader
  reads (by suffix), a ragkit index directory inside the folder (one holding a ``manifest.json``,
  or the pipeline's own directory), symlinks (see below) and anything that is not a regular file.
* **Symlinks.** A symlink that resolves outside the folder is skipped unless
  ``follow_symlinks=True``; one that resolves inside it is skipped (its target is indexed under its
  own path, once); a broken one is skipped. Following never enters a directory twice, so symlink
  loops end, and indexes a file outside once, at the first path in walk order that reaches it
  (another link to it is skipped as ``"the same file as ..."``).
* **Failed** (listed in :attr:`FolderReport.failed` with the error type and message, the run goes
  on): corrupt or encrypted files, files that cannot be read (permission denied), a missing loader
  dependency, id conflicts, file names that are not valid UTF-8, and files whose documents the
  pipeline refuses (a text the backend cannot store, or the embedder refuses: a failed batch is
  retried file by file, so only the file at fault fails; it is read again next run). Errors of the
  pipeline itself (storage, a server down, a mismatched index) are raised and stop the run.
* **Empty** (indexed without chunks, listed in :attr:`FolderReport.empty` on every run, not a
  failure): a file with no text (``"no text"``; a PDF without a text layer: ``"no text extracted
  (a scanned PDF? ...)"``), a records file with no records or only empty texts.
* **Warnings** (indexed, listed in :attr:`FolderReport.warnings` on every run, not a failure): a
  text that is not valid UTF-8 (Latin-1, say) nor in the encoding it declares, read with U+FFFD
  for each bad byte sequence (``metadata["decode_errors"]`` counts them).

Example:
    >>> from ragkit.folder import index_folder                              # doctest: +SKIP
    >>> report = index_folder(pipe, "docs/", sync=True)                     # doctest: +SKIP
    >>> report                                                              # doctest: +SKIP
    FolderReport('/home/ann/docs': 12 files (2 added, 1 updated, 9 unchanged), 1 removed, 3 skipped, 0 failed)
    >>> report.failed                                                       # doctest: +SKIP
    [FailedFile(path='scan.pdf', error='EncryptedFileError', message='needs a password to open')]
"""  # noqa: E501

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragkit._folder_report import FolderReport
from ragkit._walk import (
    Candidate,
    EmptyFile,
    FailedFile,
    FileWarning,
    SkippedFile,
    is_index_dir,
    walk,
)
from ragkit._walk import error_message as _message
from ragkit._walk import hash_file as _hash_file
from ragkit._walk import is_records as _is_records
from ragkit.errors import (
    BadRequestError,
    ConfigError,
    IndexMismatchError,
    IntegrityError,
    InvalidInputError,
    LockError,
    MissingDependencyError,
    RagkitError,
    ReadOnlyError,
    RemoteError,
)

# Also importable from here: EmptyFile and FileWarning (report entries), check_root.
__all__ = ["EmptyFile", "FailedFile", "FileWarning", "FolderReport", "SkippedFile", "index_folder"]

logger = logging.getLogger("ragkit")

#: The metadata key under which each document records the file it came from.
FILE_KEY = "file"


def index_folder(
    pipeline: Any,
    root: str | os.PathLike[str],
    *,
    sync: bool = False,
    follow_symlinks: bool = False,
    show_progress: bool | None = None,
    batch_size: int | None = None,
) -> FolderReport:
    """Index every supported file under ``root`` into ``pipeline``, skipping files that did not change.

    The module docstring (:mod:`ragkit.folder`) gives the rules: ids, tracking metadata, what is
    skipped, what ``sync`` removes. Unreadable files, and files whose documents the pipeline refuses,
    are reported in the result, never raised, so one bad file does not stop a run; errors of the
    pipeline itself (the disk, an embedding server that is down) are raised.

    Args:
        pipeline: a writable :class:`~ragkit.Pipeline` (any backend).
        root: a folder; or a single file, indexed as a member of its parent folder (id: its name).
        sync: also remove the documents of this folder's files that are gone (a folder only).
        follow_symlinks: follow symlinks that lead outside the folder (off: they are skipped).
        show_progress: a tqdm bar over the files; ``None`` shows it on a terminal only.
        batch_size: files read before their documents are added in one call (default: the
            pipeline's ``batch_size``).

    Returns:
        A :class:`FolderReport`: counts, and the skipped, failed, empty and warned files.

    Raises:
        InvalidInputError: ``root`` does not exist or is a saved index, ``sync=True`` with a
            single file, or a bad ``batch_size``.
        ReadOnlyError: the pipeline was loaded with ``read_only=True``.

    Example:
        >>> report = index_folder(pipe, "docs/")               # doctest: +SKIP
        >>> index_folder(pipe, "./docs", sync=True).added      # the same folder: nothing new
        ... # doctest: +SKIP
        0
    """
    if not callable(getattr(pipeline, "add", None)) or not hasattr(pipeline, "backend"):
        raise InvalidInputError(f"index_folder() takes a Pipeline, got {type(pipeline).__name__}")
    if getattr(pipeline, "read_only", False):
        raise ReadOnlyError("index_folder() writes: this pipeline was loaded with read_only=True")
    size = pipeline.batch_size if batch_size is None else batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
    given, folder = Path(root), check_root(root, sync=sync)

    from ragkit.loaders import is_supported  # ragkit.loaders is needed once there is something to read

    report = FolderReport(folder=str(folder))
    if given.is_dir():
        own = getattr(pipeline, "path", None)
        found = walk(
            folder,
            supported=is_supported,
            follow_symlinks=follow_symlinks,
            exclude={Path(own).resolve()} if own else set(),
        )
        report.skipped, report.failed = found.skipped, found.failed
        candidates, unlisted = found.files, found.unlisted
    else:
        candidates, unlisted = [Candidate(given.name, given)], []
    indexer = _Indexer(pipeline, folder, report)
    indexer.run(candidates, size, show_progress)
    if sync:
        where = {f"{FILE_KEY}.folder": str(folder)}
        if unlisted:
            # Files under a folder that could not be listed are unknown, not gone: keep everything.
            logger.warning(
                "%s: sync removed no file's documents: cannot list %s", folder, ", ".join(unlisted)
            )
        else:
            paths = [c.rel for c in candidates]
            report.removed += pipeline.delete(filter={**where, f"{FILE_KEY}.path": {"$nin": paths}})
        for rel, digest in indexer.records_read:  # the records a re-read file no longer holds
            report.removed += pipeline.delete(
                filter={**where, f"{FILE_KEY}.path": rel, f"{FILE_KEY}.sha256": {"$ne": digest}}
            )
    logger.info("indexed %r", report)
    return report


def check_root(root: str | os.PathLike[str], *, sync: bool = False) -> Path:
    """The resolved folder :func:`index_folder` would index for ``root`` (a file's parent folder),
    after the checks it makes before writing anything (``ragkit index`` checks every path first).

    Raises:
        InvalidInputError: ``root`` does not exist, is a saved index or not a valid UTF-8 path, or
            ``sync=True`` with a file.
    """
    given = Path(root)
    if not given.exists():
        raise InvalidInputError(f"{root}: no such file or folder")
    if sync and not given.is_dir():
        raise InvalidInputError(f"sync=True needs a folder; {root} is a file")
    if given.is_dir() and is_index_dir(given, set()):
        raise InvalidInputError(f"{root} is a saved ragkit index, not a folder of documents")
    folder = given.resolve() if given.is_dir() else given.absolute().parent.resolve()
    try:
        (str(folder) if given.is_dir() else str(folder / given.name)).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{root}: the path is not valid UTF-8 (rename it)") from None
    return folder


@dataclass
class _Plan:
    """One file of a run: its hash and size, and what to do with it."""

    file: Candidate
    digest: str
    size: int
    status: str  # "added", "updated", "unchanged" (not read), "reread" (read; counted unchanged)


@dataclass
class _Stored:
    """What the index holds of one records file: the hashes its records were written from, whether
    one was written from a partly refused read, whether any has text, its decode errors."""

    digests: set[str] = field(default_factory=set)
    partial: bool = False
    text: bool = False
    decode_errors: int = 0


@dataclass
class _Read:
    """One file read, to be written: its documents, the counter it adds to (``None``: none) and
    what to note about it once written (no text, undecodable bytes)."""

    plan: _Plan
    docs: list[Any]
    counter: str | None
    empty: str | None = None
    decode_errors: int = 0


class _Indexer:
    """One run over a folder's files, in two passes: hash every file and compare it with the index
    (so each file's fate is known before any is read), then load what changed and add it in batches."""

    def __init__(self, pipeline: Any, folder: Path, report: FolderReport) -> None:
        self.pipeline = pipeline
        self.backend = pipeline.backend
        self.folder = str(folder)
        self.report = report
        self.claimed: dict[str, str] = {}  # document id -> the file that gives it in this run
        self.present: set[str] = set()  # the paths of this run's files
        self.reading: set[str] = set()  # the paths of the files this run reads
        self.records_read: list[tuple[str, str]] = []  # (path, sha256) of the records files read
        self.stored: dict[str, _Stored] = {}  # records file path -> what the index holds of it

    def run(self, candidates: Sequence[Candidate], batch_size: int, show_progress: bool | None) -> None:
        from tqdm.auto import tqdm

        self.present = {c.rel for c in candidates}
        self.stored = self._scan({c.rel for c in candidates if c.records})
        disable = None if show_progress is None else not show_progress
        with tqdm(total=len(candidates), desc="ragkit index", unit="file", disable=disable) as bar:
            plans: list[_Plan] = []
            for start in range(0, len(candidates), batch_size):
                batch = self._plan(candidates[start : start + batch_size])
                plans += batch
                # Unchanged files (and those that failed or conflict) are done once planned.
                bar.update(
                    min(batch_size, len(candidates) - start) - sum(p.status != "unchanged" for p in batch)
                )
            self.reading = {p.file.rel for p in plans if p.status != "unchanged"}
            self.report.unchanged += sum(p.status == "unchanged" for p in plans)
            todo = [p for p in plans if p.status != "unchanged"]
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                self._write([r for r in map(self._load, batch) if r is not None])
                bar.update(len(batch))
                bar.set_postfix_str(
                    f"{self.report.chunks} chunks, {len(self.report.failed)} failed", refresh=False
                )
        self.report.empty.sort()
        self.report.warnings.sort()

    def _scan(self, paths: set[str]) -> dict[str, _Stored]:
        """What the index holds of these records files, in one pass over its documents' metadata
        (a record's id is unknown until its file is read, so no lookup by id can find it)."""
        stored: dict[str, _Stored] = {}
        if not paths:
            return stored
        for doc in self.backend.iter_documents():
            owner = doc.metadata.get(FILE_KEY)
            if not isinstance(owner, dict) or owner.get("folder") != self.folder:
                continue
            path = owner.get("path")
            if not isinstance(path, str) or path not in paths:
                continue
            entry = stored.setdefault(path, _Stored())
            entry.digests.add(str(owner.get("sha256")))
            entry.partial = entry.partial or owner.get("partial") is True
            entry.text = entry.text or bool(doc.text.strip())
            entry.decode_errors = max(entry.decode_errors, _decode_errors(doc.metadata))
        return stored

    def _plan(self, batch: Sequence[Candidate]) -> list[_Plan]:
        hashed: list[tuple[Candidate, str, int]] = []
        for c in batch:
            try:
                digest, size = _hash_file(c.path)
            except OSError as e:
                self._fail(c.rel, type(e).__name__, _message(e))
                continue
            hashed.append((c, digest, size))
        states = self.backend.document_states([c.rel for c, _, _ in hashed if not c.records])
        plans = []
        for c, digest, size in hashed:
            if c.records:
                status = self._records_status(c.rel, digest)
            else:
                state = states.get(c.rel)
                # A file's id is its path, so the file is claimed before any record can take it.
                if not self._claim(c.rel, c.rel, state, records=False):
                    continue
                metadata = _metadata(state[1]) if state is not None else {}
                owner = _owner(metadata) or {}
                same = owner.get("sha256") == digest
                status = "added" if state is None else "unchanged" if same else "updated"
                if status == "unchanged":  # not read: what was noted when it was is in its metadata
                    empty = _empty_reason(owner.get("format")) if owner.get("empty") else None
                    self._note(c.rel, empty, _decode_errors(metadata))
            plans.append(_Plan(c, digest, size, status))
        return plans

    def _records_status(self, rel: str, digest: str) -> str:
        """``"unchanged"`` when this version's records are all there and complete, ``"reread"`` when
        they are there beside stale or refused ones (read again: nothing changed, but sync removes
        the stale and the refusals are reported again), else ``"updated"`` or ``"added"``."""
        entry = self.stored.get(rel)
        if entry is None:
            return "added"
        current, other = digest in entry.digests, entry.partial or bool(entry.digests - {digest})
        if current and not other:
            self._note(rel, None if entry.text else "no text in its records", entry.decode_errors)
            return "unchanged"
        return "reread" if current else "updated"

    def _write(self, batch: list[_Read]) -> None:
        """Add the documents of these files in one call. When it fails for a reason that may be one
        input's (a text the backend or the embedder refuses), each file is tried alone, so that
        only the file at fault fails; an error of the pipeline itself (storage, server) is raised."""
        documents = [doc for read in batch for doc in read.docs]
        try:
            result = self.pipeline.add(documents, show_progress=False) if documents else None
        except Exception as e:
            if _aborts(e):
                raise
            if len(batch) > 1:
                for read in batch:
                    self._write([read])
            else:
                self._fail(batch[0].plan.file.rel, type(e).__name__, _message(e))
            return
        if result is not None:
            self.report.chunks += result.chunks
            self.report.embedded += result.embedded
        for read in batch:
            if read.counter is not None:
                setattr(self.report, read.counter, getattr(self.report, read.counter) + 1)
            if read.plan.file.records:
                self.records_read.append((read.plan.file.rel, read.plan.digest))
            self._note(read.plan.file.rel, read.empty, read.decode_errors)

    def _load(self, plan: _Plan) -> _Read | None:
        """The file's documents tagged with their ``file`` metadata, and the counter the file adds
        to; ``None`` when the file failed. Failures are reported."""
        from ragkit.filters import check_metadata
        from ragkit.loaders import format_of, load_file
        from ragkit.types import to_document

        c = plan.file
        info = {"folder": self.folder, "path": c.rel, "sha256": plan.digest, "size": plan.size}
        info["format"] = format_of(c.path)
        try:
            loaded = load_file(c.path, doc_id=None if c.records else c.rel)
        except (RagkitError, OSError, UnicodeError, ValueError) as e:
            # LoaderError (corrupt, encrypted, unsupported), MissingDependencyError (names the extra),
            # PermissionError and the like: this file fails, the run goes on.
            self._fail(c.rel, type(e).__name__, _message(e))
            return None
        errors = max((_decode_errors(doc.metadata) for doc in loaded), default=0)
        if not c.records:
            empty = None if any(doc.text.strip() for doc in loaded) else _empty_reason(info["format"])
            info |= {"empty": True} if empty else {}
            docs = [doc.model_copy(update={"metadata": {**doc.metadata, FILE_KEY: info}}) for doc in loaded]
            return _Read(plan, docs, plan.status, empty, errors)
        if not loaded:  # no records: counted only when the index held some (sync removes them)
            return _Read(plan, [], "updated" if plan.status != "added" else None, "no records")
        states = self.backend.document_states([d.id for d in loaded])
        kept = []
        for doc in loaded:
            try:
                if FILE_KEY in doc.metadata:
                    raise InvalidInputError(f"the metadata key {FILE_KEY!r} is the folder index's")
                check_metadata(doc.metadata)
                to_document(doc)
            except RagkitError as e:
                self._fail(c.rel, type(e).__name__, f"record {doc.id!r}: {e}")
                continue
            if self._claim(c.rel, doc.id, states.get(doc.id), records=True):
                kept.append(doc)
        if len(kept) < len(loaded):  # read it again next time, to report the refused records again
            info = {**info, "partial": True}
        docs = [doc.model_copy(update={"metadata": {**doc.metadata, FILE_KEY: info}}) for doc in kept]
        if not kept:
            return _Read(plan, docs, None)  # every record refused: the file is in the failures only
        empty = None if any(doc.text.strip() for doc in kept) else "no text in its records"
        return _Read(plan, docs, "unchanged" if plan.status == "reread" else plan.status, empty, errors)

    def _note(self, rel: str, empty: str | None, decode_errors: int) -> None:
        if empty:
            self.report.empty.append(EmptyFile(rel, empty))
        if decode_errors:
            why = "not UTF-8, nor the encoding it declares: save it as UTF-8"
            message = f"{decode_errors} undecodable byte sequence(s) read as U+FFFD ({why})"
            self.report.warnings.append(FileWarning(rel, message))

    def _claim(self, rel: str, doc_id: str, state: tuple[str, str] | None, *, records: bool) -> bool:
        """Whether ``rel`` may write the document ``doc_id``; a refusal is reported.

        The first file of a run to give an id keeps it (files before records). A stored document
        is taken over only when it came from this file, or from another records file of this folder
        that is gone or read in this run (a record that moved). Never from another folder, and
        never a document added another way.
        """
        earlier = self.claimed.get(doc_id)
        if earlier is not None:
            where = "earlier in this file" if earlier == rel else f"from {earlier}"
            self._fail(rel, "IdConflict", f"the id {doc_id!r} already came {where} in this run")
            return False
        holder = None
        if state is not None:
            owner = _owner(state[1])
            path = owner.get("path") if owner else None
            if owner is None:
                holder = "a document not indexed from a folder"
            elif owner.get("folder") != self.folder:
                holder = f"{path!r} of the folder {owner.get('folder')!r}"
            elif path != rel and not (
                records and _is_records(path) and (path in self.reading or path not in self.present)
            ):
                holder = f"{path!r} of this folder"
        if holder is not None:
            self._fail(
                rel,
                "IdConflict",
                f"the id {doc_id!r} is held by {holder}: not overwritten (index the common parent "
                "folder, or delete that document first)",
            )
            return False
        self.claimed[doc_id] = rel
        return True

    def _fail(self, rel: str, error: str, message: str) -> None:
        self.report.failed.append(FailedFile(rel, error, message))


def _metadata(metadata_json: str) -> dict[str, Any]:
    """A stored document's metadata, from its canonical JSON (``{}`` when it is not an object)."""
    try:
        metadata = json.loads(metadata_json)
    except ValueError:
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _owner(metadata: str | dict[str, Any]) -> dict[str, Any] | None:
    """The ``file`` entry of a stored document's metadata (or its JSON), or ``None`` (added another way)."""
    owner = (_metadata(metadata) if isinstance(metadata, str) else metadata).get(FILE_KEY)
    return owner if isinstance(owner, dict) and "folder" in owner else None


def _decode_errors(metadata: dict[str, Any]) -> int:
    """The undecodable byte sequences a loader counted (``metadata["decode_errors"]``), or 0."""
    n = metadata.get("decode_errors")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def _empty_reason(fmt: Any) -> str:
    return "no text extracted (a scanned PDF? it needs OCR first)" if fmt == "pdf" else "no text"


#: Errors of the pipeline itself, not of one input: a failed batch is not retried file by file.
_ABORTS = (OSError, MemoryError, ImportError, IndexMismatchError, IntegrityError, LockError, ReadOnlyError)


def _aborts(e: Exception) -> bool:
    """Whether a failed write stops the run: storage (StorageError is an OSError), an unreachable
    or refusing server (a RemoteError but a 400), a mismatched or broken index, a configuration."""
    if isinstance(e, RemoteError):
        return not isinstance(e, BadRequestError)
    return isinstance(e, (*_ABORTS, ConfigError, MissingDependencyError))
