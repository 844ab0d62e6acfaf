"""The storage-backend interface: everything a :class:`~ragkit.Pipeline` asks of the place its data lives.

A backend holds documents, chunks, metadata, content hashes and chunk vectors (the source of truth),
answers dense and lexical searches with metadata filters applied *inside* it, and saves itself into
a directory. The pipeline never asks which backend it has. Two implementations ship:

* :class:`~ragkit.backends.LocalBackend`: SQLite (the truth) plus a FAISS index and a BM25 index
  derived from it, embedded in the process, saved as files (the default);
* :class:`~ragkit.backends.PostgresBackend`: PostgreSQL + pgvector, shared by many processes and
  machines; a saved directory only records which table to reach.

Vector ids are int64 assigned by the backend and never reused. Every write is one transaction that
bumps :attr:`Backend.generation`.

Chunks keep what :class:`~ragkit.types.Chunk` carries beyond their text: ``location`` (a JSON
object, ``{}`` by default: where in the document the chunk came from) and ``header`` (the contextual
header embedded in front of the text, ``""`` by default); :meth:`Backend.get_chunks` returns both,
so every hit has them. Three rules hold on every backend:

* the embedding cache is keyed by :func:`ragkit.store.embed_hash`, the hash of what was embedded
  (``header + text``), and :meth:`Backend.iter_texts` yields that same ``header + text``, so a
  reindex embeds what an add embedded;
* lexical (BM25 / full-text) search indexes the chunk text alone, never the header;
* metadata filters select on the *document's* metadata; a chunk's ``location`` is not visible to
  them.

Example:
    >>> import numpy as np
    >>> from ragkit.backends.base import Upsert, check_vectors
    >>> from ragkit.types import Chunk, Document
    >>> doc = Document(id="a", text="hi")
    >>> item = Upsert(doc, (Chunk(id="a#0", doc_id="a", text="hi", start=0, end=2),), np.ones((1, 4)))
    >>> item.vectors.dtype
    dtype('float32')
    >>> check_vectors(np.zeros((1, 4)), dim=4, names=["a#0"])
    Traceback (most recent call last):
    ...
    ragkit.errors.InvalidInputError: the vector of a#0 is zero (no direction, cosine undefined)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ragkit.errors import InvalidInputError
from ragkit.filters import Node, parse_filter
from ragkit.types import Chunk, Document

__all__ = ["Backend", "SavedBackend", "Upsert", "check_delete_filter", "check_vectors", "empty_hits"]


@dataclass(frozen=True)
class Upsert:
    """One document to write with its chunks and their vectors (``len(chunks)`` rows).

    Example:
        >>> import numpy as np
        >>> from ragkit.types import Document
        >>> Upsert(Document(id="e", text=""), (), np.zeros((0, 8))).vectors.shape
        (0, 8)
    """

    document: Document
    chunks: tuple[Chunk, ...]
    vectors: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunks", tuple(self.chunks))
        vectors = np.asarray(self.vectors)
        if vectors.size and (vectors.dtype.kind not in "fiu" or vectors.dtype == np.bool_):
            # Checked before converting: a complex vector would lose its imaginary part silently.
            raise InvalidInputError(
                f"{self.document.id!r}: vectors must be real numbers, got dtype {vectors.dtype}"
            )
        object.__setattr__(self, "vectors", vectors.astype(np.float32, copy=False))
        if len(self.vectors) != len(self.chunks):
            raise InvalidInputError(
                f"{self.document.id!r}: {len(self.chunks)} chunks but {len(self.vectors)} vectors"
            )


@dataclass
class SavedBackend:
    """What a backend's :meth:`Backend.save` wrote: its manifest entry and the derived files.

    Attributes:
        entry: JSON for the manifest's ``backend`` key; ``entry["kind"]`` names the backend
            (``"local"``, ``"postgres"``), the rest is the backend's own.
        derived: paths (relative to the directory) of files that can be rebuilt from the source of
            truth; the manifest records their checksums, and a corrupt one is rebuilt, not refused.
        keep: every path (relative, files or directories) this save needs; the rest of the
            directory's ragkit files may be removed once the manifest is committed.
        generation, documents, chunks: the state the saved files hold, read together with them
            (``None``: read from the backend after the save, for a backend whose data lives
            elsewhere).

    Example:
        >>> SavedBackend({"kind": "postgres"}).derived
        []
    """

    entry: dict[str, Any]
    derived: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    generation: int | None = None
    documents: int | None = None
    chunks: int | None = None


@runtime_checkable
class Backend(Protocol):
    """Where a pipeline's data lives; see the module docstring.

    Writes are refused with :class:`~ragkit.errors.ReadOnlyError` when ``read_only``. Searches take
    a parsed filter (:func:`ragkit.filters.parse_filter`) and apply it before the top-k cut, so a
    filtered search returns ``k`` hits whenever ``k`` chunks match. ``k`` far above the collection
    costs what the collection costs.
    """

    read_only: bool

    # -- state
    @property
    def generation(self) -> int:
        """A counter bumped by every write transaction."""
        ...

    def get_meta(self, key: str) -> Any:
        """A JSON value stored under ``key`` (``"fingerprint"``, ...), or ``None``."""
        ...

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` (one transaction)."""
        ...

    # -- reads
    def count_documents(self) -> int: ...

    def count_chunks(self) -> int: ...

    def get_document(self, doc_id: str) -> Document | None: ...

    def iter_documents(self) -> Iterator[Document]:
        """Every document, in insertion order, in pages (memory stays flat)."""
        ...

    def document_states(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``{doc_id: (document hash, canonical metadata JSON)}`` for the ids that exist; the hash is
        :func:`ragkit.backends.rows.document_hash` of the document as written."""
        ...

    def vectors_for_hashes(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """The embedding cache: a stored vector for each chunk hash that has one (the hash a write
        stored, :func:`ragkit.store.embed_hash` of the chunk: of its ``header + text``)."""
        ...

    def get_chunks(self, vids: Sequence[int]) -> dict[int, Chunk]:
        """Chunks by vector id, with their document's metadata, ``location`` and ``header``; ids that
        no longer exist are absent."""
        ...

    def get_vectors(self, vids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored float32 vectors by vector id; ids that no longer exist are absent."""
        ...

    def chunk_vids(self, doc_id: str) -> list[tuple[int, int]]:
        """``[(n, vid), ...]`` of one document, in chunk order."""
        ...

    def iter_texts(self, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, list[str]]]:
        """``(vids, texts)`` pages over every chunk, each text being what the embedder saw
        (``header + text``, :func:`ragkit.store.embed_text`): a reindex re-embeds exactly that."""
        ...

    def iter_vectors(self, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(vids, float32 vectors)`` pages over every chunk (exports, experiments)."""
        ...

    def count_matching(self, filter: Node | None) -> int:
        """How many chunks match ``filter``."""
        ...

    # -- writes (each one transaction)
    def write(
        self, upserts: Sequence[Upsert], metadata_updates: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        """Upsert documents with their chunks and vectors, and replace the metadata of others.

        One transaction: on any error nothing is written. An existing document id is replaced
        (its old chunks go, the new ones get fresh vector ids). ``metadata_updates`` maps ids of
        existing documents to their new metadata (text and vectors untouched).
        """
        ...

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Delete documents and their chunks; returns how many existed."""
        ...

    def delete_matching(self, filter: Node | Mapping[str, Any]) -> int:
        """Delete every document whose metadata matches ``filter``, with its chunks (documents
        without chunks too), in one transaction; returns how many. A filter that matches
        everything by construction is refused (:func:`check_delete_filter`)."""
        ...

    def update_metadata(self, doc_id: str, metadata: Mapping[str, Any]) -> bool:
        """Replace one document's metadata; ``False`` when there is no such document."""
        ...

    def replace_vectors(self, pages: Iterable[tuple[np.ndarray, np.ndarray]], fingerprint: Any) -> None:
        """Swap every chunk vector for a new one and set the fingerprint, atomically (reindex)."""
        ...

    # -- search
    def dense_search(
        self, vectors: np.ndarray, k: int, *, filter: Node | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, ``(cosines, vids)`` best first, at most ``k``, no padding."""
        ...

    def lexical_search(
        self, query: str, k: int, *, filter: Node | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, vids)`` of the chunks matching the query's words, best first, at most ``k``."""
        ...

    # -- lifecycle and persistence
    def save(self, directory: Path, tag: str, commit: Callable[[SavedBackend], None]) -> SavedBackend:
        """Save into ``directory``: write what a load needs, call ``commit`` (which writes the
        manifest naming it), then make ``directory`` this backend's home.

        New files carry ``tag`` in their names and nothing the directory's current manifest points
        to is touched, so a crash at any point leaves the old save or the new one. When ``commit``
        or a write fails, the files of this save are removed and the backend stays as it was.
        """
        ...

    def close(self) -> None: ...


def check_vectors(vectors: Any, *, dim: int, names: Sequence[str]) -> np.ndarray:
    """``vectors`` as C-contiguous float32 ``(len(names), dim)``, or :class:`InvalidInputError`
    naming the first bad row: not real floats, wrong shape, NaN/inf, or zero norm.

    Every vector is checked before anything is written or cached, so one bad vector leaves a
    pipeline exactly as it was.

    Example:
        >>> import numpy as np
        >>> check_vectors(np.ones((2, 3)), dim=3, names=["x", "y"]).shape
        (2, 3)
    """
    a = np.asarray(vectors)
    if a.dtype.kind not in "fiu" or a.dtype == np.bool_:
        raise InvalidInputError(f"vectors must be real numbers, got dtype {a.dtype}")
    if a.shape != (len(names), dim):
        raise InvalidInputError(f"got vectors of shape {a.shape}, expected {(len(names), dim)}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not a.size:
        return a
    finite = np.isfinite(a).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise InvalidInputError(f"the vector of {names[bad]} holds NaN or infinite values")
    norms = np.linalg.norm(a, axis=1)
    usable = (norms > 0) & np.isfinite(norms)
    if not usable.all():
        bad = int(np.argmin(usable))
        raise InvalidInputError(f"the vector of {names[bad]} is zero (no direction, cosine undefined)")
    return a


def check_delete_filter(filter: Any) -> Node:
    """The parsed filter of a delete by filter; ``None``, ``{}`` and the like are refused.

    Deleting "everything that matches nothing in particular" is nearly always a filter built from
    an empty list or a typo, so there is no implicit delete-all: delete every id for that.

    Raises:
        InvalidInputError: a bad filter (:func:`ragkit.filters.parse_filter`), or one that matches
            every document by construction (``None``, ``{}``, ``{"$and": [{}]}``, ...).

    Example:
        >>> check_delete_filter({"lang": "de"}).value
        'de'
        >>> check_delete_filter({})
        Traceback (most recent call last):
        ...
        ragkit.errors.InvalidInputError: delete(filter=...) needs a filter that selects: {} matches every document (to delete everything, delete every id: pipe.delete([d.id for d in pipe]))
    """  # noqa: E501
    node = parse_filter(filter)
    if node is None:
        raise InvalidInputError(
            f"delete(filter=...) needs a filter that selects: {filter!r} matches every document "
            "(to delete everything, delete every id: pipe.delete([d.id for d in pipe]))"
        )
    return node


def empty_hits(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` empty ``(scores, vids)`` results.

    Example:
        >>> empty_hits(1)[0][1].dtype
        dtype('int64')
    """
    return [(np.zeros(0, np.float32), np.zeros(0, np.int64)) for _ in range(n)]
