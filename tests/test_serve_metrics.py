"""``/metrics``: parses with prometheus-client's parser, moves with requests, labels by route template."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import textwrap

import httpx
import pytest

pytest.importorskip("fastapi")
prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from ragkit.serve.metrics import Metrics, MetricsMiddleware, multiprocess_mode  # noqa: E402


def run_async(test):
    """Run an async test function in a fresh event loop (no pytest asyncio plugin here)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a metrics page, keyed by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(page: dict, name: str, **labels: str) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def tiny_app(metrics: Metrics, api_keys=()):
    from fastapi import FastAPI
    from starlette.responses import JSONResponse

    app = FastAPI()

    async def item(request):
        if request.path_params["name"] == "bad":
            return JSONResponse({"error": "no"}, status_code=400)
        if request.path_params["name"] == "crash":
            raise RuntimeError("boom")
        return JSONResponse({"name": request.path_params["name"]})

    app.add_route("/v1/items/{name}", item, methods=["GET"])
    metrics.mount(app, api_keys=api_keys)
    return app


@pytest.fixture
def client():
    metrics = Metrics()
    app = tiny_app(metrics)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def make():
        return httpx.AsyncClient(transport=transport, base_url="http://test")

    return metrics, make


async def get_page(c) -> dict:
    r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


