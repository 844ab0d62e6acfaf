"""Retrieval: the search side of :class:`~ragkit.Pipeline` (query embedding and its cache, first-stage
search on the backend, fusion, reranking, per-document caps, context expansion).

:class:`Retrieval` is a mixin: it reads ``embedder``, ``reranker``, ``backend``, ``rrf_k`` and the
query cache that :class:`~ragkit.Pipeline` sets up, and holds no state of its own.

Example:
    >>> hits = pipe.search("capital of France", k=3, filter={"lang": "en"})  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ragkit.backends.base import check_vectors
from ragkit.embedders.base import check_texts
from ragkit.errors import ConfigError, InputTypeError, InvalidInputError
from ragkit.filters import Node, parse_filter
from ragkit.rerankers.base import rerank as _rerank
from ragkit.types import Hit, SearchResults, check_text

__all__ = ["MODES", "Retrieval"]

MODES = ("dense", "lexical", "hybrid")


def _check_k(k: Any, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"{name} must be a positive int, got {k!r}")
    return int(k)


class Retrieval:
    """Search methods of :class:`~ragkit.Pipeline` (see there for the public API)."""

    embedder: Any
    reranker: Any
    backend: Any
    rrf_k: int
    query_cache_size: int
    _query_cache: OrderedDict[tuple[str, str | None], np.ndarray]
    _cache_lock: threading.Lock

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
            fresh = dict(zip(unique, self._check_queries(vectors, unique), strict=True))
            self._remember(fresh, instruction)
            out = [fresh[q] if v is None else v for q, v in zip(queries, out, strict=True)]
        return np.stack(out) if out else np.zeros((0, int(self.embedder.dim)), np.float32)

    def _check_queries(self, vectors: Any, queries: list[str]) -> np.ndarray:
        """Validated before anything is cached: a failed query vector never enters the cache."""
        names = [f"query {q[:40]!r}" for q in queries]
        return check_vectors(vectors, dim=int(self.embedder.dim), names=names)

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
        if mode != "dense" and not getattr(self.backend, "lexical", True):
            raise ConfigError(
                f"mode={mode!r} needs a lexical index: this backend keeps none (LocalBackend(lexical=False))"
            )
        if candidates is None:
            n = max(50, k) if self.reranker is not None else k
        else:
            n = max(_check_k(candidates, "candidates"), k)
        if max_per_doc is not None:
            _check_k(max_per_doc, "max_per_doc")
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))):
            raise InvalidInputError(f"min_score must be a number, got {min_score!r}")
        return k, mode, n

    def _retrieve(
        self,
        query: str,
        dense: tuple[np.ndarray, np.ndarray] | None,
        n: int,
        mode: str,
        node: Node | None,
        timings: dict[str, float],
    ) -> list[Hit]:
        """First-stage retrieval: ``n`` candidates as hits (before reranking and per-doc caps)."""
        lexical: tuple[np.ndarray, np.ndarray] | None = None
        if mode in ("lexical", "hybrid"):
            t = time.perf_counter()
            lexical = self.backend.lexical_search(query, n, filter=node)
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
        chunks = self.backend.get_chunks([vid for vid, _ in order])
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
            filter: a metadata filter (:mod:`ragkit.filters`); ``k`` hits come back whenever ``k``
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
        node = parse_filter(filter)
        shared: dict[str, float] = {}
        qvecs = None
        if mode != "lexical" and queries:
            t = time.perf_counter()
            qvecs = self._query_vectors(queries, instruction)
            shared["embed"] = (time.perf_counter() - t) / len(queries)
        fetch = n if max_per_doc is None else n * 4
        dense = None
        if qvecs is not None:
            t = time.perf_counter()
            dense = self.backend.dense_search(qvecs, fetch, filter=node)
            shared["dense"] = (time.perf_counter() - t) / len(queries)
        results = []
        for i, query in enumerate(queries):
            timings = dict(shared)
            hits = self._retrieve(query, None if dense is None else dense[i], fetch, mode, node, timings)
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
        node = parse_filter(filter)
        timings: dict[str, float] = {}
        qvec = None
        if mode != "lexical":
            t = time.perf_counter()
            qvec = await self._aquery_vector(query, instruction)
            timings["embed"] = time.perf_counter() - t

        def first_stage() -> list[Hit]:
            fetch = n if max_per_doc is None else n * 4
            dense = None
            if qvec is not None:
                t = time.perf_counter()
                dense = self.backend.dense_search(qvec[None, :], fetch, filter=node)[0]
                timings["dense"] = time.perf_counter() - t
            return self._retrieve(query, dense, fetch, mode, node, timings)

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
        vec = self._check_queries(vectors, [query])[0]
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
            doc = self.backend.get_document(hit.doc_id)
            spans = dict(self.backend.chunk_vids(hit.doc_id))
            near = [m for m in range(n - window, n + window + 1) if m in spans]
            if doc is None or not near:
                out.append(hit.model_copy())
                continue
            chunks = self.backend.get_chunks([spans[m] for m in near])
            start = min(c.start for c in chunks.values())
            end = max(c.end for c in chunks.values())
            out.append(hit.model_copy(update={"text": doc.text[start:end], "start": start, "end": end}))
        return out
