"""Fair scheduling and cancellation in ``ragkit serve``: a huge request is served in sub-batches, a small one
that arrives meanwhile waits for at most a batch or two, and a client that hangs up frees the worker.

The fake model sleeps a fixed time per call and records its calls, so every bound is counted in batches
(generous bounds in seconds only where a client is timed)."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import HashEmbedder  # noqa: E402

from ragkit.serve import BackgroundServer, create_app  # noqa: E402
from ragkit.serve.batching import Job, Worker  # noqa: E402
from ragkit.serve.errors import ApiError, ClientGone  # noqa: E402
from ragkit.serve.hangups import HANGUP_SCOPE_KEY, Hangup  # noqa: E402

BATCH_S = 0.2
TEXT = "x" * 36  # 36 // 4 + 1 = 10 tokens (the fake has no counting hook)


class PacedEmbedder(HashEmbedder):
    """Sleeps ``BATCH_S`` per call and records (start time, texts) of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[float, list[str]]] = []
        self.started = threading.Event()

    def embed_documents(self, texts):
        self.log.append((time.monotonic(), list(texts)))
        self.started.set()
        time.sleep(BATCH_S)
        return self._embed(list(texts))

    embed_queries = embed_documents


def huge(n: int = 200) -> list[str]:
    return [f"{i:03d}" + TEXT[3:] for i in range(n)]


def test_a_small_request_overtakes_a_huge_one():
    emb = PacedEmbedder()
    # 40 tokens per call: four texts; the huge request is 50 sub-batches (about 10 s on its own).
    app = create_app(emb, max_batch_tokens=40, max_request_tokens=None, max_inputs=512)
    with BackgroundServer(app) as server:
        answers: dict[str, httpx.Response] = {}

        def send_huge() -> None:
            answers["huge"] = httpx.post(server.url + "/v1/embeddings", json={"input": huge()}, timeout=60)

        thread = threading.Thread(target=send_huge)
        thread.start()
        assert emb.started.wait(30)
        time.sleep(BATCH_S * 2.5)  # the huge request is a few sub-batches in
        calls_before = len(emb.log)
        start = time.monotonic()
        small = httpx.post(server.url + "/v1/embeddings", json={"input": ["small one"]}, timeout=60)
        waited = time.monotonic() - start
        thread.join(60)
    assert small.status_code == 200 and answers["huge"].status_code == 200
    index = next(i for i, (_, texts) in enumerate(emb.log) if "small one" in texts)
    assert index - calls_before <= 2, f"the small request waited {index - calls_before} batches"
    assert waited < BATCH_S * 8  # generous: FIFO would take ~45 more batches
    # The huge request still gets every row, in order, right.
    got = [d["embedding"] for d in sorted(answers["huge"].json()["data"], key=lambda d: d["index"])]
    np.testing.assert_allclose(np.float32(got), HashEmbedder().embed_documents(huge()), atol=1e-6)
    assert max(len(texts) for _, texts in emb.log) <= 4


def test_a_client_that_disconnects_frees_the_worker():
    emb = PacedEmbedder()
    app = create_app(emb, max_batch_tokens=40, max_request_tokens=None, max_inputs=512)
    with BackgroundServer(app) as server:
        worker = server.app.state.ragkit.models[0]
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/embeddings", json={"input": huge()}, timeout=BATCH_S * 3)
        hung_up = len(emb.log)
        deadline = time.monotonic() + 10
        while worker.depth and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.depth == 0  # the rest of the huge request was dropped
        time.sleep(BATCH_S * 3)
        r = httpx.post(server.url + "/v1/embeddings", json={"input": ["after"]}, timeout=30)
        assert r.status_code == 200
    huge_calls = [texts for _, texts in emb.log if "after" not in texts]
    assert len(huge_calls) <= hung_up + 2  # at most the sub-batches already under way
    assert len(huge_calls) < 50 // 2


# ----------------------------------------------------------------------------------- the worker alone


def recording_worker(**options):
    calls: list[list[str]] = []
    gate = threading.Event()

    def run(key, texts):
        calls.append(list(texts))
        gate.wait(10)
        return np.zeros((len(texts), 2), dtype=np.float32)

    worker = Worker("w", None, run=run, task="embedding", max_batch_tokens=4, max_queue=8, **options)
    return worker, calls, gate


