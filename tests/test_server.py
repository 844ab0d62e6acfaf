"""``ragkit serve`` end to end: a real uvicorn server on 127.0.0.1 with the tiny Qwen3 models.

The server is started once for the module and driven by the official ``openai`` client, by ragkit's own
remote clients and by raw HTTP. Every answer is compared with the local models run directly.
"""

from __future__ import annotations

import asyncio
import base64
import random
import statistics
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from ragkit.embedders.base import truncate_dim  # noqa: E402
from ragkit.serve import BackgroundServer, create_app  # noqa: E402

KEY = "test-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMITS = dict(max_inputs=64, max_input_chars=4000, max_body_bytes=200_000)
TASK = "Given a code snippet, find the function it calls"

DOCS = [
    {"id": "fr", "text": "Paris is the capital of France.", "metadata": {"lang": "en", "topic": "geo"}},
    {"id": "de", "text": "Berlin is the capital of Germany.", "metadata": {"lang": "en", "topic": "geo"}},
    {"id": "fox", "text": "The quick brown fox jumps over the lazy dog.", "metadata": {"lang": "en"}},
    {"id": "rag", "text": "Retrieval augmented generation combines search with language models."},
    {"id": "code", "text": "def add(a, b):\n    return a + b\n", "metadata": {"lang": "py"}},
    {"id": "zh", "text": "中文文本没有空格。日本語のテキスト。", "metadata": {"lang": "zh"}},
    {"id": "emb", "text": "Embeddings are vectors; rerankers score pairs of query and document."},
    {
        "id": "fr2",
        "text": "Paris, the capital city, has the Louvre.",
        "metadata": {"lang": "en", "topic": "geo"},
    },
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def assert_close(got, want) -> None:
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape
    assert cosines(got, want).min() >= 0.9999
    assert np.abs(got - want).max() <= 1e-4


def decode(item) -> np.ndarray:
    vector = item["embedding"] if isinstance(item, dict) else item.embedding
    if isinstance(vector, str):
        return np.frombuffer(base64.b64decode(vector), dtype="<f4")
    return np.asarray(vector, np.float32)


@pytest.fixture(scope="module")
def local(qwen3_embedding_dir, qwen3_reranker_dir):
    from ragkit.embedders import Qwen3Embedder
    from ragkit.rerankers import Qwen3Reranker

    # float32: the checks below compare served vectors with these to 1e-4, whatever the batch composition
    # (bfloat16 results move by ~1e-3 with it).
    emb = Qwen3Embedder(str(qwen3_embedding_dir), device="cpu", dtype="float32", on_truncate="ignore")
    rr = Qwen3Reranker(str(qwen3_reranker_dir), device="cpu")
    return emb, rr


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, local):
    from ragkit import Pipeline

    path = tmp_path_factory.mktemp("served-index")
    pipe = Pipeline(local[0])
    pipe.add(DOCS)
    pipe.save(path)
    pipe.close()
    return path


@pytest.fixture(scope="module")
def server(qwen3_embedding_dir, qwen3_reranker_dir, index_dir):
    app = create_app(
        str(qwen3_embedding_dir),
        str(qwen3_reranker_dir),
        index=index_dir,
        api_keys=[KEY, "second-key"],
        device="cpu",
        dtype="float32",
        **LIMITS,
    )
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def names(qwen3_embedding_dir, qwen3_reranker_dir):
    return qwen3_embedding_dir.name, qwen3_reranker_dir.name


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client:
        yield client


# ----------------------------------------------------------------------------------------- basics


def test_health_ready_and_models(server, http, names):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").status_code == 200
    assert httpx.get(server.url + "/v1/models").status_code == 401
    listed = http.get("/v1/models").json()
    assert listed["object"] == "list"
    assert [(m["id"], m["task"]) for m in listed["data"]] == [(names[0], "embedding"), (names[1], "rerank")]
    assert listed["data"][0]["dimensions"] == 64
    other = httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer second-key"})
    assert other.status_code == 200


