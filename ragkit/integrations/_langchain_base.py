"""Everything of :mod:`ragkit.integrations.langchain` but the vector store: both directions of the
embedder bridge (:class:`RagkitEmbeddings`, :class:`LangChainEmbedder`), the hit-to-``Document``
conversion, :class:`RagkitRetriever` and :class:`RagkitReranker`. Import them from
:mod:`ragkit.integrations.langchain`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit.backends.base import check_vectors
from ragkit.diversity import check_diversity
from ragkit.embedders.base import check_texts, l2_normalize
from ragkit.errors import ConfigError, InputTypeError, InvalidInputError
from ragkit.filters import parse_filter
from ragkit.integrations._hits import METADATA_PREFIX, hit_fields
from ragkit.rerankers.base import rerank
from ragkit.retrieval import MODES
from ragkit.types import Hit, check_text

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
        Callbacks,
    )
    from langchain_core.documents import BaseDocumentCompressor
    from langchain_core.documents import Document as LCDocument
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict, model_validator
except ImportError:
    # Not installed: a MissingDependencyError naming the extra. Installed but broken or of an
    # incompatible release: the original error.
    require("langchain_core", purpose="ragkit.integrations.langchain")
    raise

__all__ = [
    "LangChainEmbedder",
    "METADATA_PREFIX",
    "RagkitEmbeddings",
    "RagkitReranker",
    "RagkitRetriever",
    "hit_to_document",
]

_MODEL_ATTRS = ("model", "model_name", "model_id", "deployment", "repo_id")


def check_embedder(embedder: Any) -> Any:
    """``embedder`` if it has what a :class:`~ragkit.Pipeline` needs, else :class:`InputTypeError`."""
    for attr in ("dim", "fingerprint", "embed_documents", "embed_queries"):
        if not hasattr(embedder, attr):
            raise InputTypeError(f"embedder lacks {attr!r}: see ragkit.embedders.Embedder")
    return embedder


def hit_to_document(hit: Hit, *, hit_metadata: bool = True) -> LCDocument:
    """One ragkit hit (a chunk) as a LangChain ``Document``.

    ``page_content`` is the chunk's text and ``id`` the id of the document it comes from, so a long
    document that was split into several chunks can give several results with one id; the metadata is
    the document's metadata plus, with ``hit_metadata``, the ``ragkit_`` keys of
    :data:`METADATA_PREFIX` (chunk id, offsets into the document's text, rank and scores).

    Example:
        >>> from ragkit import Hit
        >>> doc = hit_to_document(Hit(id="a#0", doc_id="a", text="Paris.", start=0, end=6,
        ...                           metadata={"lang": "en"}, score=0.9, rank=1, dense_score=0.9))
        >>> doc.id, doc.page_content, doc.metadata["lang"], doc.metadata["ragkit_chunk_id"]
        ('a', 'Paris.', 'en', 'a#0')
        >>> doc.metadata["ragkit_score"], doc.metadata["ragkit_start"], doc.metadata["ragkit_end"]
        (0.9, 0, 6)
        >>> hit_to_document(Hit(id="a#0", doc_id="a", text="P", start=0, end=1, score=1.0),
        ...                 hit_metadata=False).metadata
        {}
    """
    if not isinstance(hit, Hit):
        raise InputTypeError(f"hit_to_document() takes a ragkit Hit, got {type(hit).__name__}")
    metadata = dict(hit.metadata)
    if hit_metadata:
        metadata.update(hit_fields(hit))
    return LCDocument(id=hit.doc_id, page_content=hit.text, metadata=metadata)


def _rows(vectors: np.ndarray) -> list[list[float]]:
    return np.asarray(vectors, dtype=np.float32).astype(float).tolist()


class RagkitEmbeddings(Embeddings):
    """Any ragkit embedder (Qwen3-Embedding, an OpenAI-compatible API, your own) as a LangChain
    ``Embeddings``.

    Documents go through ``embed_documents`` as they are; queries through ``embed_queries``, so
    Qwen3-Embedding writes them with its query template and task instruction
    (``"Instruct: {instruction}\\nQuery:{text}"``, the model card's web-search task unless the
    embedder or ``instruction`` says otherwise).

    Args:
        embedder: a ragkit embedder, or a model name or path, which becomes a
            :class:`~ragkit.embedders.Qwen3Embedder` built with ``model_kwargs``.
        instruction: the query task for every query (``None``: the embedder's own default).
        **model_kwargs: options of :class:`~ragkit.embedders.Qwen3Embedder` (``dim``, ``device``, ...)
            when ``embedder`` is a name.

    Example:
        >>> from ragkit.integrations.langchain import RagkitEmbeddings          # doctest: +SKIP
        >>> emb = RagkitEmbeddings("Qwen/Qwen3-Embedding-0.6B", dim=256)        # doctest: +SKIP
        >>> len(emb.embed_query("capital of France?")), len(emb.embed_documents(["Paris."])[0])
        ... # doctest: +SKIP
        (256, 256)
        >>> from langchain_core.vectorstores import InMemoryVectorStore        # doctest: +SKIP
        >>> store = InMemoryVectorStore(emb)                                  # doctest: +SKIP
    """

    def __init__(self, embedder: Any, *, instruction: str | None = None, **model_kwargs: Any) -> None:
        if isinstance(embedder, str):
            from ragkit.embedders import Qwen3Embedder

            embedder = Qwen3Embedder(embedder, **model_kwargs)
        elif model_kwargs:
            raise ConfigError(
                f"model options ({', '.join(sorted(model_kwargs))}) apply only when embedder is a model name"
            )
        if isinstance(embedder, Embeddings) and not hasattr(embedder, "fingerprint"):
            raise InputTypeError(
                "RagkitEmbeddings wraps a ragkit embedder; a LangChain Embeddings can be used as it is"
            )
        if instruction is not None:
            check_text(instruction, "instruction")
        self.embedder = check_embedder(embedder)
        self.instruction = instruction

    def __repr__(self) -> str:
        return f"RagkitEmbeddings({self.embedder!r}, instruction={self.instruction!r})"

    def _query_kwargs(self) -> dict[str, Any]:
        return {} if self.instruction is None else {"instruction": self.instruction}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (no instruction): one list of floats per text."""
        texts = check_texts(texts)
        return _rows(self.embedder.embed_documents(texts)) if texts else []

    def embed_query(self, text: str) -> list[float]:
        """Embed one query with the embedder's query template and instruction."""
        check_text(text, "text")
        return _rows(self.embedder.embed_queries([text], **self._query_kwargs()))[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async twin of :meth:`embed_documents` (a worker thread: the embedder may be a local model)."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Async twin of :meth:`embed_query`; awaits an embedder's ``aembed_queries`` when it has one."""
        check_text(text, "text")
        aembed = getattr(self.embedder, "aembed_queries", None)
        if callable(aembed):
            return _rows(await aembed([text], **self._query_kwargs()))[0]
        return await asyncio.to_thread(self.embed_query, text)


class LangChainEmbedder:
    """Any LangChain ``Embeddings`` as a ragkit embedder, so that a :class:`~ragkit.Pipeline` (and
    :class:`~ragkit.integrations.langchain.RagkitVectorStore`) can index with it.

    Vectors come back as float32 and L2-normalised (ragkit searches by cosine); a text that embeds
    to the zero vector is refused when it is added (:class:`~ragkit.InvalidInputError`). ``dim`` is
    found with one query embedding the first time it is read, unless given. The fingerprint names
    the class and its model attribute (``model``, ``model_name``, ...), if any: pass ``name`` when
    that is not enough to tell two configurations apart. A pipeline saved with this embedder cannot
    rebuild it by itself: pass ``embedder=LangChainEmbedder(...)`` to ``Pipeline.load``.

    Example:
        >>> from langchain_core.embeddings import DeterministicFakeEmbedding
        >>> emb = LangChainEmbedder(DeterministicFakeEmbedding(size=6))
        >>> emb.dim, emb.fingerprint["model"]
        (6, 'langchain:langchain_core.embeddings.fake.DeterministicFakeEmbedding')
        >>> v = emb.embed_documents(["foo", "bar"])
        >>> v.shape, v.dtype, round(float((v[0] ** 2).sum()), 5)
        ((2, 6), dtype('float32'), 1.0)
    """

    def __init__(self, embeddings: Embeddings, *, dim: int | None = None, name: str | None = None) -> None:
        if not callable(getattr(embeddings, "embed_documents", None)) or not callable(
            getattr(embeddings, "embed_query", None)
        ):
            raise InputTypeError(
                "expected a LangChain Embeddings (embed_documents, embed_query), "
                f"got {type(embeddings).__name__}"
            )
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ConfigError(f"dim must be a positive int, got {dim!r}")
        if name is not None:
            check_text(name, "name")
        self.embeddings = embeddings
        self._dim = dim
        self._name = name
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LangChainEmbedder({self.embeddings!r})"

    @property
    def dim(self) -> int:
        """The vectors' dimension (one probe embedding the first time, unless given)."""
        with self._lock:
            if self._dim is None:
                probe = np.asarray(self.embeddings.embed_query("dimension probe"), dtype=np.float32)
                if probe.ndim != 1 or probe.size == 0:
                    raise InvalidInputError(f"embed_query returned a vector of shape {probe.shape}")
                self._dim = int(probe.size)
            return self._dim

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Equal for two embedders exactly when their vectors are comparable (see the class)."""
        cls = type(self.embeddings)
        fp: dict[str, Any] = {
            "model": self._name or f"langchain:{cls.__module__}.{cls.__qualname__}",
            "dim": self.dim,
            "normalize": True,
        }
        for attr in _MODEL_ATTRS:
            value = getattr(self.embeddings, attr, None)
            if isinstance(value, str) and value:
                fp["name"] = value
                break
        return fp

    def _check(self, rows: Any, texts: Sequence[str]) -> np.ndarray:
        names = [f"text {t[:40]!r}" for t in texts]
        return l2_normalize(check_vectors(np.asarray(rows, dtype=np.float32), dim=self.dim, names=names))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """``Embeddings.embed_documents``, as float32 unit rows ``(len(texts), dim)``."""
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return self._check(self.embeddings.embed_documents(texts), texts)

    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """``Embeddings.embed_query`` for each text, as float32 unit rows (no instruction: LangChain
        embeddings write queries their own way)."""
        texts = check_texts(texts, "queries")
        _no_instruction(instruction)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return self._check([self.embeddings.embed_query(t) for t in texts], texts)

    async def aembed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """Async twin of :meth:`embed_queries`, through ``Embeddings.aembed_query``."""
        texts = check_texts(texts, "queries")
        _no_instruction(instruction)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        rows = await asyncio.gather(*(self.embeddings.aembed_query(t) for t in texts))
        return self._check(list(rows), texts)


def _no_instruction(instruction: Any) -> None:
    if instruction is not None:
        raise InvalidInputError(
            "a LangChain Embeddings takes no query instruction: configure the model itself, or use a "
            "ragkit embedder (RagkitEmbeddings(Qwen3Embedder(...)))"
        )


def to_ragkit_embedder(embedding: Any) -> tuple[Any, Embeddings]:
    """``(ragkit embedder, LangChain Embeddings)`` for whatever a vector store was given.

    A :class:`RagkitEmbeddings` gives its own ragkit embedder (its instruction is kept only when it is
    the embedder's default, since a pipeline embeds queries itself); another LangChain ``Embeddings``
    is wrapped as a :class:`LangChainEmbedder`; a ragkit embedder is used as it is.
    """
    if isinstance(embedding, RagkitEmbeddings):
        if embedding.instruction is not None:
            raise ConfigError(
                "RagkitEmbeddings(instruction=...) cannot set a pipeline's query task: give the embedder "
                "that instruction (Qwen3Embedder(..., instruction=...)) or pass instruction= per search"
            )
        return embedding.embedder, embedding
    if isinstance(embedding, Embeddings):
        return LangChainEmbedder(embedding), embedding
    if isinstance(embedding, Mapping) or embedding is None:
        raise InputTypeError(f"expected an Embeddings or a ragkit embedder, got {type(embedding).__name__}")
    check_embedder(embedding)
    return embedding, RagkitEmbeddings(embedding)


# The options of Pipeline.search that the store and the retriever pass through.
_SEARCH_OPTIONS = (
    "mode",
    "candidates",
    "instruction",
    "max_per_doc",
    "min_score",
    "diversity",
    "fusion",
    "alpha",
)


def _check_pipeline(pipeline: Any) -> Any:
    for attr in ("search", "asearch", "add", "delete", "get"):
        if not callable(getattr(pipeline, attr, None)):
            raise InputTypeError(f"expected a ragkit Pipeline, got {type(pipeline).__name__} (no {attr}())")
    return pipeline


def _check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    return str(mode)


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


class RagkitRetriever(BaseRetriever):
    """A LangChain retriever over a ragkit :class:`~ragkit.Pipeline`.

    Every option of ``Pipeline.search`` is a field, and ``invoke(query, k=..., filter=..., ...)``
    overrides any of them for one call. A pipeline with a reranker reranks the ``candidates``
    first-stage hits; ``reranker=`` gives one to a pipeline without one (it scores ``candidates``
    hits, ``max(50, k)`` by default; with ``diversity``, MMR picks ``k`` and the reranker orders
    them, as in the pipeline). Each hit is a ``Document`` per chunk whose ``id`` is its document's,
    with the ``ragkit_`` keys of :func:`hit_to_document` in its metadata (``hit_metadata=False``
    leaves them out).

    Args:
        pipeline: the pipeline to search (also the first positional argument).
        k: hits per query (LangChain's default, 4).
        mode: ``"dense"``, ``"lexical"`` or ``"hybrid"``.
        filter: a metadata filter (:mod:`ragkit.filters`).
        candidates, instruction, max_per_doc, min_score, diversity, fusion, alpha: as in
            ``Pipeline.search``.
        reranker: a ragkit reranker (anything with ``score(query, documents)``) for a pipeline
            without one.
        hit_metadata: add the ``ragkit_`` keys to each document's metadata.

    Example:
        >>> from ragkit.integrations.langchain import RagkitRetriever      # doctest: +SKIP
        >>> retriever = RagkitRetriever(pipe, k=3, mode="hybrid", filter={"lang": "en"})  # doctest: +SKIP
        >>> docs = retriever.invoke("capital of France")                  # doctest: +SKIP
        >>> docs[0].id, docs[0].metadata["ragkit_score"], docs[0].metadata["ragkit_start"]  # doctest: +SKIP
        ('fr', 0.82, 0)
        >>> retriever.invoke("capital of France", k=1, diversity=0.3)     # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    pipeline: Any
    k: int = 4
    mode: str = "dense"
    filter: dict[str, Any] | None = None
    candidates: int | None = None
    instruction: str | None = None
    max_per_doc: int | None = None
    min_score: float | None = None
    diversity: float | None = None
    fusion: str | None = None
    alpha: float | None = None
    reranker: Any = None
    hit_metadata: bool = True

    def __init__(self, pipeline: Any = None, **data: Any) -> None:
        super().__init__(pipeline=pipeline, **data)

    @model_validator(mode="after")
    def _validate(self) -> RagkitRetriever:
        _check_pipeline(self.pipeline)
        if isinstance(self.k, bool) or self.k < 1:
            raise InvalidInputError(f"k must be a positive int, got {self.k!r}")
        _check_mode(self.mode)
        parse_filter(self.filter)
        check_diversity(self.diversity)
        if self.reranker is not None:
            if not callable(getattr(self.reranker, "score", None)):
                raise InputTypeError("reranker lacks a score(query, documents) method")
            if getattr(self.pipeline, "reranker", None) is not None:
                raise ConfigError(
                    "the pipeline reranks already: give reranker= only to a pipeline without one"
                )
        return self

    def _options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - {"k", "filter", *_SEARCH_OPTIONS})
        if unknown:
            raise TypeError(
                f"RagkitRetriever.invoke() got unexpected keyword arguments: {', '.join(unknown)}"
            )
        options = {name: getattr(self, name) for name in ("k", "filter", *_SEARCH_OPTIONS)}
        options.update(overrides)
        return options

    def _plan_rerank(self, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """With ``reranker=``: the first-stage search's options, and the caps to apply after it."""
        k = options["k"]
        cand = options["candidates"] or max(50, k)
        caps = {"k": k, "max_per_doc": options["max_per_doc"], "min_score": options["min_score"]}
        first = dict(options, candidates=cand, min_score=None)
        if options["diversity"] is None:
            first.update(k=cand, max_per_doc=None)
        return first, caps

    def _documents(self, hits: list[Hit]) -> list[LCDocument]:
        return [hit_to_document(h, hit_metadata=self.hit_metadata) for h in hits]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[LCDocument]:
        options = self._options(kwargs)
        if self.reranker is None:
            return self._documents(self.pipeline.search(query, **options))
        first, caps = self._plan_rerank(options)
        hits = rerank(self.reranker, query, self.pipeline.search(query, **first))
        return self._documents(_cap(hits, caps["k"], caps["max_per_doc"], caps["min_score"]))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[LCDocument]:
        options = self._options(kwargs)
        if self.reranker is None:
            return self._documents(await self.pipeline.asearch(query, **options))
        first, caps = self._plan_rerank(options)
        hits = await self.pipeline.asearch(query, **first)
        ascore = getattr(self.reranker, "ascore", None)
        if callable(ascore) and hits:
            scores = np.asarray(await ascore(query, [h.text for h in hits]), dtype=np.float32)
            hits = _apply_scores(hits, scores)
        else:
            hits = await asyncio.to_thread(rerank, self.reranker, query, hits)
        return self._documents(_cap(hits, caps["k"], caps["max_per_doc"], caps["min_score"]))


def _apply_scores(hits: list[Hit], scores: np.ndarray) -> list[Hit]:
    if scores.shape != (len(hits),):
        raise InvalidInputError(f"the reranker returned shape {scores.shape} for {len(hits)} documents")
    out = []
    for i in np.argsort(-scores, kind="stable"):  # ties keep the first-stage order
        hit = hits[int(i)].model_copy()
        hit.score = hit.rerank_score = float(scores[i])
        out.append(hit)
    return out


class RagkitReranker(BaseDocumentCompressor):
    """A LangChain document compressor that reranks with a ragkit reranker and keeps the best.

    Each kept document is a copy with the score in ``metadata["relevance_score"]`` (LangChain's
    convention for rerankers); documents from :class:`RagkitRetriever` also get their ``ragkit_score``,
    ``ragkit_rerank_score`` and ``ragkit_rank`` updated. Ties keep the input order.

    Args:
        reranker: a ragkit reranker (:class:`~ragkit.rerankers.Qwen3Reranker`, a remote one, your
            own ``score(query, documents)``), or a model name or path for a Qwen3Reranker.
        top_n: how many documents to keep; ``None`` keeps them all, reordered.

    Example:
        >>> from ragkit.integrations.langchain import RagkitReranker                # doctest: +SKIP
        >>> compressor = RagkitReranker("Qwen/Qwen3-Reranker-0.6B", top_n=3)         # doctest: +SKIP
        >>> docs = compressor.compress_documents(store.similarity_search("France", k=20), "France")
        ... # doctest: +SKIP
        >>> [d.metadata["relevance_score"] for d in docs]                            # doctest: +SKIP
        [0.97, 0.64, 0.12]
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reranker: Any
    top_n: int | None = 3

    def __init__(self, reranker: Any = None, **data: Any) -> None:
        if isinstance(reranker, str):
            from ragkit.rerankers import Qwen3Reranker

            reranker = Qwen3Reranker(reranker)
        super().__init__(reranker=reranker, **data)

    @model_validator(mode="after")
    def _validate(self) -> RagkitReranker:
        if not callable(getattr(self.reranker, "score", None)):
            raise InputTypeError("reranker lacks a score(query, documents) method")
        if self.top_n is not None and (isinstance(self.top_n, bool) or self.top_n < 1):
            raise InvalidInputError(f"top_n must be a positive int or None, got {self.top_n!r}")
        return self

    def _order(self, documents: Sequence[LCDocument], scores: Any) -> list[LCDocument]:
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (len(documents),):
            raise InvalidInputError(
                f"the reranker returned shape {scores.shape} for {len(documents)} documents"
            )
        order = np.argsort(-scores, kind="stable")[: self.top_n]
        out = []
        for rank, i in enumerate(order, start=1):
            doc, score = documents[int(i)], float(scores[i])
            metadata = dict(doc.metadata, relevance_score=score)
            if METADATA_PREFIX + "score" in metadata:  # a RagkitRetriever's hit
                for key, value in (("score", score), ("rerank_score", score), ("rank", rank)):
                    metadata[METADATA_PREFIX + key] = value
            out.append(doc.model_copy(update={"metadata": metadata}))
        return out

    def _texts(self, documents: Sequence[LCDocument], query: str) -> list[str]:
        check_text(query, "query")
        for d in documents:
            if not isinstance(d, LCDocument):
                raise InputTypeError(
                    f"compress_documents() takes LangChain Documents, got {type(d).__name__}"
                )
        return check_texts([d.page_content for d in documents], "documents")

    def compress_documents(
        self, documents: Sequence[LCDocument], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[LCDocument]:
        """The ``top_n`` documents best for ``query``, best first, scores in their metadata."""
        texts = self._texts(documents, query)
        if not texts:
            return []
        return self._order(documents, self.reranker.score(query, texts))

    async def acompress_documents(
        self, documents: Sequence[LCDocument], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[LCDocument]:
        """Async twin of :meth:`compress_documents`; awaits a reranker's ``ascore`` when it has one."""
        texts = self._texts(documents, query)
        if not texts:
            return []
        ascore = getattr(self.reranker, "ascore", None)
        if callable(ascore):
            scores = await ascore(query, texts)
        else:
            scores = await asyncio.to_thread(self.reranker.score, query, texts)
        return self._order(documents, scores)
