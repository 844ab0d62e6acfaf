"""Retrieval: the search side of :class:`~ragkit.Pipeline` (query embedding and its cache, first-stage
search on the backend, fusion, diversity, reranking, per-document caps, context expansion).

The stages of one search, in order: dense and/or lexical first stage (``candidates`` per side, the
metadata filter applied inside the backend) → fusion in hybrid mode (:mod:`ragkit.fusion`) →
maximal marginal relevance when ``diversity`` is set (:mod:`ragkit.diversity`) → the reranker →
``max_per_doc`` and ``min_score`` → the top ``k``.

:class:`Retrieval` is a mixin: it reads ``embedder``, ``reranker``, ``backend``, ``rrf_k``, ``fusion``,
``alpha`` and the query cache that :class:`~ragkit.Pipeline` sets up, and holds no state of its own.

Example:
    >>> hits = pipe.search("capital of France", k=3, filter={"lang": "en"})  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragkit.backends.base import check_vectors
from ragkit.diversity import check_diversity, mmr
from ragkit.embedders.base import check_texts
from ragkit.errors import ConfigError, InputTypeError, InvalidInputError
from ragkit.filters import Node, parse_filter
from ragkit.fusion import FUSIONS, check_alpha, convex_fuse, rrf_fuse
from ragkit.rerankers.base import rerank as _rerank
from ragkit.types import Hit, SearchResults, check_text

__all__ = ["HYBRID_DEPTH", "MODES", "Retrieval", "check_fusion"]

MODES = ("dense", "lexical", "hybrid")

#: Hybrid search reads at least this many hits from each side by default (``candidates=None``), and
#: keeps the usual number after fusion: fusing two lists of 100 beat two of 30 on the tuning half of
#: CISI (benchmarks/quality.py --sweep), and the wider read costs little next to query embedding.
HYBRID_DEPTH = 100


def _check_k(k: Any, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"{name} must be a positive int, got {k!r}")
    return int(k)


def check_fusion(fusion: Any) -> str:
    """A fusion name of :data:`ragkit.fusion.FUSIONS`, or an :class:`InvalidInputError`."""
    if fusion not in FUSIONS:
        raise InvalidInputError(f"unknown fusion {fusion!r}: use one of {', '.join(map(repr, FUSIONS))}")
    return str(fusion)


@dataclass(frozen=True)
class _Plan:
    """One search call's validated options."""

    k: int
    mode: str
    n: int  # the candidates kept after the first stage (and fusion): what MMR and the reranker see
    depth: int  # first-stage hits read from each side (n, or more for hybrid's default)
    node: Node | None
    max_per_doc: int | None
    min_score: float | None
    diversity: float | None
    fusion: str
    alpha: float

    # A per-document cap drops hits after the first stage, so both read deeper with one.

    @property
    def fetch(self) -> int:
        return self.depth if self.max_per_doc is None else self.depth * 4

    @property
    def pool(self) -> int:
        return self.n if self.max_per_doc is None else self.n * 4


