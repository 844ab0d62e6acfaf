"""RemoteReranker against a real HTTP server on 127.0.0.1 (tests/fake_api.py), in both wire shapes."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from fake_api import FakeAPI, Reply, fake_score

from ragkit.errors import AuthenticationError, BadRequestError, ConfigError, InputTypeError, RemoteError
from ragkit.rerankers import RemoteReranker, Reranker, rerank

QUERY = "capital of France"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "", "Lyon is in France.", "日本"]


@pytest.fixture(scope="module")
def api():
    with FakeAPI() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(api, monkeypatch):
    api.reset()
    for var in (
        "CO_API_KEY",
        "COHERE_API_KEY",
        "JINA_API_KEY",
        "VLLM_API_KEY",
        "INFINITY_API_KEY",
        "RAGKIT_API_KEY",
    ):
        monkeypatch.delenv(var, raising=False)


def make(server, model="Qwen/Qwen3-Reranker-0.6B", **kw) -> RemoteReranker:
    kw.setdefault("provider", "vllm")
    kw.setdefault("base_url", server.url)
    kw.setdefault("backoff", 0.001)
    kw.setdefault("timeout", 5.0)
    return RemoteReranker(model, **kw)


def expected(query, docs):
    return np.float32([fake_score(query, d) for d in docs])


def test_cohere_shape_maps_by_index(api):
    scores = make(api).score(QUERY, DOCS)
    assert scores.dtype == np.float32 and scores.shape == (len(DOCS),)
    np.testing.assert_array_equal(scores, expected(QUERY, DOCS))
    request = api.requests[0]
    assert request.path == "/v1/rerank"
    assert request.body == {
        "model": "Qwen/Qwen3-Reranker-0.6B",
        "query": QUERY,  # raw: the server formats the Qwen3 prompt
        "documents": DOCS,
        "top_n": len(DOCS),
    }


def test_tei_shape(api):
    scores = make(api, "BAAI/bge-reranker-v2-m3", provider="tei").score(QUERY, DOCS)
    np.testing.assert_array_equal(scores, expected(QUERY, DOCS))
    assert api.requests[0].path == "/rerank"
    assert api.requests[0].body == {"query": QUERY, "texts": DOCS}


def test_api_overrides_the_preset_shape(api):
    scores = make(api, api="tei").score(QUERY, DOCS)
    np.testing.assert_array_equal(scores, expected(QUERY, DOCS))
    assert api.requests[0].body == {"query": QUERY, "texts": DOCS}


def test_shuffled_results(api):
    api.configure(order="random")
    docs = [f"document {i}" for i in range(40)]
    np.testing.assert_array_equal(make(api).score(QUERY, docs), expected(QUERY, docs))


def test_tei_batches_of_32_merged_by_index(api):
    api.configure(max_inputs=32)
    docs = [f"candidate {i}" for i in range(70)]
    scores = make(api, "bge", provider="tei").score(QUERY, docs)
    assert sorted(len(b["texts"]) for b in api.bodies()) == [6, 32, 32]
    np.testing.assert_array_equal(scores, expected(QUERY, docs))


def test_custom_batch_size(api):
    docs = [f"candidate {i}" for i in range(10)]
    scores = make(api, batch_size=4).score(QUERY, docs)
    assert sorted(len(b["documents"]) for b in api.bodies()) == [2, 4, 4]
    assert sorted(b["top_n"] for b in api.bodies()) == [2, 4, 4]
    np.testing.assert_array_equal(scores, expected(QUERY, docs))


def test_batch_size_over_the_provider_limit(api):
    with pytest.raises(ConfigError, match="at most 32 documents"):
        make(api, provider="tei", batch_size=64)


def test_server_limit_exceeded_is_a_bad_request_with_tei_message(api):
    api.configure(max_inputs=32)
    rr = make(api, provider="vllm", api="tei")  # no client-side limit: 40 texts in one request
    with pytest.raises(BadRequestError, match="batch size 40 > maximum allowed batch size 32") as e:
        rr.score(QUERY, [f"d{i}" for i in range(40)])
    assert e.value.status_code == 422 and api.count == 1


def test_fewer_results_than_documents(api):
    api.configure(drop=1)
    with pytest.raises(RemoteError, match="sent 5 documents, the answer scores 4"):
        make(api).score(QUERY, DOCS)
    assert api.count == 1


@pytest.mark.parametrize(
    "answer",
    [
        {"results": [{"index": 0, "relevance_score": 0.5}, {"index": 0, "relevance_score": 0.4}]},
        {"results": [{"index": 0, "relevance_score": 0.5}, {"index": 2, "relevance_score": 0.4}]},
        {"results": [{"index": 0, "relevance_score": 0.5}, {"relevance_score": 0.4}]},
        {"results": [{"index": 0, "relevance_score": 0.5}, {"index": 1, "relevance_score": "high"}]},
        {"results": [{"index": 0, "relevance_score": 0.5}, {"index": 1}]},
        {"data": []},
    ],
)
def test_malformed_answers(api, answer):
    api.script(Reply(json=answer))
    with pytest.raises(RemoteError):
        make(api).score(QUERY, ["a", "b"])
    assert api.count == 1


def test_async_twin(api):
    api.configure(delay=0.05)
    docs = [f"candidate {i}" for i in range(9)]
    rr = make(api, batch_size=3, max_concurrency=2)

    async def main():
        async with rr:
            return await rr.ascore(QUERY, docs)

    np.testing.assert_array_equal(asyncio.run(main()), expected(QUERY, docs))
    assert api.count == 3 and api.max_in_flight == 2


def test_concurrency_bound_sync(api):
    api.configure(delay=0.1)
    docs = [f"candidate {i}" for i in range(12)]
    np.testing.assert_array_equal(
        make(api, batch_size=2, max_concurrency=3).score(QUERY, docs), expected(QUERY, docs)
    )
    assert api.count == 6 and api.max_in_flight == 3


def test_retries_and_auth_errors(api):
    api.script(Reply(503, json={"error": {"message": "loading"}}))
    np.testing.assert_array_equal(make(api).score(QUERY, DOCS), expected(QUERY, DOCS))
    assert api.count == 2
    api.script(Reply(401, json={"message": "invalid api token"}))
    with pytest.raises(AuthenticationError, match="invalid api token"):
        make(api).score(QUERY, DOCS)
    assert api.count == 3


@pytest.mark.parametrize(
    ("provider", "path", "var"),
    [("cohere", "/v2/rerank", "CO_API_KEY"), ("jina", "/v1/rerank", "JINA_API_KEY")],
)
def test_cloud_presets_paths_and_keys(api, monkeypatch, provider, path, var):
    with pytest.raises(ConfigError, match=var):
        make(api, "rerank-v3.5", provider=provider)
    assert api.count == 0
    monkeypatch.setenv(var, "key-from-env")
    make(api, "rerank-v3.5", provider=provider).score(QUERY, ["a"])
    assert api.requests[0].path == path
    assert api.requests[0].headers["authorization"] == "Bearer key-from-env"


@pytest.mark.parametrize(
    ("provider", "base", "path"),
    [
        ("vllm", "", "/v1/rerank"),
        ("vllm", "/v1", "/v1/rerank"),  # a root that already ends in /v1 is accepted
        ("ragkit", "/v1", "/v1/rerank"),
        ("infinity", "", "/rerank"),
        ("tei", "", "/rerank"),
        (None, "", "/v1/rerank"),  # only base_url: any Cohere-shape server
    ],
)
def test_local_presets_paths(api, provider, base, path):
    rr = make(api, provider=provider, base_url=api.url + base)
    np.testing.assert_array_equal(rr.score(QUERY, ["a", "b"]), expected(QUERY, ["a", "b"]))
    assert api.requests[0].path == path
    assert "authorization" not in api.requests[0].headers


def test_no_provider_and_no_base_url():
    with pytest.raises(ConfigError, match="provider= .* or base_url="):
        RemoteReranker("m")


def test_empty_documents_make_no_request(api):
    assert make(api).score(QUERY, []).shape == (0,)
    assert asyncio.run(make(api).ascore(QUERY, [])).shape == (0,)
    assert api.count == 0


def test_wrong_input_types(api):
    rr = make(api)
    with pytest.raises(InputTypeError):
        rr.score(None, ["a"])
    with pytest.raises(InputTypeError):
        rr.score(QUERY, "a single string")
    with pytest.raises(InputTypeError):
        rr.score(QUERY, ["a", b"bytes"])
    assert api.count == 0


def test_rerank_helper_and_protocol(api):
    rr = make(api)
    assert isinstance(rr, Reranker)
    hits = rerank(rr, QUERY, DOCS, k=3)
    order = np.argsort(-expected(QUERY, DOCS), kind="stable")[:3]
    assert [h.text for h in hits] == [DOCS[i] for i in order]
    assert [h.rank for h in hits] == [1, 2, 3]


def test_spec_has_no_secret_and_rebuilds(api, monkeypatch):
    monkeypatch.setenv("CO_API_KEY", "env-secret")
    for rr in (make(api, provider="cohere", api_key="arg-secret"), make(api, provider="cohere")):
        text = json.dumps(rr.spec()) + repr(rr)
        assert "secret" not in text
    spec = make(api, provider="tei", batch_size=8).spec()
    assert spec["class"] == "ragkit.rerankers.RemoteReranker"
    rebuilt = RemoteReranker.from_spec(json.loads(json.dumps(spec)))
    assert rebuilt.spec() == spec
    np.testing.assert_array_equal(rebuilt.score(QUERY, DOCS), expected(QUERY, DOCS))
