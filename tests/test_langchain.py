"""The LangChain adapters (ragkit.integrations.langchain): embeddings both ways, the vector store (round
trips, filters, scores, MMR, async), the retriever, the reranking compressor, a RAG chain on a fake LLM,
and the import error that names the extra. LangChain's own standard suites run apart (tests_langchain/,
see .ci/run)."""

from __future__ import annotations

import asyncio
import doctest
import importlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import HashEmbedder
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document as LCDocument
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.language_models import FakeListLLM
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

from ragkit import Pipeline
from ragkit.backends import LocalBackend
from ragkit.chunking import RecursiveChunker
from ragkit.errors import ConfigError, InputTypeError, InvalidInputError
from ragkit.integrations.langchain import (
    METADATA_PREFIX,
    LangChainEmbedder,
    RagkitEmbeddings,
    RagkitReranker,
    RagkitRetriever,
    RagkitVectorStore,
    hit_to_document,
)

CORPUS = [
    ("fr", "Paris is the capital of France and its largest city.", {"lang": "en", "year": 2020}),
    ("de", "Berlin is the capital of Germany.", {"lang": "en", "year": 2018}),
    ("fr-de", "Paris ist die Hauptstadt von Frankreich.", {"lang": "de", "year": 2021}),
    ("fox", "The quick brown fox jumps over the lazy dog.", {"lang": "en", "year": 1999}),
    ("rag", "Retrieval augmented generation combines search with language models.", {"lang": "en"}),
]