# ------------------------------------------------------------------------------------- embeddings

TEXTS = ["Paris is the capital of France.", "", "中文文本没有空格。", "def add(a, b): return a + b " * 5]


@pytest.mark.parametrize("encoding", [None, "float", "base64"])
def test_openai_client_matches_local(server, local, names, encoding):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    kwargs = {} if encoding is None else {"encoding_format": encoding}
    out = client.embeddings.create(model=names[0], input=TEXTS, **kwargs)
    assert [d.index for d in out.data] == list(range(len(TEXTS)))
    assert_close(np.stack([decode(d) for d in out.data]), local[0].embed_documents(TEXTS))
    assert out.usage.prompt_tokens == sum(local[0].count_tokens(t) for t in TEXTS) == out.usage.total_tokens
    single = client.embeddings.create(model=names[0], input="just one", **kwargs)
    assert len(single.data) == 1
    assert_close(decode(single.data[0])[None], local[0].embed_documents(["just one"]))


def test_openai_client_dimensions(server, local, names):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    for encoding in ("float", "base64"):
        out = client.embeddings.create(model=names[0], input=TEXTS, dimensions=32, encoding_format=encoding)
        got = np.stack([decode(d) for d in out.data])
        assert got.shape == (len(TEXTS), 32)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert_close(got, truncate_dim(local[0].embed_documents(TEXTS), 32))
    for bad in (16, 65):
        with pytest.raises(openai.BadRequestError, match="dimensions"):
            client.embeddings.create(model=names[0], input=TEXTS, dimensions=bad)


def test_ragkit_openai_embedder_matches_local(server, local, names):
    from ragkit.embedders import OpenAIEmbedder
    from ragkit.embedders.transformers import QWEN3_QUERY_TEMPLATE

    emb, _ = local
    queries = ["what is the capital of France?", "add two numbers", ""]
    for encoding in ("base64", "float"):
        remote = OpenAIEmbedder(
            names[0], provider="ragkit", base_url=server.url + "/v1", api_key=KEY, encoding_format=encoding
        )
        with remote:
            assert_close(remote.embed_documents(TEXTS), emb.embed_documents(TEXTS))
            assert_close(remote.embed_queries(queries), emb.embed_queries(queries))
            with_task = remote.embed_queries(queries, instruction=TASK)
            assert_close(with_task, emb.embed_queries(queries, instruction=TASK))
            assert remote.dim == emb.dim
            assert remote.fingerprint == {k: emb.fingerprint[k] for k in remote.fingerprint}
    # The template is applied once: applying it client-side as well gives other vectors.
    twice = emb.embed_queries([QWEN3_QUERY_TEMPLATE.format(instruction=TASK, text=q) for q in queries], TASK)
    assert cosines(with_task, twice).max() < 0.9999
    with OpenAIEmbedder(
        names[0], provider="ragkit", base_url=server.url + "/v1", api_key=KEY, dim=32
    ) as small:
        assert_close(small.embed_queries(queries), truncate_dim(emb.embed_queries(queries), 32))


def test_query_extension_fields(http, local, names):
    emb, _ = local
    texts = ["capital of France", "fox"]

    def post(**fields):
        r = http.post("/v1/embeddings", json={"model": names[0], "input": texts, **fields})
        assert r.status_code == 200, r.text
        return np.stack([decode(d) for d in r.json()["data"]])

    assert_close(post(input_type="query"), emb.embed_queries(texts))
    assert_close(post(input_type="query", instruction=TASK), emb.embed_queries(texts, instruction=TASK))
    assert_close(post(instruction=TASK), emb.embed_queries(texts, instruction=TASK))  # implies a query
    assert_close(post(input_type="document"), emb.embed_documents(texts))
    r = http.post("/v1/embeddings", json={"input": texts, "input_type": "document", "instruction": TASK})
    assert r.status_code == 400 and r.json()["error"]["param"] == "instruction"
    # Without "model" the first (only) embedding model answers.
    r = http.post("/v1/embeddings", json={"input": texts})
    assert r.json()["model"] == names[0]


