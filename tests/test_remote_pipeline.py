"""A Pipeline built on the remote embedder and reranker, end to end against the local test server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fake_api import QWEN3_TASK, FakeAPI, fake_score, fake_vector, unit

from ragkit.embedders import OpenAIEmbedder
from ragkit.rerankers import RemoteReranker

pipeline = pytest.importorskip("ragkit.pipeline")

QUERY = "which passage is it?"
TEXTS = [f"passage number {i} about topic {i % 3}" for i in range(8)]


@pytest.fixture(scope="module")
def api():
    with FakeAPI() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(api):
    api.reset()


def dense_order() -> list[int]:
    q = unit(fake_vector(f"Instruct: {QWEN3_TASK}\nQuery:{QUERY}", 64))
    d = unit(np.stack([fake_vector(t, 64) for t in TEXTS]))
    return list(np.argsort(-(d @ q), kind="stable"))


def test_search_and_asearch_use_the_remote_clients(api):
    from ragkit import Document, Pipeline
    from ragkit.backends import LocalBackend

    emb = OpenAIEmbedder("Qwen/Qwen3-Embedding-0.6B", provider="vllm", base_url=api.url + "/v1", dim=64)
    rr = RemoteReranker("Qwen/Qwen3-Reranker-0.6B", provider="vllm", base_url=api.url)
    pipe = Pipeline(emb, reranker=rr, backend=LocalBackend(lexical=False))
    pipe.add([Document(id=f"d{i}", text=t) for i, t in enumerate(TEXTS)])

    plain = Pipeline(emb, backend=LocalBackend(lexical=False))
    plain.add([Document(id=f"d{i}", text=t) for i, t in enumerate(TEXTS)])
    hits = plain.search(QUERY, k=3)
    assert [h.doc_id for h in hits] == [f"d{i}" for i in dense_order()[:3]]

    rerank_order = list(np.argsort(-np.float32([fake_score(QUERY, t) for t in TEXTS]), kind="stable"))
    expected = [f"d{i}" for i in rerank_order[:3]]
    assert [h.doc_id for h in pipe.search(QUERY, k=3, candidates=len(TEXTS))] == expected
    ahits = asyncio.run(pipe.asearch(QUERY, k=3, candidates=len(TEXTS)))
    assert [h.doc_id for h in ahits] == expected
    assert ahits[0].rerank_score == pytest.approx(fake_score(QUERY, ahits[0].text))

    # The reranker got the raw query; the embedder's query request carried the template once.
    rerank_bodies = [r.body for r in api.requests if r.path == "/v1/rerank"]
    assert rerank_bodies and all(b["query"] == QUERY for b in rerank_bodies)
    query_inputs = [
        t for r in api.requests if r.path == "/v1/embeddings" for t in r.body["input"] if "Query:" in t
    ]
    assert query_inputs and set(query_inputs) == {f"Instruct: {QWEN3_TASK}\nQuery:{QUERY}"}
