"""``ragkit serve`` mechanics with fake models: batching, isolation, back-pressure, draining, loading.

The fakes need no torch, so each test starts its own small server on 127.0.0.1 in well under a second.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import HashEmbedder  # noqa: E402

from ragkit.errors import ConfigError, InvalidInputError, RagkitError  # noqa: E402
from ragkit.models import load_embedder, load_reranker  # noqa: E402
from ragkit.serve import BackgroundServer, create_app, serve_main  # noqa: E402


class SlowEmbedder(HashEmbedder):
    """A HashEmbedder that records its calls, takes ``delay`` seconds each, and fails on cue."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.log: list[tuple[str, list[str]]] = []
        self.started = threading.Event()

    def _call(self, kind: str, texts) -> np.ndarray:
        texts = list(texts)
        self.log.append((kind, texts))
        self.started.set()
        time.sleep(self.delay)
        if "boom" in texts:
            raise InvalidInputError("'boom' is not a valid input")
        if "crash" in texts:
            raise RuntimeError("secret internal detail at /srv/models/x")
        return self._embed(texts)

    def embed_documents(self, texts):
        return self._call("document", texts)

    def embed_queries(self, texts, instruction=None):
        return self._call(f"query:{instruction}", texts)


class OverlapReranker:
    """Scores by shared words; records its calls."""

    def __init__(self) -> None:
        self.log: list[tuple[str, list[str]]] = []

    def score(self, query, documents):
        self.log.append((query, list(documents)))
        time.sleep(0.2)
        words = set(query.split())
        return np.float32([len(words & set(d.split())) / (1 + len(d.split())) for d in documents])


def vectors(body: dict) -> np.ndarray:
    rows = sorted(body["data"], key=lambda d: d["index"])
    return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in rows])


