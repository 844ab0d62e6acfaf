"""``Pipeline``: chunk → embed → index → retrieve → rerank, over a storage backend, saved crash-safely.

The pipeline chunks and embeds; a backend (:mod:`ragkit.backends`) stores documents, chunks,
metadata and vectors, and answers dense and lexical searches with the filter applied inside it.
The pipeline never asks which backend it has. Saving and loading go through :mod:`ragkit.persistence`
(the manifest, the writer lock) and :mod:`ragkit.components` (the closed registry that rebuilds the
embedder, reranker and chunker a directory names).

Example:
    >>> from ragkit import Pipeline, Document
    >>> from ragkit.embedders import Qwen3Embedder                      # doctest: +SKIP
    >>> pipe = Pipeline(Qwen3Embedder("Qwen/Qwen3-Embedding-0.6B"))     # doctest: +SKIP
    >>> pipe.add([Document(id="a", text="Paris is the capital of France.", metadata={"lang": "en"})])
    ... # doctest: +SKIP
    >>> hits = pipe.search("capital of France", k=3, filter={"lang": "en"})   # doctest: +SKIP
    >>> pipe.save("my-index/")                                          # doctest: +SKIP
    >>> again = Pipeline.load("my-index/")                              # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.backends.base import Upsert, check_delete_filter, check_vectors
from ragkit.embedders.base import check_texts
from ragkit.errors import (
    ConfigError,
    IndexMismatchError,
    InputTypeError,
    InvalidInputError,
    ReadOnlyError,
)
from ragkit.filters import check_metadata
from ragkit.fusion import DEFAULT_ALPHA, DEFAULT_FUSION, DEFAULT_RRF_K, check_alpha
from ragkit.retrieval import Retrieval, _check_k, check_fusion
from ragkit.saving import Persistence, _canonical, _fingerprint_diff
from ragkit.store import document_hash, embed_hash, embed_text
from ragkit.structure import contextual_header
from ragkit.types import AddResult, Chunk, Document, check_text, to_document

__all__ = ["AddResult", "Pipeline"]

logger = logging.getLogger("ragkit")


def _iter_batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _embedder_part(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fingerprint.items() if k != "contextual_headers"}


class Pipeline(Retrieval, Persistence):
    """Chunk, embed, index and search documents; save and load the whole thing.

    Args:
        embedder: any object with ``dim``, ``fingerprint``, ``embed_documents`` and ``embed_queries``.
        backend: where the data lives: ``None`` is a :class:`~ragkit.backends.LocalBackend` (SQLite +
            FAISS + BM25, in a temporary file until :meth:`save`); a
            :class:`~ragkit.backends.PostgresBackend` shares one index between many processes.
        reranker: optional; anything with ``score(query, documents)``. With one, ``search`` reranks
            ``candidates`` first-stage hits (default ``max(50, k)``).
        chunker: defaults to ``RecursiveChunker.for_embedder(embedder)``: tokens of the embedder's
            tokenizer when it has ``count_tokens`` (512/64, never above its ``max_length``), else
            characters (2000/200). A chunker with ``contextual_headers=True`` (the embedder sees each
            chunk's header before its text) is part of the index's fingerprint: an index built with
            headers refuses a chunker without them and the other way round
            (:class:`~ragkit.errors.IndexMismatchError`), so vectors of both kinds never mix.
        query_cache_size: LRU cache of query embeddings (chatbot traffic repeats itself); 0 disables.
        batch_size: documents per ``add`` transaction (memory stays flat for any corpus).
        rrf_k: the constant of reciprocal-rank fusion in hybrid mode: 30, measured on CISI (Cormack et
            al. 2009 proposed 60; :mod:`ragkit.fusion` says how the default was chosen).
        fusion: hybrid mode's default fusion, ``"rrf"`` or ``"convex"`` (:mod:`ragkit.fusion`;
            ``search(fusion=...)`` overrides it per call).
        alpha: convex fusion's default weight of the dense side, in [0, 1].
        show_progress: a tqdm bar for long adds; ``None`` shows it only on a terminal.

    Example:
        >>> import numpy as np
        >>> from ragkit.backends import LocalBackend
        >>> class Letters:  # a toy embedder: counts of a few letters
        ...     dim, fingerprint = 4, {"model": "letters", "dim": 4}
        ...     def embed_documents(self, texts):
        ...         v = np.float32([[t.count(c) + 1e-3 for c in "aeio"] for t in texts])
        ...         return v / np.linalg.norm(v, axis=1, keepdims=True)
        ...     def embed_queries(self, texts, instruction=None):
        ...         return self.embed_documents(texts)
        >>> pipe = Pipeline(Letters(), backend=LocalBackend(lexical=False))
        >>> _ = pipe.add(["aaaa", "eeee", "iiii"])
        >>> pipe.search("aa", k=1)[0].text
        'aaaa'
    """

    def __init__(
        self,
        embedder: Any,
        *,
        backend: Any = None,
        reranker: Any = None,
        chunker: Any = None,
        query_cache_size: int = 1024,
        batch_size: int = 64,
        rrf_k: int = DEFAULT_RRF_K,
        fusion: str = DEFAULT_FUSION,
        alpha: float = DEFAULT_ALPHA,
        show_progress: bool | None = None,
    ) -> None:
        for attr in ("dim", "fingerprint", "embed_documents", "embed_queries"):
            if not hasattr(embedder, attr):
                raise InputTypeError(f"embedder lacks {attr!r}: see ragkit.embedders.Embedder")
        if reranker is not None and not callable(getattr(reranker, "score", None)):
            raise InputTypeError("reranker lacks a score(query, documents) method")
        if backend is None:
            from ragkit.backends.local import LocalBackend

            backend = LocalBackend()
        for attr in ("write", "dense_search", "lexical_search", "save", "get_chunks"):
            if not callable(getattr(backend, attr, None)):
                raise InputTypeError(f"backend lacks {attr!r}: see ragkit.backends.Backend")
        self.embedder = embedder
        self.reranker = reranker
        if chunker is None:
            from ragkit.chunking import RecursiveChunker

            chunker = RecursiveChunker.for_embedder(embedder)
        self.chunker = chunker
        self.backend = backend
        self.batch_size = _check_k(batch_size, "batch_size")
        self.rrf_k = _check_k(rrf_k, "rrf_k")
        try:
            self.fusion = check_fusion(fusion)
            self.alpha = check_alpha(alpha)
        except InvalidInputError as e:
            raise ConfigError(str(e)) from None
        self.show_progress = show_progress
        if type(query_cache_size) is not int or query_cache_size < 0:
            raise ConfigError(f"query_cache_size must be an int >= 0, got {query_cache_size!r}")
        self.query_cache_size = query_cache_size
        self._query_cache: OrderedDict[tuple[str, str | None], np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._save_lock = threading.Lock()  # one save at a time: each cleans up after the other
        self._directory: Path | None = None
        self._trust_hosts = False
        self._given_backend: Any = None
        self.read_only = bool(getattr(backend, "read_only", False))
        # Set by load() for an index whose fingerprint names its model as an earlier ragkit did.
        self.__dict__.setdefault("_legacy_model", None)
        self._bind_fingerprint()

    # ------------------------------------------------------------------------------------ housekeeping

    def _bound_fingerprint(self, embedder: Any) -> dict[str, Any]:
        """What the vectors depend on: the embedder's fingerprint, and ``contextual_headers: True``
        when the chunker embeds headers (absent otherwise, so indexes made before headers existed
        keep their fingerprint)."""
        fp = dict(embedder.fingerprint)
        if getattr(self.chunker, "contextual_headers", False) is True:
            fp["contextual_headers"] = True
        return _canonical(fp)

    def _bind_fingerprint(self) -> None:
        """Record the fingerprint in the backend, or refuse data made by another embedder or with
        contextual headers toggled."""
        fp = self._bound_fingerprint(self.embedder)
        stored = self.backend.get_meta("fingerprint")
        if stored is None:
            if not self.read_only:
                self.backend.set_meta("fingerprint", fp)
        elif stored != fp and not self._is_legacy(stored, fp):
            if isinstance(stored, dict) and _embedder_part(stored) == _embedder_part(fp):
                headers = bool(stored.get("contextual_headers"))
                raise IndexMismatchError(
                    f"the index was built {'with' if headers else 'without'} contextual headers and this "
                    f"chunker {'does not embed them' if headers else 'embeds them'}: vectors embedded with "
                    "and without headers must not mix. Use a chunker with "
                    f"contextual_headers={headers}, or index the documents again into a new pipeline"
                )
            raise IndexMismatchError(
                f"the index was built with a different embedder ({_fingerprint_diff(stored, fp)}); "
                "vectors from different models or dimensions are not comparable: load it with the original "
                "embedder, or call pipe.reindex(new_embedder) to re-embed every chunk"
            )

    def _is_legacy(self, stored: Any, fp: Mapping[str, Any]) -> bool:
        """Whether ``stored`` is ``fp`` under the name an earlier ragkit gave the same model."""
        legacy = self._legacy_model
        return legacy is not None and isinstance(stored, dict) and stored == {**fp, "model": legacy}

    def _recorded_fingerprint(self) -> dict[str, Any]:
        """The fingerprint the backend holds for this embedder (a legacy name is kept: the store's
        vectors and the manifest must keep agreeing, and a reindex records the new one)."""
        fp = self._bound_fingerprint(self.embedder)
        stored = self.backend.get_meta("fingerprint")
        if self._is_legacy(stored, fp):
            return stored
        if isinstance(stored, dict) and _embedder_part(stored) == _embedder_part(fp):
            # The vectors' own record: a chunker swapped in after binding must not rewrite it (the
            # next add refuses that chunker, and a load names the mismatch).
            return stored
        return fp

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError("this pipeline was loaded with read_only=True")

    def close(self) -> None:
        """Release the directory's writer lock and close the backend (also on garbage collection)."""
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # ------------------------------------------------------------------------------------------ reads

    def __len__(self) -> int:
        """The number of documents."""
        return self.backend.count_documents()

    def __iter__(self) -> Iterator[Document]:
        """Every document, in insertion order."""
        return self.backend.iter_documents()

    def __repr__(self) -> str:
        where = str(self._directory) if self._directory else "in memory"
        return f"Pipeline({len(self)} documents, {self.backend.count_chunks()} chunks, {where})"

    def get(self, doc_id: str) -> Document | None:
        """The document with this id, or ``None``.

        Example:
            >>> pipe.get("a").text  # doctest: +SKIP
            'Paris is the capital of France.'
        """
        return self.backend.get_document(check_text(doc_id, "doc_id"))

    # ----------------------------------------------------------------------------------------- writes

    def add(
        self, documents: Any, *, batch_size: int | None = None, show_progress: bool | None = None
    ) -> AddResult:
        """Add or update documents (an upsert by id), streaming in batches.

        Accepts a ``str``, a ``dict`` (``id``, ``text``, ``metadata``), a :class:`Document`, or any
        iterable or generator of them. Each batch is one transaction: a failure part-way keeps every
        batch committed before it and writes nothing of the failed one (metadata included). Chunks
        whose text (and header) is unchanged keep their stored vectors and are not re-embedded; a
        document whose text, sections and metadata are all unchanged is a no-op, and one whose text
        and sections are unchanged has only its metadata updated (``metadata_updated``), unless
        the chunker embeds contextual headers and its ``title`` changed: it is chunked again.

        Raises:
            InputTypeError: not a document or an iterable of them.
            InvalidInputError: metadata that is not JSON (or holds NaN, integers beyond 64 bits,
                lone surrogates), or an embedder that returned a bad vector (NaN, zero, wrong size).

        Example:
            >>> pipe.add(["a plain string", {"id": "x", "text": "dicts work"}])  # doctest: +SKIP
            AddResult(added=2, updated=0, metadata_updated=0, unchanged=0, chunks=2, embedded=2)
        """
        self._check_writable()
        self._bind_fingerprint()  # pipe.chunker may have been swapped for one that toggles headers
        if isinstance(documents, (str, Document, Mapping)):
            documents = [documents]
        elif (
            documents is None
            or isinstance(documents, (bytes, bytearray))
            or not isinstance(documents, Iterable)
        ):
            raise InputTypeError(
                f"add() takes documents or an iterable of them, got {type(documents).__name__}"
            )
        size = _check_k(batch_size or self.batch_size, "batch_size")
        total = len(documents) if hasattr(documents, "__len__") else None
        result = AddResult()
        from tqdm.auto import tqdm

        flag = show_progress if show_progress is not None else self.show_progress
        # None: a bar on a terminal, and only for work long enough to need one.
        disable = (None if total is None or total >= 1000 else True) if flag is None else not flag
        with tqdm(total=total, desc="ragkit add", unit="doc", disable=disable) as bar:
            for batch in _iter_batches(documents, size):
                result.merge(self._add_batch([to_document(d) for d in batch]))
                bar.update(len(batch))
                elapsed = bar.format_dict.get("elapsed") or 0.0
                rate = f"{result.chunks / elapsed:.1f}" if elapsed > 0 else "?"
                bar.set_postfix_str(f"{result.chunks} chunks, {rate} chunks/s", refresh=False)
        return result

    def _add_batch(self, docs: list[Document]) -> AddResult:
        result = AddResult()
        by_id: dict[str, Document] = {}
        for doc in docs:  # within one batch the last version of an id wins
            by_id[doc.id] = doc
        states = self.backend.document_states(list(by_id))
        to_write: list[tuple[Document, list[Chunk]]] = []
        metadata_updates: dict[str, dict[str, Any]] = {}
        for doc in by_id.values():
            state = states.get(doc.id)
            metadata = check_metadata(doc.metadata)  # refuse bad metadata before any work is done
            # Same text and sections: its chunks stand, unless their headers name a title that changed.
            if state is not None and state[0] == document_hash(doc) and not self._retitled(state[1], doc):
                if state[1] == metadata:
                    result.unchanged += 1
                else:
                    metadata_updates[doc.id] = doc.metadata
                    result.metadata_updated += 1
                continue
            if state is None:
                result.added += 1
            else:
                result.updated += 1
            to_write.append((doc, list(self.chunker.chunk(doc))))
        upserts: list[Upsert] = []
        if to_write:
            # The cache key is the hash of what is embedded (header + text): toggling headers never
            # reuses a vector of the same text embedded without one.
            hashes = [embed_hash(c) for _, chunks in to_write for c in chunks]
            cached = self.backend.vectors_for_hashes(hashes)
            missing = list(dict.fromkeys(h for h in hashes if h not in cached))
            if missing:
                first: dict[str, Chunk] = {}
                for _, chunks in to_write:
                    for c in chunks:
                        first.setdefault(embed_hash(c), c)
                vectors = self._embed_documents([first[h] for h in missing])
                cached.update(zip(missing, vectors, strict=True))
                result.embedded += len(missing)
            dim = int(self.embedder.dim)
            for doc, chunks in to_write:
                rows = [cached[embed_hash(c)] for c in chunks]
                upserts.append(Upsert(doc, tuple(chunks), np.stack(rows) if rows else np.zeros((0, dim))))
                result.chunks += len(chunks)
        if upserts or metadata_updates:
            self.backend.write(upserts, metadata_updates)
        return result

    def _retitled(self, stored: str, doc: Document) -> bool:
        """Whether the chunker embeds headers and ``doc``'s title gives another header than the
        stored metadata's: its chunks' headers (and vectors) must then be made again."""
        if getattr(self.chunker, "contextual_headers", False) is not True:
            return False
        try:
            old = json.loads(stored).get("title")
        except (ValueError, AttributeError):
            return True
        return contextual_header(old, ()) != contextual_header(doc.metadata.get("title"), ())

    def _embed_documents(self, chunks: list[Chunk]) -> np.ndarray:
        vectors = self.embedder.embed_documents([embed_text(c) for c in chunks])
        return check_vectors(vectors, dim=int(self.embedder.dim), names=[f"chunk {c.id!r}" for c in chunks])

    def delete(
        self, doc_ids: str | Iterable[str] | None = None, *, filter: Mapping[str, Any] | None = None
    ) -> int:
        """Delete documents by id (unknown ids are ignored), or every document whose metadata
        matches ``filter`` (:mod:`ragkit.filters`; documents without chunks too), in one
        transaction; returns how many went. Give exactly one of the two. A filter that matches
        everything by construction (``{}``) is refused: delete every id to empty a pipeline.

        Example:
            >>> pipe.delete(["a", "b"])  # doctest: +SKIP
            2
            >>> pipe.delete(filter={"$or": [{"lang": "de"}, {"year": {"$lt": 2000}}]})  # doctest: +SKIP
            14
        """
        self._check_writable()
        if (doc_ids is None) == (filter is None):
            raise InvalidInputError("delete() takes doc_ids or filter=..., exactly one of them")
        if filter is not None:
            return self.backend.delete_matching(check_delete_filter(filter))
        if isinstance(doc_ids, str):
            doc_ids = [doc_ids]
        return self.backend.delete(check_texts(doc_ids, "doc_ids"))

    def update_metadata(self, doc_id: str, metadata: Mapping[str, Any]) -> None:
        """Replace a document's metadata without re-embedding anything.

        Example:
            >>> pipe.update_metadata("a", {"lang": "fr"})  # doctest: +SKIP
        """
        self._check_writable()
        check_text(doc_id, "doc_id")
        if not isinstance(metadata, Mapping):
            raise InputTypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        if not self.backend.update_metadata(doc_id, dict(metadata)):
            raise InvalidInputError(f"no document with id {doc_id!r}")

    def reindex(self, embedder: Any, *, batch_size: int = 256, show_progress: bool | None = None) -> None:
        """Re-embed every chunk with another embedder, from the stored text.

        The new vectors are staged and swapped in atomically: a failure part-way leaves the old
        embedder's vectors in place. Chunks are kept as they are, headers included: each is embedded
        as ``header + text``, as when it was added.

        Example:
            >>> pipe.reindex(Qwen3Embedder("Qwen/Qwen3-Embedding-4B", dim=1024))  # doctest: +SKIP
        """
        self._check_writable()
        from tqdm.auto import tqdm

        old = self.embedder
        total = self.backend.count_chunks()
        bar = tqdm(
            total=total,
            desc="ragkit reindex",
            unit="chunk",
            disable=None if show_progress is None else not show_progress,
        )

        def pages() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for ids, texts in self.backend.iter_texts(batch_size):
                vectors = check_vectors(
                    embedder.embed_documents(texts),
                    dim=int(embedder.dim),
                    names=[f"chunk {int(i)} (new embedder)" for i in ids],
                )
                bar.update(len(texts))
                yield ids, vectors

        try:
            self.backend.replace_vectors(pages(), self._bound_fingerprint(embedder))
        finally:
            bar.close()
        self.embedder = embedder
        with self._cache_lock:
            self._query_cache.clear()
        logger.info("reindexed %d chunks: %s -> %s", total, old.fingerprint, embedder.fingerprint)

    async def aadd(self, documents: Any, **kwargs: Any) -> AddResult:
        """Async twin of :meth:`add`: runs in a worker thread, never blocking the event loop."""
        return await asyncio.to_thread(self.add, documents, **kwargs)
