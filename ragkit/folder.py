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
  next time). Filters reach it with dotted keys (``{"file.folder": "/abs/docs"}``,
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
  loops end.
* **Failed** (listed in :attr:`FolderReport.failed` with the error type and message, the run goes
  on): corrupt, encrypted or undecodable files, files that cannot be read (permission denied), a
  missing loader dependency, id conflicts, and file names that are not valid UTF-8.

Example:
    >>> from ragkit.folder import index_folder                              # doctest: +SKIP
    >>> report = index_folder(pipe, "docs/", sync=True)                     # doctest: +SKIP
    >>> report                                                              # doctest: +SKIP
    FolderReport('/home/ann/docs': 12 files (2 added, 1 updated, 9 unchanged), 1 removed, 3 skipped, 0 failed)
    >>> report.failed                                                       # doctest: +SKIP
    [FailedFile(path='scan.pdf', error='EncryptedFileError', message='needs a password to open')]
"""  # noqa: E501

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ragkit._walk import (
    RECORD_SUFFIXES,
    Candidate,
    FailedFile,
    SkippedFile,
    is_index_dir,
    os_message,
    walk,
)
from ragkit.errors import InvalidInputError, LoaderError, RagkitError, ReadOnlyError

__all__ = ["FailedFile", "FolderReport", "SkippedFile", "index_folder"]

logger = logging.getLogger("ragkit")

#: The metadata key under which each document records the file it came from.
FILE_KEY = "file"
_HASH_BLOCK = 1 << 20


class FolderReport(BaseModel):
    """What one :func:`index_folder` run did.

    Counts of ``added`` / ``updated`` / ``unchanged`` are files (a ``.jsonl`` file is one, however
    many records it holds); ``removed`` counts documents that ``sync=True`` deleted; ``chunks`` and
    ``embedded`` are the chunks written and the chunk texts sent to the embedder (unchanged chunk
    texts reuse their stored vectors).

    Example:
        >>> r = FolderReport(folder="/data/docs", added=2, unchanged=1,
        ...                  skipped=[SkippedFile(".git", "hidden")])
        >>> r
        FolderReport('/data/docs': 3 files (2 added, 0 updated, 1 unchanged), 0 removed, 1 skipped, 0 failed)
        >>> r.files, r.ok, r.to_dict()["skipped"]
        (3, True, [{'path': '.git', 'reason': 'hidden'}])
    """  # noqa: E501

    folder: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0
    embedded: int = 0
    skipped: list[SkippedFile] = Field(default_factory=list)
    failed: list[FailedFile] = Field(default_factory=list)

    @property
    def files(self) -> int:
        """Files the index now holds from this run: added + updated + unchanged."""
        return self.added + self.updated + self.unchanged

    @property
    def ok(self) -> bool:
        """Whether every file that should be indexed was (skipped files do not count against it)."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``ragkit index --json`` prints per folder)."""
        return {
            "folder": self.folder,
            "files": self.files,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "chunks": self.chunks,
            "embedded": self.embedded,
            "skipped": [s._asdict() for s in self.skipped],
            "failed": [f._asdict() for f in self.failed],
        }

    def __repr__(self) -> str:
        return (
            f"FolderReport({self.folder!r}: {self.files} files ({self.added} added, {self.updated} "
            f"updated, {self.unchanged} unchanged), {self.removed} removed, {len(self.skipped)} skipped, "
            f"{len(self.failed)} failed)"
        )

    def __str__(self) -> str:
        """A summary for people: the counts, what was skipped (grouped by reason) and what failed."""
        lines = [
            f"{self.folder}: {self.files} files ({self.added} added, {self.updated} updated, "
            f"{self.unchanged} unchanged), {self.removed} documents removed, {self.chunks} chunks "
            f"written ({self.embedded} embedded)"
        ]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)}:")
            by_reason: dict[str, list[str]] = {}
            for item in self.skipped:
                by_reason.setdefault(item.reason, []).append(item.path)
            for reason, paths in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                shown = ", ".join(paths[:5]) + (f", ... ({len(paths) - 5} more)" if len(paths) > 5 else "")
                lines.append(f"    {reason}: {shown}")
        if self.failed:
            lines.append(f"  failed {len(self.failed)}:")
            lines += [f"    {f.path}: {f.error}: {f.message}" for f in self.failed]
        return "\n".join(lines)


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
    skipped, what ``sync`` removes. Unreadable files are reported in the result, never raised, so one
    bad file does not stop a run; errors of the pipeline itself (the embedder, the disk) are raised.

    Args:
        pipeline: a writable :class:`~ragkit.Pipeline` (any backend).
        root: a folder; or a single file, indexed as a member of its parent folder (id: its name).
        sync: also remove the documents of this folder's files that are gone (a folder only).
        follow_symlinks: follow symlinks that lead outside the folder (off: they are skipped).
        show_progress: a tqdm bar over the files; ``None`` shows it on a terminal only.
        batch_size: files read before their documents are added in one call (default: the
            pipeline's ``batch_size``).

    Returns:
        A :class:`FolderReport`: counts, and the skipped and failed files with reasons.

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


@dataclass
class _Plan:
    """One file of a run: its hash and size, and what to do with it."""

    file: Candidate
    digest: str
    size: int
    status: str  # "added", "updated", "unchanged" (not read), "reread" (read; counted unchanged)


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

    def run(self, candidates: Sequence[Candidate], batch_size: int, show_progress: bool | None) -> None:
        from tqdm.auto import tqdm

        self.present = {c.rel for c in candidates}
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
                self._read(batch)
                bar.update(len(batch))
                bar.set_postfix_str(
                    f"{self.report.chunks} chunks, {len(self.report.failed)} failed", refresh=False
                )

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
                same = state is not None and (_owner(state[1]) or {}).get("sha256") == digest
                status = "added" if state is None else "unchanged" if same else "updated"
            plans.append(_Plan(c, digest, size, status))
        return plans

    def _records_status(self, rel: str, digest: str) -> str:
        """``"unchanged"`` when this version's records are all there and complete, ``"reread"`` when
        they are there beside stale or refused ones (read again: nothing changed, but sync removes
        the stale and the refusals are reported again), else ``"updated"`` or ``"added"``.

        The backend counts chunks by filter, so a file whose records are all empty texts (no
        chunks) is read again each time, which changes nothing.
        """
        from ragkit.filters import parse_filter

        key = FILE_KEY
        base = {f"{key}.folder": self.folder, f"{key}.path": rel}
        current = self.backend.count_matching(parse_filter({**base, f"{key}.sha256": digest}))
        other = self.backend.count_matching(
            parse_filter({**base, "$or": [{f"{key}.sha256": {"$ne": digest}}, {f"{key}.partial": True}]})
        )
        if current:
            return "reread" if other else "unchanged"
        return "updated" if other else "added"

    def _read(self, batch: Sequence[_Plan]) -> None:
        from ragkit.loaders import format_of

        documents: list[Any] = []
        for plan in batch:
            c = plan.file
            info = {"folder": self.folder, "path": c.rel, "sha256": plan.digest, "size": plan.size}
            loaded = self._load(plan, {**info, "format": format_of(c.path)})
            if loaded is None:
                continue
            docs, counter = loaded
            documents.extend(docs)
            if counter is not None:
                setattr(self.report, counter, getattr(self.report, counter) + 1)
            if c.records:
                self.records_read.append((c.rel, plan.digest))
        if documents:
            result = self.pipeline.add(documents, show_progress=False)
            self.report.chunks += result.chunks
            self.report.embedded += result.embedded

    def _load(self, plan: _Plan, info: dict[str, Any]) -> tuple[list[Any], str | None] | None:
        """The file's documents tagged with ``info``, and the counter the file adds to (``None``:
        none, every record was refused); ``None`` when the file failed. Failures are reported."""
        from ragkit.filters import check_metadata
        from ragkit.loaders import load_file
        from ragkit.types import to_document

        c = plan.file
        try:
            loaded = load_file(c.path, doc_id=None if c.records else c.rel)
        except (RagkitError, OSError, UnicodeError, ValueError) as e:
            # LoaderError (corrupt, encrypted, unsupported), MissingDependencyError (names the extra),
            # PermissionError and the like: this file fails, the run goes on.
            self._fail(c.rel, type(e).__name__, _message(e))
            return None
        if not c.records:
            docs = [doc.model_copy(update={"metadata": {**doc.metadata, FILE_KEY: info}}) for doc in loaded]
            return docs, plan.status
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
        if loaded and not kept:
            return docs, None  # every record refused: the file is in the failures only
        if all(d.id in states and _owner(states[d.id][1]) == info for d in docs):
            return docs, "unchanged"  # stored as read (records without chunks escape _records_status)
        return docs, "unchanged" if plan.status == "reread" else plan.status

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


def _is_records(path: Any) -> bool:
    return isinstance(path, str) and Path(path).suffix.lower() in RECORD_SUFFIXES


def _message(e: BaseException) -> str:
    """What went wrong, without the path (the report names the file)."""
    if isinstance(e, LoaderError):
        return e.reason
    if isinstance(e, OSError):
        return os_message(e)
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _owner(metadata_json: str) -> dict[str, Any] | None:
    """The ``file`` entry of a stored document's metadata, or ``None`` (added another way)."""
    try:
        owner = json.loads(metadata_json).get(FILE_KEY)
    except (ValueError, AttributeError):
        return None
    return owner if isinstance(owner, dict) and "folder" in owner else None


def _hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 of the file's bytes and its size, read in blocks (memory stays flat)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size
