"""The LlamaIndex adapters: round trips against ragkit's own search, async, filters, scores, a query engine.

LlamaIndex has no standard conformance suite for retrievers, embeddings or postprocessors, so each
adapter is checked against the ragkit call it wraps (same ids, scores, vectors), and the filter
mapping against LlamaIndex's own in-memory filter semantics where the two languages agree.
"""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import HashEmbedder

from ragkit import Hit, Pipeline
from ragkit.chunking import RecursiveChunker
from ragkit.errors import InputTypeError, InvalidInputError
from ragkit.rerankers import rerank

try:
    import llama_index.core  # noqa: F401
except ImportError:  # the missing-dependency test still runs
    HAVE_LLAMA_INDEX = False
else:
    HAVE_LLAMA_INDEX = True
    from llama_index.core import Settings, VectorStoreIndex
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
    from llama_index.core.vector_stores.types import (
        ExactMatchFilter,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )
    from llama_index.core.vector_stores.utils import build_metadata_filter_fn

    from ragkit.integrations.llama_index import (
        METADATA_PREFIX,
        RagkitEmbedding,
        RagkitReranker,
        RagkitRetriever,
        hit_to_node,
        to_ragkit_filter,
    )

needs_llama_index = pytest.mark.skipif(
    not HAVE_LLAMA_INDEX, reason="llama-index-core is not installed: pip install 'ragkit[llama-index]'"
)

DOCS = [
    {
        "id": "paris",
        "text": "Paris is the capital of France. The Louvre museum in Paris holds the Mona Lisa.",
        "metadata": {"lang": "en", "year": 2020, "tags": ["city", "art"], "score": 4.5},
    },
    {
        "id": "berlin",
        "text": "Berlin is the capital of Germany. Its museum island holds five museums.",
        "metadata": {"lang": "de", "year": 2021, "tags": ["city"], "score": 3.0},
    },
    {
        "id": "rome",
        "text": "Rome is the capital of Italy. The Vatican museums are in Rome.",
        "metadata": {"lang": "it", "year": 2019, "tags": ["city", "art", "history"], "score": 4.0},
    },
    {
        "id": "refunds",
        "text": "Refunds take five days. A refund is paid to the card used for the purchase.",
        "metadata": {"lang": "en", "year": 2023, "tags": ["faq"], "score": 2.5},
    },
    {
        "id": "shipping",
        "text": "Shipping takes two days. Shipping is free above fifty euros.",
        "metadata": {"lang": "en", "year": 2022, "tags": ["faq", "shipping"], "score": 1.0},
    },
    {
        "id": "paris-copy",
        "text": "Paris is the capital of France. The Louvre museum in Paris holds the Mona Lisa!",
        "metadata": {"lang": "fr", "year": 2020, "tags": ["city", "art"], "score": 4.5},
    },
]
QUERY = "capital museum in Paris"
ALL = 64  # more than the corpus's chunks: a filtered search returns every match