def post_all(url: str, path: str, payloads: list[dict]) -> list[httpx.Response]:
    """POST every payload at once (one connection each) and return the responses in order."""

    async def run():
        limits = httpx.Limits(max_connections=len(payloads) + 1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
            return await asyncio.gather(*(client.post(path, json=p) for p in payloads))

    return asyncio.run(run())


def embed_payloads(n: int, per_request: int = 2) -> list[dict]:
    return [
        {
            "input": [f"request {i} text {j} " + "word " * (i % 5) for j in range(per_request)],
            "encoding_format": "base64",
        }
        for i in range(n)
    ]


# ------------------------------------------------------------------------------------------- batching


def test_batching_gathers_requests_and_returns_each_its_rows():
    emb = SlowEmbedder(delay=0.2)
    payloads = embed_payloads(24, per_request=2)
    with BackgroundServer(create_app(emb, batch_wait_ms=5)) as server:
        responses = post_all(server.url, "/v1/embeddings", payloads)
        worker = server.app.state.ragkit.models[0]
        assert (worker.requests, worker.batches) == (24, len(emb.log))
    reference = HashEmbedder()
    for payload, response in zip(payloads, responses, strict=True):
        assert response.status_code == 200
        np.testing.assert_array_equal(vectors(response.json()), reference.embed_documents(payload["input"]))
    assert len(emb.log) < len(payloads)  # fewer model calls than requests
    assert max(len(texts) for _, texts in emb.log) > 2  # some call held several requests' texts


def test_without_batching_each_request_is_one_call():
    emb = SlowEmbedder(delay=0.01)
    payloads = embed_payloads(8, per_request=3)
    with BackgroundServer(create_app(emb, batching=False)) as server:
        responses = post_all(server.url, "/v1/embeddings", payloads)
    assert all(r.status_code == 200 for r in responses)
    assert sorted(texts for _, texts in emb.log) == sorted(p["input"] for p in payloads)


def test_batches_respect_the_token_budget():
    emb = SlowEmbedder(delay=0.2)
    # No count_tokens on the fake: ~len/4 + 1 tokens, so 40-character texts are 11 tokens, two per batch.
    payloads = [{"input": [f"{i:02d}" + "x" * 38]} for i in range(12)]
    with BackgroundServer(create_app(emb, max_batch_tokens=25, batch_wait_ms=20)) as server:
        responses = post_all(server.url, "/v1/embeddings", payloads)
    assert all(r.status_code == 200 for r in responses)
    assert max(len(texts) for _, texts in emb.log) == 2


def test_queries_and_documents_go_in_separate_calls():
    emb = SlowEmbedder(delay=0.05)
    payloads = [
        {"input": [f"doc {i}"]}
        if i % 3 == 0
        else {"input": [f"query {i}"], "input_type": "query"}
        if i % 3 == 1
        else {"input": [f"task {i}"], "instruction": "Find code"}
        for i in range(12)
    ]
    with BackgroundServer(create_app(emb)) as server:
        responses = post_all(server.url, "/v1/embeddings", payloads)
    assert all(r.status_code == 200 for r in responses)
    for kind, texts in emb.log:
        prefix = {"document": "doc", "query:None": "query", "query:Find code": "task"}[kind]
        assert all(t.startswith(prefix) for t in texts)


def test_a_bad_input_fails_only_its_own_request(caplog):
    emb = SlowEmbedder(delay=0.05)
    payloads = embed_payloads(10)
    payloads[3] = {"input": ["fine", "boom"]}
    payloads[6] = {"input": ["crash"]}
    with caplog.at_level(logging.ERROR, logger="ragkit"):
        with BackgroundServer(create_app(emb)) as server:
            responses = post_all(server.url, "/v1/embeddings", payloads)
    reference = HashEmbedder()
    for i, (payload, response) in enumerate(zip(payloads, responses, strict=True)):
        if i == 3:
            assert response.status_code == 400
            assert response.json()["error"]["message"] == "'boom' is not a valid input"
        elif i == 6:
            assert response.status_code == 500
            error = response.json()["error"]
            assert error["type"] == "server_error" and "server log" in error["message"]
            assert "secret" not in response.text and "Traceback" not in response.text
        else:
            assert response.status_code == 200
            np.testing.assert_array_equal(
                vectors(response.json()), reference.embed_documents(payload["input"])
            )
    assert "secret internal detail" in caplog.text  # the details go to the log


def test_rerank_requests_for_one_query_share_a_call():
    rr = OverlapReranker()
    payloads = [{"query": "capital of France", "documents": [f"doc {i} capital", "France"]} for i in range(6)]
    payloads += [{"query": "other", "documents": ["other doc"]}]
    with BackgroundServer(create_app(reranker=rr)) as server:
        responses = post_all(server.url, "/v1/rerank", payloads)
    for payload, response in zip(payloads, responses, strict=True):
        results = response.json()["results"]
        want = OverlapReranker().score(payload["query"], payload["documents"])
        assert {r["index"]: r["relevance_score"] for r in results} == pytest.approx(
            dict(enumerate(want.tolist()))
        )
    assert len(rr.log) < len(payloads)
    assert max(len(docs) for query, docs in rr.log if query == "capital of France") > 2  # several requests
    assert ("other", ["other doc"]) in rr.log  # another query is never mixed in


# ------------------------------------------------------------------------------------- back-pressure


class GatedEmbedder(HashEmbedder):
    """Holds every call inside the model until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def embed_documents(self, texts):
        self.entered.set()
        assert self.gate.wait(30)
        return self._embed(list(texts))


def test_a_full_queue_answers_503_with_retry_after():
    emb = GatedEmbedder()
    with BackgroundServer(create_app(emb, batching=False, max_queue=1)) as server:
        worker = server.app.state.ragkit.models[0]
        results: dict[str, httpx.Response] = {}

        def send(name: str) -> threading.Thread:
            def call():
                results[name] = httpx.post(server.url + "/v1/embeddings", json={"input": [name]}, timeout=60)

            thread = threading.Thread(target=call)
            thread.start()
            return thread

        try:
            running = send("running")
            assert emb.entered.wait(30)  # the first request is inside the model
            queued = send("queued")
            deadline = time.monotonic() + 30
            while len(worker._queue) < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = httpx.post(server.url + "/v1/embeddings", json={"input": ["refused"]}, timeout=30)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "overloaded"
            assert "max_queue" in refused.json()["error"]["message"]
        finally:
            emb.gate.set()
        running.join(30)
        queued.join(30)
    assert results["running"].status_code == results["queued"].status_code == 200


# ---------------------------------------------------------------------------------------- lifecycle


def test_draining_answers_503_and_ready_follows():
    with BackgroundServer(create_app(HashEmbedder())) as server:
        service = server.app.state.ragkit
        service.draining = True
        try:
            r = httpx.post(server.url + "/v1/embeddings", json={"input": "a"})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "shutting_down"
            assert httpx.get(server.url + "/ready").json() == {"status": "draining"}
            assert httpx.get(server.url + "/health").status_code == 200  # alive, only not taking work
        finally:
            service.draining = False
        assert httpx.post(server.url + "/v1/embeddings", json={"input": "a"}).status_code == 200


def test_shutdown_lets_in_flight_requests_finish():
    emb = SlowEmbedder(delay=1.0)
    server = BackgroundServer(create_app(emb)).start()
    result: dict = {}

    def call():
        result["response"] = httpx.post(server.url + "/v1/embeddings", json={"input": ["slow"]}, timeout=30)

    client = threading.Thread(target=call)
    client.start()
    assert emb.started.wait(10)  # the request is inside the model
    server.stop()
    client.join(10)
    assert result["response"].status_code == 200
    assert server.app.state.ragkit.draining
    assert not server.app.state.ragkit.models[0]._thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.post(server.url + "/v1/embeddings", json={"input": ["late"]}, timeout=5)


def test_ready_while_loading_then_served(monkeypatch):
    gate = threading.Event()

    def slow_load(ref, **options):
        assert ref == "acme/embedder-v1"
        gate.wait(30)
        return HashEmbedder()

    monkeypatch.setattr("ragkit.serve.service.load_embedder", slow_load)
    server = BackgroundServer(create_app("acme/embedder-v1"))
    starting = threading.Thread(target=server.start)
    starting.start()
    try:
        deadline = time.monotonic() + 30
        while not server.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.get(server.url + "/health").status_code == 200
        assert httpx.get(server.url + "/ready").json() == {"status": "loading"}
        r = httpx.post(server.url + "/v1/embeddings", json={"input": "a"})
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.json()["error"]["code"] == "loading"
        gate.set()
        starting.join(30)
        assert httpx.get(server.url + "/ready").json() == {"status": "ready"}
        models = httpx.get(server.url + "/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["acme/embedder-v1"]
    finally:
        gate.set()
        server.stop()


def test_a_load_failure_is_reported(monkeypatch):
    def broken(ref, **options):
        raise ConfigError(f"{ref}: no such model")

    monkeypatch.setattr("ragkit.serve.service.load_embedder", broken)
    with pytest.raises(RagkitError, match="failed to load: nowhere/model: no such model"):
        BackgroundServer(create_app("nowhere/model")).start()


# ------------------------------------------------------------------------------------- names, config


def test_served_model_names_route_requests():
    app = create_app(HashEmbedder(), OverlapReranker(), served_model_names=["emb-a", "rr-b"])
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client:
        listed = client.get("/v1/models").json()["data"]
        assert [(m["id"], m["task"]) for m in listed] == [("emb-a", "embedding"), ("rr-b", "rerank")]
        assert client.post("/v1/embeddings", json={"model": "emb-a", "input": "x"}).json()["model"] == "emb-a"
        # Another spelling of the same canonical name is the same model.
        assert client.post("/v1/embeddings", json={"model": "org/EMB-A", "input": "x"}).status_code == 200
        wrong = client.post("/v1/embeddings", json={"model": "rr-b", "input": "x"})
        assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "wrong_model_task"
        unknown = client.post("/v1/rerank", json={"model": "emb-z", "query": "q", "documents": ["d"]})
        assert unknown.status_code == 404 and "'rr-b'" in unknown.json()["error"]["message"]
        search = client.post("/v1/search", json={"query": "q"})
        assert search.status_code == 404 and search.json()["error"]["code"] == "index_not_loaded"


def test_more_names_than_models_fail_the_load():
    with pytest.raises(RagkitError, match="served model names"):
        BackgroundServer(create_app(HashEmbedder(), served_model_names=["a", "b"])).start()


def test_create_app_rejects_bad_configuration():
    with pytest.raises(ConfigError, match="nothing to serve"):
        create_app()
    with pytest.raises(ConfigError, match="max_queue"):
        create_app(HashEmbedder(), max_queue=0)
    with pytest.raises(ConfigError, match="embed_documents"):
        create_app(object())
    with pytest.raises(ConfigError, match="score"):
        create_app(reranker=object())
    with pytest.raises(ConfigError, match="list of strings"):
        create_app(HashEmbedder(), api_keys="secret")


def test_serve_main(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        serve_main([])
    assert exit_info.value.code == 2
    ragkit_logger = logging.getLogger("ragkit")
    level = ragkit_logger.level
    try:
        missing = tmp_path / "no-such-model"
        assert serve_main(["--embedder", str(missing), "--port", "0", "--log-level", "critical"]) == 1
    finally:
        ragkit_logger.setLevel(level)


def test_model_presets(qwen3_embedding_dir, qwen3_reranker_dir, tmp_path):
    from tiny_qwen import build_tokenizer
    from transformers import BertConfig, BertModel

    from ragkit.embedders import Qwen3Embedder, TransformersEmbedder

    emb = load_embedder(qwen3_embedding_dir, device="cpu")
    assert type(emb) is Qwen3Embedder
    bert_dir = tmp_path / "tiny-bert"
    tok = build_tokenizer(bert_dir, eos_postprocessor=False)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(str(bert_dir))
    bert = load_embedder(bert_dir, device="cpu")
    assert type(bert) is TransformersEmbedder and bert.pooling == "mean" and bert.dim == 32
    with pytest.raises(ConfigError, match="not a Qwen3-Reranker"):
        load_reranker(bert_dir, device="cpu")
