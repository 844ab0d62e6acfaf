"""The shared HTTP layer: retries, waits, time budget and typed errors, against a real local server."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import datetime, timezone

import pytest
from fake_api import FakeAPI, Reply

from ragkit._http import HTTPClient, RetryPolicy, map_concurrent, parse_retry_after
from ragkit.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    RateLimitError,
    RemoteError,
    UnavailableError,
)

PAYLOAD = {"model": "m", "input": ["a"], "encoding_format": "float"}
HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title><style>body{color:red}</style></head>\r\n"
    "<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>"
)


@pytest.fixture(scope="module")
def api():
    with FakeAPI() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(api):
    api.reset()


def client(api, *, max_retries=2, backoff=0.001, max_retry_time=30.0, timeout=5.0, **kw) -> HTTPClient:
    retry = RetryPolicy(max_retries=max_retries, backoff=backoff, max_retry_time=max_retry_time)
    return HTTPClient(api.url + "/v1", provider="test", timeout=timeout, retry=retry, **kw)


def test_success_returns_the_decoded_json(api):
    out = client(api).post("/embeddings", PAYLOAD)
    assert [d["index"] for d in out["data"]] == [0]
    assert api.count == 1 and api.requests[0].path == "/v1/embeddings"
    assert api.requests[0].body == PAYLOAD
    assert "authorization" not in api.requests[0].headers


def test_bearer_key_is_sent(api):
    client(api, api_key="sk-test").post("/embeddings", PAYLOAD)
    assert api.requests[0].headers["authorization"] == "Bearer sk-test"


def test_retry_after_ms_is_honoured(api):
    # backoff=5 s: had the header been ignored, the two retries would take 5 s or more.
    api.script(
        Reply(429, json={"error": {"message": "slow down"}}, headers={"retry-after-ms": "200"}),
        Reply(429, json={"error": {"message": "slow down"}}, headers={"retry-after-ms": "200"}),
    )
    start = time.monotonic()
    client(api, backoff=5.0).post("/embeddings", PAYLOAD)
    elapsed = time.monotonic() - start
    assert api.count == 3
    assert 0.4 <= elapsed < 2.0


def test_retry_after_seconds_is_honoured(api):
    api.script(Reply(503, json={"error": "busy"}, headers={"retry-after": "1"}))
    start = time.monotonic()
    client(api, backoff=5.0).post("/embeddings", PAYLOAD)
    elapsed = time.monotonic() - start
    assert api.count == 2
    assert 1.0 <= elapsed < 2.5


def test_parse_retry_after_forms():
    now = datetime(2025, 3, 1, 8, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after({"retry-after": "Sat, 01 Mar 2025 08:00:07 GMT"}, now=now) == 7.0
    assert parse_retry_after({"retry-after": "Sat, 01 Mar 2025 07:59:00 GMT"}, now=now) == 0.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_is_exponential_with_jitter_and_capped():
    policy = RetryPolicy(backoff=0.1, max_backoff=0.5)
    for retry, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.5), (8, 0.5)]:
        delays = [policy.backoff_delay(retry) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not constant


def test_429_every_time_raises_rate_limit_after_all_tries(api):
    api.script(*[Reply(429, json={"error": {"message": "quota", "type": "rate_limit"}})] * 3)
    with pytest.raises(RateLimitError) as e:
        client(api, max_retries=2).post("/embeddings", PAYLOAD)
    assert api.count == 3
    err = e.value
    assert err.status_code == 429 and err.provider == "test"
    assert "quota" in str(err) and "after 3 attempts" in str(err)
    assert '"quota"' in err.body


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_every_time_raises_unavailable_after_all_tries(api, status):
    api.script(*[Reply(status, json={"error": {"message": "boom"}})] * 4)
    with pytest.raises(UnavailableError) as e:
        client(api, max_retries=3).post("/embeddings", PAYLOAD)
    assert api.count == 4
    assert e.value.status_code == status


@pytest.mark.parametrize("status", [408, 409, 429, 500, 503])
def test_transient_status_then_success(api, status):
    api.script(Reply(status, json={"error": {"message": "try again"}}))
    out = client(api).post("/embeddings", PAYLOAD)
    assert api.count == 2 and len(out["data"]) == 1


def test_html_error_page_gives_a_readable_message(api):
    api.script(*[Reply(502, body=HTML_502, headers={"content-type": "text/html"})] * 3)
    with pytest.raises(UnavailableError) as e:
        client(api).post("/embeddings", PAYLOAD)
    assert api.count == 3
    message = str(e.value)
    assert "502 Bad Gateway" in message and "nginx" in message
    assert "<" not in message and "color:red" not in message
    assert e.value.body.startswith("<html>")


def test_malformed_json_success_is_a_remote_error_without_retry(api):
    api.script(
        Reply(
            200,
            body='{"data": [{"index": 0, "embedding": [0.1,',
            headers={"content-type": "application/json"},
        )
    )
    with pytest.raises(RemoteError) as e:
        client(api).post("/embeddings", PAYLOAD)
    assert type(e.value) is RemoteError
    assert api.count == 1
    assert "not valid JSON" in str(e.value) and '{"data": [{"index": 0' in str(e.value)


def test_malformed_json_error_body_is_quoted(api):
    api.script(*[Reply(500, body="{oops", headers={"content-type": "application/json"})] * 3)
    with pytest.raises(UnavailableError) as e:
        client(api).post("/embeddings", PAYLOAD)
    assert "{oops" in str(e.value) and api.count == 3


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_not_retried(api, status):
    api.script(
        Reply(status, json={"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
    )
    with pytest.raises(AuthenticationError) as e:
        client(api, key_hint=" (OPENAI_API_KEY)").post("/embeddings", PAYLOAD)
    assert api.count == 1
    assert e.value.status_code == status
    assert "Incorrect API key provided" in str(e.value) and "OPENAI_API_KEY" in str(e.value)
    assert "code=invalid_api_key" in str(e.value)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        # OpenAI / vLLM / DashScope nested shape
        (
            400,
            {"error": {"message": "model x not found", "type": "invalid_request_error"}},
            "model x not found",
        ),
        # flat shape (older vLLM, Cohere)
        (
            400,
            {"object": "error", "message": "too many inputs", "type": "BadRequestError", "code": 400},
            "too many",
        ),
        # TEI shape
        (
            413,
            {"error": "batch size 40 > maximum allowed batch size 32", "error_type": "Validation"},
            "batch size 40",
        ),
        # FastAPI validation errors
        (
            422,
            {"detail": [{"loc": ["body", "input"], "msg": "field required"}]},
            "body.input: field required",
        ),
    ],
)
def test_bad_request_shapes_carry_the_server_message(api, status, body, expected):
    api.script(Reply(status, json=body, headers={"x-request-id": "req-123"}))
    with pytest.raises(BadRequestError) as e:
        client(api).post("/embeddings", PAYLOAD)
    assert api.count == 1
    assert expected in str(e.value)
    assert e.value.status_code == status and e.value.request_id == "req-123"
    assert "req-123" in str(e.value)


def test_not_found_is_a_plain_remote_error(api):
    with pytest.raises(RemoteError) as e:
        client(api).post("/nowhere", PAYLOAD)
    assert type(e.value) is RemoteError and e.value.status_code == 404
    assert "check base_url" in str(e.value) and api.count == 1


def test_timeout_is_retried_then_unavailable(api):
    api.script(*[Reply(delay=0.6)] * 3)
    start = time.monotonic()
    with pytest.raises(UnavailableError) as e:
        client(api, timeout=0.15, max_retries=2).post("/embeddings", PAYLOAD)
    assert time.monotonic() - start < 1.5
    assert api.count == 3
    assert "timed out" in str(e.value) and "after 3 attempts" in str(e.value)
    assert e.value.status_code is None


def test_slow_then_fast_succeeds(api):
    api.script(Reply(delay=0.6))
    out = client(api, timeout=0.15).post("/embeddings", PAYLOAD)
    assert api.count == 2 and len(out["data"]) == 1


def test_refused_connection_is_retried_then_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    retry = RetryPolicy(max_retries=2, backoff=0.001)
    http = HTTPClient(f"http://127.0.0.1:{port}/v1", provider="test", retry=retry)
    with pytest.raises(UnavailableError) as e:
        http.post("/embeddings", PAYLOAD)
    assert "could not connect" in str(e.value) and "after 3 attempts" in str(e.value)


def test_retry_after_beyond_the_time_budget_stops_at_once(api):
    api.script(Reply(429, json={"error": {"message": "quota"}}, headers={"retry-after": "30"}))
    start = time.monotonic()
    with pytest.raises(RateLimitError) as e:
        client(api, max_retries=5, max_retry_time=2.0).post("/embeddings", PAYLOAD)
    assert time.monotonic() - start < 1.0
    assert api.count == 1
    assert "max_retry_time=2s" in str(e.value) and "30s" in str(e.value)


def test_backoff_stops_at_the_time_budget(api, monkeypatch):
    # Jitter pinned to its upper bound: waits are 0.3 s then 0.6 s; 0.3 + 0.6 > 0.5 ends the retries.
    monkeypatch.setattr("ragkit._http.random.uniform", lambda a, b: b)
    api.script(*[Reply(500, json={"error": {"message": "down"}})] * 10)
    with pytest.raises(UnavailableError) as e:
        client(api, max_retries=10, backoff=0.3, max_retry_time=0.5).post("/embeddings", PAYLOAD)
    assert api.count == 2
    assert "max_retry_time" in str(e.value)


def test_bad_scheme_is_a_config_error():
    with pytest.raises(ConfigError):
        HTTPClient("ftp://127.0.0.1:1/v1", provider="test").post("/embeddings", PAYLOAD)


def test_async_retries_share_the_decisions(api):
    api.script(
        Reply(503, json={"error": "busy"}),
        Reply(429, json={"error": "slow"}, headers={"retry-after-ms": "10"}),
    )

    async def main():
        http = client(api)
        try:
            return await http.apost("/embeddings", PAYLOAD)
        finally:
            await http.aclose()

    out = asyncio.run(main())
    assert api.count == 3 and len(out["data"]) == 1


def test_async_errors_are_typed(api):
    api.script(Reply(401, json={"message": "no key"}))

    async def main():
        http = client(api)
        try:
            await http.apost("/embeddings", PAYLOAD)
        finally:
            await http.aclose()

    with pytest.raises(AuthenticationError, match="no key"):
        asyncio.run(main())
    assert api.count == 1


def test_async_client_survives_successive_event_loops(api):
    http = client(api)

    async def main():
        return await http.apost("/embeddings", PAYLOAD)

    assert len(asyncio.run(main())["data"]) == 1
    assert len(asyncio.run(main())["data"]) == 1  # a new loop gets its own connection pool
    assert api.count == 2


def test_map_concurrent_keeps_order_and_raises_first_error():
    assert map_concurrent(lambda x: x + 1, list(range(10)), 3) == list(range(1, 11))

    def fail_on_3(x):
        if x == 3:
            raise ValueError("three")
        return x

    with pytest.raises(ValueError, match="three"):
        map_concurrent(fail_on_3, list(range(6)), 2)