# ----------------------------------------------------------------------------------------- rerank

QUERY = "what is the capital of France?"
CANDIDATES = [d["text"] for d in DOCS]


def test_remote_reranker_matches_local(server, local, names):
    from ragkit.rerankers import RemoteReranker

    _, rr = local
    with RemoteReranker(names[1], provider="ragkit", base_url=server.url, api_key=KEY) as remote:
        got = remote.score(QUERY, CANDIDATES)
    want = rr.score(QUERY, CANDIDATES)
    assert np.abs(got - want).max() <= 1e-4


def test_rerank_schema(http, local, names):
    _, rr = local
    want = rr.score(QUERY, CANDIDATES)
    documents = [CANDIDATES[0], *({"text": t} for t in CANDIDATES[1:])]
    body = {"model": names[1], "query": QUERY, "documents": documents, "top_n": 3, "return_documents": True}
    r = http.post("/v1/rerank", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == names[1] and out["id"].startswith("rerank-")
    assert out["usage"]["total_tokens"] > 0
    results = out["results"]
    assert [x["index"] for x in results] == list(np.argsort(-want, kind="stable")[:3])
    for x in results:
        assert abs(x["relevance_score"] - want[x["index"]]) <= 1e-4
        assert x["document"] == {"text": CANDIDATES[x["index"]]}
    plain = http.post("/v1/rerank", json={"query": QUERY, "documents": CANDIDATES}).json()["results"]
    assert len(plain) == len(CANDIDATES) and "document" not in plain[0]
    scores = [x["relevance_score"] for x in plain]
    assert scores == sorted(scores, reverse=True)


# ----------------------------------------------------------------------------------------- search


def test_search_matches_local_pipeline(http, local, index_dir):
    from ragkit import Pipeline

    emb, rr = local
    pipe = Pipeline.load(index_dir, embedder=emb, reranker=rr, read_only=True)
    try:
        cases = [
            {"query": QUERY, "k": 3},
            {"query": QUERY, "k": 2, "filter": {"topic": "geo"}, "candidates": 3},
            {"query": "capital", "k": 2, "mode": "lexical"},
            {"query": "fox dog", "k": 2, "mode": "hybrid", "instruction": TASK},
            {
                "query": "fox dog",
                "k": 3,
                "mode": "hybrid",
                "fusion": "convex",
                "alpha": 0.7,
                "diversity": 0.5,
            },
        ]
        for case in cases:
            r = http.post("/v1/search", json=case)
            assert r.status_code == 200, r.text
            out = r.json()
            options = {k: v for k, v in case.items() if k not in ("query", "k")}
            want = pipe.search(case["query"], case["k"], **options)
            assert [h["id"] for h in out["hits"]] == [h.id for h in want]
            for got, ref in zip(out["hits"], want, strict=True):
                assert abs(got["score"] - ref.score) <= 1e-4
                assert got["text"] == ref.text and got["rank"] == ref.rank
                assert got["metadata"] == ref.metadata and (got["start"], got["end"]) == (ref.start, ref.end)
            assert out["query"] == case["query"] and "rerank" in out["timings"]
    finally:
        pipe.close()


# ---------------------------------------------------------------------------------- bad requests


def _chunks(size: int, parts: int):
    for _ in range(parts):
        yield b" " * size


def _bad_requests(names):
    """(label, method kwargs, status, code, words the message must hold)."""
    emb = "/v1/embeddings"
    big = {"input": ["x" * 3000] * 70}
    return [
        (
            "wrong key",
            dict(url=emb, json={"input": "a"}, headers={"Authorization": "Bearer nope"}),
            401,
            "invalid_api_key",
            "API key",
        ),
        (
            "no key",
            dict(url=emb, json={"input": "a"}, headers={"Authorization": ""}),
            401,
            "invalid_api_key",
            "",
        ),
        ("oversized body", dict(url=emb, json=big), 413, "request_too_large", "max_body_bytes"),
        (
            "oversized chunked body",
            dict(url=emb, content=_chunks(50_000, 6)),
            413,
            "request_too_large",
            "max_body_bytes",
        ),
        ("empty input", dict(url=emb, json={"input": []}), 400, "empty_input", "empty"),
        (
            "unknown model",
            dict(url=emb, json={"model": "gpt-9", "input": "a"}),
            404,
            "model_not_found",
            "gpt-9",
        ),
        ("rerank model", dict(url=emb, json={"model": names[1], "input": "a"}), 400, "wrong_model_task", ""),
        ("not json", dict(url=emb, content=b"input=hello"), 400, "invalid_json", "JSON"),
        ("nan", dict(url=emb, content=b'{"input": "a", "dimensions": NaN}'), 400, "invalid_json", "NaN"),
        ("json array", dict(url=emb, json=["a"]), 400, "invalid_json", "object"),
        ("input number", dict(url=emb, json={"input": 123}), 400, "invalid_type", "input"),
        ("input item", dict(url=emb, json={"input": ["a", 5]}), 400, "invalid_type", "input[1]"),
        ("token arrays", dict(url=emb, json={"input": [[1, 2, 3]]}), 400, "invalid_type", "token arrays"),
        (
            "dimensions str",
            dict(url=emb, json={"input": "a", "dimensions": "32"}),
            400,
            "invalid_type",
            "dimensions",
        ),
        (
            "encoding",
            dict(url=emb, json={"input": "a", "encoding_format": "hex"}),
            400,
            "invalid_value",
            "encoding_format",
        ),
        ("too many inputs", dict(url=emb, json={"input": ["a"] * 65}), 400, "too_many_inputs", "max_inputs"),
        (
            "input too long",
            dict(url=emb, json={"input": ["a", "b" * 4001]}),
            400,
            "input_too_long",
            "max_input_chars",
        ),
        (
            "rerank no query",
            dict(url="/v1/rerank", json={"documents": ["a"]}),
            400,
            "missing_required_parameter",
            "query",
        ),
        (
            "rerank doc object",
            dict(url="/v1/rerank", json={"query": "q", "documents": [{"txt": "a"}]}),
            400,
            "missing_required_parameter",
            "documents[0].text",
        ),
        (
            "rerank doc number",
            dict(url="/v1/rerank", json={"query": "q", "documents": ["a", 7]}),
            400,
            "invalid_type",
            "documents[1]",
        ),
        (
            "rerank top_n",
            dict(url="/v1/rerank", json={"query": "q", "documents": ["a"], "top_n": 0}),
            400,
            "invalid_value",
            "top_n",
        ),
        ("search k", dict(url="/v1/search", json={"query": "q", "k": 0}), 400, "invalid_value", "k"),
        (
            "search mode",
            dict(url="/v1/search", json={"query": "q", "mode": "fuzzy"}),
            400,
            "invalid_value",
            "fuzzy",
        ),
        (
            "search filter",
            dict(url="/v1/search", json={"query": "q", "filter": {"a": {"$regex": "x"}}}),
            400,
            "invalid_value",
            "$regex",
        ),
        (
            "search diversity",
            dict(url="/v1/search", json={"query": "q", "diversity": 1.5}),
            400,
            "invalid_value",
            "diversity",
        ),
        (
            "search diversity type",
            dict(url="/v1/search", json={"query": "q", "diversity": "high"}),
            400,
            "invalid_type",
            "diversity",
        ),
        (
            "search fusion",
            dict(url="/v1/search", json={"query": "q", "mode": "hybrid", "fusion": "borda"}),
            400,
            "invalid_value",
            "borda",
        ),
        ("no route", dict(url="/v1/chat/completions", json={}), 404, "not_found", ""),
    ]


def check_error(response: httpx.Response, status: int, code: str, words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == code
    assert words in error["message"]
    assert "Traceback" not in response.text


def test_bad_requests(server, names):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        for label, kwargs, status, code, words in _bad_requests(names):
            kwargs = dict(kwargs)
            response = client.request("POST", kwargs.pop("url"), **kwargs)
            assert response.status_code == status, label
            check_error(response, status, code, words)
    r = httpx.get(server.url + "/v1/embeddings", headers=AUTH)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


# ------------------------------------------------------------------------------------------- load

WORDS = (
    "the of and to in is that for it as with was on be by retrieval search query document passage ranking "
    "model language vector index embedding chunk answer capital France Paris Berlin quick brown fox lazy dog"
).split()


def make_plan(clients: int, per_client: int, seed: int = 0) -> list[list[dict]]:
    """Requests of mixed sizes and kinds; every text is unique, so any cross-talk shows."""
    rng = random.Random(seed)
    plan = []
    for c in range(clients):
        requests = []
        for j in range(per_client):
            n = rng.choice([1, 1, 1, 2, 3, 4, 8, 16])
            texts = [
                f"c{c} r{j} i{i} " + " ".join(rng.choices(WORDS, k=rng.choice([2, 6, 20, 60])))
                for i in range(n)
            ]
            kind = rng.choice(["document", "document", "query", "task"])
            payload: dict = {"input": texts, "encoding_format": rng.choice(["float", "base64"])}
            if kind == "query":
                payload["input_type"] = "query"
            elif kind == "task":
                payload["instruction"] = TASK
            requests.append(payload)
        plan.append(requests)
    return plan


def reference(emb, plan) -> dict[tuple[str, str], np.ndarray]:
    groups: dict[str, list[str]] = {"document": [], "query": [], "task": []}
    for requests in plan:
        for p in requests:
            kind = "task" if "instruction" in p else p.get("input_type", "document")
            groups[kind].extend(p["input"])
    out = {}
    for kind, texts in groups.items():
        if not texts:
            continue
        if kind == "document":
            vectors = emb.embed_documents(texts)
        else:
            vectors = emb.embed_queries(texts, instruction=TASK if kind == "task" else None)
        out.update({(kind, t): v for t, v in zip(texts, vectors, strict=True)})
    return out


async def drive(url: str, plan, bad_cases=(), bad_rounds: int = 0):
    """Every client sends its requests one after another; all clients at once. Returns the results."""
    limits = httpx.Limits(max_connections=len(plan) + 8, max_keepalive_connections=len(plan) + 8)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, limits=limits, timeout=120) as client:

        async def good(requests):
            out = []
            for payload in requests:
                t = time.perf_counter()
                r = await client.post("/v1/embeddings", json=payload)
                out.append((payload, r.status_code, r.json(), time.perf_counter() - t))
            return out

        async def bad(offset: int):
            out = []
            for i in range(bad_rounds):
                label, kwargs, status, code, words = bad_cases[(offset + i) % len(bad_cases)]
                kwargs = dict(kwargs)
                r = await client.request("POST", kwargs.pop("url"), **kwargs)
                out.append((label, r, status, code, words))
            return out

        start = time.perf_counter()
        done = await asyncio.gather(
            *(good(r) for r in plan), *(bad(i * 5) for i in range(4 if bad_rounds else 0))
        )
        return done[: len(plan)], done[len(plan) :], time.perf_counter() - start


def test_load_no_crosstalk_with_bad_requests_alongside(server, local, names, capsys):
    clients, per_client = 32, 10
    plan = make_plan(clients, per_client)
    want = reference(local[0], plan)
    bad_cases = [c for c in _bad_requests(names) if "chunked" not in c[0]]  # a generator is single-use
    worker = server.app.state.ragkit.models[0]
    batches, requests = worker.batches, worker.requests

    goods, bads, wall = asyncio.run(drive(server.url, plan, bad_cases, bad_rounds=12))

    results = [r for client in goods for r in client]
    assert len(results) == clients * per_client  # none lost
    for payload, status, body, _ in results:
        assert status == 200, body
        kind = "task" if "instruction" in payload else payload.get("input_type", "document")
        got = np.stack([decode(d) for d in sorted(body["data"], key=lambda d: d["index"])])
        assert_close(got, np.stack([want[(kind, t)] for t in payload["input"]]))
    for label, response, status, code, words in (b for client in bads for b in client):
        assert response.status_code == status, label
        check_error(response, status, code, words)
    served = worker.requests - requests
    assert served >= clients * per_client  # (a bad search embeds its query before its filter is refused)
    assert worker.batches - batches < served  # concurrent requests shared model calls

    latencies = sorted(r[3] for r in results)
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    with capsys.disabled():
        print(
            f"\n[server load] {clients}x{per_client} requests in {wall:.2f}s: "
            f"{len(results) / wall:.1f} req/s, "
            f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"{served / (worker.batches - batches):.1f} requests per model call"
        )


def test_serve_threads_option_caps_torch_threads(tmp_path, monkeypatch):
    import logging

    import ragkit.runtime as runtime
    from ragkit.serve import serve_main

    real = runtime.set_threads
    seen: list[int] = []
    monkeypatch.setattr(runtime, "set_threads", lambda n: seen.append(n) or n)
    ragkit_logger = logging.getLogger("ragkit")
    monkeypatch.setattr(ragkit_logger, "level", ragkit_logger.level)  # serve_main sets it; restored after
    missing = str(tmp_path / "no-model")
    argv = ["--embedder", missing, "--port", "0", "--log-level", "critical"]
    assert serve_main(argv + ["--threads", "1"]) == 1  # the model is missing; the threads were set first
    assert seen == [1]
    monkeypatch.setattr(runtime, "set_threads", real)
    assert serve_main(argv + ["--threads", "0"]) == 1  # a ConfigError, logged: no server


# ------------------------------------------------------------------------------- token-counting hooks


def test_token_counting_hooks_count_what_the_models_read(local):
    from ragkit.embedders.transformers import QWEN3_QUERY_TEMPLATE

    emb, rr = local
    texts = [*TEXTS, "word " * 3000]  # the last one is cut to max_length
    filled = [QWEN3_QUERY_TEMPLATE.replace("{instruction}", TASK).replace("{text}", t) for t in texts]
    assert emb.token_counts(texts) == [len(s) for s in emb._tokenize(texts)[0]]
    assert emb.token_counts(texts, query=True, instruction=TASK) == [len(s) for s in emb._tokenize(filled)[0]]
    assert emb.token_counts(texts)[-1] == emb.max_length
    assert emb.token_counts(texts)[:2] == [emb.count_tokens(t) for t in texts[:2]]
    long_doc = "word " * 5000
    prompts = rr._prompt_ids(QUERY, [*CANDIDATES, long_doc])  # the long document is cut to max_length
    assert rr.token_counts(QUERY, [*CANDIDATES, long_doc]) == [len(p) for p in prompts]
    assert len(prompts[-1]) == rr.max_length


def test_usage_counts_come_from_the_hooks(http, local, names):
    emb, rr = local
    r = http.post("/v1/embeddings", json={"model": names[0], "input": TEXTS, "input_type": "query"})
    assert r.json()["usage"]["total_tokens"] == sum(emb.token_counts(TEXTS, query=True))
    r = http.post("/v1/rerank", json={"model": names[1], "query": QUERY, "documents": CANDIDATES})
    assert r.json()["usage"]["total_tokens"] == sum(rr.token_counts(QUERY, CANDIDATES))
