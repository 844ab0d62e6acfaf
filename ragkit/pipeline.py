"""``Pipeline``: chunk → embed → index → retrieve → rerank, with crash-safe persistence.

The store (SQLite by default) is the source of truth: it holds documents, chunks, metadata and the
chunk vectors. The vector index (FAISS by default) and the BM25 index are derived from it, saved
beside it with the store's generation number, and rebuilt whenever they are missing or stale.

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
import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from ragkit._sync import RWLock
from ragkit.embedders.base import check_texts
from ragkit.errors import (
    ConfigError,
    IndexMismatchError,
    InputTypeError,
    IntegrityError,
    InvalidInputError,
    LockError,
    ReadOnlyError,
)
from ragkit.rerankers.base import rerank as _rerank
from ragkit.store import SQLiteStore, text_hash
from ragkit.types import Chunk, Document, Hit, SearchResults, check_text, to_document

__all__ = ["AddResult", "Pipeline"]

logger = logging.getLogger("ragkit")

FORMAT_VERSION = 1
MODES = ("dense", "lexical", "hybrid")
MANIFEST = "manifest.json"
STORE_FILE = "store.sqlite"
LOCK_FILE = ".lock"

# Called with a stage name at each step of save(); tests set it to simulate a crash at that point.
_save_hook: Callable[[str], None] | None = None


class AddResult(BaseModel):
    """What one ``add`` call did.

    Attributes:
        added: new documents. updated: documents whose text changed (re-chunked).
        metadata_updated: documents whose metadata alone changed. unchanged: no-ops.
        chunks: chunks written. embedded: chunk texts actually sent to the embedder (the rest
        reused stored vectors of identical text).
    """

    added: int = 0
    updated: int = 0
    metadata_updated: int = 0
    unchanged: int = 0
    chunks: int = 0
    embedded: int = 0


def _ragkit_version() -> str:
    from ragkit import __version__

    return __version__


def _canonical(value: Any) -> Any:
    """JSON round trip, so that tuples and lists (and key order) compare equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _fingerprint_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    keys = sorted(set(a) | set(b))
    return "; ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_path(path: Path) -> None:
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


def _hook(stage: str) -> None:
    if _save_hook is not None:
        _save_hook(stage)


def build_from_spec(saved: Mapping[str, Any]) -> Any:
    """Rebuild a component saved by :func:`_component_spec`: ``cls.from_spec(spec)`` or ``cls(**spec)``.

    Only classes inside the ``ragkit`` package are accepted, so a manifest cannot make ragkit import
    arbitrary code.
    """
    path = saved.get("class")
    spec = dict(saved.get("spec") or {})
    if not isinstance(path, str) or not path.startswith("ragkit.") or "." not in path:
        raise ConfigError(
            f"cannot rebuild {path!r} from the manifest (not a ragkit class): pass it explicitly"
        )
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name, None)
    if cls is None:
        raise ConfigError(f"cannot rebuild {path!r}: no such class; pass it explicitly")
    if hasattr(cls, "from_spec"):
        return cls.from_spec(spec)
    spec.pop("class", None)  # some components name themselves in their own spec as well
    return cls(**spec)


def _component_spec(obj: Any) -> dict[str, Any] | None:
    """``{"class": import path, "spec": obj.spec()}``, or ``None`` when the object has no ``spec()``."""
    spec = getattr(obj, "spec", None)
    if not callable(spec):
        return None
    value = spec()
    if value is None:
        return None
    cls = type(obj)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "spec": _canonical(value)}


def _shared_backend(manifest: Mapping[str, Any]) -> bool:
    return bool((manifest.get("index") or {}).get("shared"))


def _rebuild_chunker(saved: Mapping[str, Any], embedder: Any) -> Any:
    """The saved chunker; a token chunker counts with the (possibly new) embedder's tokenizer."""
    from ragkit.chunking import RecursiveChunker

    spec = saved.get("spec") or {}
    if saved.get("class") == f"{RecursiveChunker.__module__}.RecursiveChunker":
        size, overlap = spec.get("chunk_size"), spec.get("overlap")
        if spec.get("unit") == "tokens" and callable(getattr(embedder, "count_tokens", None)):
            return RecursiveChunker.for_embedder(embedder, chunk_size=size, overlap=overlap)
        return RecursiveChunker(size, overlap)
    try:
        return build_from_spec(saved)
    except (ConfigError, TypeError) as e:
        logger.warning("could not rebuild the saved chunker (%s); using the default one", e)
        return None