@run_async
async def test_the_page_parses_and_the_counters_move_with_requests(client):
    metrics, make = client
    async with await make() as c:
        before = await get_page(c)
        for name in ("a", "b", "c", "bad"):
            await c.get(f"/v1/items/{name}")
        assert (await c.get("/v1/items/crash")).status_code == 500
        assert (await c.get("/no/such/path/123")).status_code == 404
        after = await get_page(c)
    route = "/v1/items/{name}"
    ok = value(after, "ragkit_http_requests_total", route=route, method="GET", status="200")
    assert ok - value(before, "ragkit_http_requests_total", route=route, method="GET", status="200") == 3
    assert value(after, "ragkit_http_requests_total", route=route, method="GET", status="400") == 1
    assert value(after, "ragkit_http_request_errors_total", route=route, method="GET", status="400") == 1
    assert value(after, "ragkit_http_request_errors_total", route=route, method="GET", status="500") == 1
    assert value(after, "ragkit_http_request_errors_total", route=route, method="GET", status="200") == 0
    assert value(after, "ragkit_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(after, "ragkit_http_request_duration_seconds_count", route=route, method="GET") == 5
    assert value(after, "ragkit_http_requests_total", route="/metrics", method="GET", status="200") >= 1
    # Never a raw path as a label: the names a client chose do not show.
    labels = {v for (_, ls) in after for (_, v) in ls}
    assert not any(x in labels for x in ("/v1/items/a", "/no/such/path/123", "/v1/items/bad"))


@run_async
async def test_the_observer_hook_fills_the_model_metrics(client):
    metrics, make = client
    metrics.on_batch("embedding", 8, 400, 0.2)
    metrics.on_batch("embedding", 2, 100, 0.05)
    metrics.on_batch("rerank", 16, 900, 0.5)
    metrics.on_queue("embedding", 5)
    metrics.on_queue("embedding", 3)
    metrics.on_model_load("embedding", 1.5)
    metrics.on_connections_open(7)
    metrics.on_connection_closed("header_timeout")
    async with await make() as c:
        page = await get_page(c)
    assert value(page, "ragkit_tokens_total", kind="embedding") == 500
    assert value(page, "ragkit_tokens_total", kind="rerank") == 900
    assert value(page, "ragkit_batch_size_count", kind="embedding") == 2
    assert value(page, "ragkit_batch_size_sum", kind="embedding") == 10
    assert value(page, "ragkit_batch_size_bucket", kind="embedding", le="2.0") == 1
    assert value(page, "ragkit_batch_duration_seconds_sum", kind="rerank") == pytest.approx(0.5)
    assert value(page, "ragkit_queue_depth", kind="embedding") == 3
    assert value(page, "ragkit_model_load_seconds", kind="embedding") == 1.5
    assert value(page, "ragkit_connections_open") == 7
    assert value(page, "ragkit_connections_closed_total", reason="header_timeout") == 1


@run_async
async def test_two_servers_in_one_process_keep_their_own_counts():
    first, second = Metrics(), Metrics()
    first.observe_request("/x", "GET", 200, 0.01)
    assert (
        value(
            samples(first.render()[0].decode()),
            "ragkit_http_requests_total",
            route="/x",
            method="GET",
            status="200",
        )
        == 1
    )
    assert (
        value(
            samples(second.render()[0].decode()),
            "ragkit_http_requests_total",
            route="/x",
            method="GET",
            status="200",
        )
        == 0
    )


@run_async
async def test_metrics_are_open_by_default_and_behind_the_key_with_require_key():
    for require_key, expected in ((False, 200), (True, 401)):
        app = tiny_app(Metrics(require_key=require_key), api_keys=["k-metrics-1"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.get("/metrics")).status_code == expected
            keyed = await c.get("/metrics", headers={"authorization": "Bearer k-metrics-1"})
            assert keyed.status_code == 200
            wrong = await c.get("/metrics", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == expected
            if expected == 401:
                assert wrong.json()["error"]["code"] == "invalid_api_key"


@run_async
async def test_a_client_that_leaves_before_the_answer_counts_as_499():
    metrics = Metrics()

    async def app(scope, receive, send):
        return None  # no answer at all, as when the client went away first

    class Route:
        path = "/v1/gone"

    async def routed(scope, receive, send):
        scope["route"] = Route()
        await app(scope, receive, send)

    mw = MetricsMiddleware(routed, metrics=metrics)

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        raise AssertionError("nothing is sent")

    await mw({"type": "http", "method": "POST", "path": "/v1/gone"}, receive, send)
    page = samples(metrics.render()[0].decode())
    assert value(page, "ragkit_http_request_errors_total", route="/v1/gone", method="POST", status="499") == 1


def test_multiprocess_mode_sums_the_processes(tmp_path):
    # Two processes write into one PROMETHEUS_MULTIPROC_DIR; a third renders the sum (what a worker does).
    code = textwrap.dedent(
        """
        import os, sys
        from ragkit.serve.metrics import Metrics
        m = Metrics()
        assert m.multiprocess
        m.observe_request("/v1/search", "POST", 200, 0.01)
        m.on_batch("embedding", 3, int(sys.argv[1]), 0.1)
        m.on_queue("embedding", 2)
        if sys.argv[1] == "render":
            sys.stdout.write(m.render()[0].decode())
        else:
            m.close()  # a worker's exit: its live gauges go
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for tokens in ("100", "250"):
        subprocess.run([sys.executable, "-c", code, tokens], env=env, check=True)
    render = code.replace("int(sys.argv[1])", "0")
    out = subprocess.run(
        [sys.executable, "-c", render, "render"], env=env, check=True, capture_output=True, text=True
    )
    page = samples(out.stdout)
    assert value(page, "ragkit_tokens_total", kind="embedding") == 350
    assert value(page, "ragkit_http_requests_total", route="/v1/search", method="POST", status="200") == 3
    # Queue depth counts live processes only: the two writers have exited, the renderer is alive.
    assert value(page, "ragkit_queue_depth", kind="embedding") == 2
    assert not multiprocess_mode()  # this test process keeps its values in memory


def test_the_ragkit_app_reports_requests_batches_tokens_queue_and_load_time(hash_embedder):
    from ragkit.serve import BackgroundServer, create_app

    metrics = Metrics()
    app = create_app(hash_embedder, api_keys=["k-metrics-app-1"], observer=metrics)
    key = {"authorization": "Bearer k-metrics-app-1"}
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        before = samples(http.get("/metrics").text)
        for n in (1, 3, 5):
            r = http.post("/v1/embeddings", json={"input": ["some words here"] * n}, headers=key)
            assert r.status_code == 200
        assert http.post("/v1/embeddings", json={"input": "x"}).status_code == 401
        assert http.post("/v1/embeddings", json={"input": 5}, headers=key).status_code == 400
        after = samples(http.get("/metrics").text)
    route = "/v1/embeddings"
    assert value(after, "ragkit_http_requests_total", route=route, method="POST", status="200") == 3
    assert value(after, "ragkit_http_request_errors_total", route=route, method="POST", status="401") == 1
    assert value(after, "ragkit_http_request_errors_total", route=route, method="POST", status="400") == 1
    tokens = value(after, "ragkit_tokens_total", kind="embedding")
    assert tokens > value(before, "ragkit_tokens_total", kind="embedding") and tokens >= 9
    assert value(after, "ragkit_batch_size_sum", kind="embedding") == 9  # 1 + 3 + 5 inputs
    assert value(after, "ragkit_batch_size_count", kind="embedding") >= 1
    assert ("ragkit_queue_depth", (("kind", "embedding"),)) in after
    assert ("ragkit_model_load_seconds", (("kind", "embedding"),)) in after
    assert value(after, "ragkit_connections_open") >= 1  # this client's connection, at least


def test_a_cut_body_counts_as_408_and_a_client_that_hangs_up_as_499(hash_embedder):
    import socket
    import threading
    import time

    from ragkit.serve import BackgroundServer, create_app
    from ragkit.serve.transport import ConnectionGuard

    started = threading.Event()

    class Slow(type(hash_embedder)):
        def embed_documents(self, texts):
            started.set()
            time.sleep(1.0)
            return super().embed_documents(texts)

    metrics = Metrics()
    guard = ConnectionGuard(header_timeout=5, body_timeout=1)
    with BackgroundServer(create_app(Slow(), observer=metrics), guard=guard) as srv:
        addr = ("127.0.0.1", srv.port)
        head = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        with socket.create_connection(addr, timeout=10) as slow:
            slow.sendall(head + b"Content-Length: 100\r\n\r\n{")
            assert slow.recv(4096).startswith(b"HTTP/1.1 408")  # after the 1 s body deadline
        body = b'{"input": ["hello there"]}'
        with socket.create_connection(addr, timeout=10) as leaving:
            leaving.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            assert started.wait(10)
        deadline = time.monotonic() + 15
        while True:
            page = samples(httpx.get(srv.url + "/metrics", timeout=10).text)
            gone = value(
                page, "ragkit_http_requests_total", route="/v1/embeddings", method="POST", status="499"
            )
            if gone == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    route = {"route": "/v1/embeddings", "method": "POST"}
    assert value(page, "ragkit_http_requests_total", status="408", **route) == 1
    assert value(page, "ragkit_http_request_errors_total", status="499", **route) == 1
    assert value(page, "ragkit_http_requests_total", status="400", **route) == 0  # the unread answers


def test_without_prometheus_client_the_error_names_the_extra_and_the_way_out():
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from ragkit.errors import MissingDependencyError\n"
        "from ragkit.serve.metrics import Metrics\n"
        "try:\n"
        "    Metrics()\n"
        "except MissingDependencyError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'ragkit[server]'" in out and "--no-metrics" in out


@run_async
async def test_client_chosen_methods_and_odd_statuses_do_not_grow_the_label_sets(client):
    metrics, make = client
    async with await make() as c:
        for i in range(50):
            await c.request(f"X{i:05d}ABC", "/v1/items/a")
        page = await get_page(c)
    # Fifty made-up methods are one label value, not fifty.
    methods = {dict(ls).get("method") for (name, ls) in page if name == "ragkit_http_requests_total"}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}
    assert (
        sum(
            v
            for (name, ls), v in page.items()
            if name == "ragkit_http_requests_total" and dict(ls)["method"] == "other"
        )
        == 50
    )
    # A status an app made up (not 100-599) is bounded too.
    for status in (600, 999, 42, "abc"):
        metrics.observe_request("/x", "GET", status, 0.01)
    page = samples(metrics.render()[0].decode())
    assert value(page, "ragkit_http_requests_total", route="/x", method="GET", status="other") == 4
    statuses = {dict(ls)["status"] for (name, ls) in page if name == "ragkit_http_requests_total"}
    assert all(s == "other" or 100 <= int(s) <= 599 for s in statuses)
