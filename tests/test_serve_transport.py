"""The guarded HTTP transport: header, body and write deadlines, the connection cap, request framing.

Each test runs uvicorn with :class:`ConnectionGuard` on 127.0.0.1 in a thread with a tiny ASGI app and
deadlines of a second or two, and talks raw sockets to it (the open-file limit and log floods:
``test_serve_file_limits.py``).
Bounds are behavioural and generous: "closed within the deadline plus several seconds".
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import selectors
import socket
import threading
import time

import httpx
import pytest

pytest.importorskip("uvicorn")

from ragkit.errors import ConfigError  # noqa: E402
from ragkit.serve.transport import (  # noqa: E402
    ConnectionGuard,
)

SLACK = 8.0  # seconds beyond a deadline that a shared, loaded machine may need


async def tiny_app(scope, receive, send):
    """/health answers at once, /hold after HOLD, /early without reading the body; the rest echo."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/hold":
        while not HOLD.is_set():
            await asyncio.sleep(0.02)
    if path == "/slow-model":
        await asyncio.sleep(2.5)
    if path == "/big":  # more than any socket buffers hold: a client that does not read stalls it
        big = b"x" * (16 << 20)
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(big))],
        }
        await send(start)
        await send({"type": "http.response.body", "body": big})
        return
    body = b""
    if path not in ("/early", "/health"):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
    answer = f"ok {len(body)}".encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]}
    )
    await send({"type": "http.response.body", "body": answer})


HOLD = threading.Event()


class Running:
    """uvicorn with a guard in a background thread on a free loopback port."""

    def __init__(self, guard: ConnectionGuard, app=tiny_app, **options) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.addr = self.sock.getsockname()
        self.url = f"http://127.0.0.1:{self.addr[1]}"
        config = uvicorn.Config(app, http=guard, lifespan="off", log_level="warning", backlog=1024, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        HOLD.set()
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        HOLD.clear()


def wait_closed(socks: list[socket.socket], timeout: float) -> tuple[set[int], dict[int, bytes]]:
    """Read every socket until the server closes it or ``timeout`` passes: (closed indexes, bytes read)."""
    sel = selectors.DefaultSelector()
    got: dict[int, bytes] = {}
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        got[i] = b""
    closed: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(closed) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            i = key.data
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError:  # reset: closed while we were still sending
                data = b""
            if data:
                got[i] += data
            else:
                closed.add(i)
                sel.unregister(key.fileobj)
    sel.close()
    return closed, got


def trickle(socks: list[socket.socket], payload: bytes, every: float, stop: threading.Event) -> None:
    """Send ``payload`` one byte per socket every ``every`` seconds until ``stop`` (or the socket fails)."""
    dead: set[int] = set()
    for pos in range(len(payload)):
        for i, s in enumerate(socks):
            if i in dead:
                continue
            try:
                s.send(payload[pos : pos + 1])
            except OSError:
                dead.add(i)
        if stop.wait(every):
            return


def test_settings_are_checked():
    for bad in (
        {"header_timeout": 0},
        {"body_timeout": -1},
        {"header_timeout": float("inf")},
        {"body_timeout": "5"},
        {"write_timeout": 0},
    ):
        with pytest.raises(ConfigError):
            ConnectionGuard(**bad)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="max_connections"):
            ConnectionGuard(max_connections=bad)


def test_the_guard_pickles_with_its_settings_only():
    # --workers sends the guard to each worker process: each must start with its own empty state.
    guard = ConnectionGuard(header_timeout=3, body_timeout=7, max_connections=9, on_close=None)
    guard._open.add("x")
    copy = pickle.loads(pickle.dumps(guard))
    assert (copy.header_timeout, copy.body_timeout, copy.max_connections) == (3.0, 7.0, 9)
    assert copy.open_connections == 0