class Overlap:
    """A fake reranker: the number of query words in the text, with a tie-breaking length term."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def score(self, query, documents):
        self.calls.append((query, list(documents)))
        words = set(query.lower().split())
        return np.float32([len(words & set(d.lower().split())) + len(d) / 1000 for d in documents])


class AsyncOverlap(Overlap):
    def __init__(self) -> None:
        super().__init__()
        self.async_calls = 0

    async def ascore(self, query, documents):
        self.async_calls += 1
        return self.score(query, documents)


class RecordingEmbedder(HashEmbedder):
    """HashEmbedder that records the instruction of each query call, with async twins."""

    def __init__(self) -> None:
        super().__init__()
        self.instructions: list[str | None] = []
        self.async_calls = 0

    def embed_queries(self, texts, instruction=None):
        self.instructions.append(instruction)
        return super().embed_queries(texts)

    async def aembed_queries(self, texts, instruction=None):
        self.async_calls += 1
        return self.embed_queries(texts, instruction=instruction)

    async def aembed_documents(self, texts):
        self.async_calls += 1
        return self.embed_documents(texts)


@pytest.fixture(scope="module")
def pipe():
    p = Pipeline(HashEmbedder(), chunker=RecursiveChunker(40, 0))
    p.add(DOCS)
    assert p.backend.count_chunks() > len(DOCS)  # several chunks per document: offsets matter
    yield p
    p.close()


@pytest.fixture
def offline_settings(monkeypatch):
    """LlamaIndex's global LLM and embedding model set explicitly (unset, they resolve to OpenAI),
    and every socket connection refused: nothing may reach the network."""
    previous_llm, previous_embed = Settings._llm, Settings._embed_model
    Settings.llm = MockLLM()
    Settings.embed_model = RagkitEmbedding(HashEmbedder())

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield
    Settings._llm, Settings._embed_model = previous_llm, previous_embed


def _expected_metadata(hit: Hit) -> dict:
    extra = {
        "doc_id": hit.doc_id,
        "chunk_id": hit.id,
        "start": hit.start,
        "end": hit.end,
        "rank": hit.rank,
        "score": hit.score,
    }
    for stage in ("dense_score", "lexical_score", "fused_score", "rerank_score"):
        if getattr(hit, stage) is not None:
            extra[stage] = getattr(hit, stage)
    return {**hit.metadata, **{METADATA_PREFIX + k: v for k, v in extra.items()}}


def _assert_nodes_are_hits(nodes, hits, pipe) -> None:
    assert len(nodes) == len(hits) > 0
    for node, hit in zip(nodes, hits, strict=True):
        assert isinstance(node, NodeWithScore) and isinstance(node.node, TextNode)
        assert node.node_id == hit.id
        assert node.node.ref_doc_id == hit.doc_id
        assert node.score == hit.score
        assert node.node.text == hit.text == pipe.get(hit.doc_id).text[hit.start : hit.end]
        assert (node.node.start_char_idx, node.node.end_char_idx) == (hit.start, hit.end)
        assert node.node.metadata == _expected_metadata(hit)


# ------------------------------------------------------------------------------------------ retriever


@needs_llama_index
@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_retrieve_returns_ragkit_hits(pipe, mode):
    retriever = RagkitRetriever(pipe, k=5, mode=mode)
    nodes = retriever.retrieve(QUERY)
    _assert_nodes_are_hits(nodes, pipe.search(QUERY, 5, mode=mode), pipe)
    assert nodes == retriever.retrieve(QueryBundle(QUERY))


@needs_llama_index
@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_aretrieve_equals_retrieve(pipe, mode):
    retriever = RagkitRetriever(pipe, k=4, mode=mode, filter={"lang": {"$in": ["en", "fr"]}})
    sync = retriever.retrieve(QUERY)
    async_ = asyncio.run(retriever.aretrieve(QUERY))
    assert [(n.node_id, n.score, n.node.metadata) for n in async_] == [
        (n.node_id, n.score, n.node.metadata) for n in sync
    ]
    hits = asyncio.run(pipe.asearch(QUERY, 4, mode=mode, filter=retriever.filter))
    _assert_nodes_are_hits(async_, hits, pipe)


@needs_llama_index
def test_aretrieve_uses_asearch_and_the_async_embedder():
    embedder = RecordingEmbedder()
    with Pipeline(embedder, query_cache_size=0) as p:
        p.add(DOCS)
        nodes = asyncio.run(RagkitRetriever(p, k=3, instruction="Find cities").aretrieve(QUERY))
        assert [n.node_id for n in nodes] == [h.id for h in p.search(QUERY, 3)]
    assert embedder.async_calls == 1
    assert embedder.instructions[0] == "Find cities"  # the retriever's instruction reached the embedder


@needs_llama_index
def test_scores_of_each_stage(pipe):
    dense = RagkitRetriever(pipe, k=3).retrieve(QUERY)
    assert all(-1.0 <= n.score <= 1.0 for n in dense)
    assert all(n.metadata["ragkit_dense_score"] == n.score for n in dense)
    assert all("ragkit_lexical_score" not in n.metadata for n in dense)
    assert [n.score for n in dense] == sorted((n.score for n in dense), reverse=True)
    assert [n.metadata["ragkit_rank"] for n in dense] == [1, 2, 3]

    hybrid = RagkitRetriever(pipe, k=3, mode="hybrid", fusion="convex", alpha=0.5).retrieve(QUERY)
    assert all(n.metadata["ragkit_fused_score"] == n.score for n in hybrid)
    hits = pipe.search(QUERY, 3, mode="hybrid", fusion="convex", alpha=0.5)
    assert [n.metadata.get("ragkit_lexical_score") for n in hybrid] == [h.lexical_score for h in hits]

    with Pipeline(HashEmbedder(), reranker=Overlap(), chunker=RecursiveChunker(40, 0)) as reranked:
        reranked.add(DOCS)
        nodes = RagkitRetriever(reranked, k=3).retrieve(QUERY)
        _assert_nodes_are_hits(nodes, reranked.search(QUERY, 3), reranked)
        assert all(n.metadata["ragkit_rerank_score"] == n.score for n in nodes)
        assert all(isinstance(n.metadata["ragkit_dense_score"], float) for n in nodes)


@needs_llama_index
def test_ragkit_keys_stay_out_of_llm_and_embedding_text(pipe):
    node = RagkitRetriever(pipe, k=1).retrieve(QUERY)[0].node
    for mode in (MetadataMode.LLM, MetadataMode.EMBED):
        content = node.get_content(metadata_mode=mode)
        assert METADATA_PREFIX not in content
        assert "lang: " in content  # the document's own metadata is shown
    assert node.get_content(metadata_mode=MetadataMode.NONE) == node.text


@needs_llama_index
def test_a_hit_location_reaches_the_node_metadata_and_the_header_does_not():
    hit = Hit(
        id="a#2",
        doc_id="a",
        text="Run make.",
        start=40,
        end=49,
        score=0.7,
        rank=1,
        location={"pages": [3, 4]},
        header="Guide: ",
    )
    node = hit_to_node(hit)
    assert node.metadata["ragkit_location"] == {"pages": [3, 4]} and node.text == "Run make."
    assert "ragkit_location" in node.node.excluded_llm_metadata_keys and "Guide" not in str(node.metadata)
    assert "ragkit_location" not in hit_to_node(hit.model_copy(update={"location": {}})).metadata


@needs_llama_index
def test_search_options_pass_through(pipe):
    options = [
        {"diversity": 0.7},
        {"diversity": 1.0, "mode": "hybrid"},
        {"max_per_doc": 1},
        {"min_score": 0.3},
        {"candidates": 3},
        {"mode": "hybrid", "fusion": "rrf"},
    ]
    for opts in options:
        nodes = RagkitRetriever(pipe, k=4, **opts).retrieve(QUERY)
        _assert_nodes_are_hits(nodes, pipe.search(QUERY, 4, **opts), pipe)
    plain = [n.node_id for n in RagkitRetriever(pipe, k=4).retrieve(QUERY)]
    diverse = [n.node_id for n in RagkitRetriever(pipe, k=4, diversity=1.0).retrieve(QUERY)]
    assert plain != diverse  # the near-duplicate "paris-copy" makes MMR change the list
    one_per_doc = RagkitRetriever(pipe, k=4, max_per_doc=1).retrieve(QUERY)
    assert len({n.node.ref_doc_id for n in one_per_doc}) == len(one_per_doc)


@needs_llama_index
def test_options_are_attributes(pipe):
    retriever = RagkitRetriever(pipe, k=2)
    assert len(retriever.retrieve(QUERY)) == 2
    retriever.k = 3
    retriever.filter = MetadataFilters(filters=[MetadataFilter(key="lang", value="en")])
    assert retriever.filter == {"$and": [{"lang": {"$eq": "en"}}]}
    nodes = retriever.retrieve(QUERY)
    assert len(nodes) == 3 and {n.metadata["lang"] for n in nodes} == {"en"}


@needs_llama_index
def test_retriever_refuses_bad_options(pipe):
    with pytest.raises(InputTypeError, match="search"):
        RagkitRetriever(object())
    with pytest.raises(InvalidInputError, match="k must be"):
        RagkitRetriever(pipe, k=0)
    with pytest.raises(InvalidInputError, match="unknown mode"):
        RagkitRetriever(pipe, mode="sparse")
    with pytest.raises(InvalidInputError, match="diversity"):
        RagkitRetriever(pipe, diversity=1.5)
    with pytest.raises(InvalidInputError, match="operator"):
        RagkitRetriever(pipe, filter={"lang": {"$like": "e%"}})
    with pytest.raises(InputTypeError, match="MetadataFilters"):
        RagkitRetriever(pipe, filter=[("lang", "en")])
    with pytest.raises(InputTypeError):
        hit_to_node({"id": "a#0"})


# -------------------------------------------------------------------------------------------- filters


def _f(key, value, op="=="):
    return MetadataFilter(key=key, value=value, operator=FilterOperator(op))


FLAT_FILTERS = [
    ("eq", lambda: MetadataFilters(filters=[_f("lang", "en")])),
    ("exact-match", lambda: MetadataFilters(filters=[ExactMatchFilter(key="lang", value="de")])),
    ("ne", lambda: MetadataFilters(filters=[_f("lang", "en", "!=")])),
    ("gt", lambda: MetadataFilters(filters=[_f("year", 2020, ">")])),
    ("gte", lambda: MetadataFilters(filters=[_f("year", 2020, ">=")])),
    ("lt", lambda: MetadataFilters(filters=[_f("year", 2021, "<")])),
    ("lte-float", lambda: MetadataFilters(filters=[_f("score", 3.0, "<=")])),
    ("in", lambda: MetadataFilters(filters=[_f("lang", ["de", "it"], "in")])),
    ("nin", lambda: MetadataFilters(filters=[_f("lang", ["de", "it"], "nin")])),
    ("any", lambda: MetadataFilters(filters=[_f("tags", ["history", "shipping"], "any")])),
    ("all", lambda: MetadataFilters(filters=[_f("tags", ["city", "art"], "all")])),
    ("contains", lambda: MetadataFilters(filters=[_f("tags", "faq", "contains")])),
    ("and", lambda: MetadataFilters(filters=[_f("lang", "en"), _f("year", 2022, ">=")])),
    (
        "or",
        lambda: MetadataFilters(filters=[_f("lang", "de"), _f("year", 2023)], condition=FilterCondition.OR),
    ),
    (
        "not",
        lambda: MetadataFilters(filters=[_f("lang", "en"), _f("year", 2019)], condition=FilterCondition.NOT),
    ),
    ("empty", lambda: MetadataFilters(filters=[])),
]


@needs_llama_index
@pytest.mark.parametrize("make", [m for _, m in FLAT_FILTERS], ids=[n for n, _ in FLAT_FILTERS])
def test_metadata_filters_match_llama_index_semantics(pipe, make):
    """ragkit, given the converted filter, selects exactly the documents LlamaIndex's own in-memory
    filter selects (every document has every field here, where the two languages agree)."""
    filters = make()
    by_id = {d["id"]: d["metadata"] for d in DOCS}
    accepts = build_metadata_filter_fn(lambda doc_id: by_id[doc_id], filters)
    expected = {doc_id for doc_id in by_id if accepts(doc_id)}
    nodes = RagkitRetriever(pipe, k=ALL, filter=filters).retrieve(QUERY)
    assert {n.node.ref_doc_id for n in nodes} == expected
    hits = pipe.search(QUERY, ALL, filter=to_ragkit_filter(filters))
    assert expected and hits  # every case selects something, so the comparison below is not empty
    _assert_nodes_are_hits(nodes, hits, pipe)
    async_nodes = asyncio.run(RagkitRetriever(pipe, k=ALL, filter=filters).aretrieve(QUERY))
    assert [n.node_id for n in async_nodes] == [n.node_id for n in nodes]


@needs_llama_index
def test_filter_conversion_spelled_out():
    assert to_ragkit_filter(None) is None
    assert to_ragkit_filter(MetadataFilters(filters=[])) is None
    assert to_ragkit_filter(_f("year", 2020, ">")) == {"year": {"$gt": 2020}}
    assert to_ragkit_filter(MetadataFilters(filters=[_f("lang", ["a", "b"], "nin")])) == {
        "$and": [{"lang": {"$nin": ["a", "b"]}}]
    }
    assert to_ragkit_filter(_f("tags", ["x", "y"], "all")) == {
        "$and": [{"tags": {"$eq": "x"}}, {"tags": {"$eq": "y"}}]
    }
    nested = MetadataFilters(
        filters=[
            MetadataFilters(filters=[_f("lang", "de"), _f("lang", "it")], condition=FilterCondition.OR),
            _f("year", 2020, ">="),
        ]
    )
    assert to_ragkit_filter(nested) == {
        "$and": [{"$or": [{"lang": {"$eq": "de"}}, {"lang": {"$eq": "it"}}]}, {"year": {"$gte": 2020}}]
    }
    raw = {"$or": [{"lang": "de"}, {"year": {"$not": {"$gte": 2020}}}]}
    assert to_ragkit_filter(raw) == raw and to_ragkit_filter(raw) is not raw


@needs_llama_index
def test_nested_metadata_filters_and_dict_filters(pipe):
    nested = MetadataFilters(
        filters=[
            MetadataFilters(filters=[_f("lang", "de"), _f("lang", "it")], condition=FilterCondition.OR),
            _f("year", 2020, ">="),
        ]
    )
    nodes = RagkitRetriever(pipe, k=ALL, filter=nested).retrieve(QUERY)
    assert {n.node.ref_doc_id for n in nodes} == {"berlin"}
    dict_filters = {
        "$or": [{"lang": "de"}, {"tags": "faq"}],
        "$not": {"year": 2023},
    }
    nodes = RagkitRetriever(pipe, k=ALL, filter=dict_filters).retrieve(QUERY)
    _assert_nodes_are_hits(nodes, pipe.search(QUERY, ALL, filter=dict_filters), pipe)
    assert {n.node.ref_doc_id for n in nodes} == {"berlin", "shipping"}


@needs_llama_index
def test_missing_fields_follow_ragkit_semantics():
    """ragkit's ``$ne``/``$nin`` need the field present (LlamaIndex's in-memory store matches a
    missing field); a ragkit ``$not`` dict filter is the way to include such documents."""
    with Pipeline(HashEmbedder()) as p:
        p.add([{"id": "a", "text": "one", "metadata": {"lang": "en"}}, {"id": "b", "text": "two"}])
        ne = RagkitRetriever(p, k=5, filter=MetadataFilters(filters=[_f("lang", "de", "!=")]))
        assert [n.node.ref_doc_id for n in ne.retrieve("one")] == ["a"]
        negated = RagkitRetriever(p, k=5, filter={"lang": {"$not": {"$eq": "de"}}})
        assert {n.node.ref_doc_id for n in negated.retrieve("one")} == {"a", "b"}


@needs_llama_index
@pytest.mark.parametrize("op", ["text_match", "text_match_insensitive", "is_empty"])
def test_inexpressible_operators_are_refused_clearly(pipe, op):
    filters = MetadataFilters(filters=[_f("lang", "en", op)])
    with pytest.raises(InvalidInputError, match=f"{FilterOperator(op).name}.*ragkit filter dict"):
        to_ragkit_filter(filters)
    with pytest.raises(InvalidInputError):
        RagkitRetriever(pipe, filter=filters)


# ------------------------------------------------------------------------------------------- reranker


@needs_llama_index
def test_reranker_postprocessor_scores_and_orders(pipe):
    reranker = Overlap()
    hits = pipe.search(QUERY, 6)
    nodes = RagkitRetriever(pipe, k=6).retrieve(QUERY)
    out = RagkitReranker(reranker, top_n=3).postprocess_nodes(nodes, query_str=QUERY)
    expected = rerank(Overlap(), QUERY, hits, k=3)  # ragkit's own reranking of the same hits
    assert [n.node_id for n in out] == [h.id for h in expected]
    assert [n.score for n in out] == [h.score for h in expected]
    assert reranker.calls == [(QUERY, [h.text for h in hits])]  # the text alone, one call
    # Each node's metadata now reads as a reranked ragkit hit's; the inputs are left as they were.
    for node, hit in zip(out, expected, strict=True):
        assert node.metadata == _expected_metadata(hit)
        assert METADATA_PREFIX not in node.node.get_content(metadata_mode=MetadataMode.LLM)
    assert [n.score for n in nodes] == [h.score for h in hits]
    assert all("ragkit_rerank_score" not in n.metadata for n in nodes)

    foreign = [NodeWithScore(node=TextNode(id_=f"n{i}", text=n.text), score=0.0) for i, n in enumerate(nodes)]
    kept = RagkitReranker(Overlap(), top_n=3).postprocess_nodes(foreign, query_str=QUERY)
    assert [n.node.text for n in kept] == [h.text for h in expected]
    assert all(any(k.node is f.node for f in foreign) for k in kept)  # not ragkit's: kept as they are

    everything = RagkitReranker(Overlap()).postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    assert len(everything) == len(nodes)
    assert [n.score for n in everything] == sorted((n.score for n in everything), reverse=True)


@needs_llama_index
def test_reranker_async(pipe):
    nodes = RagkitRetriever(pipe, k=5).retrieve(QUERY)
    sync = RagkitReranker(Overlap(), top_n=2).postprocess_nodes(nodes, query_str=QUERY)
    threaded = asyncio.run(RagkitReranker(Overlap(), top_n=2).apostprocess_nodes(nodes, query_str=QUERY))
    native = AsyncOverlap()
    awaited = asyncio.run(RagkitReranker(native, top_n=2).apostprocess_nodes(nodes, query_str=QUERY))
    assert native.async_calls == 1
    for other in (threaded, awaited):
        assert [(n.node_id, n.score) for n in other] == [(n.node_id, n.score) for n in sync]


@needs_llama_index
def test_reranker_edges(pipe):
    rr = RagkitReranker(Overlap(), top_n=2)
    assert rr.postprocess_nodes([], query_str=QUERY) == []
    assert asyncio.run(rr.apostprocess_nodes([], query_str=QUERY)) == []
    nodes = RagkitRetriever(pipe, k=3).retrieve(QUERY)
    with pytest.raises(InvalidInputError, match="needs the query"):
        rr.postprocess_nodes(nodes)

    class Wrong:
        def __init__(self, scores):
            self.scores = scores

        def score(self, query, documents):
            return self.scores

    with pytest.raises(InvalidInputError, match="shape"):
        RagkitReranker(Wrong([1.0])).postprocess_nodes(nodes, query_str=QUERY)
    with pytest.raises(InvalidInputError, match="NaN"):
        RagkitReranker(Wrong([1.0, math.nan, 0.0])).postprocess_nodes(nodes, query_str=QUERY)
    with pytest.raises(InputTypeError, match="score"):
        RagkitReranker(object())
    with pytest.raises(InvalidInputError, match="top_n"):
        RagkitReranker(Overlap(), top_n=0)
    with_metadata = RagkitReranker(Overlap(), metadata_mode=MetadataMode.LLM)
    reranker = with_metadata.reranker
    with_metadata.postprocess_nodes(nodes[:1], query_str=QUERY)
    assert reranker.calls[0][1][0].startswith("lang: ")
    assert RagkitReranker(Overlap(), top_n=1).to_dict()["top_n"] == 1


@needs_llama_index
def test_qwen3_reranker_through_the_postprocessor(pipe, qwen3_reranker_dir):
    pytest.importorskip("torch")
    from ragkit.rerankers import Qwen3Reranker

    qwen = Qwen3Reranker(str(qwen3_reranker_dir), device="cpu")
    nodes = RagkitRetriever(pipe, k=4).retrieve(QUERY)
    out = RagkitReranker(qwen, top_n=4).postprocess_nodes(nodes, query_str=QUERY)
    scores = qwen.score(QUERY, [n.node.text for n in nodes])
    by_id = {n.node_id: float(s) for n, s in zip(nodes, scores, strict=True)}
    assert {n.node_id: n.score for n in out} == pytest.approx(by_id, abs=1e-6)
    assert all(0.0 <= n.score <= 1.0 for n in out)
    assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)


# ------------------------------------------------------------------------------------------ embedding


@needs_llama_index
def test_embedding_vectors_are_the_embedders():
    embedder = HashEmbedder()
    emb = RagkitEmbedding(embedder, embed_batch_size=2)
    texts = [d["text"] for d in DOCS]
    assert emb.model_name == "hash-embedder" and emb.dim == 64 and emb.embedder is embedder
    query = np.float32(emb.get_query_embedding(QUERY))
    np.testing.assert_array_equal(query, embedder.embed_queries([QUERY])[0])
    first = np.float32(emb.get_text_embedding(texts[0]))
    np.testing.assert_array_equal(first, embedder.embed_documents(texts[:1])[0])
    batch = np.float32(emb.get_text_embedding_batch(texts))  # three calls of at most two texts
    np.testing.assert_array_equal(batch, embedder.embed_documents(texts))
    abatch = np.float32(asyncio.run(emb.aget_text_embedding_batch(texts)))
    np.testing.assert_array_equal(abatch, batch)
    np.testing.assert_array_equal(np.float32(asyncio.run(emb.aget_query_embedding(QUERY))), query)
    np.testing.assert_array_equal(np.float32(asyncio.run(emb.aget_text_embedding(texts[1]))), batch[1])
    many = np.float32(emb.get_query_embeddings([QUERY, "refunds"]))
    np.testing.assert_array_equal(many, embedder.embed_queries([QUERY, "refunds"]))
    amany = asyncio.run(emb.aget_query_embeddings([QUERY, "refunds"]))
    np.testing.assert_array_equal(np.float32(amany), many)
    assert emb.get_text_embedding_batch([]) == []
    assert all(isinstance(x, float) for x in emb.get_query_embedding(QUERY))


@needs_llama_index
def test_embedding_instruction_and_async_embedder():
    embedder = RecordingEmbedder()
    emb = RagkitEmbedding(embedder, instruction="Find the city")
    emb.get_query_embedding("q")
    asyncio.run(emb.aget_query_embedding("q"))
    asyncio.run(emb.aget_text_embedding_batch(["a", "b"]))
    assert embedder.instructions == ["Find the city", "Find the city"]
    assert embedder.async_calls == 2  # aembed_queries and aembed_documents were awaited
    RagkitEmbedding(embedder).get_query_embedding("q")
    assert embedder.instructions[-1] is None


@needs_llama_index
def test_embedding_is_a_pydantic_model_without_the_embedder_field():
    emb = RagkitEmbedding(HashEmbedder(), instruction="task", model_name="mine")
    dumped = emb.to_dict()
    assert dumped["class_name"] == "RagkitEmbedding"
    assert dumped["model_name"] == "mine" and dumped["instruction"] == "task"
    assert "embedder" not in dumped and "_embedder" not in dumped
    assert "embedder" not in RagkitEmbedding.model_fields
    with pytest.raises(InputTypeError, match="lacks 'dim'"):
        RagkitEmbedding(object())


@needs_llama_index
def test_embedding_refuses_bad_vectors():
    class Broken(HashEmbedder):
        def embed_documents(self, texts):
            out = super().embed_documents(texts)
            out[0, 0] = np.nan
            return out

    with pytest.raises(InvalidInputError, match="text 'abc'"):
        RagkitEmbedding(Broken()).get_text_embedding("abc")


@needs_llama_index
def test_embedding_with_qwen3_applies_the_query_instruction(qwen3_embedding_dir):
    pytest.importorskip("torch")
    from ragkit.embedders import DEFAULT_QWEN3_TASK, Qwen3Embedder

    qwen = Qwen3Embedder(qwen3_embedding_dir, device="cpu", max_length=64, dim=32)
    emb = RagkitEmbedding(qwen)
    q = "capital of France?"
    np.testing.assert_allclose(emb.get_query_embedding(q), qwen.embed_queries([q])[0], atol=1e-6)
    np.testing.assert_allclose(
        emb.get_query_embedding(q), qwen.embed_queries([q], instruction=DEFAULT_QWEN3_TASK)[0], atol=1e-6
    )
    np.testing.assert_allclose(emb.get_text_embedding(q), qwen.embed_documents([q])[0], atol=1e-6)
    assert not np.allclose(emb.get_query_embedding(q), emb.get_text_embedding(q), atol=1e-4)
    custom = RagkitEmbedding(qwen, instruction="Find the country")
    np.testing.assert_allclose(
        custom.get_query_embedding(q), qwen.embed_queries([q], instruction="Find the country")[0], atol=1e-6
    )
    assert len(custom.get_query_embedding(q)) == 32


@needs_llama_index
def test_embedding_drives_a_llama_index_vector_index(offline_settings):
    """LlamaIndex's own VectorStoreIndex with RagkitEmbedding ranks as a ragkit pipeline does."""
    embedder = HashEmbedder()
    nodes = [TextNode(id_=d["id"], text=d["text"]) for d in DOCS]
    index = VectorStoreIndex(nodes, embed_model=RagkitEmbedding(embedder))
    got = index.as_retriever(similarity_top_k=4).retrieve(QUERY)
    with Pipeline(embedder) as p:  # one chunk per document: the default chunker
        p.add([{"id": d["id"], "text": d["text"]} for d in DOCS])
        hits = p.search(QUERY, 4)
    # The same cosine scores ("paris" and "paris-copy" tie, and each library breaks ties its own way).
    assert {n.node_id: n.score for n in got} == pytest.approx({h.doc_id: h.score for h in hits}, abs=1e-6)