class _DirLock:
    """An exclusive, non-blocking lock on ``directory/.lock``, held while a writer lives."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (pid {int(os.pread(fd, 32, 0).decode().strip())})"
            os.close(fd)
            raise LockError(
                f"another process{holder} is writing to {self.path.parent}; open it with "
                "Pipeline.load(path, read_only=True) to read, or wait for that writer to close"
            ) from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _check_k(k: Any, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"{name} must be a positive int, got {k!r}")
    return int(k)


def _iter_batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


class Pipeline:
    """Chunk, embed, index and search documents; save and load the whole thing.

    Args:
        embedder: any object with ``dim``, ``fingerprint``, ``embed_documents`` and ``embed_queries``.
        reranker: optional; anything with ``score(query, documents)``. With one, ``search`` reranks
            ``candidates`` first-stage hits (default ``max(50, k)``).
        chunker: defaults to ``RecursiveChunker.for_embedder(embedder)``: tokens of the embedder's
            tokenizer when it has ``count_tokens`` (512/64, never above its ``max_length``), else
            characters (2000/200).
        index: a ``VectorIndex``; defaults to ``FaissIndex()`` (exact up to a size, then HNSW).
        store: a ``SQLiteStore``; defaults to a temporary file until :meth:`save` binds a directory.
        lexical: keep a BM25 index for ``mode="lexical"`` and ``"hybrid"`` (rebuilt lazily).
        query_cache_size: LRU cache of query embeddings (chatbot traffic repeats itself); 0 disables.
        batch_size: documents per ``add`` transaction (memory stays flat for any corpus).
        rrf_k: the constant of reciprocal-rank fusion in hybrid mode (60, as in Cormack et al. 2009).
        show_progress: a tqdm bar for long adds; ``None`` shows it only on a terminal.

    Example:
        >>> import numpy as np
        >>> class Letters:  # a toy embedder: counts of a few letters
        ...     dim, fingerprint = 4, {"model": "letters", "dim": 4}
        ...     def embed_documents(self, texts):
        ...         v = np.float32([[t.count(c) + 1e-3 for c in "aeio"] for t in texts])
        ...         return v / np.linalg.norm(v, axis=1, keepdims=True)
        ...     def embed_queries(self, texts, instruction=None):
        ...         return self.embed_documents(texts)
        >>> pipe = Pipeline(Letters(), lexical=False)
        >>> _ = pipe.add(["aaaa", "eeee", "iiii"])
        >>> pipe.search("aa", k=1)[0].text
        'aaaa'
    """

    def __init__(
        self,
        embedder: Any,
        *,
        reranker: Any = None,
        chunker: Any = None,
        index: Any = None,
        store: Any = None,
        lexical: bool = True,
        query_cache_size: int = 1024,
        batch_size: int = 64,
        rrf_k: int = 60,
        show_progress: bool | None = None,
    ) -> None:
        for attr in ("dim", "fingerprint", "embed_documents", "embed_queries"):
            if not hasattr(embedder, attr):
                raise InputTypeError(f"embedder lacks {attr!r}: see ragkit.embedders.Embedder")
        if reranker is not None and not callable(getattr(reranker, "score", None)):
            raise InputTypeError("reranker lacks a score(query, documents) method")
        self.embedder = embedder
        self.reranker = reranker
        if chunker is None:
            from ragkit.chunking import RecursiveChunker

            chunker = RecursiveChunker.for_embedder(embedder)
        self.chunker = chunker
        if index is None:
            from ragkit.index.faiss import FaissIndex

            index = FaissIndex()
        self.index = index
        # A shared backend (PgVectorIndex) is the store, the vector index and the lexical index at once:
        # nothing is derived locally, so many processes on many machines see the same data.
        self._shared = bool(getattr(index, "is_store", False))
        if self._shared:
            if store is not None and store is not index:
                raise ConfigError(f"{type(index).__name__} is its own store: pass it as index= only")
            store = index
        self.lexical = bool(lexical)
        self.batch_size = _check_k(batch_size, "batch_size")
        self.rrf_k = _check_k(rrf_k, "rrf_k")
        self.show_progress = show_progress
        if not isinstance(query_cache_size, int) or query_cache_size < 0:
            raise ConfigError(f"query_cache_size must be an int >= 0, got {query_cache_size!r}")
        self.query_cache_size = query_cache_size
        self._query_cache: OrderedDict[tuple[str, str | None], np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._lock = RWLock()
        self._bm25: Any = None
        self._bm25_generation = -1
        self._index_generation = -1
        self._directory: Path | None = None
        self._dir_lock: _DirLock | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.read_only = bool(getattr(store, "read_only", False))
        if store is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="ragkit-")
            store = SQLiteStore(Path(self._tmpdir.name) / STORE_FILE)
        self.store = store
        self._bind_fingerprint()
        # The vector index catches up with the store lazily, on the first search or write.

    # ------------------------------------------------------------------------------------ housekeeping

    def _bind_fingerprint(self) -> None:
        """Record the embedder's fingerprint in the store, or refuse a store made by another embedder."""
        fp = _canonical(self.embedder.fingerprint)
        stored = self.store.get_meta("fingerprint")
        if stored is None:
            if not self.read_only:
                self.store.set_meta("fingerprint", fp)
        elif stored != fp:
            raise IndexMismatchError(
                f"the index was built with a different embedder ({_fingerprint_diff(stored, fp)}); "
                "vectors from different models or dimensions are not comparable: load it with the original "
                "embedder, or call pipe.reindex(new_embedder) to re-embed every chunk"
            )

    def _sync_index(self, *, force: bool = False) -> None:
        """Rebuild the vector index from the store when it does not reflect the store's generation."""
        if self._shared:
            return
        generation = self.store.generation
        if not force and generation == self._index_generation:
            return
        with self._lock.write():
            if not force and self.store.generation == self._index_generation:
                return
            generation = self.store.generation
            started = time.perf_counter()
            self.index.clear()
            for ids, vectors in self.store.iter_vectors():
                self.index.add(ids, vectors)
            self._index_generation = generation
            if len(self.index):
                logger.info(
                    "rebuilt the vector index from the store: %d vectors in %.2fs",
                    len(self.index),
                    time.perf_counter() - started,
                )

    def _lexical_index(self) -> Any:
        """The BM25 index, rebuilt from the store when stale (never once per added batch)."""
        if not self.lexical:
            raise ConfigError("this pipeline was built with lexical=False; mode='lexical'/'hybrid' need BM25")
        generation = self.store.generation
        if self._bm25 is not None and self._bm25_generation == generation:
            return self._bm25
        with self._lock.write():
            if self._bm25 is None or self._bm25_generation != self.store.generation:
                from ragkit.lexical import BM25Index

                generation = self.store.generation
                ids: list[np.ndarray] = []
                texts: list[str] = []
                for page_ids, page_texts in self.store.iter_texts():
                    ids.append(page_ids)
                    texts.extend(page_texts)
                # A new object, swapped in whole: concurrent searches keep using the old one meanwhile.
                bm25 = BM25Index()
                bm25.build(np.concatenate(ids) if ids else np.zeros(0, np.int64), texts)
                self._bm25, self._bm25_generation = bm25, generation
        return self._bm25

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError("this pipeline was loaded with read_only=True")

    def close(self) -> None:
        """Release the directory lock and close the store (also on garbage collection)."""
        if self._dir_lock is not None:
            self._dir_lock.release()
            self._dir_lock = None
        close = getattr(self.store, "close", None)
        if callable(close):
            close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

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
        return self.store.count_documents()

    def __iter__(self) -> Iterator[Document]:
        """Every document, in insertion order."""
        return self.store.iter_documents()

    def __repr__(self) -> str:
        where = str(self._directory) if self._directory else "in memory"
        return f"Pipeline({len(self)} documents, {self.store.count_chunks()} chunks, {where})"

    def get(self, doc_id: str) -> Document | None:
        """The document with this id, or ``None``.

        Example:
            >>> pipe.get("a").text  # doctest: +SKIP
            'Paris is the capital of France.'
        """
        return self.store.get_document(check_text(doc_id, "doc_id"))

    # ----------------------------------------------------------------------------------------- writes

    def add(
        self, documents: Any, *, batch_size: int | None = None, show_progress: bool | None = None
    ) -> AddResult:
        """Add or update documents (an upsert by id), streaming in batches.

        Accepts a ``str``, a ``dict`` (``id``, ``text``, ``metadata``), a :class:`Document`, or any
        iterable or generator of them. Each batch is one store transaction: a failure part-way keeps
        every batch committed before it. Chunks whose text is unchanged keep their stored vectors and
        are not re-embedded; a document whose text and metadata are both unchanged is a no-op.

        Example:
            >>> pipe.add(["a plain string", {"id": "x", "text": "dicts work"}])  # doctest: +SKIP
            AddResult(added=2, updated=0, metadata_updated=0, unchanged=0, chunks=2, embedded=2)
        """
        self._check_writable()
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
                self._add_batch([to_document(d) for d in batch], result)
                bar.update(len(batch))
        return result

    def _add_batch(self, docs: list[Document], result: AddResult) -> None:
        by_id: dict[str, Document] = {}
        for doc in docs:  # within one batch the last version of an id wins
            by_id[doc.id] = doc
        states = self.store.document_states(list(by_id))
        to_write: list[tuple[Document, list[Chunk]]] = []
        for doc in by_id.values():
            state = states.get(doc.id)
            metadata = json.dumps(doc.metadata, sort_keys=True, ensure_ascii=False)
            if state is not None and state[0] == text_hash(doc.text):
                if state[1] == metadata:
                    result.unchanged += 1
                else:
                    self.store.update_metadata(doc.id, doc.metadata)
                    result.metadata_updated += 1
                continue
            if state is None:
                result.added += 1
            else:
                result.updated += 1
            to_write.append((doc, list(self.chunker.chunk(doc))))
        if not to_write:
            return
        hashes = [text_hash(c.text) for _, chunks in to_write for c in chunks]
        cached = self.store.vectors_for_hashes(hashes)
        missing = list(dict.fromkeys(h for h in hashes if h not in cached))
        if missing:
            texts_by_hash = {text_hash(c.text): c.text for _, chunks in to_write for c in chunks}
            vectors = self._embed_documents([texts_by_hash[h] for h in missing])
            cached.update(zip(missing, vectors, strict=True))
            result.embedded += len(missing)
        items = []
        for doc, chunks in to_write:
            vectors = np.stack([cached[text_hash(c.text)] for c in chunks]) if chunks else np.zeros((0, 0))
            items.append((doc, chunks, vectors))
            result.chunks += len(chunks)
        self._write(items)

    def _embed_documents(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(self.embedder.embed_documents(texts), dtype=np.float32)
        return self._check_embeddings(vectors, len(texts))

    def _check_embeddings(self, vectors: np.ndarray, n: int) -> np.ndarray:
        dim = int(self.embedder.dim)
        if vectors.shape != (n, dim):
            raise InvalidInputError(f"the embedder returned shape {vectors.shape}, expected {(n, dim)}")
        if not np.isfinite(vectors).all():
            raise InvalidInputError("the embedder returned NaN or infinite values")
        return vectors

    def _write(self, items: list[tuple[Document, list[Chunk], np.ndarray]]) -> None:
        self._sync_index()
        with self._lock.write():
            write = self.store.write(items)
            if self._shared:
                return
            if write.removed_ids:
                self.index.delete(np.asarray(write.removed_ids, dtype=np.int64))
            if write.added_ids:
                self.index.add(np.asarray(write.added_ids, dtype=np.int64), np.stack(write.added_vectors))
            self._index_generation = self.store.generation

    def delete(self, doc_ids: str | Iterable[str]) -> int:
        """Delete documents by id; returns how many existed. Unknown ids are ignored.

        Example:
            >>> pipe.delete(["a", "b"])  # doctest: +SKIP
            2
        """
        self._check_writable()
        ids = [doc_ids] if isinstance(doc_ids, str) else check_texts(doc_ids, "doc_ids")
        self._sync_index()
        with self._lock.write():
            deleted, removed = self.store.delete_documents(ids)
            if removed and not self._shared:
                self.index.delete(np.asarray(removed, dtype=np.int64))
            self._index_generation = self.store.generation
        return deleted

    def update_metadata(self, doc_id: str, metadata: Mapping[str, Any]) -> None:
        """Replace a document's metadata without re-embedding anything.

        Example:
            >>> pipe.update_metadata("a", {"lang": "fr"})  # doctest: +SKIP
        """
        self._check_writable()
        check_text(doc_id, "doc_id")
        if not isinstance(metadata, Mapping):
            raise InputTypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        self._sync_index()
        with self._lock.write():
            if not self.store.update_metadata(doc_id, dict(metadata)):
                raise InvalidInputError(f"no document with id {doc_id!r}")
            self._index_generation = self.store.generation

    def reindex(self, embedder: Any, *, batch_size: int = 256, show_progress: bool | None = None) -> None:
        """Re-embed every chunk with another embedder, from the stored text.

        The new vectors are staged and swapped in atomically: a failure part-way leaves the old
        embedder's vectors in place. Chunks are kept as they are.

        Example:
            >>> pipe.reindex(Qwen3Embedder("Qwen/Qwen3-Embedding-4B", dim=1024))  # doctest: +SKIP
        """
        self._check_writable()
        from tqdm.auto import tqdm

        old = self.embedder
        total = self.store.count_chunks()
        bar = tqdm(
            total=total,
            desc="ragkit reindex",
            unit="chunk",
            disable=None if show_progress is None else not show_progress,
        )

        def pages() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for ids, texts in self.store.iter_texts(batch_size):
                vectors = np.asarray(embedder.embed_documents(texts), dtype=np.float32)
                if vectors.shape != (len(texts), int(embedder.dim)) or not np.isfinite(vectors).all():
                    raise InvalidInputError(
                        f"the new embedder returned shape {vectors.shape} or non-finite values"
                    )
                bar.update(len(texts))
                yield ids, vectors

        try:
            self.store.replace_vectors(pages(), {"fingerprint": _canonical(embedder.fingerprint)})
        finally:
            bar.close()
        self.embedder = embedder
        with self._cache_lock:
            self._query_cache.clear()
        logger.info("reindexed %d chunks: %s -> %s", total, old.fingerprint, embedder.fingerprint)
        self._sync_index(force=True)

    async def aadd(self, documents: Any, **kwargs: Any) -> AddResult:
        """Async twin of :meth:`add`: runs in a worker thread, never blocking the event loop."""
        return await asyncio.to_thread(self.add, documents, **kwargs)

    # ----------------------------------------------------------------------------------------- search

    def _query_vectors(self, queries: list[str], instruction: str | None) -> np.ndarray:
        out: list[np.ndarray | None] = []
        todo: list[str] = []
        with self._cache_lock:
            for q in queries:
                vec = self._query_cache.get((q, instruction))
                if vec is not None:
                    self._query_cache.move_to_end((q, instruction))
                else:
                    todo.append(q)
                out.append(vec)
        if todo:
            unique = list(dict.fromkeys(todo))
            if instruction is None:
                vectors = self.embedder.embed_queries(unique)
            else:
                vectors = self.embedder.embed_queries(unique, instruction=instruction)
            fresh = dict(
                zip(unique, self._check_embeddings(np.asarray(vectors, np.float32), len(unique)), strict=True)
            )
            self._remember(fresh, instruction)
            out = [fresh[q] if v is None else v for q, v in zip(queries, out, strict=True)]
        return np.stack(out) if out else np.zeros((0, int(self.embedder.dim)), np.float32)

    def _remember(self, fresh: Mapping[str, np.ndarray], instruction: str | None) -> None:
        if not self.query_cache_size:
            return
        with self._cache_lock:
            for q, v in fresh.items():
                self._query_cache[(q, instruction)] = v
                self._query_cache.move_to_end((q, instruction))
            while len(self._query_cache) > self.query_cache_size:
                self._query_cache.popitem(last=False)

    def _validate(
        self, k: Any, mode: Any, candidates: Any, max_per_doc: Any, min_score: Any
    ) -> tuple[int, str, int]:
        k = _check_k(k)
        if mode not in MODES:
            raise InvalidInputError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        if mode != "dense" and not self.lexical and not self._shared:
            raise ConfigError(f"mode={mode!r} needs BM25: build the pipeline with lexical=True")
        if candidates is None:
            n = max(50, k) if self.reranker is not None else k
        else:
            n = max(_check_k(candidates, "candidates"), k)
        if max_per_doc is not None:
            _check_k(max_per_doc, "max_per_doc")
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))):
            raise InvalidInputError(f"min_score must be a number, got {min_score!r}")
        return k, mode, n

    def _dense(
        self, qvecs: np.ndarray, n: int, allowed: np.ndarray | None, filter: Mapping[str, Any] | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Vector search for a batch of query vectors: per query (scores, ids) without padding."""
        if self._shared:  # the backend filters in the same query as the vector search
            scores, ids = self.index.search(qvecs, n, filter=filter)
            return [(s[i >= 0], i[i >= 0]) for s, i in zip(scores, ids, strict=True)]
        if allowed is not None and not len(allowed):
            return [(np.zeros(0, np.float32), np.zeros(0, np.int64)) for _ in qvecs]
        with self._lock.read():
            if not len(self.index):
                return [(np.zeros(0, np.float32), np.zeros(0, np.int64)) for _ in qvecs]
            scores, ids = self.index.search(qvecs, n, allowed_ids=allowed)
        return [(s[i >= 0], i[i >= 0]) for s, i in zip(scores, ids, strict=True)]

    def _retrieve(
        self,
        query: str,
        dense: tuple[np.ndarray, np.ndarray] | None,
        n: int,
        mode: str,
        allowed: np.ndarray | None,
        filter: Mapping[str, Any] | None,
        timings: dict[str, float],
    ) -> list[Hit]:
        """First-stage retrieval: ``n`` candidates as hits (before reranking and per-doc caps)."""
        lexical: tuple[np.ndarray, np.ndarray] | None = None
        if mode in ("lexical", "hybrid"):
            t = time.perf_counter()
            if self._shared:
                lexical = self.index.lexical_search(query, n, filter=filter)
            else:
                lexical = self._lexical_index().search(query, n, allowed_ids=allowed)
            timings["lexical"] = time.perf_counter() - t
        t = time.perf_counter()
        dense_map = {} if dense is None else {int(i): float(s) for s, i in zip(*dense, strict=True)}
        lexical_map = {} if lexical is None else {int(i): float(s) for s, i in zip(*lexical, strict=True)}
        if mode == "hybrid":
            from ragkit.lexical import rrf_fuse

            fused = rrf_fuse([list(dense_map), list(lexical_map)], rrf_k=self.rrf_k)[:n]
            order = [(vid, score) for vid, score in fused]
        elif mode == "dense":
            order = list(dense_map.items())
        else:
            order = list(lexical_map.items())
        with self._lock.read():
            chunks = self.store.get_chunks([vid for vid, _ in order])
        hits = []
        for vid, score in order:
            chunk = chunks.get(vid)
            if chunk is None:  # deleted between the index search and this read
                continue
            hits.append(
                Hit(
                    **chunk.model_dump(),
                    score=score,
                    dense_score=dense_map.get(vid),
                    lexical_score=lexical_map.get(vid),
                    rrf_score=score if mode == "hybrid" else None,
                )
            )
        timings["fetch"] = time.perf_counter() - t
        return hits

    def _finish(
        self,
        hits: list[Hit],
        k: int,
        max_per_doc: int | None,
        min_score: float | None,
        scores: np.ndarray | None,
        timings: dict[str, float],
    ) -> list[Hit]:
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float32)
            if scores.shape != (len(hits),):
                raise InvalidInputError(
                    f"the reranker returned shape {scores.shape} for {len(hits)} documents"
                )
            order = np.argsort(-scores, kind="stable")
            reranked = []
            for i in order:
                hit = hits[int(i)]
                hit.score = hit.rerank_score = float(scores[i])
                reranked.append(hit)
            hits = reranked
        out: list[Hit] = []
        per_doc: dict[str, int] = {}
        for hit in hits:
            if min_score is not None and hit.score < min_score:
                continue
            if max_per_doc is not None:
                if per_doc.get(hit.doc_id, 0) >= max_per_doc:
                    continue
                per_doc[hit.doc_id] = per_doc.get(hit.doc_id, 0) + 1
            hit.rank = len(out) + 1
            out.append(hit)
            if len(out) == k:
                break
        return out

    def _allowed(self, filter: Mapping[str, Any] | None, timings: dict[str, float]) -> np.ndarray | None:
        if filter is None or self._shared:
            return None
        t = time.perf_counter()
        allowed = self.store.filter_ids(filter)
        timings["filter"] = time.perf_counter() - t
        return allowed

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,
        mode: str = "dense",
        candidates: int | None = None,
        instruction: str | None = None,
        max_per_doc: int | None = None,
        min_score: float | None = None,
    ) -> SearchResults:
        """Search: the ``k`` best chunks for ``query``, best first.

        Args:
            query: the question.
            k: how many hits to return.
            filter: a metadata filter (see DESIGN.md "Filters"); ``k`` hits come back whenever ``k``
                chunks match it.
            mode: ``"dense"`` (cosine), ``"lexical"`` (BM25) or ``"hybrid"`` (reciprocal-rank fusion).
            candidates: first-stage depth; ``None`` is ``k`` without a reranker, ``max(50, k)`` with one.
            instruction: the query task of an instruction-aware embedder (Qwen3), for this call.
            max_per_doc: at most this many chunks of one document (diverse context for a prompt).
            min_score: drop hits whose final score is below this.

        Returns:
            :class:`SearchResults`: a list of :class:`Hit` with ``.query`` and ``.timings`` (seconds).

        Example:
            >>> hits = pipe.search("capital of France", k=3, filter={"lang": "en"})  # doctest: +SKIP
            >>> hits[0].doc_id, round(hits[0].score, 3), hits.timings["dense"]       # doctest: +SKIP
        """
        return self.search_many(
            [query],
            k,
            filter=filter,
            mode=mode,
            candidates=candidates,
            instruction=instruction,
            max_per_doc=max_per_doc,
            min_score=min_score,
        )[0]

    def search_many(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,
        mode: str = "dense",
        candidates: int | None = None,
        instruction: str | None = None,
        max_per_doc: int | None = None,
        min_score: float | None = None,
    ) -> list[SearchResults]:
        """Search several queries at once (queries are embedded in one batch); see :meth:`search`.

        Example:
            >>> [len(r) for r in pipe.search_many(["q1", "q2"], k=5)]  # doctest: +SKIP
            [5, 5]
        """
        queries = check_texts(queries, "queries")
        k, mode, n = self._validate(k, mode, candidates, max_per_doc, min_score)
        self._sync_index()
        shared: dict[str, float] = {}
        qvecs = None
        if mode != "lexical" and queries:
            t = time.perf_counter()
            qvecs = self._query_vectors(queries, instruction)
            shared["embed"] = (time.perf_counter() - t) / len(queries)
        allowed = self._allowed(filter, shared)
        fetch = n if max_per_doc is None else n * 4
        dense = None
        if qvecs is not None:
            t = time.perf_counter()
            dense = self._dense(qvecs, fetch, allowed, filter)
            shared["dense"] = (time.perf_counter() - t) / len(queries)
        results = []
        for i, query in enumerate(queries):
            timings = dict(shared)
            hits = self._retrieve(
                query, None if dense is None else dense[i], fetch, mode, allowed, filter, timings
            )
            scores = None
            if self.reranker is not None and hits:
                hits = hits[:n] if max_per_doc is None else hits
                t = time.perf_counter()
                scores = self.reranker.score(query, [h.text for h in hits])
                timings["rerank"] = time.perf_counter() - t
            final = self._finish(hits, k, max_per_doc, min_score, scores, timings)
            timings["total"] = sum(timings.values())
            results.append(SearchResults(final, query=query, timings=timings))
        return results

    async def asearch(
        self,
        query: str,
        k: int = 10,
        *,
        filter: Mapping[str, Any] | None = None,
        mode: str = "dense",
        candidates: int | None = None,
        instruction: str | None = None,
        max_per_doc: int | None = None,
        min_score: float | None = None,
    ) -> SearchResults:
        """Async twin of :meth:`search` for chatbot backends: never blocks the event loop.

        Remote embedders and rerankers with async clients (``aembed_queries``, ``ascore``) are awaited
        directly; local models and the index run in a worker thread.

        Example:
            >>> hits = await pipe.asearch("capital of France", k=3)  # doctest: +SKIP
        """
        check_text(query, "query")
        k, mode, n = self._validate(k, mode, candidates, max_per_doc, min_score)
        timings: dict[str, float] = {}
        qvec = None
        if mode != "lexical":
            t = time.perf_counter()
            qvec = await self._aquery_vector(query, instruction)
            timings["embed"] = time.perf_counter() - t

        def first_stage() -> list[Hit]:
            self._sync_index()
            allowed = self._allowed(filter, timings)
            fetch = n if max_per_doc is None else n * 4
            dense = None
            if qvec is not None:
                t = time.perf_counter()
                dense = self._dense(qvec[None, :], fetch, allowed, filter)[0]
                timings["dense"] = time.perf_counter() - t
            return self._retrieve(query, dense, fetch, mode, allowed, filter, timings)

        hits = await asyncio.to_thread(first_stage)
        scores = None
        if self.reranker is not None and hits:
            hits = hits[:n] if max_per_doc is None else hits
            t = time.perf_counter()
            texts = [h.text for h in hits]
            ascore = getattr(self.reranker, "ascore", None)
            if callable(ascore):
                scores = await ascore(query, texts)
            else:
                scores = await asyncio.to_thread(self.reranker.score, query, texts)
            timings["rerank"] = time.perf_counter() - t
        final = self._finish(hits, k, max_per_doc, min_score, scores, timings)
        timings["total"] = sum(timings.values())
        return SearchResults(final, query=query, timings=timings)

    async def _aquery_vector(self, query: str, instruction: str | None) -> np.ndarray:
        with self._cache_lock:
            cached = self._query_cache.get((query, instruction))
        if cached is not None:
            return cached
        aembed = getattr(self.embedder, "aembed_queries", None)
        kwargs = {} if instruction is None else {"instruction": instruction}
        if callable(aembed):
            vectors = await aembed([query], **kwargs)
        else:
            vectors = await asyncio.to_thread(self.embedder.embed_queries, [query], **kwargs)
        vec = self._check_embeddings(np.asarray(vectors, np.float32), 1)[0]
        self._remember({query: vec}, instruction)
        return vec

    def rerank(self, query: str, hits: Sequence[Hit] | Sequence[str], *, k: int | None = None) -> list[Hit]:
        """Rerank hits (or texts) with this pipeline's reranker; see :func:`ragkit.rerankers.rerank`."""
        if self.reranker is None:
            raise ConfigError("this pipeline has no reranker")
        return _rerank(self.reranker, query, hits, k=k)

    def expand(self, hits: Sequence[Hit], *, window: int = 1) -> list[Hit]:
        """Each hit merged with up to ``window`` neighbouring chunks on each side (offsets kept).

        Useful to give a language model more context than one chunk. Scores and ranks are kept;
        the text is the document's text from the first to the last merged chunk.

        Example:
            >>> wide = pipe.expand(pipe.search("refund policy", k=3), window=1)  # doctest: +SKIP
        """
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise InvalidInputError(f"window must be an int >= 0, got {window!r}")
        out = []
        for hit in hits:
            if not isinstance(hit, Hit):
                raise InputTypeError(f"expand() takes hits, got {type(hit).__name__}")
            n = int(hit.id.rsplit("#", 1)[1])
            doc = self.store.get_document(hit.doc_id)
            spans = dict(self.store.chunk_vids(hit.doc_id))
            near = [m for m in range(n - window, n + window + 1) if m in spans]
            if doc is None or not near:
                out.append(hit.model_copy())
                continue
            chunks = self.store.get_chunks([spans[m] for m in near])
            start = min(c.start for c in chunks.values())
            end = max(c.end for c in chunks.values())
            out.append(hit.model_copy(update={"text": doc.text[start:end], "start": start, "end": end}))
        return out

    # ------------------------------------------------------------------------------------ persistence

    @property
    def path(self) -> Path | None:
        """The directory this pipeline is bound to (after ``save(path)`` or ``load``), else ``None``."""
        return self._directory

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Save to a directory and bind the pipeline to it; later ``save()`` calls write there.

        The manifest is written last (temp file, fsync, rename): it is the commit point, so a crash
        mid-save leaves the previous save loadable. Derived files carry the store generation in their
        names, so a new save never overwrites what the current manifest points to.

        Example:
            >>> pipe.save("my-index/")  # doctest: +SKIP
            PosixPath('my-index')
        """
        self._check_writable()
        if path is None:
            if self._directory is None:
                raise ConfigError("save() needs a path the first time")
            target = self._directory
        else:
            target = Path(path)
        target.mkdir(parents=True, exist_ok=True)
        if self._shared:
            return self._save_shared(target)
        if target.resolve() != (self._directory.resolve() if self._directory else None):
            self._rebind(target)
        _hook("bound")
        store = self.store
        store.checkpoint()
        _fsync_path(target / STORE_FILE)
        self._sync_index()
        files: dict[str, dict[str, Any]] = {}
        with self._lock.read():
            generation = store.generation
            counts = {"documents": store.count_documents(), "chunks": store.count_chunks()}
            index_name = f"vectors-{generation}.faiss"
            self.index.save(target / index_name)
        _hook("index-saved")
        files.update(self._describe_files(target, index_name))
        lexical_dir = None
        if self.lexical:
            bm25 = self._lexical_index()
            lexical_dir = f"lexical-{generation}"
            if (target / lexical_dir).exists():
                shutil.rmtree(target / lexical_dir)
            bm25.save(target / lexical_dir)
            files.update(self._describe_files(target, lexical_dir))
        _hook("lexical-saved")
        self._commit_manifest(
            target,
            generation=generation,
            counts=counts,
            index={"spec": _component_spec(self.index), "file": index_name},
            lexical={"dir": lexical_dir} if lexical_dir else None,
            files=files,
        )
        _hook("committed")
        self._remove_stale_files(target, set(files))
        return target

    def _save_shared(self, target: Path) -> Path:
        """With a shared backend the data lives there: the directory only records how to reach it."""
        self._commit_manifest(
            target,
            generation=self.store.generation,
            counts={"documents": self.store.count_documents(), "chunks": self.store.count_chunks()},
            index={"spec": _component_spec(self.index), "file": None, "shared": True},
            lexical=None,
            files={},
        )
        self._directory = target
        return target

    def _commit_manifest(self, target: Path, **entries: Any) -> None:
        """Write the manifest (temp file, fsync, rename): the commit point of a save."""
        manifest = {
            "format_version": FORMAT_VERSION,
            "ragkit_version": _ragkit_version(),
            "fingerprint": _canonical(self.embedder.fingerprint),
            "embedder": _component_spec(self.embedder),
            "reranker": _component_spec(self.reranker) if self.reranker is not None else None,
            "chunker": _component_spec(self.chunker),
            "saved_at": time.time(),
            **entries,
        }
        tmp = target / (MANIFEST + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _hook("manifest-written")
        os.replace(tmp, target / MANIFEST)
        _fsync_path(target)

    @staticmethod
    def _describe_files(root: Path, name: str) -> dict[str, dict[str, Any]]:
        base = root / name
        paths = [p for p in sorted(base.rglob("*")) if p.is_file()] if base.is_dir() else []
        if base.is_file():
            paths.append(base)
        paths += [p for p in sorted(root.glob(name + ".*")) if p.is_file() and p != base]
        out = {}
        for p in paths:
            _fsync_path(p)
            out[p.relative_to(root).as_posix()] = {"sha256": _sha256_file(p), "size": p.stat().st_size}
        return out

    @staticmethod
    def _remove_stale_files(root: Path, keep: set[str]) -> None:
        for p in list(root.iterdir()):
            if p.name.startswith(("vectors-", "lexical-")):
                inside = {q.relative_to(root).as_posix() for q in p.rglob("*")} if p.is_dir() else {p.name}
                if not inside & keep:
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
        (root / (MANIFEST + ".tmp")).unlink(missing_ok=True)

    def _rebind(self, target: Path) -> None:
        """Move the store to ``target`` (a consistent copy) and take that directory's write lock."""
        lock = _DirLock(target)
        lock.acquire()
        try:
            tmp = target / (STORE_FILE + ".tmp")
            tmp.unlink(missing_ok=True)
            self.store.backup_to(tmp)
            _fsync_path(tmp)
            for suffix in ("-wal", "-shm"):
                (target / (STORE_FILE + suffix)).unlink(missing_ok=True)
            os.replace(tmp, target / STORE_FILE)
            _fsync_path(target)
            new_store = SQLiteStore(target / STORE_FILE)
        except BaseException:
            lock.release()
            raise
        old_store, old_lock, old_tmp = self.store, self._dir_lock, self._tmpdir
        self.store, self._dir_lock, self._directory, self._tmpdir = new_store, lock, target, None
        old_store.close()
        if old_lock is not None:
            old_lock.release()
        if old_tmp is not None:
            old_tmp.cleanup()

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        embedder: Any = None,
        *,
        reranker: Any = None,
        read_only: bool = False,
        **kwargs: Any,
    ) -> Pipeline:
        """Open a saved pipeline and bind to its directory.

        Checks the manifest's counts and checksums and fails loudly (:class:`IntegrityError`) on any
        mismatch; rebuilds a derived index that is missing, or stale because batches were committed to
        the store after the last save. Refuses an ``embedder`` whose fingerprint differs from the one
        the vectors were made with (:class:`IndexMismatchError`).

        Args:
            path: the directory given to :meth:`save`.
            embedder: ``None`` rebuilds the embedder from the manifest.
            reranker: optional; ``None`` rebuilds the saved one, if any. Pass ``False`` for none.
            read_only: open without the write lock; any number of readers may share a directory with
                one writer. Call :meth:`reload` to see the writer's later saves.
            **kwargs: other :class:`Pipeline` options (``query_cache_size``, ``rrf_k``, ...).

        Example:
            >>> pipe = Pipeline.load("my-index/", read_only=True)  # doctest: +SKIP
        """
        root = Path(path)
        manifest = cls._read_manifest(root)
        if embedder is None:
            if not manifest.get("embedder"):
                raise ConfigError("the manifest does not say how to rebuild the embedder: pass embedder=")
            embedder = build_from_spec(manifest["embedder"])
        if reranker is None and manifest.get("reranker"):
            reranker = build_from_spec(manifest["reranker"])
        index_info = manifest.get("index") or {}
        if index_info.get("shared"):
            # A shared backend (PostgreSQL): any number of writers, no directory lock, no local files.
            saved = dict(index_info["spec"])
            saved["spec"] = {**saved.get("spec", {}), "read_only": read_only}
            store = kwargs.pop("index", None) or build_from_spec(saved)
            self = cls.__new__(cls)
            self._init_loaded(
                root, manifest, embedder, reranker or None, store, read_only, None, {**kwargs, "index": store}
            )
            return self
        lock = None
        if not read_only:
            lock = _DirLock(root)
            lock.acquire()
        try:
            store = SQLiteStore(root / STORE_FILE, read_only=read_only)
            self = cls.__new__(cls)
            self._init_loaded(root, manifest, embedder, reranker or None, store, read_only, lock, kwargs)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return self

    @staticmethod
    def _read_manifest(root: Path) -> dict[str, Any]:
        try:
            manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise IntegrityError(f"{root} holds no {MANIFEST}: not a saved ragkit pipeline") from e
        except (OSError, ValueError) as e:
            raise IntegrityError(f"{root / MANIFEST} is unreadable: {e}") from e
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        if not isinstance(version, int):
            raise IntegrityError(f"{root / MANIFEST} has no format_version")
        if version > FORMAT_VERSION:
            raise IntegrityError(
                f"{root} was saved by a newer ragkit (format {version}, this one reads {FORMAT_VERSION}): "
                "upgrade ragkit to load it"
            )
        if version < 1:
            raise IntegrityError(f"{root}: format {version} predates ragkit 0.1 and cannot be migrated")
        return manifest

    def _init_loaded(
        self,
        root: Path,
        manifest: dict[str, Any],
        embedder: Any,
        reranker: Any,
        store: SQLiteStore,
        read_only: bool,
        lock: _DirLock | None,
        kwargs: dict[str, Any],
    ) -> None:
        index = kwargs.pop("index", None)
        if index is None:
            spec = (manifest.get("index") or {}).get("spec")
            index = build_from_spec(spec) if spec else None
        chunker = kwargs.pop("chunker", None)
        if chunker is None and manifest.get("chunker"):
            chunker = _rebuild_chunker(manifest["chunker"], embedder)
        kwargs.setdefault("lexical", manifest.get("lexical") is not None or _shared_backend(manifest))
        self.read_only = read_only
        store.integrity_check()
        stored_fp = store.get_meta("fingerprint")
        if stored_fp is not None and stored_fp != manifest.get("fingerprint"):
            raise IntegrityError(
                "the manifest's fingerprint differs from the store's: the files do not belong together"
            )
        generation = store.generation
        if generation < manifest["generation"]:
            raise IntegrityError(
                f"the store (generation {generation}) is older than the manifest ({manifest['generation']}): "
                "the store file was replaced or rolled back"
            )
        if generation == manifest["generation"]:
            counts = {"documents": store.count_documents(), "chunks": store.count_chunks()}
            if counts != manifest["counts"]:
                raise IntegrityError(
                    f"counts differ: the store holds {counts}, the manifest says {manifest['counts']}"
                )
        Pipeline.__init__(
            self, embedder, reranker=reranker, chunker=chunker, index=index, store=store, **kwargs
        )
        self._directory = root
        self._dir_lock = lock
        self._load_derived(root, manifest)

    def _load_derived(self, root: Path, manifest: dict[str, Any]) -> None:
        """Load the saved derived indexes when current and intact; otherwise rebuild them lazily."""
        if self._shared:
            return
        generation = self.store.generation
        files: dict[str, dict[str, Any]] = manifest.get("files", {})
        current = generation == manifest["generation"]
        index_file = (manifest.get("index") or {}).get("file")

        def verified(prefix: str) -> bool:
            names = [
                n for n in files if n == prefix or n.startswith(prefix + ".") or n.startswith(prefix + "/")
            ]
            if not names:
                return False
            missing = [n for n in names if not (root / n).is_file()]
            if missing:
                logger.warning(
                    "%s: derived file %s is missing; rebuilding it from the store", root, missing[0]
                )
                return False
            for n in names:
                p = root / n
                if p.stat().st_size != files[n]["size"] or _sha256_file(p) != files[n]["sha256"]:
                    raise IntegrityError(f"{p} fails its checksum: the file was truncated or edited")
            return True

        if current and index_file and verified(index_file):
            with self._lock.write():
                self.index.load(root / index_file)
                if len(self.index) != manifest["counts"]["chunks"]:
                    raise IntegrityError(
                        f"{index_file} holds {len(self.index)} vectors, "
                        f"the manifest says {manifest['counts']['chunks']}"
                    )
                self._index_generation = generation
        else:
            if not current:
                logger.info("%s: the store moved on since the last save; rebuilding the vector index", root)
            self._index_generation = -1
            self._sync_index()
        lexical = manifest.get("lexical")
        if self.lexical and current and lexical and verified(lexical["dir"]):
            from ragkit.lexical import BM25Index

            bm25 = BM25Index()
            bm25.load(root / lexical["dir"])
            self._bm25, self._bm25_generation = bm25, generation

    def reload(self) -> None:
        """See the latest save of the directory (for read-only readers beside a writer).

        Example:
            >>> reader.reload()  # doctest: +SKIP
        """
        if self._directory is None:
            raise ConfigError("reload() needs a pipeline loaded from or saved to a directory")
        manifest = self._read_manifest(self._directory)
        if manifest.get("fingerprint") != _canonical(self.embedder.fingerprint):
            raise IndexMismatchError("the directory was reindexed with another embedder; load it again")
        with self._cache_lock:
            self._query_cache.clear()
        self._bm25_generation = -1
        self._load_derived(self._directory, manifest)
