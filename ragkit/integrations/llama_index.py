"""LlamaIndex adapters: a ragkit embedder, pipeline or reranker where LlamaIndex expects its own types.

Install with ``pip install 'ragkit[llama-index]'`` (``llama-index-core`` 0.14, tested on 0.14.25).

- :class:`RagkitEmbedding` is a ``BaseEmbedding``: any ragkit embedder (Qwen3, OpenAI-compatible,
  your own) as LlamaIndex's ``embed_model``, queries embedded with the query template and
  instruction, texts as documents.
- :class:`RagkitRetriever` is a ``BaseRetriever`` over a :class:`~ragkit.Pipeline`: every option of
  ``Pipeline.search`` (``k``, ``mode``, ``filter``, ``diversity``, ...), hits as ``NodeWithScore``.
- :class:`RagkitReranker` is a ``BaseNodePostprocessor`` that scores nodes with a ragkit reranker
  (Qwen3-Reranker, a remote rerank API) and keeps the ``top_n`` best.
- :func:`to_ragkit_filter` turns LlamaIndex ``MetadataFilters`` into ragkit's filter dict
  (:mod:`ragkit.filters`); :func:`hit_to_node` turns one :class:`~ragkit.Hit` into a node.

Offline: nothing here reaches the network. LlamaIndex itself resolves ``Settings.llm`` and
``Settings.embed_model`` to OpenAI when they are read unset, so set both (or pass ``llm=`` and
``embed_model=`` explicitly) before building a query engine without network access; the tokenizer
(tiktoken ``cl100k_base``) and the NLTK data it uses ship inside ``llama-index-core`` (keep
``TIKTOKEN_CACHE_DIR`` and ``NLTK_DATA`` unset, or pointed at directories that hold them).

Example:
    >>> from llama_index.core.llms import MockLLM                               # doctest: +SKIP
    >>> from llama_index.core.query_engine import RetrieverQueryEngine          # doctest: +SKIP
    >>> from ragkit.integrations.llama_index import RagkitRetriever             # doctest: +SKIP
    >>> engine = RetrieverQueryEngine.from_args(RagkitRetriever(pipe, k=3), llm=MockLLM())
    ... # doctest: +SKIP
    >>> [n.node_id for n in engine.query("capital of France").source_nodes]   # doctest: +SKIP
    ['a#0', 'b#0', 'c#0']
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit.backends.base import check_vectors
from ragkit.diversity import check_diversity
from ragkit.embedders.base import check_texts
from ragkit.errors import InputTypeError, InvalidInputError
from ragkit.retrieval import MODES
from ragkit.types import check_text

try:
    from llama_index.core.base.embeddings.base import DEFAULT_EMBED_BATCH_SIZE, BaseEmbedding, Embedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    from ragkit.integrations._llama_index_base import METADATA_PREFIX, hit_to_node, to_ragkit_filter
except ImportError:
    # Not installed: a MissingDependencyError naming the extra. Installed but broken or of an
    # incompatible release: the original error.
    require("llama_index.core", purpose="ragkit.integrations.llama_index")
    raise

__all__ = [
    "METADATA_PREFIX",
    "RagkitEmbedding",
    "RagkitReranker",
    "RagkitRetriever",
    "hit_to_node",
    "to_ragkit_filter",
]


def _check_embedder(embedder: Any) -> None:
    for attr in ("dim", "fingerprint", "embed_documents", "embed_queries"):
        if not hasattr(embedder, attr):
            raise InputTypeError(f"embedder lacks {attr!r}: see ragkit.embedders.Embedder")


def _check_positive(value: Any, name: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        extra = " or None" if optional else ""
        raise InvalidInputError(f"{name} must be a positive int{extra}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------- embedding


def _as_lists(vectors: Any, embedder: Any, texts: list[str], what: str) -> list[Embedding]:
    checked = check_vectors(vectors, dim=int(embedder.dim), names=[f"{what} {t[:40]!r}" for t in texts])
    return checked.tolist()


class RagkitEmbedding(BaseEmbedding):
    """Any ragkit embedder as a LlamaIndex ``BaseEmbedding`` (``Settings.embed_model``, indexes).

    Queries go through ``embed_queries`` (the query template: for Qwen3-Embedding the
    ``Instruct: ...\\nQuery:`` prompt, with ``instruction`` or the embedder's own task), texts through
    ``embed_documents``, in batches of ``embed_batch_size``. The async methods await the embedder's
    ``aembed_queries``/``aembed_documents`` when it has them (remote embedders) and run it in a
    worker thread otherwise. Vectors are the embedder's, L2-normalised float32 values as lists.

    Args:
        embedder: any object with ``dim``, ``fingerprint``, ``embed_documents`` and ``embed_queries``.
        instruction: the query task for an instruction-aware embedder; ``None`` is its default.
        model_name: what LlamaIndex reports; ``None`` is the fingerprint's ``model``.
        embed_batch_size: texts per call to the embedder.
        **kwargs: other ``BaseEmbedding`` fields (``callback_manager``, ``num_workers``, ...).

    Example:
        >>> import numpy as np
        >>> class Letters:  # a toy embedder: counts of a few letters
        ...     dim, fingerprint = 4, {"model": "letters", "dim": 4}
        ...     def embed_documents(self, texts):
        ...         v = np.float32([[t.count(c) + 1e-3 for c in "aeio"] for t in texts])
        ...         return v / np.linalg.norm(v, axis=1, keepdims=True)
        ...     def embed_queries(self, texts, instruction=None):
        ...         return self.embed_documents(texts)
        >>> emb = RagkitEmbedding(Letters())
        >>> emb.model_name, len(emb.get_query_embedding("aaaa")), round(emb.get_text_embedding("aaaa")[0], 3)
        ('letters', 4, 1.0)
        >>> from llama_index.core import Settings                                  # doctest: +SKIP
        >>> from ragkit.embedders import Qwen3Embedder                             # doctest: +SKIP
        >>> Settings.embed_model = RagkitEmbedding(Qwen3Embedder("Qwen/Qwen3-Embedding-0.6B"))
        ... # doctest: +SKIP
        >>> len(Settings.embed_model.get_query_embedding("capital of France?"))   # doctest: +SKIP
        1024
    """

    instruction: str | None = Field(
        default=None, description="The query task of an instruction-aware embedder (None: its default)."
    )
    _embedder: Any = PrivateAttr()

    def __init__(
        self,
        embedder: Any,
        *,
        instruction: str | None = None,
        model_name: str | None = None,
        embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
        **kwargs: Any,
    ) -> None:
        _check_embedder(embedder)
        if instruction is not None:
            check_text(instruction, "instruction")
        if model_name is None:
            fingerprint = embedder.fingerprint
            name = fingerprint.get("model") if isinstance(fingerprint, Mapping) else None
            model_name = str(name) if name else type(embedder).__name__
        super().__init__(
            model_name=model_name, embed_batch_size=embed_batch_size, instruction=instruction, **kwargs
        )
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "RagkitEmbedding"

    @property
    def embedder(self) -> Any:
        """The wrapped ragkit embedder."""
        return self._embedder

    @property
    def dim(self) -> int:
        """The embedder's dimension."""
        return int(self._embedder.dim)

    def _kwargs(self) -> dict[str, Any]:
        return {} if self.instruction is None else {"instruction": self.instruction}

    def _queries(self, queries: list[str]) -> list[Embedding]:
        queries = check_texts(queries, "queries")
        vectors = self._embedder.embed_queries(queries, **self._kwargs())
        return _as_lists(vectors, self._embedder, queries, "query")

    def _texts(self, texts: list[str]) -> list[Embedding]:
        texts = check_texts(texts)
        if not texts:
            return []
        return _as_lists(self._embedder.embed_documents(texts), self._embedder, texts, "text")

    async def _aqueries(self, queries: list[str]) -> list[Embedding]:
        queries = check_texts(queries, "queries")
        aembed = getattr(self._embedder, "aembed_queries", None)
        if callable(aembed):
            vectors = await aembed(queries, **self._kwargs())
        else:
            vectors = await asyncio.to_thread(self._embedder.embed_queries, queries, **self._kwargs())
        return _as_lists(vectors, self._embedder, queries, "query")

    async def _atexts(self, texts: list[str]) -> list[Embedding]:
        texts = check_texts(texts)
        if not texts:
            return []
        aembed = getattr(self._embedder, "aembed_documents", None)
        if callable(aembed):
            vectors = await aembed(texts)
        else:
            vectors = await asyncio.to_thread(self._embedder.embed_documents, texts)
        return _as_lists(vectors, self._embedder, texts, "text")

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._queries([query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._aqueries([query]))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._texts([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._atexts([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._texts(texts)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._atexts(texts)

    def get_query_embeddings(self, queries: Sequence[str]) -> list[Embedding]:
        """Several query embeddings in one call to the embedder (LlamaIndex's API has one at a time).

        Example:
            >>> vectors = RagkitEmbedding(embedder).get_query_embeddings(["a?", "b?"])  # doctest: +SKIP
        """
        return self._queries(list(queries))

    async def aget_query_embeddings(self, queries: Sequence[str]) -> list[Embedding]:
        """Async twin of :meth:`get_query_embeddings`."""
        return await self._aqueries(list(queries))


# ---------------------------------------------------------------------------------------- retriever


class RagkitRetriever(BaseRetriever):
    """A ragkit :class:`~ragkit.Pipeline` as a LlamaIndex ``BaseRetriever``.

    Each query runs ``pipeline.search`` (``aretrieve``: ``pipeline.asearch``, which never blocks the
    event loop) with this retriever's options, and each hit becomes a ``NodeWithScore``
    (:func:`hit_to_node`): the chunk id as node id, the document id as ``ref_doc_id``, ragkit's
    score (and each stage's score in the metadata), best first. The pipeline embeds the query
    itself: a ``QueryBundle``'s ``embedding`` and ``custom_embedding_strs`` are not used.

    The options are attributes (``retriever.k = 3`` changes later queries).

    Args:
        pipeline: a :class:`~ragkit.Pipeline` (anything with ``search`` and ``asearch``).
        k: hits per query.
        filter: LlamaIndex ``MetadataFilters`` (:func:`to_ragkit_filter`) or a ragkit filter dict.
        mode: ``"dense"``, ``"lexical"`` or ``"hybrid"``.
        candidates, instruction, max_per_doc, min_score, diversity, fusion, alpha: as in
            :meth:`ragkit.Pipeline.search` (``diversity`` is MMR's λ in [0, 1]).
        callback_manager, verbose: as in LlamaIndex's ``BaseRetriever``.

    Example:
        >>> from llama_index.core.vector_stores import MetadataFilter, MetadataFilters  # doctest: +SKIP
        >>> retriever = RagkitRetriever(pipe, k=3, mode="hybrid", diversity=0.3,
        ...     filter=MetadataFilters(filters=[MetadataFilter(key="lang", value="en")]))  # doctest: +SKIP
        >>> [(n.node_id, n.node.ref_doc_id) for n in retriever.retrieve("refunds")]      # doctest: +SKIP
        [('faq-1#0', 'faq-1'), ...]
    """

    def __init__(
        self,
        pipeline: Any,
        *,
        k: int = 10,
        filter: MetadataFilters | MetadataFilter | Mapping[str, Any] | None = None,
        mode: str = "dense",
        candidates: int | None = None,
        instruction: str | None = None,
        max_per_doc: int | None = None,
        min_score: float | None = None,
        diversity: float | None = None,
        fusion: str | None = None,
        alpha: float | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        for attr in ("search", "asearch"):
            if not callable(getattr(pipeline, attr, None)):
                raise InputTypeError(f"pipeline lacks {attr}(): pass a ragkit Pipeline")
        if mode not in MODES:
            raise InvalidInputError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        self.pipeline = pipeline
        self.k = _check_positive(k, "k")
        self._filter = to_ragkit_filter(filter)
        self.mode = mode
        self.candidates = _check_positive(candidates, "candidates", optional=True)
        self.instruction = None if instruction is None else check_text(instruction, "instruction")
        self.max_per_doc = _check_positive(max_per_doc, "max_per_doc", optional=True)
        self.min_score = min_score
        check_diversity(diversity)
        self.diversity = diversity
        self.fusion = fusion
        self.alpha = alpha
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @property
    def filter(self) -> dict[str, Any] | None:
        """The ragkit filter dict of later queries; set it to ``MetadataFilters`` or a dict."""
        return self._filter

    @filter.setter
    def filter(self, value: MetadataFilters | MetadataFilter | Mapping[str, Any] | None) -> None:
        self._filter = to_ragkit_filter(value)

    def _options(self) -> dict[str, Any]:
        return {
            "filter": self.filter,
            "mode": self.mode,
            "candidates": self.candidates,
            "instruction": self.instruction,
            "max_per_doc": self.max_per_doc,
            "min_score": self.min_score,
            "diversity": self.diversity,
            "fusion": self.fusion,
            "alpha": self.alpha,
        }

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.pipeline.search(query_bundle.query_str, self.k, **self._options())
        return [hit_to_node(h) for h in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = await self.pipeline.asearch(query_bundle.query_str, self.k, **self._options())
        return [hit_to_node(h) for h in hits]


# ----------------------------------------------------------------------------------------- reranker


def _with_rerank(keys: list[str]) -> list[str]:
    return list(dict.fromkeys([*keys, METADATA_PREFIX + "rerank_score"]))


class RagkitReranker(BaseNodePostprocessor):
    """A ragkit reranker as a LlamaIndex node postprocessor: scores nodes, keeps the ``top_n`` best.

    Each node's text (``metadata_mode``: by default the text alone, as ragkit's own reranking
    sees it) is scored against the query with ``reranker.score(query, texts)`` (awaited
    ``reranker.ascore`` in ``apostprocess_nodes`` when the reranker has it; a worker thread
    otherwise). The nodes come back best first with the reranker's score as their score (for
    Qwen3-Reranker P(yes) in [0, 1]); ties keep their incoming order. Nodes of a
    :class:`RagkitRetriever` come back as copies whose ``ragkit_score``, ``ragkit_rerank_score`` and
    ``ragkit_rank`` say so (as ``Pipeline.search`` with a reranker would); other nodes are kept as
    they are. The input is never changed.

    Args:
        reranker: anything with ``score(query, documents)``: :class:`~ragkit.rerankers.Qwen3Reranker`,
            :class:`~ragkit.rerankers.RemoteReranker`, your own.
        top_n: how many nodes to keep; ``None`` keeps all of them, reordered.
        metadata_mode: which of a node's metadata the reranker sees with its text.
        **kwargs: other ``BaseNodePostprocessor`` fields (``callback_manager``).

    Example:
        >>> import numpy as np
        >>> from ragkit import Hit
        >>> class Length:  # a toy reranker: the longer text is the better one
        ...     def score(self, query, documents):
        ...         return np.float32([len(d) for d in documents])
        >>> nodes = [hit_to_node(Hit(id=f"{t}#0", doc_id=t, text=t, start=0, end=len(t), score=0.5))
        ...          for t in ("ab", "abcd", "abc")]
        >>> best = RagkitReranker(Length(), top_n=2).postprocess_nodes(nodes, query_str="q")
        >>> [(n.node_id, n.score, n.metadata["ragkit_rank"]) for n in best]
        [('abcd#0', 4.0, 1), ('abc#0', 3.0, 2)]
        >>> from ragkit.rerankers import Qwen3Reranker                                 # doctest: +SKIP
        >>> rerank = RagkitReranker(Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B"), top_n=3)  # doctest: +SKIP
        >>> nodes = rerank.postprocess_nodes(retriever.retrieve("refunds"), query_str="refunds")
        ... # doctest: +SKIP
    """

    top_n: int | None = Field(default=None, description="How many nodes to keep (None: all).")
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.NONE, description="The metadata the reranker sees with each node's text."
    )
    _reranker: Any = PrivateAttr()

    def __init__(
        self,
        reranker: Any,
        *,
        top_n: int | None = None,
        metadata_mode: MetadataMode = MetadataMode.NONE,
        **kwargs: Any,
    ) -> None:
        if not callable(getattr(reranker, "score", None)):
            raise InputTypeError("reranker lacks a score(query, documents) method")
        super().__init__(
            top_n=_check_positive(top_n, "top_n", optional=True), metadata_mode=metadata_mode, **kwargs
        )
        self._reranker = reranker

    @classmethod
    def class_name(cls) -> str:
        return "RagkitReranker"

    @property
    def reranker(self) -> Any:
        """The wrapped ragkit reranker."""
        return self._reranker

    def _inputs(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> tuple[str, list[str]]:
        if query_bundle is None:
            raise InvalidInputError("RagkitReranker needs the query: pass query_str= or query_bundle=")
        query = check_text(query_bundle.query_str, "query")
        return query, [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]

    def _order(self, nodes: list[NodeWithScore], scores: Any) -> list[NodeWithScore]:
        values = np.asarray(scores, dtype=np.float32)  # as ragkit's own reranking
        if values.shape != (len(nodes),):
            raise InvalidInputError(f"the reranker returned shape {values.shape} for {len(nodes)} documents")
        if not all(math.isfinite(v) for v in values):
            raise InvalidInputError("the reranker returned a score that is NaN or infinite")
        order = np.argsort(-values, kind="stable")[: self.top_n]
        out = []
        for rank, i in enumerate(order, start=1):
            node, score = nodes[int(i)].node, float(values[i])
            if METADATA_PREFIX + "score" in node.metadata:  # a RagkitRetriever's node: a copy, updated
                ours = {"score": score, "rerank_score": score, "rank": rank}
                node = node.model_copy(
                    update={
                        "metadata": {**node.metadata, **{METADATA_PREFIX + k: v for k, v in ours.items()}},
                        "excluded_embed_metadata_keys": _with_rerank(node.excluded_embed_metadata_keys),
                        "excluded_llm_metadata_keys": _with_rerank(node.excluded_llm_metadata_keys),
                    }
                )
            out.append(NodeWithScore(node=node, score=score))
        return out

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, texts = self._inputs(nodes, query_bundle)
        if not nodes:
            return []
        return self._order(nodes, self._reranker.score(query, texts))

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, texts = self._inputs(nodes, query_bundle)
        if not nodes:
            return []
        ascore = getattr(self._reranker, "ascore", None)
        if callable(ascore):
            scores = await ascore(query, texts)
        else:
            scores = await asyncio.to_thread(self._reranker.score, query, texts)
        return self._order(nodes, scores)
