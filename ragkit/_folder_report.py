"""The report of one folder-index run (:func:`ragkit.folder.index_folder`): counts and the files listed.

Importable as ``ragkit.folder.FolderReport``; it lives here so that ``ragkit.folder`` holds the indexing.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ragkit._walk import EmptyFile, FailedFile, FileWarning, SkippedFile

__all__ = ["FolderReport"]


class FolderReport(BaseModel):
    """What one :func:`index_folder` run did.

    Counts of ``added`` / ``updated`` / ``unchanged`` are files (a ``.jsonl`` file is one, however
    many records it holds; one with no records is in none, unless the index held records of it:
    ``updated``); ``removed`` counts documents that ``sync=True`` deleted; ``chunks`` and
    ``embedded`` are the chunks written and the chunk texts sent to the embedder (unchanged chunk
    texts reuse their stored vectors). ``empty`` lists the files indexed without any text (no
    chunks: an empty file, a scanned PDF) and ``warnings`` the files indexed with damage (bytes
    that did not decode, read as U+FFFD); both are listed on every run, and neither makes the
    run fail (:attr:`ok`, the exit status of ``ragkit index``).

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
    empty: list[EmptyFile] = Field(default_factory=list)
    warnings: list[FileWarning] = Field(default_factory=list)

    @property
    def files(self) -> int:
        """Files the index now holds from this run: added + updated + unchanged."""
        return self.added + self.updated + self.unchanged

    @property
    def ok(self) -> bool:
        """Whether every file that should be indexed was (skipped, empty and warned files were)."""
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
            "empty": [e._asdict() for e in self.empty],
            "warnings": [w._asdict() for w in self.warnings],
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
        if self.empty:
            lines.append(f"  empty {len(self.empty)} (indexed, no text):")
            lines += [f"    {e.path}: {e.reason}" for e in self.empty]
        if self.warnings:
            lines.append(f"  warnings {len(self.warnings)}:")
            lines += [f"    {w.path}: {w.message}" for w in self.warnings]
        return "\n".join(lines)