def test_slow_connections_do_not_block_a_normal_client_and_are_closed_after_the_header_timeout():
    reasons: list[str] = []
    guard = ConnectionGuard(header_timeout=2, body_timeout=5, on_close=reasons.append)
    with Running(guard) as srv:
        slow = [socket.create_connection(srv.addr, timeout=10) for _ in range(200)]
        stop = threading.Event()
        started = time.monotonic()
        sender = threading.Thread(
            target=trickle, args=(slow, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 1.0, stop), daemon=True
        )
        sender.start()
        try:
            answered = httpx.get(srv.url + "/health", timeout=10)
            assert answered.status_code == 200 and answered.text == "ok 0"
            assert time.monotonic() - started < 2 + SLACK
            closed, got = wait_closed(slow, timeout=2 + SLACK)
        finally:
            stop.set()
            sender.join(5)
            for s in slow:
                s.close()
        assert len(closed) == 200, f"{200 - len(closed)} slow connections were still open"
        assert time.monotonic() - started >= 1.5  # closed by the deadline, not at once
        assert any(data.startswith(b"HTTP/1.1 408") for data in got.values())
        assert reasons.count("header_timeout") == 200
        assert httpx.get(srv.url + "/health", timeout=10).status_code == 200


def test_a_connection_that_sends_nothing_gets_408_after_the_header_timeout():
    with Running(ConnectionGuard(header_timeout=1, body_timeout=5)) as srv:
        s = socket.create_connection(srv.addr, timeout=10)
        started = time.monotonic()
        closed, got = wait_closed([s], timeout=1 + SLACK)
        assert closed == {0} and got[0].startswith(b"HTTP/1.1 408 Request Timeout")
        assert time.monotonic() - started >= 0.8
        head, _, body = got[0].partition(b"\r\n\r\n")  # the OpenAI error shape, as the app's errors
        assert b"content-type: application/json" in head
        assert json.loads(body)["error"]["code"] == "request_timeout"
        s.close()


