"""A scriptable embeddings + rerank server on 127.0.0.1 for the remote-client tests (stdlib only).

It speaks ``/v1/embeddings`` (float and base64), the Cohere rerank shape (``documents`` → ``results``)
and the TEI shape (``texts`` → a bare list), on any path ending in ``/embeddings`` or ``/rerank``. By
default it answers correctly but in reverse ``index`` order, so every test exercises the mapping by
index. A test changes that with :meth:`FakeAPI.configure` (limits, delays, dropped items, ...) or
queues exact replies with :meth:`FakeAPI.script` (429 with ``retry-after``, HTML pages, bad JSON, ...).
Every request is recorded (path, headers, JSON body), and the highest number in flight at once is kept.

Vectors are deterministic and *not* normalised (:func:`fake_vector`), so tests can compute the exact
expected output; scores come from :func:`fake_score`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

QWEN3_TASK = "Given a web search query, retrieve relevant passages that answer the query"
FULL_DIM = 128


def fake_vector(text: str, dim: int = FULL_DIM) -> np.ndarray:
    """The server's (unnormalised) float32 embedding of ``text``; a prefix of it for smaller dims."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    full = np.random.default_rng(seed).standard_normal(FULL_DIM).astype(np.float32) * 3.0
    return full[:dim]


def fake_score(query: str, document: str) -> float:
    """The server's relevance score of ``document`` for ``query``, in [0, 1)."""
    digest = hashlib.sha256(f"{query}\0{document}".encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32


def unit(v: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation, for expected values."""
    v = np.asarray(v, dtype=np.float64)
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class Reply:
    """One scripted answer. Without ``json`` or ``body``, a 200 reply gives the default answer.

    ``delay`` seconds pass before answering (use it to exceed a client timeout).
    """

    status: int = 200
    json: Any = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Recorded:
    """A request the server received."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Options:
    """The default behaviour; :meth:`FakeAPI.configure` changes it for one test."""

    order: str = "reverse"  # "reverse", "random" or "input": the order of items in the answer
    max_inputs: int | None = None  # more inputs (or documents) per request get a 400 / TEI 422
    drop: int = 0  # answer with this many items fewer than asked
    delay: float = 0.0  # seconds before every default answer
    ignore_dimensions: bool = False  # return full vectors whatever `dimensions` says
    server_template: bool = True  # apply the Qwen3 template to input_type="query" (as ragkit serve does)


class FakeAPI:
    """The test server. Use as a context manager; ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.options = Options()
        self._script: deque[Reply] = deque()
        self.in_flight = 0
        self.max_in_flight = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                api._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.request_queue_size = 64
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True

    def __enter__(self) -> FakeAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- scripting -----------------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._script.clear()
            self.options = Options()
            self.in_flight = self.max_in_flight = 0

    def configure(self, **options: Any) -> None:
        for name, value in options.items():
            if not hasattr(self.options, name):
                raise AttributeError(name)
            setattr(self.options, name, value)

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, one each, in arrival order; then the defaults resume."""
        with self._lock:
            self._script.extend(replies)

    @property
    def count(self) -> int:
        return len(self.requests)

    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    # -- serving -------------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("content-length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(Recorded(h.path, {k.lower(): v for k, v in h.headers.items()}, body))
            reply = self._script.popleft() if self._script else None
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            options = self.options
        try:
            time.sleep(reply.delay if reply is not None else options.delay)
            if reply is not None and (
                reply.status != 200 or reply.json is not None or reply.body is not None
            ):
                status, headers = reply.status, dict(reply.headers)
                if reply.body is not None:
                    payload = reply.body.encode("utf-8")
                    headers.setdefault("content-type", "text/plain")
                else:
                    payload = json.dumps(reply.json).encode("utf-8")
                    headers.setdefault("content-type", "application/json")
            else:
                status, answer = self._default(h.path, body, options)
                headers = {"content-type": "application/json"}
                payload = json.dumps(answer).encode("utf-8")
        finally:
            # Counted out before the answer is written: a client that sends its next request as soon as
            # it has read this answer is never counted twice.
            with self._lock:
                self.in_flight -= 1
        try:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("content-length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            h.close_connection = True

    def _order(self, items: list[Any], options: Options) -> list[Any]:
        if options.order == "reverse":
            items = items[::-1]
        elif options.order == "random":
            random.Random(len(items)).shuffle(items)
        return items[: len(items) - options.drop] if options.drop else items

    def _default(self, path: str, body: Any, options: Options) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 400, {"error": {"message": "body is not a JSON object", "type": "invalid_request_error"}}
        if path.endswith("/embeddings"):
            return self._embeddings(body, options)
        if path.endswith("/rerank"):
            return self._rerank(body, options)
        return 404, {"detail": "Not Found"}

    def _embeddings(self, body: dict[str, Any], options: Options) -> tuple[int, Any]:
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        if options.max_inputs is not None and len(inputs) > options.max_inputs:
            msg = f"batch size {len(inputs)} is larger than the maximum {options.max_inputs}"
            return 400, {
                "error": {"message": msg, "type": "invalid_request_error", "code": "batch_too_large"}
            }
        if options.server_template and body.get("input_type") == "query":
            task = body.get("instruction") or QWEN3_TASK
            inputs = [f"Instruct: {task}\nQuery:{t}" for t in inputs]
        dim = FULL_DIM if options.ignore_dimensions else int(body.get("dimensions") or FULL_DIM)
        data = []
        for i, text in enumerate(inputs):
            vector = fake_vector(text, dim)
            if body.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            else:
                encoded = [float(x) for x in vector]
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        return 200, {"object": "list", "data": self._order(data, options), "model": body.get("model")}

    def _rerank(self, body: dict[str, Any], options: Options) -> tuple[int, Any]:
        query = body.get("query", "")
        tei = "texts" in body
        docs = list(body.get("texts" if tei else "documents") or [])
        if options.max_inputs is not None and len(docs) > options.max_inputs:
            msg = f"batch size {len(docs)} > maximum allowed batch size {options.max_inputs}"
            if tei:
                return 422, {"error": msg, "error_type": "Validation"}
            return 400, {"message": msg}
        key = "score" if tei else "relevance_score"
        results = [{"index": i, key: fake_score(query, d)} for i, d in enumerate(docs)]
        results.sort(key=lambda r: -r[key])  # best first, as real servers answer
        if options.order == "random":
            random.Random(len(results)).shuffle(results)
        results = results[: len(results) - options.drop] if options.drop else results
        if tei:
            return 200, results
        top_n = body.get("top_n")
        return 200, {"id": "fake", "results": results[:top_n] if top_n else results}
