"""``ragkit serve`` fixes from a review: early error answers, hang-ups during a search, a free event loop
while big bodies and answers are handled, a true ``/openapi.json``, model faults, and smaller edges
(HEAD probes, trailing slashes, charsets, API key bytes)."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import HashEmbedder  # noqa: E402

from ragkit.errors import ConfigError  # noqa: E402
from ragkit.serve import BackgroundServer, create_app  # noqa: E402
from ragkit.serve.keys import bearer_matches  # noqa: E402

KEY = "k-review-123"


class WordReranker:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0

    def score(self, query, documents):
        self.calls += len(documents)
        if self.delay:
            time.sleep(self.delay * len(documents))
        words = set(query.split())
        return np.float32([len(words & set(d.split())) for d in documents])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from ragkit import Pipeline

    index = tmp_path_factory.mktemp("review-index")
    pipe = Pipeline(HashEmbedder())
    pipe.add([{"id": f"d{i}", "text": f"text number {i}"} for i in range(5)])
    pipe.save(index)
    pipe.close()
    with BackgroundServer(create_app(HashEmbedder(), WordReranker(), index=index)) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    return error


def answer_of(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> tuple[float, bytes]:
    """Seconds until the first bytes of the answer, and the whole answer, over a raw socket."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(timeout)
        start = time.monotonic()
        s.sendall(head + body)
        data = s.recv(65536)
        took = time.monotonic() - start
        while b"\r\n\r\n" in data and len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            more = s.recv(65536)
            if not more:
                break
            data += more
    return took, data


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


# -- early errors go out at once


def test_401_and_413_are_answered_before_the_body_arrives():
    with BackgroundServer(create_app(HashEmbedder(), api_keys=[KEY])) as srv:
        head = b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        cases = [
            (413, head + f"authorization: Bearer {KEY}\r\ncontent-length: 9437184\r\n\r\n".encode(), b""),
            (401, head + b"content-length: 1048576\r\n\r\n", b""),
            (401, head + b"content-length: 1048576\r\n\r\n", b" " * 1024),
        ]
        for status, request, body in cases:
            took, data = answer_of(srv.port, request, body)
            assert data.startswith(f"HTTP/1.1 {status} ".encode()), data[:80]
            assert took < 3, (status, took)  # was 10 s: the server first waited for the body
            headers, _, content = data.partition(b"\r\n\r\n")
            assert b"connection: close" in headers.lower()
            assert json.loads(content)["error"]["code"] in ("request_too_large", "invalid_api_key")
        # A client that sends its whole body still reads the whole answer (the body is drained).
        body = json.dumps({"input": "x" * 500_000}).encode()
        request = head + f"content-length: {len(body)}\r\n\r\n".encode()
        _, data = answer_of(srv.port, request, body)
        assert data.startswith(b"HTTP/1.1 401 ") and json.loads(data.partition(b"\r\n\r\n")[2])
        # A request with no body keeps its connection.
        took, data = answer_of(srv.port, b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 401 ") and b"connection: close" not in data.lower()


# -- a search stops when its client hangs up


def test_search_stops_reranking_when_the_client_hangs_up(tmp_path):
    from ragkit import Pipeline

    pipe = Pipeline(HashEmbedder())
    pipe.add([{"id": f"d{i}", "text": f"alpha beta doc {i} " + "filler " * 30} for i in range(200)])
    pipe.save(tmp_path / "index")
    pipe.close()
    reranker = WordReranker(delay=0.01)  # 10 ms per document: the whole rerank takes 2 s
    app = create_app(HashEmbedder(), reranker, index=tmp_path / "index", max_batch_tokens=512)
    with BackgroundServer(app) as srv:
        body = json.dumps({"query": "alpha beta", "k": 5, "candidates": 200}).encode()
        head = b"POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(head + f"content-length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.5)
        s.close()
        time.sleep(3)
        assert 0 < reranker.calls < 150, reranker.calls  # was 200: every sub-batch ran for nobody


# -- the event loop stays free


def _worst_health_latency(url: str, work) -> float:
    stop, worst = threading.Event(), [0.0]

    def ping() -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                start = time.monotonic()
                c.get("/health")
                worst[0] = max(worst[0], time.monotonic() - start)
                time.sleep(0.01)

    thread = threading.Thread(target=ping)
    thread.start()
    time.sleep(0.3)
    try:
        work()
    finally:
        stop.set()
        thread.join()
    return worst[0]