def test_the_header_deadline_restarts_for_each_request_on_a_kept_alive_connection():
    with Running(ConnectionGuard(header_timeout=1.5, body_timeout=5)) as srv:
        with httpx.Client(base_url=srv.url, timeout=10) as client:  # keep-alive across the pause
            assert client.get("/health").status_code == 200
            time.sleep(2.0)  # longer than the header deadline, shorter than uvicorn's 5 s keep-alive
            assert client.post("/echo", content=b"abc").text == "ok 3"
        s = socket.create_connection(srv.addr, timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        s.sendall(b"GET /hea")  # the next request starts, then stalls
        closed, got = wait_closed([s], timeout=1.5 + SLACK)
        assert closed == {0}
        assert got[0].count(b"HTTP/1.1 200") == 1 and b"HTTP/1.1 408" in got[0]
        s.close()


def test_a_trickling_body_is_cut_with_408_after_the_body_timeout():
    reasons: list[str] = []
    with Running(ConnectionGuard(header_timeout=2, body_timeout=2, on_close=reasons.append)) as srv:
        s = socket.create_connection(srv.addr, timeout=10)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        stop = threading.Event()
        sender = threading.Thread(target=trickle, args=([s], b"x" * 100, 0.4, stop), daemon=True)
        started = time.monotonic()
        sender.start()
        try:
            closed, got = wait_closed([s], timeout=2 + SLACK)
        finally:
            stop.set()
            sender.join(5)
        assert closed == {0} and got[0].startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started >= 1.5
        assert reasons == ["body_timeout"]
        s.close()
        # A body sent at once is fine, and so is a model that takes longer than the body deadline.
        assert httpx.post(srv.url + "/echo", content=b"y" * 50_000, timeout=10).text == "ok 50000"
        assert httpx.post(srv.url + "/slow-model", content=b"abc", timeout=10).text == "ok 3"


def test_a_pipelined_request_whose_body_trickles_is_cut_too():
    with Running(ConnectionGuard(header_timeout=2, body_timeout=2)) as srv:
        s = socket.create_connection(srv.addr, timeout=10)
        s.sendall(
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab"
        )
        stop = threading.Event()
        sender = threading.Thread(target=trickle, args=([s], b"x" * 98, 0.4, stop), daemon=True)
        sender.start()
        try:
            closed, got = wait_closed([s], timeout=2 + SLACK)
        finally:
            stop.set()
            sender.join(5)
        assert closed == {0}
        assert got[0].startswith(b"HTTP/1.1 200") and b"HTTP/1.1 408" in got[0]
        s.close()


def test_a_body_trickling_after_an_early_answer_is_closed_too():
    with Running(ConnectionGuard(header_timeout=2, body_timeout=2)) as srv:
        s = socket.create_connection(srv.addr, timeout=10)
        s.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        stop = threading.Event()
        sender = threading.Thread(target=trickle, args=([s], b"x" * 100, 0.4, stop), daemon=True)
        sender.start()
        try:
            closed, got = wait_closed([s], timeout=2 + SLACK)
        finally:
            stop.set()
            sender.join(5)
        assert closed == {0}
        assert got[0].startswith(b"HTTP/1.1 200") and b"408" not in got[0]  # no second answer
        s.close()


def test_an_idle_connection_closes_after_keep_alive_even_when_its_body_ended_after_the_answer():
    # uvicorn cancels its keep-alive timer on any byte; the tail of a body that arrives after the answer
    # would otherwise leave the connection open with no timer at all.
    reasons: list[str] = []
    guard = ConnectionGuard(header_timeout=30, body_timeout=30, on_close=reasons.append)
    with Running(guard, timeout_keep_alive=1) as srv:
        s = socket.create_connection(srv.addr, timeout=10)
        s.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        time.sleep(0.5)  # the answer is out
        s.sendall(b"67890")
        started = time.monotonic()
        closed, got = wait_closed([s], timeout=1 + SLACK)
        assert closed == {0} and got[0].startswith(b"HTTP/1.1 200")
        assert time.monotonic() - started < 1 + SLACK and reasons == []  # keep-alive, not a deadline
        s.close()


def test_over_the_cap_the_longest_waiting_connection_is_closed():
    reasons: list[str] = []
    guard = ConnectionGuard(header_timeout=60, body_timeout=60, max_connections=20, on_close=reasons.append)
    with Running(guard) as srv:
        idle = []
        for _ in range(50):
            idle.append(socket.create_connection(srv.addr, timeout=10))
            time.sleep(0.005)
        answered = httpx.get(srv.url + "/health", timeout=10)
        assert answered.status_code == 200
        closed, _ = wait_closed(idle, timeout=SLACK)
        assert len(closed) >= 31  # 50 + the client's connection, at most 20 open
        assert min(set(range(50)) - closed, default=50) >= 29  # the oldest went first
        assert guard.open_connections <= 20
        assert reasons.count("evicted") == len(closed)
        for s in idle:
            s.close()


def test_when_every_connection_is_busy_a_new_one_is_refused_with_503():
    reasons: list[str] = []
    guard = ConnectionGuard(header_timeout=60, body_timeout=60, max_connections=3, on_close=reasons.append)
    with Running(guard) as srv:
        busy = [socket.create_connection(srv.addr, timeout=10) for _ in range(3)]
        for s in busy:
            s.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        extra = socket.create_connection(srv.addr, timeout=10)
        closed, got = wait_closed([extra], timeout=SLACK)
        assert closed == {0} and got[0].startswith(b"HTTP/1.1 503") and b"retry-after: 1" in got[0]
        assert "refused" in reasons
        HOLD.set()
        _, answers = wait_closed(busy, timeout=1.0)
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers.values())
        for s in [*busy, extra]:
            s.close()