# --------------------------------------------------------------------------------------- query engine


@needs_llama_index
def test_query_engine_with_mock_llm_returns_ragkit_hits(pipe, offline_settings):
    retriever = RagkitRetriever(pipe, k=4, filter=MetadataFilters(filters=[_f("lang", "de", "!=")]))
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
    response = engine.query(QUERY)
    hits = pipe.search(QUERY, 4, filter={"lang": {"$ne": "de"}})
    _assert_nodes_are_hits(response.source_nodes, hits, pipe)
    assert all(h.text in str(response) for h in hits)  # MockLLM echoes its prompt: the context
    assert "ragkit_" not in str(response)

    reranked = RetrieverQueryEngine.from_args(
        RagkitRetriever(pipe, k=6), llm=MockLLM(), node_postprocessors=[RagkitReranker(Overlap(), top_n=2)]
    )
    expected = rerank(Overlap(), QUERY, pipe.search(QUERY, 6), k=2)
    for result in (reranked.query(QUERY), asyncio.run(reranked.aquery(QUERY))):
        assert [n.node_id for n in result.source_nodes] == [h.id for h in expected]
        assert [n.score for n in result.source_nodes] == [h.score for h in expected]
        assert [n.node.metadata for n in result.source_nodes] == [_expected_metadata(h) for h in expected]


