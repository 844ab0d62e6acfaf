"""LangChain adapters: a ragkit pipeline, embedder or reranker where LangChain expects its own types.

Install with ``pip install 'ragkit[langchain]'`` (``langchain-core``, tested on 1.x; LangChain's
standard test suites run against these classes in CI).

- :class:`RagkitEmbeddings` is an ``Embeddings``: any ragkit embedder (Qwen3-Embedding with its
  query instruction, an OpenAI-compatible API, your own); :class:`LangChainEmbedder` goes the other
  way, any LangChain ``Embeddings`` as a ragkit embedder.
- :class:`RagkitVectorStore` is a ``VectorStore`` over a :class:`~ragkit.Pipeline`: add, delete (by
  ids or by metadata filter), get by ids, similarity search with and without scores, by vector,
  maximal marginal relevance, filters (:mod:`ragkit.filters`), async.
- :class:`RagkitRetriever` is a ``BaseRetriever`` over a pipeline: every option of
  ``Pipeline.search`` (``k``, ``mode``, ``filter``, ``diversity``, ...), reranked by the pipeline's
  reranker or one of its own; hits come with their ids, offsets and scores in the metadata.
- :class:`RagkitReranker` is a ``BaseDocumentCompressor`` that scores documents with a ragkit
  reranker (Qwen3-Reranker, a remote rerank API) and keeps the ``top_n`` best.

Documents and chunks: a LangChain document id is a ragkit document id. Ragkit splits long texts into
chunks, and a search returns chunks: each result is a LangChain ``Document`` whose ``page_content``
is the chunk's text and whose ``id`` is its document's id, so a document longer than one chunk can
appear several times in one result list (``max_per_doc=1`` prevents it); ``ragkit_chunk_id``,
``ragkit_start`` and ``ragkit_end`` tell the chunks apart (:func:`hit_to_document`).
``get_by_ids`` returns whole documents.

Example:
    >>> from langchain_core.embeddings import DeterministicFakeEmbedding   # doctest: +SKIP
    >>> from ragkit.integrations.langchain import RagkitVectorStore       # doctest: +SKIP
    >>> store = RagkitVectorStore.from_texts(["Paris is in France.", "Berlin is in Germany."],
    ...                                      DeterministicFakeEmbedding(size=32), ids=["fr", "de"])
    ... # doctest: +SKIP
    >>> [d.id for d in store.similarity_search("Paris is in France.", k=1)]  # doctest: +SKIP
    ['fr']
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit.backends.base import check_vectors
from ragkit.diversity import check_diversity, mmr
from ragkit.embedders.base import check_texts, l2_normalize
from ragkit.errors import ConfigError, InvalidInputError
from ragkit.filters import parse_filter
from ragkit.integrations._langchain_base import (
    _SEARCH_OPTIONS,
    METADATA_PREFIX,
    LangChainEmbedder,
    RagkitEmbeddings,
    RagkitReranker,
    RagkitRetriever,
    _cap,
    _check_mode,
    _check_pipeline,
    hit_to_document,
    to_ragkit_embedder,
)
from ragkit.types import Document, Hit, check_text

try:
    from langchain_core.documents import Document as LCDocument
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
except ImportError:
    require("langchain_core", purpose="ragkit.integrations.langchain")
    raise

__all__ = [
    "LangChainEmbedder",
    "METADATA_PREFIX",
    "RagkitEmbeddings",
    "RagkitReranker",
    "RagkitRetriever",
    "RagkitVectorStore",
    "hit_to_document",
]


def _search_kwargs(kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(kwargs) - set(_SEARCH_OPTIONS))
    if unknown:
        raise TypeError(f"{where} got unexpected keyword arguments: {', '.join(unknown)}")
    return kwargs


def _to_lc(doc: Document) -> LCDocument:
    return LCDocument(id=doc.id, page_content=doc.text, metadata=dict(doc.metadata))


class RagkitVectorStore(VectorStore):
    """A LangChain ``VectorStore`` over a ragkit :class:`~ragkit.Pipeline`.

    Give a pipeline, or an ``embedding`` (any LangChain ``Embeddings``, wrapped as a
    :class:`LangChainEmbedder`; a :class:`RagkitEmbeddings` or a ragkit embedder, used natively) and
    the options of a new :class:`~ragkit.Pipeline` (``backend``, ``reranker``, ``chunker``, ...).

    Adding is an upsert by id (ids left out get a random UUID, as in other LangChain stores);
    searching returns one ``Document`` per chunk (see :mod:`ragkit.integrations.langchain`), with the
    document's stored metadata as it was added, as LangChain's vector-store contract has it;
    ``hit_metadata=True`` adds the ``ragkit_`` keys of :func:`hit_to_document`. Search methods take
    ``filter=`` (:mod:`ragkit.filters`: ``{"lang": "en"}``, ``{"year": {"$gte": 2020}}``, ``$or``, ...)
    and the other options of ``Pipeline.search`` as keyword arguments (``mode``, ``candidates``,
    ``instruction``, ``max_per_doc``, ``min_score``, ``diversity``, ``fusion``, ``alpha``). A
    pipeline with a reranker reranks every text search.

    Scores: ``similarity_search_with_score`` gives ragkit's score (cosine in dense mode, BM25 in
    lexical mode, the fused score in hybrid mode, P(relevant) after a reranker);
    ``similarity_search_with_relevance_scores`` maps them to [0, 1] (the reranker's probability, or
    ``(1 + cosine) / 2``; lexical and hybrid scores have no such scale and are refused there).

    Args:
        pipeline: the pipeline to use (not with ``embedding``).
        embedding: what to build a new pipeline with (not with ``pipeline``).
        mode: the default search mode, ``"dense"``, ``"lexical"`` or ``"hybrid"``.
        hit_metadata: add the ``ragkit_`` keys (chunk id, offsets, rank, scores) to the metadata of
            search results.
        **pipeline_kwargs: options of a new :class:`~ragkit.Pipeline`.

    Example:
        >>> from ragkit import Pipeline                                           # doctest: +SKIP
        >>> from ragkit.embedders import Qwen3Embedder                            # doctest: +SKIP
        >>> store = RagkitVectorStore(Pipeline(Qwen3Embedder("Qwen/Qwen3-Embedding-0.6B")))
        ... # doctest: +SKIP
        >>> store.add_texts(["Paris is the capital of France."], [{"lang": "en"}], ids=["fr"])
        ... # doctest: +SKIP
        ['fr']
        >>> store.similarity_search_with_score("capital of France", k=1, filter={"lang": "en"})
        ... # doctest: +SKIP
        [(Document(id='fr', metadata={'lang': 'en'}, page_content='Paris is ...'), 0.71)]
        >>> store.max_marginal_relevance_search("France", k=3, fetch_k=20, lambda_mult=0.5)
        ... # doctest: +SKIP
        >>> store.delete(filter={"lang": "en"})                                  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        pipeline: Any = None,
        *,
        embedding: Any = None,
        mode: str = "dense",
        hit_metadata: bool = False,
        **pipeline_kwargs: Any,
    ) -> None:
        if (pipeline is None) == (embedding is None):
            raise ConfigError("RagkitVectorStore takes a pipeline or embedding=..., exactly one of them")
        if pipeline is not None:
            if pipeline_kwargs:
                raise ConfigError(
                    f"pipeline options ({', '.join(sorted(pipeline_kwargs))}) apply only with embedding="
                )
            self.pipeline = _check_pipeline(pipeline)
            embedder = pipeline.embedder
            self._embeddings: Embeddings = (
                embedder.embeddings if isinstance(embedder, LangChainEmbedder) else RagkitEmbeddings(embedder)
            )
        else:
            from ragkit.pipeline import Pipeline

            embedder, self._embeddings = to_ragkit_embedder(embedding)
            self.pipeline = Pipeline(embedder, **pipeline_kwargs)
        self.mode = _check_mode(mode)
        self.hit_metadata = bool(hit_metadata)

    def __repr__(self) -> str:
        return f"RagkitVectorStore({self.pipeline!r}, mode={self.mode!r})"

    @property
    def embeddings(self) -> Embeddings:
        """The LangChain ``Embeddings`` the store was built with (or one over the pipeline's embedder)."""
        return self._embeddings

    # -------------------------------------------------------------------------------------- writes

    def _documents(
        self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None, ids: Sequence[str | None] | None
    ) -> tuple[list[Document], list[str]]:
        texts = check_texts(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidInputError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise InvalidInputError(f"got {len(ids)} ids for {len(texts)} texts")
        out_ids = [
            check_text(i, f"ids[{n}]") if i else str(uuid.uuid4())
            for n, i in enumerate(ids if ids is not None else [None] * len(texts))
        ]
        docs = [
            Document(id=i, text=t, metadata=dict((metadatas[n] if metadatas else None) or {}))
            for n, (i, t) in enumerate(zip(out_ids, texts, strict=True))
        ]
        return docs, out_ids

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add or update texts (an upsert by id); returns their ids.

        Example:
            >>> store.add_texts(["Paris is in France."], [{"lang": "en"}], ids=["fr"])  # doctest: +SKIP
            ['fr']
        """
        if kwargs:
            raise TypeError(f"add_texts() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        docs, out_ids = self._documents(texts, metadatas, ids)
        self.pipeline.add(docs, batch_size=batch_size)
        return out_ids

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Async twin of :meth:`add_texts` (``Pipeline.aadd``)."""
        if kwargs:
            raise TypeError(f"aadd_texts() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        docs, out_ids = self._documents(texts, metadatas, ids)
        await self.pipeline.aadd(docs, batch_size=batch_size)
        return out_ids

    def delete(
        self, ids: list[str] | None = None, *, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> bool:
        """Delete documents by id (unknown ids are ignored) or every document whose metadata matches
        ``filter``; exactly one of the two (there is no implicit delete-all: pass every id).

        Example:
            >>> store.delete(["fr"]), store.delete(filter={"lang": "de"})  # doctest: +SKIP
            (True, True)
        """
        if kwargs:
            raise TypeError(f"delete() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        if ids is None and filter is None:
            raise InvalidInputError("delete() takes ids or filter=...: ragkit has no implicit delete-all")
        if filter is not None:
            if ids is not None:
                raise InvalidInputError("delete() takes ids or filter=..., not both")
            self.pipeline.delete(filter=filter)
        else:
            self.pipeline.delete(check_texts(ids, "ids"))
        return True

    async def adelete(
        self, ids: list[str] | None = None, *, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> bool:
        """Async twin of :meth:`delete` (in a worker thread)."""
        return await asyncio.to_thread(self.delete, ids, filter=filter, **kwargs)

    # --------------------------------------------------------------------------------------- reads

    def get_by_ids(self, ids: Sequence[str], /) -> list[LCDocument]:
        """The whole documents with these ids (unknown ids are skipped, duplicates given once).

        Example:
            >>> [d.page_content for d in store.get_by_ids(["fr", "nope"])]  # doctest: +SKIP
            ['Paris is in France.']
        """
        out = []
        for doc_id in dict.fromkeys(check_texts(ids, "ids")):
            doc = self.pipeline.get(doc_id)
            if doc is not None:
                out.append(_to_lc(doc))
        return out

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[LCDocument]:
        """Async twin of :meth:`get_by_ids` (in a worker thread)."""
        return await asyncio.to_thread(self.get_by_ids, ids)

    # -------------------------------------------------------------------------------------- search

    def _options(self, filter: Any, kwargs: dict[str, Any], where: str) -> dict[str, Any]:
        options = dict(_search_kwargs(kwargs, where))
        options.setdefault("mode", self.mode)
        options["filter"] = filter
        return options

    def _pairs(self, hits: list[Hit]) -> list[tuple[LCDocument, float]]:
        return [(hit_to_document(h, hit_metadata=self.hit_metadata), h.score) for h in hits]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[LCDocument, float]]:
        """The ``k`` best chunks with ragkit's scores (see the class), best first.

        Example:
            >>> store.similarity_search_with_score("capital of France", k=2, mode="hybrid")  # doctest: +SKIP
        """
        options = self._options(filter, kwargs, "similarity_search_with_score()")
        return self._pairs(self.pipeline.search(query, k, **options))

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[LCDocument, float]]:
        """Async twin of :meth:`similarity_search_with_score` (``Pipeline.asearch``)."""
        options = self._options(filter, kwargs, "asimilarity_search_with_score()")
        return self._pairs(await self.pipeline.asearch(query, k, **options))

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[LCDocument]:
        """The ``k`` best chunks for ``query``, best first.

        Example:
            >>> store.similarity_search("capital of France", k=3, filter={"lang": "en"})  # doctest: +SKIP
        """
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[LCDocument]:
        """Async twin of :meth:`similarity_search`."""
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, filter, **kwargs)]

    def _relevance(
        self, pairs: list[tuple[LCDocument, float]], hits: list[Hit]
    ) -> list[tuple[LCDocument, float]]:
        out = []
        for (doc, _), hit in zip(pairs, hits, strict=True):
            if hit.rerank_score is not None:
                score = hit.rerank_score
            elif hit.dense_score is not None and hit.lexical_score is None and hit.fused_score is None:
                score = (1.0 + hit.dense_score) / 2.0
            else:
                raise InvalidInputError(
                    "relevance scores in [0, 1] need mode='dense' or a reranker: lexical and hybrid "
                    "scores have no fixed scale (use similarity_search_with_score)"
                )
            out.append((doc, min(max(float(score), 0.0), 1.0)))
        return out

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[LCDocument, float]]:
        filter = kwargs.pop("filter", None)
        hits = self.pipeline.search(query, k, **self._options(filter, kwargs, "similarity_search"))
        return self._relevance(self._pairs(hits), hits)

    async def _asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[LCDocument, float]]:
        filter = kwargs.pop("filter", None)
        hits = await self.pipeline.asearch(query, k, **self._options(filter, kwargs, "similarity_search"))
        return self._relevance(self._pairs(hits), hits)

    def _by_vector(
        self,
        embedding: Sequence[float],
        k: int,
        filter: Any,
        *,
        candidates: int | None = None,
        diversity: float | None = None,
        max_per_doc: int | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        """Dense search from a query vector (no reranker: there is no query text to rerank with)."""
        pipe = self.pipeline
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        for name, value in (("candidates", candidates), ("max_per_doc", max_per_doc)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInputError(f"{name} must be a positive int, got {value!r}")
        diversity = check_diversity(diversity)
        vector = l2_normalize(
            check_vectors(np.asarray([embedding]), dim=int(pipe.embedder.dim), names=["the query embedding"])
        )
        n = max(candidates or (max(50, k) if diversity is not None else k), k)
        fetch = n if max_per_doc is None else n * 4
        scores, vids = pipe.backend.dense_search(vector, fetch, filter=parse_filter(filter))[0]
        chunks = pipe.backend.get_chunks([int(v) for v in vids])
        hits, kept = [], []
        for score, vid in zip(scores, vids, strict=True):
            chunk = chunks.get(int(vid))
            if chunk is not None:  # deleted between the index search and this read
                hits.append(Hit(**chunk.model_dump(), score=float(score), dense_score=float(score)))
                kept.append(int(vid))
        if diversity is not None and hits:
            vectors = pipe.backend.get_vectors(kept)
            pool = [(h, vectors[v]) for h, v in zip(hits, kept, strict=True) if v in vectors]
            picks = k if max_per_doc is None else len(pool)
            order = mmr(
                [h.score for h, _ in pool], np.stack([v for _, v in pool]), picks, diversity=diversity
            )
            hits = [pool[i][0] for i in order]
        return _cap(hits, k, max_per_doc, None if min_score is None else float(min_score))

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[LCDocument]:
        """The ``k`` chunks nearest to a query vector (dense; the pipeline's reranker does not run).

        Takes ``candidates``, ``max_per_doc`` and ``min_score`` too.

        Example:
            >>> vector = store.embeddings.embed_query("France")   # doctest: +SKIP
            >>> store.similarity_search_by_vector(vector, k=2)     # doctest: +SKIP
        """
        hits = self._by_vector(embedding, k, filter, **kwargs)
        return [d for d, _ in self._pairs(hits)]

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[LCDocument]:
        """Async twin of :meth:`similarity_search_by_vector` (in a worker thread)."""
        return await asyncio.to_thread(self.similarity_search_by_vector, embedding, k, filter, **kwargs)

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[LCDocument]:
        """Maximal marginal relevance: ``k`` of the ``fetch_k`` best chunks, picked for relevance and
        for being unlike each other (``Pipeline.search(diversity=1 - lambda_mult)``).

        ``lambda_mult`` is LangChain's: 1 is relevance only, 0 diversity only. Works in every mode;
        with a reranker, MMR picks the ``k`` chunks and the reranker orders them.

        Example:
            >>> store.max_marginal_relevance_search("France", k=3, lambda_mult=0.7)  # doctest: +SKIP
        """
        options = self._mmr_options(fetch_k, lambda_mult, filter, kwargs)
        return [d for d, _ in self._pairs(self.pipeline.search(query, k, **options))]

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[LCDocument]:
        """Async twin of :meth:`max_marginal_relevance_search` (``Pipeline.asearch``)."""
        options = self._mmr_options(fetch_k, lambda_mult, filter, kwargs)
        return [d for d, _ in self._pairs(await self.pipeline.asearch(query, k, **options))]

    def _mmr_options(
        self, fetch_k: Any, lambda_mult: Any, filter: Any, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        if "diversity" in kwargs:
            raise TypeError("max_marginal_relevance_search() takes lambda_mult, not diversity")
        options = self._options(filter, kwargs, "max_marginal_relevance_search()")
        options["candidates"] = fetch_k
        options["diversity"] = _diversity(lambda_mult)
        return options

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[LCDocument]:
        """:meth:`max_marginal_relevance_search` from a query vector (dense, no reranker)."""
        hits = self._by_vector(
            embedding, k, filter, candidates=fetch_k, diversity=_diversity(lambda_mult), **kwargs
        )
        return [d for d, _ in self._pairs(hits)]

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[LCDocument]:
        """Async twin of :meth:`max_marginal_relevance_search_by_vector` (in a worker thread)."""
        return await asyncio.to_thread(
            self.max_marginal_relevance_search_by_vector, embedding, k, fetch_k, lambda_mult, filter, **kwargs
        )

    # -------------------------------------------------------------------------------- construction

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> RagkitVectorStore:
        """A new store (a new pipeline over ``embedding``) holding ``texts``.

        ``kwargs`` are the constructor's (``mode``, ``hit_metadata``) and a new pipeline's
        (``backend``, ``reranker``, ``chunker``, ...).

        Example:
            >>> store = RagkitVectorStore.from_texts(["a", "b"], DeterministicFakeEmbedding(size=8))
            ... # doctest: +SKIP
        """
        store = cls(embedding=embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> RagkitVectorStore:
        """Async twin of :meth:`from_texts`."""
        store = cls(embedding=embedding, **kwargs)
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store


def _diversity(lambda_mult: Any) -> float:
    if (
        isinstance(lambda_mult, bool)
        or not isinstance(lambda_mult, (int, float))
        or not 0 <= lambda_mult <= 1
    ):
        raise InvalidInputError(f"lambda_mult must be a number in [0, 1], got {lambda_mult!r}")
    return 1.0 - float(lambda_mult)