def test_the_ragkit_server_keeps_answering_through_200_slow_connections(hash_embedder):
    # The same, through BackgroundServer and the real app: its default transport is the guard.
    from ragkit.serve import BackgroundServer, create_app
    from ragkit.serve.metrics import Metrics

    metrics = Metrics()
    app = create_app(hash_embedder, observer=metrics)
    guard = ConnectionGuard(header_timeout=2, body_timeout=2)
    with BackgroundServer(app, guard=guard) as srv:
        addr = ("127.0.0.1", srv.port)
        slow = [socket.create_connection(addr, timeout=10) for _ in range(200)]
        stop = threading.Event()
        head = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n"
        sender = threading.Thread(target=trickle, args=(slow, head, 1.0, stop), daemon=True)
        sender.start()
        try:
            r = httpx.post(srv.url + "/v1/embeddings", json={"input": ["a normal client"]}, timeout=10)
            assert r.status_code == 200 and len(r.json()["data"]) == 1
            assert httpx.get(srv.url + "/health", timeout=10).status_code == 200
            closed, _ = wait_closed(slow, timeout=2 + SLACK)
        finally:
            stop.set()
            sender.join(5)
            for s in slow:
                s.close()
        assert len(closed) == 200
        page = httpx.get(srv.url + "/metrics", timeout=10).text
    assert 'ragkit_connections_closed_total{reason="header_timeout"} 200.0' in page


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--header-timeout", "0"], "header_timeout must be a positive number"),
        (["--body-timeout", "-5"], "body_timeout must be a positive number"),
        (["--write-timeout", "0"], "write_timeout must be a positive number"),
        (["--max-connections", "0"], "max_connections must be a positive int"),
    ],
)
def test_the_command_checks_the_transport_flags(tmp_path, monkeypatch, caplog, flags, message):
    from ragkit.serve import serve_main

    ragkit_logger = logging.getLogger("ragkit")
    monkeypatch.setattr(ragkit_logger, "level", ragkit_logger.level)  # serve_main sets it
    argv = ["--embedder", str(tmp_path / "never-loaded"), "--port", "0", "--log-level", "error", *flags]
    with caplog.at_level(logging.ERROR, logger="ragkit"):
        assert serve_main(argv) == 1
    assert message in caplog.text


def slow_reader(addr, requests: int = 1) -> socket.socket:
    """A client that asks for big answers (pipelined) and never reads them."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(addr)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * requests)
    return s


def test_a_client_that_never_reads_its_answers_is_closed_after_the_write_timeout():
    reasons: list[str] = []
    guard = ConnectionGuard(header_timeout=60, body_timeout=60, write_timeout=1, on_close=reasons.append)
    with Running(guard) as srv:
        readers = [slow_reader(srv.addr, requests=300) for _ in range(3)]
        time.sleep(0.5)
        assert guard.open_connections == 3  # answering, stalled on the unread bytes
        deadline = time.monotonic() + 1 + SLACK
        while guard.open_connections and time.monotonic() < deadline:
            time.sleep(0.1)
        assert guard.open_connections == 0 and reasons.count("write_timeout") == 3
        assert httpx.get(srv.url + "/health", timeout=10).status_code == 200
        for s in readers:
            s.close()


def test_at_the_cap_slow_readers_and_slow_bodies_do_not_lock_out_new_clients():
    reasons: list[str] = []
    guard = ConnectionGuard(
        header_timeout=60, body_timeout=60, write_timeout=60, max_connections=8, on_close=reasons.append
    )
    stop = threading.Event()
    with Running(guard) as srv:
        readers = [slow_reader(srv.addr, requests=300) for _ in range(4)]
        bodies = [socket.create_connection(srv.addr, timeout=10) for _ in range(4)]
        for s in bodies:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\ncontent-length: 100000\r\n\r\n")
        feeder = threading.Thread(target=trickle, args=(bodies, b" " * 1000, 0.2, stop), daemon=True)
        feeder.start()
        time.sleep(1.0)
        assert guard.open_connections == 8
        clients = [httpx.Client(base_url=srv.url, timeout=10) for _ in range(8)]
        try:
            for c in clients:  # each new client (kept alive) makes room by closing one stalled connection
                assert c.get("/health").status_code == 200
        finally:
            stop.set()
            feeder.join(10)
            for c in clients:
                c.close()
        assert "refused" not in reasons and reasons.count("evicted") == 8
        for s in [*readers, *bodies]:
            s.close()


def test_a_request_with_both_content_length_and_chunked_is_refused_with_400():
    with Running(ConnectionGuard(header_timeout=5, body_timeout=5)) as srv:
        s = socket.create_connection(srv.addr, timeout=10)
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"
            b"0\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        closed, got = wait_closed([s], timeout=SLACK)
        assert closed == {0} and got[0].startswith(b"HTTP/1.1 400")
        assert got[0].count(b"HTTP/1.1") == 1  # the smuggled request was not answered
        assert json.loads(got[0].partition(b"\r\n\r\n")[2])["error"]["type"] == "invalid_request_error"
        s.close()
