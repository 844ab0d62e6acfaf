"""``--workers N``: two workers answer ``/v1/search`` from one saved index, and ``/metrics`` sums them.

The workers run in a subprocess (uvicorn's supervisor wants the main thread for its signals) with the
deterministic HashEmbedder of conftest, so no model is downloaded or built; each worker unpickles its
own copy and opens the index read-only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from conftest import HashEmbedder  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from ragkit.errors import ConfigError  # noqa: E402
from ragkit.serve.workers import WORKER_HEADER, WorkerApp, multiprocess_dir, run_workers, threads_per_worker  # noqa: E402

KEY = "k-workers-secret-1"
TESTS = Path(__file__).resolve().parent

RUN = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from conftest import HashEmbedder
    from ragkit.serve.transport import ConnectionGuard
    from ragkit.serve.workers import WorkerApp, run_workers

    recipe = WorkerApp(
        {"embedder": HashEmbedder(), "index": sys.argv[2], "api_keys": [sys.stdin.readline().strip()]},
        threads=1,
        log_level="warning",
        guard=ConnectionGuard(header_timeout=5),
    )
    sys.exit(run_workers(recipe, workers=2, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning"))
    """
)


def test_threads_are_divided_between_workers():
    assert threads_per_worker(1, cpus=8) == 8
    assert threads_per_worker(3, cpus=8) == 2
    assert threads_per_worker(4, cpus=2) == 1
    assert threads_per_worker(2) >= 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError):
            threads_per_worker(bad)
    with pytest.raises(ConfigError, match="workers >= 2"):
        run_workers(WorkerApp({}), workers=1)


def test_the_command_wants_at_least_one_worker(tmp_path):
    from ragkit.serve import serve_main

    with pytest.raises(SystemExit) as exit_info:
        serve_main(["--embedder", str(tmp_path / "m"), "--workers", "0"])
    assert exit_info.value.code == 2


def test_the_metrics_directory_is_fresh_and_removed_unless_the_operator_chose_it(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with multiprocess_dir() as path:
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == path and os.listdir(path) == []
        Path(path, "counter_1.db").write_bytes(b"x")
    assert not os.path.exists(path) and "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    chosen = tmp_path / "mine"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(chosen))
    with multiprocess_dir() as path:
        assert path == str(chosen)
    assert chosen.is_dir()


@pytest.fixture
def index_dir(tmp_path):
    from ragkit import Pipeline

    pipe = Pipeline(HashEmbedder())
    pipe.add([f"document {i} about topic {i % 5} and workers" for i in range(30)])
    pipe.save(tmp_path / "index")
    pipe.close()
    return tmp_path / "index"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def search(url: str) -> httpx.Response:
    # A new connection each time, so that the kernel may hand it to either worker.
    return httpx.post(
        url + "/v1/search",
        json={"query": "topic 3 workers", "k": 3},
        headers={"authorization": f"Bearer {KEY}", "connection": "close"},
        timeout=30,
    )


def search_count(page: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            if s.name == "ragkit_http_requests_total" and s.labels.get("route") == "/v1/search":
                total += s.value if s.labels.get("status") == "200" else 0
    return total


def connections_open(page: str) -> float:
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            if s.name == "ragkit_connections_open":
                return s.value
    return 0.0


def test_two_workers_answer_search_from_one_index_and_metrics_sum_them(index_dir, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, str(TESTS), str(index_dir), str(port)],
        env={**env, "TMPDIR": str(tmp)},
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.stdin.write(f"{KEY}\n".encode())  # the key travels on a pipe, as from a file: not in argv
    proc.stdin.close()
    try:
        deadline = time.monotonic() + 180
        pids: set[str] = set()
        answered = 0
        while len(pids) < 2:
            assert time.monotonic() < deadline, (
                f"saw workers {pids}: {(tmp_path / 'server.log').read_text()[-3000:]}"
            )
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                r = search(url)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if r.status_code == 503:  # this worker is still loading
                time.sleep(0.2)
                continue
            assert r.status_code == 200, r.text
            assert [h["id"] for h in r.json()["hits"]]
            pids.add(r.headers[WORKER_HEADER])
            answered += 1
        assert all(p.isdigit() and int(p) != proc.pid for p in pids)
        # Whichever worker answers /metrics reports the searches of both.
        seen_by = set()
        for _ in range(20):
            r = httpx.get(url + "/metrics", headers={"connection": "close"}, timeout=30)
            assert r.status_code == 200
            assert search_count(r.text) == answered
            assert connections_open(r.text) >= 1  # each worker's guard reports to its own metrics
            seen_by.add(r.headers[WORKER_HEADER])
        # The key reached the workers inside the pickled recipe: not in their command line or environment.
        if Path("/proc/self/environ").exists():
            for pid in pids:
                for part in ("cmdline", "environ"):
                    assert KEY.encode() not in Path(f"/proc/{pid}/{part}").read_bytes()
            assert KEY.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
    assert proc.returncode == 0, (tmp_path / "server.log").read_text()[-3000:]
    assert KEY not in (tmp_path / "server.log").read_text()
    assert list(tmp.iterdir()) == []  # the metrics directory went with the server


def test_the_command_hands_the_workers_a_recipe_with_keys_threads_and_the_guard(tmp_path, monkeypatch):
    import logging

    import ragkit.serve.workers as workers_module
    from ragkit.serve import serve_main

    seen = {}
    monkeypatch.setattr(
        workers_module, "run_workers", lambda recipe, **kw: seen.update(recipe=recipe, **kw) or 0
    )
    monkeypatch.setattr(workers_module, "threads_per_worker", lambda n: 16 // n)
    monkeypatch.setenv("RAGKIT_API_KEYS", "k-env-workers-1")
    ragkit_logger = logging.getLogger("ragkit")
    monkeypatch.setattr(ragkit_logger, "level", ragkit_logger.level)  # serve_main sets it
    argv = ["--index", str(tmp_path / "idx"), "--workers", "4", "--port", "8123", "--header-timeout", "3"]
    argv += ["--metrics-auth", "--log-level", "warning", "--forwarded-allow-ips", "10.0.0.5"]
    assert serve_main(argv) == 0
    recipe = seen["recipe"]
    assert seen["workers"] == 4 and seen["port"] == 8123 and seen["forwarded_allow_ips"] == "10.0.0.5"
    assert recipe.threads == 4 and recipe.metrics and recipe.metrics_auth
    assert recipe.options["api_keys"] == ["k-env-workers-1"] and recipe.options["index"] == str(
        tmp_path / "idx"
    )
    assert recipe.guard.header_timeout == 3.0
    assert serve_main([*argv, "--threads", "2"]) == 0
    assert seen["recipe"].threads == 2  # --threads: per worker, as given


def test_when_the_models_fail_to_load_the_workers_stop_and_the_status_says_so(tmp_path):
    port = free_port()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(TESTS), str(tmp_path / "no-such-index"), str(port)],
        env={**env, "TMPDIR": str(tmp)},
        input=f"{KEY}\n",
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "loading the models failed" in proc.stderr
    assert list(tmp.iterdir()) == []


SINGLE = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from conftest import HashEmbedder
    import ragkit.serve.cli as cli

    make = cli.create_app
    cli.create_app = lambda **options: make(**{**options, "embedder": HashEmbedder()})
    sys.exit(cli.serve_main(["--embedder", "hash", "--port", sys.argv[2], "--log-level", "warning"]))
    """
)


def test_sigterm_stops_the_single_process_server_with_status_0(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SINGLE, str(TESTS), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, proc.stdout.read().decode()[-3000:]