def test_least_served_first_and_round_robin_between_huge_requests():
    worker, calls, gate = recording_worker()
    try:
        first = worker.submit(Job("document", [f"a{i}" for i in range(12)], tokens=[1] * 12))
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        second = worker.submit(Job("document", [f"b{i}" for i in range(8)], tokens=[1] * 8))
        small = worker.submit(Job("document", ["s"], tokens=[1]))
        gate.set()
        for future in (first, second, small):
            assert len(future.result(10)) in (12, 8, 1)
    finally:
        gate.set()
        worker.close()
    # The first call held four of a*; the next one holds the two newcomers (least served) and a's share
    # of a third of the budget; no call is over the budget, and a's texts come back in order.
    assert calls[0] == ["a0", "a1", "a2", "a3"]
    assert "s" in calls[1] and any(t.startswith("b") for t in calls[1])
    assert sum(t.startswith("a") for t in calls[1]) <= 1  # the old job gets its share, no top-up
    assert all(len(c) <= 4 for c in calls)
    assert [t for c in calls for t in c if t.startswith("a")] == [f"a{i}" for i in range(12)]


def test_a_cancelled_job_runs_no_more_sub_batches():
    worker, calls, gate = recording_worker(batching=False)
    try:
        job = Job("document", [f"t{i}" for i in range(40)], tokens=[1] * 40)
        future = worker.submit(job)
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert future.cancel()  # the client went away while its first sub-batch ran
        gate.set()
        other = worker.submit(Job("document", ["next"], tokens=[1]))
        assert len(other.result(10)) == 1
    finally:
        gate.set()
        worker.close()
    assert sum(len(c) for c in calls if "next" not in c) <= 8  # at most two sub-batches of four
    assert worker.depth == 0 and worker.requests == 1