@needs_llama_index
def test_query_engine_from_global_settings(pipe, offline_settings):
    """``Settings.llm`` set to a MockLLM: the engine builds without an ``llm=`` and stays offline."""
    response = RetrieverQueryEngine.from_args(RagkitRetriever(pipe, k=2, mode="hybrid")).query(QUERY)
    assert [n.node_id for n in response.source_nodes] == [h.id for h in pipe.search(QUERY, 2, mode="hybrid")]


# ---------------------------------------------------------------------------------------- packaging


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_missing_llama_index_names_the_extra():
    proc = _run(
        "import sys; sys.modules['llama_index'] = None\n"
        "from ragkit.errors import MissingDependencyError\n"
        "try:\n"
        "    import ragkit.integrations.llama_index\n"
        "except MissingDependencyError as e:\n"
        "    print(type(e).__name__, e.extra, e)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "MissingDependencyError llama-index" in proc.stdout
    assert "pip install 'ragkit[llama-index]'" in proc.stdout


def test_importing_ragkit_does_not_import_llama_index():
    proc = _run(
        "import sys, ragkit, ragkit.integrations, ragkit.retrieval, ragkit.filters\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'llama_index'))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@needs_llama_index
@pytest.mark.parametrize("name", ["ragkit.integrations.llama_index", "ragkit.integrations._llama_index_base"])
def test_docstring_examples_run(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