def test_health_answers_while_a_big_body_is_parsed(server):
    n = (8 * 1024 * 1024 - 100) // 3
    body = b'{"input":"a","x":[' + b"[]," * (n - 1) + b"[]]}"  # 8 MiB of tiny values

    def post() -> None:
        r = httpx.post(server.url + "/v1/embeddings", content=body, timeout=60)
        assert r.status_code == 200, r.text[:200]

    assert _worst_health_latency(server.url, post) < 1.5  # was about 4 s


class Wide:
    dim = 4096
    fingerprint = {"model": "wide"}

    def embed_documents(self, texts):
        return np.random.default_rng(0).standard_normal((len(texts), self.dim)).astype(np.float32)

    def embed_queries(self, texts, instruction=None):
        return self.embed_documents(texts)


def test_health_answers_while_a_big_answer_is_encoded():
    answers = []
    with BackgroundServer(create_app(Wide(), max_batch_tokens=1_000_000)) as srv:

        def post() -> None:  # the answer is parsed afterwards: this process serves it too
            answers.append(httpx.post(srv.url + "/v1/embeddings", json={"input": ["a"] * 1024}, timeout=120))

        assert _worst_health_latency(srv.url, post) < 1.0  # was about 2 s (4 s for 2,048 inputs)
    assert answers[0].status_code == 200 and len(answers[0].json()["data"][0]["embedding"]) == 4096


# -- /openapi.json says what the server does

# The keywords of JSON Schema (2020-12) and OpenAPI 3.1's schema object.
SCHEMA_KEYWORDS = {
    "$ref", "$defs", "$schema", "$id", "$anchor", "$comment", "type", "enum", "const", "title",
    "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "format",
    "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength",
    "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxContains", "minContains",
    "maxProperties", "minProperties", "required", "dependentRequired", "properties",
    "patternProperties", "additionalProperties", "propertyNames", "items", "prefixItems",
    "contains", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas",
    "unevaluatedItems", "unevaluatedProperties", "contentEncoding", "contentMediaType",
    "contentSchema", "discriminator", "xml", "externalDocs", "example",
}  # fmt: skip
_SUBSCHEMA_MAPS = {"properties", "patternProperties", "$defs", "dependentSchemas"}