class Recorder:
    """An Observer that records what it is told."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int, int, float]] = []
        self.queues: list[tuple[str, int]] = []
        self.loads: list[tuple[str, float]] = []

    def on_batch(self, kind, size, tokens, seconds):
        self.batches.append((kind, size, tokens, seconds))

    def on_queue(self, kind, depth):
        self.queues.append((kind, depth))

    def on_model_load(self, kind, seconds):
        self.loads.append((kind, seconds))


class Broken(Recorder):
    def on_batch(self, kind, size, tokens, seconds):
        raise RuntimeError("a metrics bug")


def test_the_observer_hears_loads_batches_and_queue_depths():
    seen = Recorder()
    with BackgroundServer(create_app(HashEmbedder(), observer=seen)) as server:
        r = httpx.post(server.url + "/v1/embeddings", json={"input": [TEXT, TEXT + "y"]})
        assert r.status_code == 200
    assert [kind for kind, _ in seen.loads] == ["embedding"]
    assert seen.batches[0][:3] == ("embedding", 2, 10 + 10) and seen.batches[0][3] >= 0
    assert ("embedding", 1) in seen.queues and seen.queues[-1] == ("embedding", 0)
    # A failing observer never breaks serving.
    with BackgroundServer(create_app(HashEmbedder(), observer=Broken())) as server:
        assert httpx.post(server.url + "/v1/embeddings", json={"input": "a"}).status_code == 200


@pytest.mark.slow
def test_the_fairness_benchmark_runs(tmp_path):
    """Smoke run of benchmarks/server_fairness.py: small requests beat the huge one by far."""
    import importlib.util
    import json
    from pathlib import Path

    pytest.importorskip("transformers")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "server_fairness.py"
    spec = importlib.util.spec_from_file_location("server_fairness", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick", "--out-dir", str(tmp_path)])
    assert json.loads((tmp_path / "server_fairness.json").read_text()) == result
    assert (tmp_path / "server_fairness.md").read_text().startswith("# Server fairness")
    assert result["small_requests_during_huge"] >= 1
    assert result["small_latency_during_huge_ms"]["max"] < 1000 * result["huge"]["seconds"]


def test_small_jobs_are_counted_by_the_worker_and_big_ones_beside_the_loop():
    import asyncio

    from ragkit.serve.batching import INLINE_COUNT_CHARS

    threads: list[int] = []

    def count(job):
        threads.append(threading.get_ident())
        return [1] * len(job.texts)

    def run(key, texts):
        return np.zeros((len(texts), 2), dtype=np.float32)

    worker = Worker("w", None, run=run, task="embedding", max_batch_tokens=64, max_queue=8, count=count)

    async def main() -> int:
        await worker.run(Job("document", ["a short text"]))
        await worker.run(Job("document", ["x" * (INLINE_COUNT_CHARS + 1)]))
        return threading.get_ident()

    try:
        loop_thread = asyncio.run(main())
    finally:
        worker.close()
    # The small job was counted by the worker thread (no hop, and not on the loop); the big one in a
    # thread that is neither, so that the model never waits long on a tokenizer.
    assert threads[0] == worker._thread.ident
    assert threads[1] not in (loop_thread, worker._thread.ident)


def test_a_small_job_over_the_cost_cap_is_refused_before_any_of_it_runs():
    calls: list[list[str]] = []

    def run(key, texts):
        calls.append(list(texts))
        return np.zeros((len(texts), 2), dtype=np.float32)

    worker = Worker(
        "w", None, run=run, task="embedding", max_batch_tokens=64, max_queue=8, max_request_tokens=5
    )
    try:
        refused = worker.submit(Job("document", ["a text of far more than twenty characters"]))
        with pytest.raises(ApiError) as e:
            refused.result(10)
        assert e.value.status == 413 and "max_request_tokens" in str(e.value)
        assert worker.submit(Job("document", ["short"])).result(10).shape == (1, 2)
    finally:
        worker.close()
    assert calls == [["short"]]  # nothing of the refused job reached the model


def test_a_flood_of_small_jobs_is_counted_a_budget_at_a_time():
    counted: list[int] = []
    gate = threading.Event()

    def count(job):
        counted.append(len(job.texts))
        return [1] * len(job.texts)

    def run(key, texts):
        gate.wait(10)
        return np.zeros((len(texts), 2), dtype=np.float32)

    # A budget of 4 tokens: at most 16 characters counted per model call, and at least one job.
    worker = Worker("w", None, run=run, task="embedding", max_batch_tokens=4, max_queue=64, count=count)
    try:
        futures = [worker.submit(Job("document", ["x" * 10])) for _ in range(20)]
        deadline = time.monotonic() + 10
        while not counted and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert 1 <= len(counted) <= 2  # not all twenty before the first model call
        gate.set()
        for future in futures:
            assert future.result(10).shape == (1, 2)
    finally:
        gate.set()
        worker.close()
    assert len(counted) == 20  # each job counted once


def test_a_job_is_answered_when_its_own_model_call_is_done_not_the_whole_batch():
    release = threading.Event()
    calls: list[tuple[str, list[str]]] = []

    def run(key, texts):
        calls.append((key[0], list(texts)))
        if key[0] == "query":
            release.wait(10)
        return np.zeros((len(texts), 2), dtype=np.float32)

    worker = Worker("w", None, run=run, task="embedding", max_batch_tokens=64, max_queue=8, batch_wait=0.2)
    try:
        first = worker.submit(Job("document", ["blocker"], tokens=[1]))
        document = worker.submit(Job("document", ["d"], tokens=[1]))
        query = worker.submit(Job("query", ["q"], tokens=[1]))
        assert first.result(10).shape == (1, 2)
        # One batch holds all three jobs, run as two model calls (one per kind); the documents' answers
        # come while the query's call still runs.
        assert document.result(10).shape == (1, 2)
        assert not query.done()
        release.set()
        assert query.result(10).shape == (1, 2)
    finally:
        release.set()
        worker.close()
    assert calls == [("document", ["blocker", "d"]), ("query", ["q"])]


def test_jobs_that_arrive_while_a_batch_is_gathered_join_it_past_batch_wait():
    calls: list[list[str]] = []
    more = [f"t{i}" for i in range(1, 6)]
    holder: list[Worker] = []

    def count(job):
        time.sleep(0.005)  # longer than batch_wait: each look at the queue is past the deadline
        if more:  # a new request arrives while the worker counts this one
            holder[0].submit(Job("document", [more.pop(0)]))
        return [1] * len(job.texts)

    def run(key, texts):
        calls.append(list(texts))
        return np.zeros((len(texts), 2), dtype=np.float32)

    # Without taking what arrives while it gathers, each job would run alone.
    worker = Worker(
        "w", None, run=run, task="embedding", max_batch_tokens=64, max_queue=16, count=count, batch_wait=0.004
    )
    holder.append(worker)
    try:
        assert worker.submit(Job("document", ["t0"])).result(10).shape == (1, 2)
        deadline = time.monotonic() + 10
        while worker.requests < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.close()
    assert calls == [[f"t{i}" for i in range(6)]]


def test_a_stream_of_arrivals_cannot_keep_a_batch_gathering():
    calls: list[list[str]] = []
    holder: list[Worker] = []
    stop = threading.Event()

    def count(job):
        time.sleep(0.002)
        if not stop.is_set():  # a new request arrives every time the worker counts one, for ever
            holder[0].submit(Job("document", ["more"]))
        return [1] * len(job.texts)

    def run(key, texts):
        calls.append(list(texts))
        stop.set()
        return np.zeros((len(texts), 2), dtype=np.float32)

    # 25 waits of 10 ms: the batch runs after about 0.25 s, far before its budget of a million tokens fills.
    worker = Worker(
        "w",
        None,
        run=run,
        task="embedding",
        max_batch_tokens=10**6,
        max_queue=10**6,
        count=count,
        batch_wait=0.01,
    )
    holder.append(worker)
    try:
        first = worker.submit(Job("document", ["first"]))
        assert first.result(10).shape == (1, 2)
    finally:
        stop.set()
        worker.close()
    assert 1 < len(calls[0]) < 10**6


# ----------------------------------------------------------------------------------- hang-ups


def test_a_hangup_fires_its_callbacks_once_and_refuses_new_ones_after():
    hangup, heard = Hangup(), []

    def broken():
        raise RuntimeError("a watcher's bug")

    kept, dropped = (lambda: heard.append("kept")), (lambda: heard.append("dropped"))
    assert hangup.add(broken) and hangup.add(kept) and hangup.add(dropped)
    hangup.discard(dropped)
    hangup.discard(dropped)  # twice: no error
    hangup.fire()
    hangup.fire()
    assert heard == ["kept"] and hangup.fired
    assert not hangup.add(kept) and heard == ["kept"]


def test_a_fired_hangup_cancels_the_job_and_its_remaining_sub_batches():
    import asyncio

    worker, calls, gate = recording_worker(batching=False)

    async def scenario():
        hangup = Hangup()
        job = Job("document", [f"t{i}" for i in range(40)], tokens=[1] * 40)
        task = asyncio.ensure_future(worker.run(job, gone=hangup))
        while not calls:
            await asyncio.sleep(0.01)
        hangup.fire()
        with pytest.raises(ClientGone):
            await task
        assert job.future.cancelled()
        # A client that left before its request was even queued: refused at once, nothing runs.
        gone = Hangup()
        gone.fire()
        late = Job("document", ["late"], tokens=[1])
        with pytest.raises(ClientGone):
            await worker.run(late, gone=gone)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 20))
        gate.set()
        assert len(worker.submit(Job("document", ["next"], tokens=[1])).result(10)) == 1
    finally:
        gate.set()
        worker.close()
    assert sum(len(c) for c in calls if "next" not in c) <= 8  # at most two sub-batches of four
    assert not any("late" in c for c in calls)


def test_the_transport_fires_a_requests_hangup_when_its_client_leaves_before_the_answer():
    import asyncio
    import socket

    seen: list[object] = []
    fired = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        hangup = scope.get(HANGUP_SCOPE_KEY)
        seen.append(hangup)
        if scope["path"] == "/wait":
            left = asyncio.get_running_loop().create_future()
            hangup.add(lambda: left.set_result(None))
            await asyncio.wait_for(left, 10)
            fired.set()
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with BackgroundServer(app) as server:
        for _ in range(2):  # two requests on one kept-alive connection: each has its own hangup
            with httpx.Client(base_url=server.url, timeout=10) as http:
                assert http.get("/answered").text == "ok"
                assert http.get("/answered").text == "ok"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as leaving:
            leaving.sendall(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
            deadline = time.monotonic() + 10
            while len(seen) < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert fired.wait(10)  # the hang-up reached the request without it reading anything
    assert len(seen) == 5 and all(isinstance(h, Hangup) for h in seen)
    assert len({id(h) for h in seen}) == 5
    assert not any(h.fired for h in seen[:4])  # answered requests: their clients did not leave early