class Retrieval:
    """Search methods of :class:`~ragkit.Pipeline` (see there for the public API)."""

    embedder: Any
    reranker: Any
    backend: Any
    rrf_k: int
    fusion: str
    alpha: float
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

    def _plan(
        self,
        k: Any,
        mode: Any,
        filter: Any,
        candidates: Any,
        max_per_doc: Any,
        min_score: Any,
        diversity: Any,
        fusion: Any,
        alpha: Any,
    ) -> _Plan:
        k = _check_k(k)
        if mode not in MODES:
            raise InvalidInputError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        if mode != "dense" and not getattr(self.backend, "lexical", True):
            raise ConfigError(
                f"mode={mode!r} needs a lexical index: this backend keeps none (LocalBackend(lexical=False))"
            )
        diversity = check_diversity(diversity)
        if candidates is None:
            wide = self.reranker is not None or diversity is not None
            n = max(50, k) if wide else k
            depth = max(HYBRID_DEPTH, n) if mode == "hybrid" else n
        else:
            n = depth = max(_check_k(candidates, "candidates"), k)
        if max_per_doc is not None:
            max_per_doc = _check_k(max_per_doc, "max_per_doc")
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))):
            raise InvalidInputError(f"min_score must be a number, got {min_score!r}")
        return _Plan(
            k=k,
            mode=mode,
            n=n,
            depth=depth,
            node=parse_filter(filter),
            max_per_doc=max_per_doc,
            min_score=None if min_score is None else float(min_score),
            diversity=diversity,
            fusion=check_fusion(self.fusion if fusion is None else fusion),
            alpha=check_alpha(self.alpha if alpha is None else alpha),
        )

    def _retrieve(
        self,
        query: str,
        dense: tuple[np.ndarray, np.ndarray] | None,
        plan: _Plan,
        timings: dict[str, float],
    ) -> list[Hit]:
        """First stage: fused (hybrid) candidates as hits, then MMR when ``plan.diversity`` is set.

        Returns what the reranker scores next (or, without one, what :meth:`_finish` cuts to ``k``).
        """
        n, mode = plan.pool, plan.mode
        lexical: tuple[np.ndarray, np.ndarray] | None = None
        if mode in ("lexical", "hybrid"):
            t = time.perf_counter()
            lexical = self.backend.lexical_search(query, plan.fetch, filter=plan.node)
            timings["lexical"] = time.perf_counter() - t
        t = time.perf_counter()
        dense_map = {} if dense is None else {int(i): float(s) for s, i in zip(*dense, strict=True)}
        lexical_map = {} if lexical is None else {int(i): float(s) for s, i in zip(*lexical, strict=True)}
        if mode == "hybrid":
            if plan.fusion == "rrf":
                order = rrf_fuse([list(dense_map), list(lexical_map)], rrf_k=self.rrf_k)[:n]
            else:
                order = convex_fuse([dense_map, lexical_map], [plan.alpha, 1.0 - plan.alpha])[:n]
        elif mode == "dense":
            order = list(dense_map.items())[:n]
        else:
            order = list(lexical_map.items())[:n]
        chunks = self.backend.get_chunks([vid for vid, _ in order])
        hits, vids = [], []
        for vid, score in order:
            chunk = chunks.get(vid)
            if chunk is None:  # deleted between the index search and this read
                continue
            vids.append(vid)
            hits.append(
                Hit(
                    **chunk.model_dump(),
                    score=score,
                    dense_score=dense_map.get(vid),
                    lexical_score=lexical_map.get(vid),
                    fused_score=score if mode == "hybrid" else None,
                )
            )
        timings["fetch"] = time.perf_counter() - t
        if plan.diversity is not None and hits:
            t = time.perf_counter()
            hits = self._diversify(hits, vids, plan)
            timings["diversity"] = time.perf_counter() - t
        return hits

    def _diversify(self, hits: list[Hit], vids: list[int], plan: _Plan) -> list[Hit]:
        """Maximal marginal relevance over the candidates' stored vectors (every mode has them).

        Without a reranker, the MMR order of the candidates (``k`` of them, or all when
        ``max_per_doc`` will drop some); with one, the first ``k`` of that order that pass
        ``max_per_doc``, which the reranker then orders.
        """
        vectors = self.backend.get_vectors(vids)
        kept = [(h, vectors[v]) for h, v in zip(hits, vids, strict=True) if v in vectors]
        if not kept:  # every candidate deleted since the first stage read it
            return []
        picks = plan.k if plan.max_per_doc is None else len(kept)
        relevance = [h.score for h, _ in kept]
        order = mmr(relevance, np.stack([v for _, v in kept]), picks, diversity=plan.diversity or 0.0)
        ranked = [kept[i][0] for i in order]
        if self.reranker is None:
            return ranked
        return self._cap(ranked, plan.k, plan.max_per_doc, None)

    @staticmethod
    def _cap(hits: list[Hit], k: int, max_per_doc: int | None, min_score: float | None) -> list[Hit]:
        """The first ``k`` hits that pass ``min_score`` and the per-document cap, ranked from 1."""
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

    def _finish(self, hits: list[Hit], plan: _Plan, scores: np.ndarray | None) -> list[Hit]:
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
        return self._cap(hits, plan.k, plan.max_per_doc, plan.min_score)

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
        diversity: float | None = None,
        fusion: str | None = None,
        alpha: float | None = None,
    ) -> SearchResults:
        """Search: the ``k`` best chunks for ``query``, best first.

        Args:
            query: the question.
            k: how many hits to return.
            filter: a metadata filter (:mod:`ragkit.filters`); ``k`` hits come back whenever ``k``
                chunks match it.
            mode: ``"dense"`` (cosine), ``"lexical"`` (BM25) or ``"hybrid"`` (both, fused).
            candidates: first-stage depth per side and the candidates kept after fusion; ``None``
                is ``k``, or ``max(50, k)`` with a reranker or ``diversity``, and hybrid mode then
                reads at least :data:`HYBRID_DEPTH` (100) hits from each side before fusing.
            instruction: the query task of an instruction-aware embedder (Qwen3), for this call.
            max_per_doc: at most this many chunks of one document (applied after diversity).
            min_score: drop hits whose final score is below this.
            diversity: λ in [0, 1] of maximal marginal relevance over the candidates' stored vectors,
                in every mode; ``None`` or 0 is the relevance order, larger is more diverse. It runs
                after fusion and before the reranker: with a reranker, MMR keeps ``k`` candidates and
                the reranker orders those. Hits then come in MMR order, each keeping its own score.
            fusion: hybrid mode's fusion, ``"rrf"`` or ``"convex"`` (:mod:`ragkit.fusion`);
                ``None`` is the pipeline's ``fusion``.
            alpha: convex fusion's weight of the dense side in [0, 1]; ``None`` is the pipeline's.

        Returns:
            :class:`SearchResults`: a list of :class:`Hit` with ``.query`` and ``.timings`` (seconds).

        Example:
            >>> hits = pipe.search("capital of France", k=3, filter={"lang": "en"})  # doctest: +SKIP
            >>> hits[0].doc_id, round(hits[0].score, 3), hits.timings["dense"]       # doctest: +SKIP
            >>> pipe.search("refunds", mode="hybrid", fusion="convex", diversity=0.3)  # doctest: +SKIP
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
            diversity=diversity,
            fusion=fusion,
            alpha=alpha,
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
        diversity: float | None = None,
        fusion: str | None = None,
        alpha: float | None = None,
    ) -> list[SearchResults]:
        """Search several queries at once (queries are embedded in one batch); see :meth:`search`.

        Example:
            >>> [len(r) for r in pipe.search_many(["q1", "q2"], k=5)]  # doctest: +SKIP
            [5, 5]
        """
        queries = check_texts(queries, "queries")
        plan = self._plan(k, mode, filter, candidates, max_per_doc, min_score, diversity, fusion, alpha)
        shared: dict[str, float] = {}
        qvecs = None
        if plan.mode != "lexical" and queries:
            t = time.perf_counter()
            qvecs = self._query_vectors(queries, instruction)
            shared["embed"] = (time.perf_counter() - t) / len(queries)
        dense = None
        if qvecs is not None:
            t = time.perf_counter()
            dense = self.backend.dense_search(qvecs, plan.fetch, filter=plan.node)
            shared["dense"] = (time.perf_counter() - t) / len(queries)
        results = []
        for i, query in enumerate(queries):
            timings = dict(shared)
            hits = self._retrieve(query, None if dense is None else dense[i], plan, timings)
            scores = None
            if self.reranker is not None and hits:
                t = time.perf_counter()
                scores = self.reranker.score(query, [h.text for h in hits])
                timings["rerank"] = time.perf_counter() - t
            final = self._finish(hits, plan, scores)
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
        diversity: float | None = None,
        fusion: str | None = None,
        alpha: float | None = None,
    ) -> SearchResults:
        """Async twin of :meth:`search` for chatbot backends: never blocks the event loop.

        Remote embedders and rerankers with async clients (``aembed_queries``, ``ascore``) are awaited
        directly; local models and the index run in a worker thread.

        Example:
            >>> hits = await pipe.asearch("capital of France", k=3)  # doctest: +SKIP
        """
        check_text(query, "query")
        plan = self._plan(k, mode, filter, candidates, max_per_doc, min_score, diversity, fusion, alpha)
        timings: dict[str, float] = {}
        qvec = None
        if plan.mode != "lexical":
            t = time.perf_counter()
            qvec = await self._aquery_vector(query, instruction)
            timings["embed"] = time.perf_counter() - t

        def first_stage() -> list[Hit]:
            dense = None
            if qvec is not None:
                t = time.perf_counter()
                dense = self.backend.dense_search(qvec[None, :], plan.fetch, filter=plan.node)[0]
                timings["dense"] = time.perf_counter() - t
            return self._retrieve(query, dense, plan, timings)

        hits = await asyncio.to_thread(first_stage)
        scores = None
        if self.reranker is not None and hits:
            t = time.perf_counter()
            texts = [h.text for h in hits]
            ascore = getattr(self.reranker, "ascore", None)
            if callable(ascore):
                scores = await ascore(query, texts)
            else:
                scores = await asyncio.to_thread(self.reranker.score, query, texts)
            timings["rerank"] = time.perf_counter() - t
        final = self._finish(hits, plan, scores)
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
        the text is the document's text from the first to the last merged chunk. ``location`` and
        ``header`` stay those of the hit's own chunk (where the match is).

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
