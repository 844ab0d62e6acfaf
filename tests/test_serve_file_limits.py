"""The guarded transport at the open-file limit: idle sockets at 256 open files do not stop ``/health``,
the soft limit is raised to the hard one, and accept() errors when out of files are logged once.

The servers run in subprocesses (each with its own limit) with the tiny ASGI app of
``test_serve_transport``.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

pytest.importorskip("uvicorn")

from ragkit.serve.transport import RateLimitFilter, limit_log_floods, raise_nofile_limit  # noqa: E402

SERVE_WITH_LOW_FD_LIMIT = textwrap.dedent(
    """
    import resource, socket, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    import uvicorn
    sys.path.insert(0, sys.argv[1])
    from test_serve_transport import tiny_app
    from ragkit.serve.transport import ConnectionGuard, limit_log_floods

    limit_log_floods()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    guard = ConnectionGuard(header_timeout=60, body_timeout=60)
    uvicorn.Server(uvicorn.Config(tiny_app, http=guard, lifespan="off", log_level="info", backlog=2048)).run(
        sockets=[sock]
    )
    """
)


def test_with_256_open_files_300_idle_sockets_do_not_stop_health(tmp_path):
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    err = open(tmp_path / "stderr.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_WITH_LOW_FD_LIMIT, tests_dir], stdout=subprocess.PIPE, stderr=err
    )
    idle: list[socket.socket] = []
    try:
        port = int(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(url + "/health", timeout=5).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(1.0)
        for _ in range(3):
            assert httpx.get(url + "/health", timeout=10).status_code == 200
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(30)
        err.close()
    log = (tmp_path / "stderr.log").read_bytes()
    assert len(log) < 50_000, log[-2000:]
    assert b"leaves room for" in log  # the cap was lowered to fit the limit, and said so


def test_raise_nofile_limit_raises_the_soft_limit_to_the_hard_one():
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (200, 400)); "
        "from ragkit.serve.transport import raise_nofile_limit; print(raise_nofile_limit())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(400, 400)"
    soft, hard = raise_nofile_limit()
    assert soft > 0


def test_rate_limit_filter_lets_one_record_per_interval_through_and_counts_the_rest():
    flt = RateLimitFilter(["socket.accept() out of system resource"], interval=0.3)

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord(
            "asyncio", logging.ERROR, __file__, 1, msg, (), (OSError, OSError(24, "x"), None)
        )

    flood = "socket.accept() out of system resource\nsocket: <socket>"
    assert flt.filter(record(flood))
    assert not any(flt.filter(record(flood)) for _ in range(1000))
    assert flt.filter(record("something else"))  # other messages are untouched
    time.sleep(0.35)
    later = record(flood)
    assert flt.filter(later) and "1000 more like it" in later.getMessage() and later.exc_info is None
    assert limit_log_floods() is limit_log_floods()
    assert limit_log_floods() in logging.getLogger("asyncio").filters


SERVE_OUT_OF_FILES = textwrap.dedent(
    """
    import os, resource, socket, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
    import uvicorn
    from ragkit.serve.transport import ConnectionGuard, limit_log_floods

    hogged = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/hog":  # leak every free descriptor, as a buggy dependency might
            try:
                while True:
                    hogged.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    if sys.argv[1] == "limited":
        limit_log_floods()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, http=ConnectionGuard(), lifespan="off", log_level="info")).run(
        sockets=[sock]
    )
    """
)


def test_accept_errors_when_out_of_files_are_logged_once_not_per_attempt(tmp_path):
    counts = {}
    for mode in ("limited", "unlimited"):
        err_path = tmp_path / f"{mode}.log"
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", SERVE_OUT_OF_FILES, mode], stdout=subprocess.PIPE, stderr=err
            )
        socks: list[socket.socket] = []
        try:
            port = int(proc.stdout.readline())
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert httpx.get(f"http://127.0.0.1:{port}/hog", timeout=5).status_code == 200
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.1)
            for _ in range(20):  # they wait in the accept queue: every accept() fails
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            time.sleep(4.5)  # asyncio retries accept() once a second
        finally:
            for s in socks:
                s.close()
            proc.terminate()
            proc.wait(30)
        counts[mode] = err_path.read_text().count("socket.accept() out of system resource")
    assert counts["unlimited"] >= 3  # the flood is real...
    assert counts["limited"] == 1  # ...and the filter lets one line through