def _schemas(node, found: list) -> None:
    """Every schema object under an OpenAPI document's ``schema`` keys and ``components.schemas``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema":
                _walk_schema(value, found)
            elif key == "schemas" and isinstance(value, dict):
                for schema in value.values():
                    _walk_schema(schema, found)
            else:
                _schemas(value, found)
    elif isinstance(node, list):
        for item in node:
            _schemas(item, found)


def _walk_schema(schema, found: list) -> None:
    if not isinstance(schema, dict):
        return
    found.append(schema)
    for key, value in schema.items():
        if key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            for sub in value.values():
                _walk_schema(sub, found)
        elif key in ("allOf", "anyOf", "oneOf", "prefixItems") and isinstance(value, list):
            for sub in value:
                _walk_schema(sub, found)
        elif key in ("items", "additionalProperties", "not", "if", "then", "else", "contains"):
            _walk_schema(value, found)


def test_openapi_uses_json_schema_keywords_only(http):
    spec = http.get("/openapi.json").json()
    found: list = []
    _schemas(spec, found)
    assert len(found) > 50
    bad = {key for schema in found for key in schema if key not in SCHEMA_KEYWORDS}
    assert not bad, bad  # was {"ge", "le"}
    alpha = spec["components"]["schemas"]["SearchRequest"]["properties"]["alpha"]["anyOf"][0]
    assert (alpha["minimum"], alpha["maximum"]) == (0.0, 1.0)
    error = error_of(http.post("/v1/search", json={"query": "q", "alpha": 5}), 400)
    assert error["param"] == "alpha"


def test_openapi_documents_the_400_shape_and_no_422(http):
    spec = http.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (path, method)
            if method == "post":
                ref = operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorResponse")
    assert "HTTPValidationError" not in spec["components"]["schemas"]


# -- model faults


class NanReranker:
    def score(self, query, documents):
        return np.float32([np.nan] * len(documents))


class NanEmbedder(HashEmbedder):
    def embed_documents(self, texts):
        return np.full((len(texts), self.dim), np.nan, np.float32)


def test_nan_from_a_model_is_a_500_model_error(caplog):
    with BackgroundServer(create_app(NanEmbedder(), NanReranker())) as srv:
        rerank = httpx.post(srv.url + "/v1/rerank", json={"query": "q", "documents": ["a"]})
        assert error_of(rerank, 500)["code"] == "model_error"  # was 200 with "relevance_score": null
        for encoding in ("float", "base64"):
            r = httpx.post(srv.url + "/v1/embeddings", json={"input": "a", "encoding_format": encoding})
            error = error_of(r, 500)  # was an opaque internal_error (float) or 200 (base64)
            assert error["code"] == "model_error" and "NaN" in error["message"]
    assert "NaN or infinite" in caplog.text


# -- smaller edges


def test_head_health_and_ready(http):
    for path in ("/health", "/ready"):
        r = http.head(path)
        assert r.status_code == 200 and r.content == b""  # was 405


def test_a_trailing_slash_is_a_404_not_a_redirect(http):
    r = http.post("/v1/embeddings/", json={"input": "a"}, headers={"host": "evil.example"})
    assert error_of(r, 404)["code"] == "not_found" and "location" not in r.headers  # was a 307


def test_a_lone_surrogate_in_a_top_level_key_has_no_param(http):
    r = http.post("/v1/embeddings", content=b'{"input": "a", "\\ud800": 1}')
    error = error_of(r, 400)
    assert error["param"] is None and "a key" in error["message"]  # param was "the body"
    r = http.post("/v1/search", content=b'{"query": "q", "filter": {"\\udfff": 1}}')
    assert error_of(r, 400)["param"] == "filter"


def test_a_huge_integer_gets_a_plain_message(http):
    r = http.post("/v1/search", content=b'{"query": "q", "k": ' + b"9" * 5000 + b"}")
    error = error_of(r, 400)
    assert "64-bit" in error["message"] and "set_int_max_str_digits" not in error["message"]


def test_bodies_are_utf8(http):
    body = '{"input": "café"}'
    for charset in ("latin-1", "utf-16", "iso-8859-1"):
        r = http.post(
            "/v1/embeddings",
            content=body.encode(charset.replace("utf-16", "utf-16-le")),
            headers={"content-type": f"application/json; charset={charset}"},
        )
        error = error_of(r, 415)  # latin-1 was a 400 naming a codec, UTF-16 was accepted
        assert "UTF-8" in error["message"]
    for charset in ("utf-8", "UTF-8", "utf8"):
        headers = {"content-type": f"application/json; charset={charset}"}
        assert http.post("/v1/embeddings", content=body.encode(), headers=headers).status_code == 200
    bom = http.post("/v1/embeddings", content=b"\xef\xbb\xbf" + body.encode())
    assert bom.status_code == 200  # a UTF-8 byte-order mark is skipped
    utf16 = http.post("/v1/embeddings", content='\ufeff{"input": "a"}'.encode("utf-16"))
    assert error_of(utf16, 400)["code"] == "invalid_json"  # was accepted: JSON is UTF-8
    latin = error_of(http.post("/v1/embeddings", content=body.encode("latin-1")), 400)
    assert "UTF-8" in latin["message"] and "codec" not in latin["message"]


def test_api_keys_are_visible_ascii_and_match_the_bytes_sent():
    for key in ("clé-sécrète-42", "two words", "tab\tkey"):
        with pytest.raises(ConfigError, match="visible ASCII"):
            create_app(HashEmbedder(), api_keys=[key])  # was accepted, and never matched a UTF-8 client
    # An ASGI server hands header bytes over as latin-1: the token is compared as those bytes.
    utf8_on_the_wire = "Bearer clé".encode().decode("latin-1")
    assert bearer_matches(utf8_on_the_wire, ["clé".encode()])
    assert not bearer_matches("Bearer clé", ["clé".encode()])
    assert bearer_matches("Bearer k-1", [b"k-1"]) and not bearer_matches("Bearer \udcff", [b"k-1"])