class Overlap:
    """A toy reranker: the fraction of the query's words a document holds."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, query, documents):
        self.calls += 1
        q = set(query.lower().split())
        return np.float32([len(q & set(d.lower().replace(".", "").split())) / len(q) for d in documents])


class AsyncOverlap(Overlap):
    def __init__(self) -> None:
        super().__init__()
        self.awaited = 0

    async def ascore(self, query, documents):
        self.awaited += 1
        return self.score(query, documents)


def _store(**kwargs) -> RagkitVectorStore:
    store = RagkitVectorStore(Pipeline(HashEmbedder(), **kwargs))
    store.add_texts([t for _, t, _ in CORPUS], [m for _, _, m in CORPUS], ids=[i for i, _, _ in CORPUS])
    return store


@pytest.fixture
def store():
    s = _store()
    yield s
    s.pipeline.close()


# ------------------------------------------------------------------------------------------ embeddings


def test_ragkit_embeddings_query_side_uses_the_qwen3_instruction(qwen3_embedding_dir):
    from ragkit.embedders import Qwen3Embedder

    emb = Qwen3Embedder(qwen3_embedding_dir, device="cpu", max_length=64)
    lc = RagkitEmbeddings(emb)
    assert isinstance(lc, Embeddings)
    query = lc.embed_query("capital of France?")
    assert isinstance(query, list) and all(type(x) is float for x in query) and len(query) == emb.dim
    np.testing.assert_allclose(query, emb.embed_queries(["capital of France?"])[0], rtol=1e-6, atol=1e-6)
    # The query template with the model card's task differs from the bare document side.
    doc = lc.embed_documents(["capital of France?"])[0]
    np.testing.assert_allclose(doc, emb.embed_documents(["capital of France?"])[0], rtol=1e-6, atol=1e-6)
    assert not np.allclose(query, doc, atol=1e-4)
    task = RagkitEmbeddings(emb, instruction="Find the city")
    np.testing.assert_allclose(
        task.embed_query("capital of France?"),
        emb.embed_queries(["capital of France?"], instruction="Find the city")[0],
        rtol=1e-6,
        atol=1e-6,
    )
    assert asyncio.run(lc.aembed_query("capital of France?")) == pytest.approx(query, abs=1e-6)
    assert asyncio.run(lc.aembed_documents(["capital of France?"]))[0] == pytest.approx(doc, abs=1e-6)
    # A model name or path builds a Qwen3Embedder with the model options.
    named = RagkitEmbeddings(str(qwen3_embedding_dir), device="cpu", max_length=64, dim=32)
    assert type(named.embedder).__name__ == "Qwen3Embedder" and len(named.embed_query("q")) == 32


def test_ragkit_embeddings_checks_its_inputs():
    lc = RagkitEmbeddings(HashEmbedder(dim=8))
    assert lc.embed_documents([]) == []
    with pytest.raises(InputTypeError):
        lc.embed_documents("not a list")
    with pytest.raises(InputTypeError):
        lc.embed_query(3)
    with pytest.raises(ConfigError, match="model name"):
        RagkitEmbeddings(HashEmbedder(), dim=4)
    with pytest.raises(InputTypeError, match="LangChain Embeddings can be used as it is"):
        RagkitEmbeddings(DeterministicFakeEmbedding(size=4))
    with pytest.raises(InputTypeError, match="lacks"):
        RagkitEmbeddings(object())


def test_ragkit_embeddings_awaits_an_async_embedder():
    class Remote(HashEmbedder):
        awaited = 0

        async def aembed_queries(self, texts, instruction=None):
            Remote.awaited += 1
            assert instruction == "task"
            return self.embed_queries(texts)

    lc = RagkitEmbeddings(Remote(dim=8), instruction="task")
    assert asyncio.run(lc.aembed_query("hello")) == pytest.approx(lc.embed_query("hello"))
    assert Remote.awaited == 1


def test_langchain_embedder_probes_dim_lazily_and_normalises():
    class Counting(DeterministicFakeEmbedding):
        calls: int = 0
        model: str = "fake-model-1"

        def embed_query(self, text):
            self.calls += 1
            return super().embed_query(text)

    lc = Counting(size=6)
    emb = LangChainEmbedder(lc)
    assert lc.calls == 0
    assert emb.dim == 6 and lc.calls == 1
    assert emb.dim == 6 and lc.calls == 1
    fp = emb.fingerprint
    assert fp["name"] == "fake-model-1" and fp["dim"] == 6 and fp["model"].startswith("langchain:")
    docs = emb.embed_documents(["foo", "bar"])
    assert docs.dtype == np.float32 and docs.shape == (2, 6)
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-6)
    raw = np.float32(DeterministicFakeEmbedding(size=6).embed_documents(["foo"])[0])
    np.testing.assert_allclose(docs[0], raw / np.linalg.norm(raw), rtol=1e-5)
    queries = emb.embed_queries(["foo"])
    np.testing.assert_allclose(queries, docs[:1], rtol=1e-5)
    np.testing.assert_allclose(asyncio.run(emb.aembed_queries(["foo"])), queries, rtol=1e-6)
    assert emb.embed_documents([]).shape == (0, 6)
    with pytest.raises(InvalidInputError, match="no query instruction"):
        emb.embed_queries(["foo"], instruction="task")
    assert LangChainEmbedder(lc, dim=6, name="mine").fingerprint["model"] == "mine"
    with pytest.raises(ConfigError):
        LangChainEmbedder(lc, dim=0)
    with pytest.raises(InputTypeError):
        LangChainEmbedder(HashEmbedder())


def test_zero_vectors_from_a_langchain_embeddings_are_refused():
    class Zero(Embeddings):
        def embed_documents(self, texts):
            return [[0.0, 0.0, 0.0] for _ in texts]

        def embed_query(self, text):
            return [1.0, 0.0, 0.0]

    store = RagkitVectorStore(embedding=Zero())
    with pytest.raises(InvalidInputError, match="zero"):
        store.add_texts(["nothing"], ids=["z"])
    assert store.get_by_ids(["z"]) == []


# ---------------------------------------------------------------------------------------- vector store


def test_round_trip_get_upsert_delete(store):
    assert store.get_by_ids(["fr", "nope", "fr"]) == [
        LCDocument(id="fr", page_content=CORPUS[0][1], metadata=CORPUS[0][2])
    ]
    assert isinstance(store.embeddings, RagkitEmbeddings)
    # An upsert by id: new text and metadata replace the old ones.
    assert store.add_texts(["Paris is in France."], [{"lang": "fr"}], ids=["fr"]) == ["fr"]
    assert store.get_by_ids(["fr"])[0].page_content == "Paris is in France."
    assert store.get_by_ids(["fr"])[0].metadata == {"lang": "fr"}
    # Ids left out get a UUID; add_documents keeps the documents' own ids.
    new = store.add_documents([LCDocument(page_content="x y", id="own"), LCDocument(page_content="z w")])
    assert new[0] == "own" and len(new[1]) == 36
    assert store.delete(["own", new[1], "unknown"]) is True
    assert store.get_by_ids(new) == []
    assert len(store.pipeline) == len(CORPUS)


def test_delete_by_filter(store):
    assert store.delete(filter={"year": {"$lt": 2019}}) is True
    assert sorted(d.id for d in store.get_by_ids([i for i, _, _ in CORPUS])) == ["fr", "fr-de", "rag"]
    with pytest.raises(InvalidInputError, match="delete-all"):
        store.delete()
    with pytest.raises(InvalidInputError, match="not both"):
        store.delete(["fr"], filter={"lang": "en"})
    with pytest.raises(InvalidInputError):
        store.delete(filter={})  # matches everything by construction: refused by the pipeline


def test_similarity_search_scores_and_filters(store):
    pipe = store.pipeline
    pairs = store.similarity_search_with_score("capital of France", k=3)
    expected = pipe.search("capital of France", k=3)
    assert [d.id for d, _ in pairs] == [h.doc_id for h in expected]
    assert [s for _, s in pairs] == pytest.approx([h.score for h in expected])
    docs = store.similarity_search("capital of France", k=3)
    assert docs == [d for d, _ in pairs]
    assert docs[0].metadata == dict(CORPUS[[i for i, _, _ in CORPUS].index(docs[0].id)][2])
    # Filters are ragkit's filter language, passed through.
    de = store.similarity_search("capital", k=5, filter={"lang": "de"})
    assert [d.id for d in de] == ["fr-de"]
    recent = store.similarity_search(
        "capital", k=5, filter={"$and": [{"lang": "en"}, {"year": {"$gte": 2019}}]}
    )
    assert [d.id for d in recent] == ["fr"]
    assert store.similarity_search("capital", k=5, filter={"lang": {"$in": ["xx"]}}) == []
    # Relevance scores: (1 + cosine) / 2 in dense mode.
    rel = store.similarity_search_with_relevance_scores("capital of France", k=3)
    assert [s for _, s in rel] == pytest.approx([(1 + h.score) / 2 for h in expected], abs=1e-6)
    assert all(0 <= s <= 1 for _, s in rel)
    thresholded = store.similarity_search_with_relevance_scores(
        "capital of France", k=5, score_threshold=0.99
    )
    assert all(s >= 0.99 for _, s in thresholded)
    with pytest.raises(InvalidInputError, match="relevance scores"):
        store.similarity_search_with_relevance_scores("capital", k=2, mode="lexical")
    with pytest.raises(InvalidInputError, match="relevance scores"):
        store.similarity_search_with_relevance_scores("capital", k=5, mode="hybrid")
    # Other search options pass through; unknown ones are refused.
    lexical = store.similarity_search_with_score("fox", k=2, mode="lexical")
    assert lexical[0][0].id == "fox"
    with pytest.raises(TypeError, match="unexpected"):
        store.similarity_search("x", k=1, nonsense=True)
    with pytest.raises(InvalidInputError):
        store.similarity_search("x", k=1, filter={"$bogus": 1})


def test_hit_metadata_and_long_documents():
    store = RagkitVectorStore(
        embedding=RagkitEmbeddings(HashEmbedder()),
        chunker=RecursiveChunker(chunk_size=40, overlap=0),
        hit_metadata=True,
    )
    long = "Paris is the capital of France. " * 4 + "Lyon is a city in France. " * 3
    store.add_texts([long, "Berlin is in Germany."], [{"kind": "long"}, {}], ids=["long", "short"])
    docs = store.similarity_search("capital of France", k=4)
    # One result per chunk: a long document can come back several times, under its own id.
    assert [d.id for d in docs].count("long") >= 2
    for d in docs:
        meta = d.metadata
        assert meta[METADATA_PREFIX + "doc_id"] == d.id
        assert meta[METADATA_PREFIX + "chunk_id"].startswith(d.id + "#")
        text = long if d.id == "long" else "Berlin is in Germany."
        assert text[meta["ragkit_start"] : meta["ragkit_end"]] == d.page_content
        assert meta["ragkit_dense_score"] == pytest.approx(meta["ragkit_score"])
        assert "ragkit_rerank_score" not in meta
    assert [d.metadata["ragkit_rank"] for d in docs] == [1, 2, 3, 4]
    once = store.similarity_search("capital of France", k=4, max_per_doc=1)
    assert sorted(d.id for d in once) == ["long", "short"]
    # get_by_ids gives the whole document, with its own metadata only.
    assert store.get_by_ids(["long"]) == [LCDocument(id="long", page_content=long, metadata={"kind": "long"})]


def test_mmr_is_pipeline_diversity_with_lambda_inverted():
    store = RagkitVectorStore(Pipeline(HashEmbedder(), backend=LocalBackend(lexical=False)))
    texts = [
        "red apples and green apples",
        "red apples and green apples too",
        "red apples and green apples also here",
        "bananas are yellow fruit apples",
    ]
    store.add_texts(texts, ids=["a1", "a2", "a3", "b"])
    relevance = [d.id for d in store.similarity_search("red apples", k=2)]
    assert relevance[:2] != ["a1", "b"] and "b" not in relevance
    only_relevance = store.max_marginal_relevance_search("red apples", k=2, lambda_mult=1.0)
    assert [d.id for d in only_relevance] == relevance
    diverse = store.max_marginal_relevance_search("red apples", k=2, fetch_k=4, lambda_mult=0.3)
    expected = store.pipeline.search("red apples", k=2, candidates=4, diversity=0.7)
    assert [d.id for d in diverse] == [h.doc_id for h in expected]
    assert "b" in [d.id for d in diverse]
    # By vector: the same picks (HashEmbedder embeds queries as documents; no reranker here).
    vector = store.embeddings.embed_query("red apples")
    by_vector = store.max_marginal_relevance_search_by_vector(vector, k=2, fetch_k=4, lambda_mult=0.3)
    assert [d.id for d in by_vector] == [d.id for d in diverse]
    assert [d.id for d in store.similarity_search_by_vector(vector, k=2)] == relevance
    assert [d.id for d in store.similarity_search_by_vector(vector, k=3, max_per_doc=1)] == [
        d.id for d in store.similarity_search("red apples", k=3, max_per_doc=1)
    ]
    assert (
        asyncio.run(store.amax_marginal_relevance_search("red apples", k=2, fetch_k=4, lambda_mult=0.3))
        == diverse
    )
    assert asyncio.run(store.asimilarity_search_by_vector(vector, k=2)) == store.similarity_search_by_vector(
        vector, k=2
    )
    assert (
        asyncio.run(store.amax_marginal_relevance_search_by_vector(vector, k=2, fetch_k=4, lambda_mult=0.3))
        == by_vector
    )
    for bad in (-0.1, 1.5, True):
        with pytest.raises(InvalidInputError, match="lambda_mult"):
            store.max_marginal_relevance_search("red apples", k=2, lambda_mult=bad)
    with pytest.raises(TypeError, match="lambda_mult"):
        store.max_marginal_relevance_search("red apples", k=2, diversity=0.5)
    with pytest.raises(InvalidInputError):
        store.similarity_search_by_vector([1.0, 0.0], k=2)  # wrong dimension
    with pytest.raises(InvalidInputError):
        store.similarity_search_by_vector(vector, k=0)


def test_async_methods(store):
    async def main():
        ids = await store.aadd_texts(["Madrid is the capital of Spain."], [{"lang": "en"}], ids=["es"])
        assert ids == ["es"]
        hits = await store.asimilarity_search("Madrid is the capital of Spain.", k=2, filter={"lang": "en"})
        assert hits[0].id == "es" and hits == store.similarity_search(
            "Madrid is the capital of Spain.", k=2, filter={"lang": "en"}
        )
        pairs = await store.asimilarity_search_with_score("Madrid is the capital of Spain.", k=1)
        assert pairs == store.similarity_search_with_score("Madrid is the capital of Spain.", k=1)
        rel = await store.asimilarity_search_with_relevance_scores("Madrid is the capital of Spain.", k=1)
        assert rel == store.similarity_search_with_relevance_scores("Madrid is the capital of Spain.", k=1)
        assert [d.id for d in await store.aget_by_ids(["es", "nope"])] == ["es"]
        assert await store.adelete(["es"]) is True
        assert await store.adelete(filter={"lang": "de"}) is True
        assert await store.aget_by_ids(["es", "fr-de"]) == []
        other = await RagkitVectorStore.afrom_texts(
            ["a b", "c d"], DeterministicFakeEmbedding(size=8), ids=["1", "2"]
        )
        assert sorted(d.id for d in await other.aget_by_ids(["1", "2"])) == ["1", "2"]

    asyncio.run(main())


def test_from_texts_takes_any_langchain_embeddings_and_pipeline_options():
    store = RagkitVectorStore.from_texts(
        ["foo", "bar"],
        DeterministicFakeEmbedding(size=6),
        [{"n": 1}, {"n": 2}],
        ids=["1", "2"],
        backend=LocalBackend(lexical=False),
    )
    assert isinstance(store.pipeline.embedder, LangChainEmbedder)
    assert isinstance(store.embeddings, DeterministicFakeEmbedding)
    assert RagkitVectorStore(store.pipeline).embeddings is store.embeddings
    assert store.similarity_search("bar", k=2) == [
        LCDocument(id="2", page_content="bar", metadata={"n": 2}),
        LCDocument(id="1", page_content="foo", metadata={"n": 1}),
    ]
    with pytest.raises(ConfigError):
        store.similarity_search("bar", k=1, mode="hybrid")  # no lexical index in this backend
    # A RagkitEmbeddings is unwrapped: the pipeline embeds with the ragkit embedder itself.
    emb = HashEmbedder()
    native = RagkitVectorStore.from_texts(["x"], RagkitEmbeddings(emb))
    assert native.pipeline.embedder is emb
    with pytest.raises(ConfigError, match="instruction"):
        RagkitVectorStore(embedding=RagkitEmbeddings(emb, instruction="task"))
    with pytest.raises(ConfigError, match="exactly one"):
        RagkitVectorStore()
    with pytest.raises(ConfigError, match="exactly one"):
        RagkitVectorStore(native.pipeline, embedding=emb)
    with pytest.raises(ConfigError, match="only with embedding"):
        RagkitVectorStore(native.pipeline, reranker=Overlap())
    with pytest.raises(InputTypeError):
        RagkitVectorStore(object())
    with pytest.raises(InvalidInputError):
        RagkitVectorStore(native.pipeline, mode="fuzzy")
    with pytest.raises(InvalidInputError, match="metadatas"):
        native.add_texts(["a", "b"], [{}])
    with pytest.raises(TypeError):
        native.add_texts(["a"], nonsense=1)


def test_as_retriever_and_a_reranking_pipeline():
    store = _store(reranker=Overlap())
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"lang": "en"}})
    docs = retriever.invoke("capital of France")
    assert [d.id for d in docs] == [
        h.doc_id for h in store.pipeline.search("capital of France", k=2, filter={"lang": "en"})
    ]
    # With a reranker, relevance scores are its probabilities (here: word overlap in [0, 1]).
    rel = store.similarity_search_with_relevance_scores("capital of France", k=2)
    hits = store.pipeline.search("capital of France", k=2)
    assert [s for _, s in rel] == pytest.approx([h.rerank_score for h in hits])
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 5, "lambda_mult": 0.5})
    assert len(mmr.invoke("capital of France")) == 2


# ------------------------------------------------------------------------------------------- retriever


def test_retriever_options_and_hit_metadata():
    pipe = _store().pipeline
    retriever = RagkitRetriever(pipe, k=2)
    docs = retriever.invoke("capital of France")
    hits = pipe.search("capital of France", k=2)
    assert [d.id for d in docs] == [h.doc_id for h in hits]
    for d, h in zip(docs, hits, strict=True):
        assert d.page_content == h.text
        assert d.metadata["ragkit_chunk_id"] == h.id and d.metadata["ragkit_score"] == pytest.approx(h.score)
        assert (d.metadata["ragkit_start"], d.metadata["ragkit_end"]) == (h.start, h.end)
        assert d.metadata["lang"] == h.metadata["lang"]
    assert [d.metadata["ragkit_rank"] for d in docs] == [1, 2]
    # Per-call overrides of every option.
    assert len(retriever.invoke("capital", k=1)) == 1
    assert [d.id for d in retriever.invoke("capital", k=5, filter={"lang": "de"})] == ["fr-de"]
    lexical = retriever.invoke("fox", mode="lexical", k=1)
    assert lexical[0].id == "fox" and "ragkit_lexical_score" in lexical[0].metadata
    hybrid = RagkitRetriever(pipeline=pipe, k=3, mode="hybrid", filter={"lang": "en"})
    got = hybrid.invoke("capital of France")
    assert [d.id for d in got] == [
        h.doc_id for h in pipe.search("capital of France", k=3, mode="hybrid", filter={"lang": "en"})
    ]
    assert "ragkit_fused_score" in got[0].metadata
    diverse = retriever.invoke("capital", k=2, diversity=0.5)
    assert [d.id for d in diverse] == [h.doc_id for h in pipe.search("capital", k=2, diversity=0.5)]
    plain = RagkitRetriever(pipe, k=1, hit_metadata=False).invoke("capital of France")
    assert plain[0].metadata == pipe.get(plain[0].id).metadata
    assert asyncio.run(retriever.ainvoke("capital of France")) == docs
    # Attributes are options: changing one changes later queries.
    retriever.k = 3
    assert len(retriever.invoke("capital")) == 3
    with pytest.raises(TypeError, match="unexpected"):
        retriever.invoke("capital", fetch_k=3)
    for bad in ({"k": 0}, {"mode": "fuzzy"}, {"filter": {"$bogus": 1}}, {"diversity": 2.0}):
        with pytest.raises((InvalidInputError, ValueError)):
            RagkitRetriever(pipe, **bad)
    with pytest.raises((InputTypeError, ValueError)):
        RagkitRetriever(object())


def test_retriever_reranking():
    # The pipeline's reranker runs inside Pipeline.search.
    pipe = _store(reranker=Overlap()).pipeline
    docs = RagkitRetriever(pipe, k=2).invoke("capital of France")
    assert [d.id for d in docs] == [h.doc_id for h in pipe.search("capital of France", k=2)]
    assert docs[0].metadata["ragkit_rerank_score"] == docs[0].metadata["ragkit_score"]
    with pytest.raises((ConfigError, ValueError), match="reranks already"):
        RagkitRetriever(pipe, reranker=Overlap())
    # A retriever's own reranker= for a pipeline without one: the same as that pipeline with it.
    bare = _store().pipeline
    own = RagkitRetriever(bare, k=2, reranker=Overlap())
    assert [d.id for d in own.invoke("capital of France")] == [d.id for d in docs]
    assert [d.metadata["ragkit_rank"] for d in own.invoke("capital of France")] == [1, 2]
    strict = own.invoke("capital of France", k=5, min_score=0.99)
    assert [d.id for d in strict] == ["fr"] and strict[0].metadata["ragkit_rerank_score"] == 1.0
    assert own.invoke("capital of France", min_score=1.01) == []
    assert len(own.invoke("capital of France", k=5, max_per_doc=1)) == len(CORPUS)
    reranked_mmr = RagkitRetriever(pipe, k=2, diversity=0.5).invoke("capital of France")
    own_mmr = own.invoke("capital of France", diversity=0.5)
    assert [d.id for d in own_mmr] == [d.id for d in reranked_mmr]
    rr = AsyncOverlap()
    async_own = RagkitRetriever(bare, k=2, reranker=rr)
    assert [d.id for d in asyncio.run(async_own.ainvoke("capital of France"))] == [d.id for d in docs]
    assert rr.awaited == 1
    assert [d.id for d in asyncio.run(own.ainvoke("capital of France"))] == [d.id for d in docs]
    with pytest.raises((InputTypeError, ValueError)):
        RagkitRetriever(bare, reranker=object())


# -------------------------------------------------------------------------------------------- reranker


def test_reranker_compressor_keeps_the_top_n():
    docs = [LCDocument(page_content=t, id=i, metadata=m) for i, t, m in CORPUS]
    compressor = RagkitReranker(Overlap(), top_n=2)
    out = compressor.compress_documents(docs, "capital of France")
    assert [d.id for d in out] == ["fr", "de"]
    assert out[0].metadata["relevance_score"] == pytest.approx(1.0)
    assert out[0].metadata["lang"] == "en" and "relevance_score" not in docs[0].metadata  # copies
    assert len(RagkitReranker(Overlap(), top_n=None).compress_documents(docs, "capital")) == len(docs)
    # Ties keep the input order.
    tied = RagkitReranker(Overlap(), top_n=None).compress_documents(docs, "zzz")
    assert [d.id for d in tied] == [d.id for d in docs]
    assert compressor.compress_documents([], "q") == []
    rr = AsyncOverlap()
    assert asyncio.run(RagkitReranker(rr, top_n=2).acompress_documents(docs, "capital of France")) == out
    assert rr.awaited == 1
    assert (
        asyncio.run(RagkitReranker(Overlap(), top_n=2).acompress_documents(docs, "capital of France")) == out
    )
    with pytest.raises((InputTypeError, ValueError)):
        RagkitReranker(object())
    with pytest.raises((InvalidInputError, ValueError)):
        RagkitReranker(Overlap(), top_n=0)
    with pytest.raises(InputTypeError):
        compressor.compress_documents(["not a document"], "q")


def test_reranker_updates_ragkit_hit_metadata():
    pipe = _store().pipeline
    docs = RagkitRetriever(pipe, k=5).invoke("capital of France")
    out = RagkitReranker(Overlap(), top_n=2).compress_documents(docs, "capital of France")
    assert [d.metadata["ragkit_rank"] for d in out] == [1, 2]
    for d in out:
        assert (
            d.metadata["ragkit_score"] == d.metadata["ragkit_rerank_score"] == d.metadata["relevance_score"]
        )
        assert d.metadata["ragkit_dense_score"] is not None  # the first stage's score stays


def test_reranker_compressor_with_a_tiny_qwen3_reranker(qwen3_reranker_dir):
    from ragkit.rerankers import Qwen3Reranker

    reranker = Qwen3Reranker(str(qwen3_reranker_dir), device="cpu")
    docs = [LCDocument(page_content=t, id=i) for i, t, _ in CORPUS]
    out = RagkitReranker(reranker, top_n=3).compress_documents(docs, "capital of France")
    scores = reranker.score("capital of France", [d.page_content for d in docs])
    best = np.argsort(-scores, kind="stable")[:3]
    assert [d.id for d in out] == [docs[int(i)].id for i in best]
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx(
        [float(scores[i]) for i in best], abs=1e-6
    )
    named = RagkitReranker(str(qwen3_reranker_dir), top_n=1)
    assert type(named.reranker).__name__ == "Qwen3Reranker"


# ----------------------------------------------------------------------------------------------- chain


class _Prompts(BaseCallbackHandler):
    def __init__(self) -> None:
        self.prompts: list[str] = []

    def on_llm_start(self, serialized, prompts, **kwargs):
        self.prompts.extend(prompts)


def test_a_retrieval_qa_chain_on_ragkit_returns_its_hits():
    pipe = _store().pipeline
    retriever = RagkitRetriever(pipe, k=2, filter={"lang": "en"})

    def format_docs(docs):
        return "\n\n".join(f"[{d.id} @{d.metadata['ragkit_start']}] {d.page_content}" for d in docs)

    prompt = PromptTemplate.from_template(
        "Answer from the context.\n\nContext:\n{context}\n\nQuestion: {question}"
    )
    llm = FakeListLLM(responses=["Paris."])
    answer = prompt | llm | StrOutputParser()
    chain = RunnableParallel(context=retriever, question=RunnablePassthrough()).assign(
        answer=RunnableLambda(lambda x: {"context": format_docs(x["context"]), "question": x["question"]})
        | answer
    )
    seen = _Prompts()
    out = chain.invoke("What is the capital of France?", config={"callbacks": [seen]})
    hits = pipe.search("What is the capital of France?", k=2, filter={"lang": "en"})
    assert out["answer"] == "Paris."
    assert [d.id for d in out["context"]] == [h.doc_id for h in hits]
    assert [d.metadata["ragkit_score"] for d in out["context"]] == pytest.approx([h.score for h in hits])
    # The LLM saw ragkit's hits, in ragkit's order.
    assert len(seen.prompts) == 1
    text = seen.prompts[0]
    positions = [text.index(f"[{h.doc_id} @{h.start}] {h.text}") for h in hits]
    assert positions == sorted(positions)
    assert "What is the capital of France?" in text
    # The classic one-liner form works too.
    simple = {"context": retriever | format_docs, "question": RunnablePassthrough()} | answer
    assert simple.invoke("What is the capital of France?") == "Paris."


# -------------------------------------------------------------------------------------- import surface


def test_hit_to_document_checks_its_input():
    with pytest.raises(InputTypeError):
        hit_to_document({"id": "a#0"})


def test_a_hit_location_reaches_the_metadata_and_the_header_does_not():
    from ragkit import Hit

    hit = Hit(
        id="a#2",
        doc_id="a",
        text="Run make.",
        start=40,
        end=49,
        score=0.7,
        rank=1,
        metadata={"page": "the user's own key"},
        location={"page": 3, "heading": "Install"},
        header="Guide: ",
    )
    doc = hit_to_document(hit)
    assert doc.metadata["ragkit_location"] == {"page": 3, "heading": "Install"}
    assert doc.metadata["page"] == "the user's own key" and doc.page_content == "Run make."
    assert "Guide" not in str(doc.metadata)
    assert "ragkit_location" not in hit_to_document(hit.model_copy(update={"location": {}})).metadata
    assert "ragkit_location" not in hit_to_document(hit, hit_metadata=False).metadata


@pytest.mark.parametrize("module", ["ragkit.integrations.langchain", "ragkit.integrations._langchain_base"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_importing_ragkit_integrations_imports_no_framework():
    out = _run(
        "import sys, ragkit, ragkit.integrations\n"
        "frameworks = ('langchain_core', 'langsmith', 'llama_index')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in frameworks))"
    )
    assert out == "[]"


def test_missing_langchain_names_the_extra():
    out = _run(
        "import sys; sys.modules['langchain_core'] = None\n"
        "from ragkit.errors import MissingDependencyError\n"
        "try:\n"
        "    import ragkit.integrations.langchain\n"
        "except MissingDependencyError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    assert out.startswith("MissingDependencyError")
    assert "pip install 'ragkit[langchain]'" in out and "langchain_core" in out
