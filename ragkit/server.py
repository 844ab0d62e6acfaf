"""``ragkit serve``: the local models behind OpenAI-compatible HTTP endpoints, with dynamic batching.

Endpoints (JSON in and out; every error is ``{"error": {"message", "type", "code", "param"}}``):

* ``POST /v1/embeddings``: the OpenAI schema (``input`` a string or a list of strings,
  ``encoding_format`` ``"float"`` or ``"base64"`` (little-endian float32), ``dimensions`` (Matryoshka:
  the first n components, re-normalised), ``usage``). Two extension fields ask for query embeddings:
  ``input_type`` (``"query"`` | ``"document"``) and ``instruction`` (the task sentence; it implies
  ``input_type="query"``). A query without ``instruction`` gets the model's default task. This is what
  :class:`~ragkit.embedders.OpenAIEmbedder` sends with ``provider="ragkit"``, so the Qwen3 template is
  applied exactly once, here.
* ``POST /v1/rerank``: the Cohere / Jina / vLLM schema (``query``, ``documents`` (strings or objects
  with ``text``), ``top_n``, ``return_documents``) answered with ``results[{index, relevance_score,
  document?}]`` best first; :class:`~ragkit.rerankers.RemoteReranker` with ``provider="ragkit"``.
* ``POST /v1/search``: the loaded pipeline's search (``query``, ``k``, ``filter``, ``mode``,
  ``candidates``, ``instruction``, ``diversity``, ``fusion``, ``alpha``) → ``hits`` and ``timings``.
* ``GET /v1/models`` (the served models), ``GET /health`` (liveness) and ``GET /ready`` (models loaded
  and not shutting down). The last two need no API key.

Dynamic batching: each model has one worker thread, so torch runs one batch at a time. Requests wait in
a bounded queue; the worker takes the oldest, then keeps taking queued requests (waiting up to
``batch_wait_ms`` for more) until ``max_batch_tokens`` tokens are gathered, and embeds all their texts
in one call per template (documents, and queries per instruction), then hands each caller exactly its
own rows. A full queue answers 503 with ``retry-after``. On shutdown, in-flight requests finish and
requests that still reach the app get 503.

fastapi and uvicorn are imported when a server is built (``pip install 'ragkit[server]'``).

Example:
    >>> from ragkit.server import BackgroundServer, create_app
    >>> app = create_app("Qwen/Qwen3-Embedding-0.6B", "Qwen/Qwen3-Reranker-0.6B")  # doctest: +SKIP
    >>> with BackgroundServer(app) as server:  # doctest: +SKIP
    ...     emb = OpenAIEmbedder("Qwen3-Embedding-0.6B", provider="ragkit", base_url=server.url + "/v1")
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit.embedders.base import canonical_model_name, truncate_dim
from ragkit.errors import ConfigError, RagkitError, RemoteError

__all__ = ["BackgroundServer", "MIN_DIMENSIONS", "create_app", "load_embedder", "load_reranker", "serve_main"]

logger = logging.getLogger("ragkit")

MIN_DIMENSIONS = 32
"""The smallest ``dimensions`` accepted (Qwen3-Embedding's Matryoshka range starts at 32)."""

_DEFAULTS = {
    "max_batch_tokens": None,  # by device: _DEVICE_BATCH_TOKENS
    "max_queue": 256,
    "batch_wait_ms": 2.0,
    "max_inputs": 2048,
    "max_input_chars": 65536,
    "max_body_bytes": 8 * 1024 * 1024,
}
# The tunable limits of `ragkit serve`: flag, type, help (defaults in _DEFAULTS under the flag's name).
# Tokens gathered into one model call when max_batch_tokens is not given: a GPU wants big batches, a CPU
# gains little above a few thousand tokens (the local embedders' own defaults agree).
_DEVICE_BATCH_TOKENS = {"cpu": 8192, "cuda": 65536}
_NUMERIC_OPTIONS = (
    ("--max-batch-tokens", int, "tokens gathered into one model call (default: 8192 on CPU, 65536 on CUDA)"),
    ("--max-queue", int, "requests waiting per model before the server answers 503"),
    ("--batch-wait-ms", float, "milliseconds to wait for more requests when a batch is not full"),
    ("--max-inputs", int, "inputs (or rerank documents) per request"),
    ("--max-input-chars", int, "characters per input"),
    ("--max-body-bytes", int, "bytes per request body"),
)
_RETRY_AFTER_S = 1
_DISCARD_BYTES = 64 * 1024 * 1024  # the most of an oversized body read (and dropped) before an error answer
_DISCARD_SECONDS = 10.0
_CLOSE_TIMEOUT_S = 60.0
_LOADING_RETRY_AFTER_S = 5
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
_SLOT = re.compile(r"\{(text|instruction)\}")


# ----------------------------------------------------------------------------------------------- errors


class _ApiError(Exception):
    """An error answered to the client in the OpenAI shape; never carries internals."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def response(self) -> Any:
        from starlette.responses import JSONResponse

        body = {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class _Overloaded(Exception):
    """A model's queue is full, or the server is shutting down."""


def _unavailable(message: str, code: str, retry_after: int = _RETRY_AFTER_S) -> _ApiError:
    return _ApiError(503, message, type="server_error", code=code, headers={"retry-after": str(retry_after)})


def _json_type(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return _JSON_TYPES.get(type(value), type(value).__name__)


# ------------------------------------------------------------------------------------ loading models


def _model_type(ref: str) -> str:
    """``model_type`` from the config.json of a local directory or hub repository."""
    require("transformers", purpose="ragkit serve")
    from transformers import AutoConfig

    return str(getattr(AutoConfig.from_pretrained(ref), "model_type", "") or "")


def load_embedder(
    ref: str | os.PathLike[str],
    *,
    device: str = "auto",
    dtype: str = "auto",
    max_batch_tokens: int | None = None,
) -> Any:
    """The local embedder ``ragkit serve`` builds for a hub id or directory.

    A Qwen3 model (``model_type`` ``"qwen3"`` in its config.json) gets the :class:`Qwen3Embedder`
    preset, any other encoder ``TransformersEmbedder(pooling="auto")``. Over-long inputs are truncated
    silently (``on_truncate="ignore"``) and no progress bar is drawn: a server must not warn or draw
    per request.

    Example:
        >>> emb = load_embedder("Qwen/Qwen3-Embedding-0.6B", device="cpu")  # doctest: +SKIP
        >>> type(emb).__name__  # doctest: +SKIP
        'Qwen3Embedder'
    """
    from ragkit.embedders.transformers import Qwen3Embedder, TransformersEmbedder

    ref = os.fspath(ref)
    options = {
        "device": device,
        "dtype": dtype,
        "max_batch_tokens": max_batch_tokens,
        "on_truncate": "ignore",
        "show_progress": False,
    }
    if _model_type(ref) == "qwen3":
        return Qwen3Embedder(ref, **options)
    return TransformersEmbedder(ref, pooling="auto", **options)


def load_reranker(
    ref: str | os.PathLike[str],
    *,
    device: str = "auto",
    dtype: str = "auto",
    max_batch_tokens: int | None = None,
) -> Any:
    """The local reranker ``ragkit serve`` builds: :class:`Qwen3Reranker` (no progress bar) for a Qwen3 model.

    Raises:
        ConfigError: the model is not a Qwen3 model (the only local reranker ragkit has).

    Example:
        >>> rr = load_reranker("Qwen/Qwen3-Reranker-0.6B", device="cpu")  # doctest: +SKIP
    """
    from ragkit.rerankers.qwen3 import Qwen3Reranker

    ref = os.fspath(ref)
    kind = _model_type(ref)
    if kind != "qwen3":
        raise ConfigError(
            f"{ref}: model_type {kind!r} is not a Qwen3-Reranker; ragkit serves Qwen3 rerankers locally "
            "(serve other rerankers with vLLM or TEI and use RemoteReranker)"
        )
    return Qwen3Reranker(
        ref, device=device, dtype=dtype, max_batch_tokens=max_batch_tokens, show_progress=False
    )


def _default_name(source: Any, model: Any) -> str:
    """The served name: the directory name of a local path, the hub id as given, else the model's name."""
    ref = source if isinstance(source, (str, os.PathLike)) else None
    if ref is None:
        spec = getattr(model, "spec", None)
        if callable(spec):
            try:
                ref = spec().get("model")
            except Exception:  # a user's spec() that fails only loses the nicer name
                ref = None
        if not isinstance(ref, (str, os.PathLike)):
            ref = getattr(model, "model", None)
    if isinstance(ref, (str, os.PathLike)) and os.fspath(ref).strip():
        path = Path(ref).expanduser()
        return path.resolve().name if path.is_dir() else os.fspath(ref)
    fingerprint = getattr(model, "fingerprint", None)
    if isinstance(fingerprint, dict) and isinstance(fingerprint.get("model"), str):
        return fingerprint["model"]
    return type(model).__name__


# -------------------------------------------------------------------------------------------- batching


def _device_budget(model: Any) -> int:
    device = getattr(getattr(model, "device", None), "type", None)
    return _DEVICE_BATCH_TOKENS.get(str(device), _DEVICE_BATCH_TOKENS["cpu"])


@dataclass(eq=False)
class _Job:
    """One request's share of a model call: its texts and, once counted, their tokens."""

    kind: str  # "document" | "query" | "rerank"
    texts: list[str]
    instruction: str | None = None  # query jobs: the task; None means the model's default
    query: str | None = None  # rerank jobs
    tokens: list[int] | None = None
    future: Future = field(default_factory=Future)


class _Worker:
    """One thread that owns a model: takes queued jobs, packs them under a token budget, runs them.

    Jobs from ``submit`` (any thread) wait in a bounded deque. The worker takes the oldest job, then,
    with batching on, keeps taking jobs while their tokens fit ``max_batch_tokens``, waiting up to
    ``batch_wait`` seconds for more when the queue runs dry. Jobs are then grouped by how the model must
    be called (documents; queries per instruction; rerank per query) and each group is one model call.
    A failing group call is retried job by job, so a request can only ever fail on its own inputs.
    """

    task = ""

    def __init__(
        self,
        name: str,
        model: Any,
        *,
        max_batch_tokens: int,
        max_queue: int,
        batching: bool,
        batch_wait: float,
    ) -> None:
        self.name = name
        self.model = model
        self._budget = max_batch_tokens
        self._max_queue = max_queue
        self._batching = batching
        self._wait = batch_wait
        self._cv = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._closing = False
        # Counters for logs, tests and benchmarks: model-call rounds and the requests they served.
        self.batches = 0
        self.requests = 0
        self._count = getattr(model, "count_tokens", None)
        length = getattr(model, "max_length", None)
        self._max_length = length if isinstance(length, int) and length > 0 else None
        self._thread = threading.Thread(target=self._loop, name=f"ragkit-{self.task}-{name}", daemon=True)
        self._thread.start()

    # -- callers' side

    def submit(self, job: _Job) -> Future:
        with self._cv:
            if self._closing:
                raise _Overloaded("the server is shutting down")
            if len(self._queue) >= self._max_queue:
                raise _Overloaded(f"{self.name}: {len(self._queue)} requests are queued (max_queue)")
            self._queue.append(job)
            self._cv.notify()
        return job.future

    async def run(self, job: _Job) -> Any:
        return await asyncio.wrap_future(self.submit(job))

    def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs, finish the queued ones, and end the thread."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join(timeout)

    # -- the worker thread

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            # A job whose caller went away (cancelled) is dropped here; the others can no longer be.
            jobs = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            self.batches += 1
            self.requests += len(jobs)
            start = time.perf_counter()
            try:
                self._execute(jobs)
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug(
                        "ragkit serve: %s: %d requests, %d texts, %d tokens in %.1f ms (%d queued)",
                        self.name,
                        len(jobs),
                        sum(len(j.texts) for j in jobs),
                        sum(sum(j.tokens or ()) for j in jobs),
                        (time.perf_counter() - start) * 1000,
                        len(self._queue),
                    )
            except Exception as e:  # a bug here must not kill the thread or strand the callers
                logger.exception("ragkit serve: %s worker failed on a batch", self.name)
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)

    def _next_batch(self) -> list[_Job] | None:
        with self._cv:
            while not self._queue:
                if self._closing:
                    return None
                self._cv.wait()
            batch = [self._queue.popleft()]
        used = self._cost(batch[0])
        if not self._batching:
            return batch
        deadline = time.monotonic() + self._wait
        while used < self._budget:
            with self._cv:
                while not self._queue and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
                if not self._queue:
                    break
                job = self._queue.popleft()
            cost = self._cost(job)
            if used + cost > self._budget:
                with self._cv:  # only this thread takes from the left, so the order is kept
                    self._queue.appendleft(job)
                break
            batch.append(job)
            used += cost
        return batch

    def _cost(self, job: _Job) -> int:
        if job.tokens is None:
            try:
                job.tokens = self._tokens(job)
            except Exception:  # counting is bookkeeping: fall back to an estimate rather than fail
                logger.debug("ragkit serve: token count failed; estimating from characters", exc_info=True)
                job.tokens = [len(t) // 4 + 1 for t in job.texts]
        return sum(job.tokens)

    def _counted(self, texts: list[str]) -> list[int]:
        if self._count is None:
            return [len(t) // 4 + 1 for t in texts]
        cap = self._max_length
        return [min(self._count(t), cap) if cap else self._count(t) for t in texts]

    def _run_group(self, jobs: list[_Job], call: Callable[[list[str]], np.ndarray]) -> None:
        """One model call for all texts of ``jobs``; each job gets its own rows."""
        texts = [t for job in jobs for t in job.texts]
        try:
            out = np.asarray(call(texts))
            if len(out) != len(texts):
                raise RagkitError(f"the model returned {len(out)} results for {len(texts)} inputs")
        except Exception as e:
            if len(jobs) == 1:
                jobs[0].future.set_exception(e)
                return
            logger.info(
                "ragkit serve: a batch of %d requests failed (%r); running them one by one", len(jobs), e
            )
            for job in jobs:
                self._run_group([job], call)
            return
        start = 0
        for job in jobs:
            end = start + len(job.texts)
            job.future.set_result(out[start:end].copy())
            start = end

    def _tokens(self, job: _Job) -> list[int]:
        raise NotImplementedError

    def _execute(self, jobs: list[_Job]) -> None:
        raise NotImplementedError


class _EmbedWorker(_Worker):
    task = "embedding"

    def __init__(self, name: str, model: Any, **options: Any) -> None:
        fingerprint = getattr(model, "fingerprint", None)
        fingerprint = fingerprint if isinstance(fingerprint, dict) else {}
        template = fingerprint.get("query_template")
        self._query_template = template if isinstance(template, str) and "{text}" in template else None
        self._default_task = fingerprint.get("instruction")
        # Only a template with an {instruction} slot takes one; an embedder that does not say is trusted.
        self.accepts_instruction = self._query_template is None or "{instruction}" in self._query_template
        super().__init__(name, model, **options)

    def _tokens(self, job: _Job) -> list[int]:
        texts = job.texts
        if job.kind == "query" and self._query_template is not None:
            task = job.instruction if job.instruction is not None else self._default_task
            # What the model reads. (With a document template as well, count_tokens adds that one too:
            # usage is then a few tokens high, never a wrong vector.)
            texts = [_fill(self._query_template, t, task) for t in texts]
        return self._counted(texts)

    def _execute(self, jobs: list[_Job]) -> None:
        groups: dict[tuple[str, str | None], list[_Job]] = {}
        for job in jobs:
            groups.setdefault((job.kind, job.instruction), []).append(job)
        for (kind, instruction), group in groups.items():
            self._run_group(group, functools.partial(self._embed, kind, instruction))

    def _embed(self, kind: str, instruction: str | None, texts: list[str]) -> np.ndarray:
        if kind == "document":
            return self.model.embed_documents(texts)
        if instruction is None:
            return self.model.embed_queries(texts)
        return self.model.embed_queries(texts, instruction=instruction)


class _RerankWorker(_Worker):
    task = "rerank"

    def __init__(self, name: str, model: Any, **options: Any) -> None:
        from ragkit.rerankers.qwen3 import Qwen3Reranker

        self._qwen3 = isinstance(model, Qwen3Reranker)
        self._overhead: int | None = None
        super().__init__(name, model, **options)

    def _tokens(self, job: _Job) -> list[int]:
        query = job.query or ""
        if self._qwen3 and self._count is not None:
            from ragkit.rerankers.qwen3 import PROMPT_PREFIX, PROMPT_SUFFIX, format_body

            if self._overhead is None:
                self._overhead = self._count(PROMPT_PREFIX) + self._count(PROMPT_SUFFIX)
            instruction = self.model.instruction
            bodies = self._counted([format_body(instruction, query, d) for d in job.texts])
            cap = self._max_length or math.inf
            return [int(min(self._overhead + n, cap)) for n in bodies]
        (q,) = self._counted([query])
        return [q + n for n in self._counted(job.texts)]

    def _execute(self, jobs: list[_Job]) -> None:
        # The Reranker protocol scores one query at a time: requests for the same query share a call.
        groups: dict[str, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.query or "", []).append(job)
        for query, group in groups.items():
            self._run_group(group, functools.partial(self.model.score, query))


def _fill(template: str, text: str, instruction: str | None) -> str:
    # One pass, so that braces inside the text or the instruction are never read as placeholders.
    return _SLOT.sub(lambda m: text if m.group(1) == "text" else (instruction or ""), template)


class _BatchedEmbedder:
    """The served embedder as the loaded pipeline sees it: every call goes through the model's worker."""

    def __init__(self, worker: _EmbedWorker) -> None:
        self._worker = worker
        self._model = worker.model

    def __getattr__(self, name: str) -> Any:  # count_tokens, max_length, spec, ...
        return getattr(self._model, name)

    @property
    def dim(self) -> int:
        return int(self._model.dim)

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self._model.fingerprint

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._worker.submit(_Job("document", list(texts))).result()

    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        return self._worker.submit(_Job("query", list(texts), instruction=instruction)).result()

    async def aembed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return await self._worker.run(_Job("document", list(texts)))

    async def aembed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        return await self._worker.run(_Job("query", list(texts), instruction=instruction))


class _BatchedReranker:
    """The served reranker as the loaded pipeline sees it (``score`` and ``ascore`` via the worker)."""

    def __init__(self, worker: _RerankWorker) -> None:
        self._worker = worker
        self._model = worker.model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        return self._worker.submit(_Job("rerank", list(documents), query=query)).result()

    async def ascore(self, query: str, documents: Sequence[str]) -> np.ndarray:
        return await self._worker.run(_Job("rerank", list(documents), query=query))


# ----------------------------------------------------------------------------------------- the service


def _positive(value: Any, name: str, *, allow_float: bool = False) -> Any:
    kinds = (int, float) if allow_float else (int,)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < (0 if allow_float else 1):
        raise ConfigError(
            f"{name} must be a {'number >= 0' if allow_float else 'positive int'}, got {value!r}"
        )
    return value


class _Service:
    """The state of one server (models, limits, keys, status) and its request handlers."""

    def __init__(
        self,
        embedder: Any,
        reranker: Any,
        *,
        index: str | os.PathLike[str] | None,
        trust_hosts: bool,
        served_model_names: Sequence[str],
        api_keys: Sequence[str],
        device: str,
        dtype: str,
        max_batch_tokens: int | None,
        max_queue: int,
        batching: bool,
        batch_wait_ms: float,
        max_inputs: int,
        max_input_chars: int,
        max_body_bytes: int,
    ) -> None:
        self._sources = {"embedding": embedder, "rerank": reranker}
        self._index = index
        self._trust_hosts = trust_hosts
        self._names = list(served_model_names)
        self._keys = [k.encode("utf-8") for k in api_keys]
        self._device, self._dtype = device, dtype
        self._max_batch_tokens = max_batch_tokens
        self._worker_options = {
            "max_queue": max_queue,
            "batching": batching,
            "batch_wait": batch_wait_ms / 1000.0,
        }
        self.max_inputs = max_inputs
        self.max_input_chars = max_input_chars
        self.max_body_bytes = max_body_bytes
        self.models: list[_Worker] = []
        self.pipeline: Any = None
        self.status = "loading"  # -> "ready" | "failed"
        self.load_error: BaseException | None = None
        self.draining = False
        self.on_load_error: Callable[[BaseException], None] | None = None
        self.created = int(time.time())
        self._lock = threading.Lock()
        self._closed = False

    # -- lifecycle

    def load(self) -> None:
        """Build the models, the workers and the pipeline (in a background thread at startup)."""
        try:
            built = {
                task: self._build(task, source)
                for task, source in self._sources.items()
                if source is not None
            }
            pipeline = None
            if self._index is not None:
                from ragkit.pipeline import Pipeline

                pipeline = Pipeline.load(
                    self._index,
                    embedder=built.get("embedding"),
                    reranker=built.get("rerank"),
                    read_only=True,
                    trust_hosts=self._trust_hosts,
                )
                # Without --embedder / --reranker the index's own models (from its manifest) are served.
                built["embedding"] = pipeline.embedder
                if pipeline.reranker is not None:
                    built["rerank"] = pipeline.reranker
            if len(self._names) > len(built):
                raise ConfigError(
                    f"{len(self._names)} served model names for {len(built)} served models "
                    f"({', '.join(built)}): give one name per model, the embedder's first"
                )
            by_task: dict[str, _Worker] = {}
            for i, (task, model) in enumerate(built.items()):
                name = self._names[i] if i < len(self._names) else _default_name(self._sources[task], model)
                cls = _EmbedWorker if task == "embedding" else _RerankWorker
                budget = self._max_batch_tokens or _device_budget(model)
                by_task[task] = cls(name, model, max_batch_tokens=budget, **self._worker_options)
            workers = list(by_task.values())
            names = [w.name for w in workers]
            if len(set(names)) != len(names):
                for w in workers:
                    w.close()
                raise ConfigError(f"two served models have the same name {names}: use --served-model-name")
            if pipeline is not None:
                pipeline.embedder = _BatchedEmbedder(by_task["embedding"])  # type: ignore[arg-type]
                if pipeline.reranker is not None:
                    pipeline.reranker = _BatchedReranker(by_task["rerank"])  # type: ignore[arg-type]
            with self._lock:
                if self._closed:  # shut down while loading
                    for w in workers:
                        w.close()
                    if pipeline is not None:
                        pipeline.close()
                    return
                self.models, self.pipeline, self.status = workers, pipeline, "ready"
            logger.info("ragkit serve: ready: %s", ", ".join(f"{w.name} ({w.task})" for w in workers))
        except Exception as e:
            self.load_error = e
            self.status = "failed"
            logger.error("ragkit serve: loading the models failed: %s", e, exc_info=True)
            if self.on_load_error is not None:
                self.on_load_error(e)

    def _build(self, task: str, source: Any) -> Any:
        if not isinstance(source, (str, os.PathLike)):
            return source
        options = {
            "device": self._device,
            "dtype": self._dtype,
            "max_batch_tokens": self._max_batch_tokens,  # None: the model's own default for its device
        }
        if task == "embedding":
            return load_embedder(source, **options)
        return load_reranker(source, **options)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.draining = True
            workers, pipeline = self.models, self.pipeline
        for worker in workers:
            worker.close(timeout=_CLOSE_TIMEOUT_S)  # a model call stuck past this must not hang the exit
        if pipeline is not None:
            pipeline.close()

    # -- request plumbing

    def endpoint(self, handler: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
        """Wrap a handler: draining, API key and readiness checks; every failure an OpenAI-shaped error."""

        async def run(request: Any) -> Any:
            response = await self._answer(request, handler)
            if response.status_code >= 400:
                await _discard_body(request)
            return response

        return run

    async def _answer(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        try:
            if self.draining:
                raise _unavailable("the server is shutting down", "shutting_down")
            if not self._authorized(request.headers.get("authorization")):
                raise _ApiError(
                    401,
                    "missing or invalid API key: send 'Authorization: Bearer <key>'",
                    code="invalid_api_key",
                    headers={"www-authenticate": "Bearer"},
                )
            if self.status != "ready":
                if self.status == "loading":
                    raise _unavailable("the models are loading", "loading", _LOADING_RETRY_AFTER_S)
                raise _unavailable("the models failed to load", "unavailable")
            return await handler(request)
        except _ApiError as e:
            return e.response()
        except _Overloaded as e:
            return _unavailable(f"the server is overloaded, retry later ({e})", "overloaded").response()
        except _ClientGone:  # nobody is left to read the answer
            return _ApiError(400, "the client disconnected", code="client_disconnected").response()
        except RagkitError as e:
            if isinstance(e, (TypeError, ValueError)):  # InputTypeError, InvalidInputError, ConfigError
                return _ApiError(400, str(e), code="invalid_value").response()
            if isinstance(e, RemoteError):  # a served remote model failed upstream
                logger.warning("ragkit serve: upstream error: %s", e)
                return _ApiError(502, "an upstream model server failed", type="server_error").response()
            logger.exception("ragkit serve: %s %s failed", request.method, request.url.path)
            return _internal_error().response()
        except Exception:
            logger.exception("ragkit serve: %s %s failed", request.method, request.url.path)
            return _internal_error().response()

    def _authorized(self, header: str | None) -> bool:
        if not self._keys:
            return True
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = token.strip().encode("utf-8")
        ok = False
        for key in self._keys:  # compare against every key: the time does not tell which one matched
            ok |= hmac.compare_digest(given, key)
        return ok

    async def read_json(self, request: Any) -> dict[str, Any]:
        """The JSON object of the body, under ``max_body_bytes`` (declared and actual size)."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise _ApiError(400, "invalid Content-Length header", code="invalid_header") from None
            if size > limit:
                raise _too_large(f"the request body is {size} bytes", limit)
        chunks, size, more = [], 0, True
        while more:
            chunk, more = await _receive_chunk(request)
            size += len(chunk)
            if size > limit:
                raise _too_large("the request body is larger", limit)
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            raise _ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise _ApiError(
                400, f"the request body must be a JSON object, got {_json_type(body)}", code="invalid_json"
            )
        return body

    def model(self, task: str, requested: str | None) -> _Worker:
        """The served model a request names (or the first one of ``task``); 404 for unknown names."""
        mine = [w for w in self.models if w.task == task]
        if requested is None:
            if not mine:
                raise _ApiError(404, f"no {task} model is served here", code="model_not_found", param="model")
            return mine[0]
        for worker in self.models:
            if _same_model(requested, worker.name):
                if worker.task != task:
                    raise _ApiError(
                        400,
                        f"the model {requested!r} is a {worker.task} model, not a {task} model",
                        code="wrong_model_task",
                        param="model",
                    )
                return worker
        served = ", ".join(repr(w.name) for w in mine) or "none"
        raise _ApiError(
            404,
            f"the model {requested!r} does not exist or is not served here; {task} models: {served}",
            code="model_not_found",
            param="model",
        )

    # -- field readers

    def texts(self, body: dict[str, Any], name: str, *, allow_single: bool) -> list[str]:
        if name not in body:
            raise _missing(name)
        value = body[name]
        if allow_single and isinstance(value, str):
            items = [value]
        elif isinstance(value, list):
            items = value
        else:
            want = "a string or an array of strings" if allow_single else "an array of strings"
            raise _ApiError(
                400, f"'{name}' must be {want}, got {_json_type(value)}", code="invalid_type", param=name
            )
        if not items:
            raise _ApiError(400, f"'{name}' must not be empty", code="empty_input", param=name)
        if len(items) > self.max_inputs:
            raise _ApiError(
                400,
                f"'{name}' has {len(items)} items; at most {self.max_inputs} per request are accepted "
                "(max_inputs)",
                code="too_many_inputs",
                param=name,
            )
        out = []
        for i, item in enumerate(items):
            if isinstance(item, dict) and name == "documents":
                item = item.get("text")
                if not isinstance(item, str):
                    raise _ApiError(
                        400,
                        f"documents[{i}] must be a string or an object with a string 'text'",
                        code="invalid_type",
                        param=f"documents[{i}]",
                    )
            elif not isinstance(item, str):
                hint = ": token arrays are not supported, send text" if isinstance(item, (int, list)) else ""
                raise _ApiError(
                    400,
                    f"{name}[{i}] must be a string, got {_json_type(item)}{hint}",
                    code="invalid_type",
                    param=f"{name}[{i}]",
                )
            out.append(self.chars(item, f"{name}[{i}]"))
        return out

    def chars(self, text: str, param: str) -> str:
        if len(text) > self.max_input_chars:
            raise _ApiError(
                400,
                f"{param} has {len(text)} characters; at most {self.max_input_chars} per input are accepted "
                "(max_input_chars)",
                code="input_too_long",
                param=param,
            )
        return text

    # -- handlers

    async def embeddings(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        body = await self.read_json(request)
        worker = self.model("embedding", _optional(body, "model", str))
        assert isinstance(worker, _EmbedWorker)
        texts = self.texts(body, "input", allow_single=True)
        encoding = _choice(body, "encoding_format", ("float", "base64"), "float")
        input_type = _choice(body, "input_type", ("query", "document"), None)
        instruction = _optional(body, "instruction", str)
        if instruction is not None:
            self.chars(instruction, "instruction")
            if input_type == "document":
                raise _ApiError(
                    400,
                    "'instruction' applies to queries: documents are embedded without one",
                    code="invalid_value",
                    param="instruction",
                )
            if not worker.accepts_instruction:
                raise _ApiError(
                    400,
                    f"the model {worker.name!r} takes no instruction (its query template has no slot)",
                    code="invalid_value",
                    param="instruction",
                )
        kind = "query" if input_type == "query" or instruction is not None else "document"
        dimensions = _optional(body, "dimensions", int)
        native = int(worker.model.dim)
        if dimensions is not None and not MIN_DIMENSIONS <= dimensions <= native:
            raise _ApiError(
                400,
                f"'dimensions' must be between {MIN_DIMENSIONS} and {native} for {worker.name!r}, "
                f"got {dimensions}",
                code="invalid_value",
                param="dimensions",
            )
        job = _Job(kind, texts, instruction=instruction)
        vectors = await worker.run(job)
        if dimensions is not None and dimensions != vectors.shape[1]:
            vectors = truncate_dim(vectors, dimensions)
        if encoding == "base64":
            little = np.ascontiguousarray(vectors, dtype="<f4")
            encoded: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
        else:
            encoded = np.asarray(vectors, dtype=np.float32).tolist()
        tokens = sum(job.tokens or ())
        return JSONResponse(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)],
                "model": worker.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def rerank(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        body = await self.read_json(request)
        worker = self.model("rerank", _optional(body, "model", str))
        query = _optional(body, "query", str)
        if query is None:
            raise _missing("query")
        self.chars(query, "query")
        documents = self.texts(body, "documents", allow_single=False)
        top_n = _optional(body, "top_n", int)
        if top_n is not None and top_n < 1:
            raise _ApiError(400, f"'top_n' must be >= 1, got {top_n}", code="invalid_value", param="top_n")
        return_documents = _optional(body, "return_documents", bool) or False
        job = _Job("rerank", documents, query=query)
        scores = np.asarray(await worker.run(job), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[: top_n or len(documents)]
        results = []
        for i in order:
            item: dict[str, Any] = {"index": int(i), "relevance_score": float(scores[i])}
            if return_documents:
                item["document"] = {"text": documents[i]}
            results.append(item)
        tokens = sum(job.tokens or ())
        return JSONResponse(
            {
                "id": f"rerank-{uuid.uuid4().hex}",
                "model": worker.name,
                "results": results,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def search(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        body = await self.read_json(request)
        if self.pipeline is None:
            raise _ApiError(
                404, "no index is loaded: start the server with --index DIR", code="index_not_loaded"
            )
        query = _optional(body, "query", str)
        if query is None:
            raise _missing("query")
        self.chars(query, "query")
        k = _optional(body, "k", int)
        candidates = _optional(body, "candidates", int)
        for name, value in (("k", k), ("candidates", candidates)):
            if value is not None and not 1 <= value <= self.max_inputs:
                raise _ApiError(
                    400,
                    f"'{name}' must be between 1 and {self.max_inputs} (max_inputs), got {value}",
                    code="invalid_value",
                    param=name,
                )
        filter_ = _optional(body, "filter", dict)
        mode = _optional(body, "mode", str) or "dense"
        instruction = _optional(body, "instruction", str)
        if instruction is not None:
            self.chars(instruction, "instruction")
        diversity, alpha = _number(body, "diversity"), _number(body, "alpha")
        fusion = _optional(body, "fusion", str)
        results = await self.pipeline.asearch(
            query,
            k or 10,
            filter=filter_,
            mode=mode,
            candidates=candidates,
            instruction=instruction,
            diversity=diversity,
            fusion=fusion,
            alpha=alpha,
        )
        return JSONResponse(
            {
                "object": "search.results",
                "model": self.models[0].name,
                "query": query,
                "hits": [hit.model_dump(mode="json") for hit in results],
                "timings": results.timings,
            }
        )

    async def list_models(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        data = []
        for worker in self.models:
            item: dict[str, Any] = {
                "id": worker.name,
                "object": "model",
                "created": self.created,
                "owned_by": "ragkit",
                "task": worker.task,
            }
            if worker.task == "embedding":
                item["dimensions"] = int(worker.model.dim)
            length = getattr(worker.model, "max_length", None)
            if isinstance(length, int):
                item["max_length"] = length
            data.append(item)
        return JSONResponse({"object": "list", "data": data})

    async def health(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok"})

    async def ready(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        status = "draining" if self.draining else self.status
        return JSONResponse({"status": status}, status_code=200 if status == "ready" else 503)


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def _receive_chunk(request: Any) -> tuple[bytes, bool]:
    """The next piece of the body and whether more follows; remembers when the body is complete."""
    message = await request.receive()
    if message["type"] == "http.disconnect":
        request.state.ragkit_body_done = True
        raise _ClientGone()
    more = bool(message.get("more_body", False))
    if not more:
        request.state.ragkit_body_done = True
    return message.get("body", b""), more


async def _discard_body(request: Any) -> None:
    """Read and drop what is left of the body before an error answer (a "lingering close").

    Closing a connection with unread bytes in its receive buffer makes the kernel send a TCP reset,
    which can destroy the error answer already on its way to the client. Up to ``_DISCARD_BYTES`` (and
    ``_DISCARD_SECONDS``) are read and dropped; a bigger body gets the answer and a closed connection.
    A client that waits for ``100 Continue`` has sent nothing, and is not asked to.
    """
    if getattr(request.state, "ragkit_body_done", False) or request.headers.get("expect", "").lower() == (
        "100-continue"
    ):
        return
    try:
        declared = int(request.headers.get("content-length", "0"))
    except ValueError:
        return
    if declared > _DISCARD_BYTES:
        return

    async def drain() -> None:
        seen, more = 0, True
        while more and seen <= _DISCARD_BYTES:
            chunk, more = await _receive_chunk(request)
            seen += len(chunk)

    try:
        await asyncio.wait_for(drain(), _DISCARD_SECONDS)
    except (asyncio.TimeoutError, _ClientGone):
        pass


def _internal_error() -> _ApiError:
    return _ApiError(
        500,
        "internal server error (the details are in the server log)",
        type="server_error",
        code="internal_error",
    )


def _too_large(what: str, limit: int) -> _ApiError:
    return _ApiError(
        413,
        f"{what}; at most {limit} bytes are accepted (max_body_bytes)",
        code="request_too_large",
    )


def _missing(name: str) -> _ApiError:
    return _ApiError(400, f"'{name}' is required", code="missing_required_parameter", param=name)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _optional(body: dict[str, Any], name: str, kind: type) -> Any:
    """``body[name]`` if present and not null; a 400 naming the field when it has the wrong JSON type."""
    value = body.get(name)
    if value is None:
        return None
    # bool is an int in Python but not in JSON; an integral float such as 256.0 is not an int either.
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _ApiError(
            400, f"'{name}' must be an integer, got {_json_type(value)}", code="invalid_type", param=name
        )
    if not isinstance(value, kind):
        want = {str: "a string", bool: "a boolean", dict: "an object"}.get(kind, kind.__name__)
        raise _ApiError(
            400, f"'{name}' must be {want}, got {_json_type(value)}", code="invalid_type", param=name
        )
    return value


def _number(body: dict[str, Any], name: str) -> float | None:
    """``body[name]`` as a float if present and not null; a 400 naming the field when it is not a number."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _ApiError(
            400, f"'{name}' must be a number, got {_json_type(value)}", code="invalid_type", param=name
        )
    return float(value)


def _choice(body: dict[str, Any], name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    value = _optional(body, name, str)
    if value is None:
        return default
    if value not in choices:
        raise _ApiError(
            400,
            f"'{name}' must be one of {', '.join(map(repr, choices))}, got {value!r}",
            code="invalid_value",
            param=name,
        )
    return value


def _same_model(requested: str, served: str) -> bool:
    """A request names a served model by its served name or any spelling of the same canonical name."""
    if requested == served:
        return True
    try:
        return canonical_model_name(requested) == canonical_model_name(served)
    except ConfigError:
        return False


# --------------------------------------------------------------------------------------------- the app


def create_app(
    embedder: Any = None,
    reranker: Any = None,
    *,
    index: str | os.PathLike[str] | None = None,
    trust_hosts: bool = False,
    served_model_names: Sequence[str] = (),
    api_keys: Sequence[str] = (),
    device: str = "auto",
    dtype: str = "auto",
    max_batch_tokens: int | None = None,
    max_queue: int = _DEFAULTS["max_queue"],
    batching: bool = True,
    batch_wait_ms: float = _DEFAULTS["batch_wait_ms"],
    max_inputs: int = _DEFAULTS["max_inputs"],
    max_input_chars: int = _DEFAULTS["max_input_chars"],
    max_body_bytes: int = _DEFAULTS["max_body_bytes"],
) -> Any:
    """Build the FastAPI app of ``ragkit serve``; models load in the background at startup.

    Run it with uvicorn (``ragkit serve`` does, :class:`BackgroundServer` does it in a thread). Until
    the models are loaded ``/ready`` answers 503 and the API endpoints 503 with ``retry-after``.

    Args:
        embedder: a hub id or local directory (a Qwen3 model gets the ``Qwen3Embedder`` preset, any
            other encoder ``TransformersEmbedder(pooling="auto")``), or any object of the ``Embedder``
            protocol, served as it is.
        reranker: a hub id or local directory of a Qwen3-Reranker, or any object with
            ``score(query, documents)``.
        index: a saved pipeline directory for ``/v1/search``, opened read-only with the served models
            (without ``embedder`` / ``reranker`` the index's own are rebuilt and served).
        trust_hosts: let the index directory name hosts to connect to (a remote model's own
            ``base_url`` with an environment key, a PostgreSQL DSN); see ``Pipeline.load``.
        served_model_names: the names clients use, one per served model, the embedder's first.
            Default: the directory name of a local path, else the hub id.
        api_keys: accepted bearer keys; empty means no authentication.
        device: the torch device of models built from a name.
        dtype: the torch dtype of models built from a name.
        max_batch_tokens: tokens gathered into one model call, and the batch budget of models built
            from a name. ``None``: 8192 on CPU, 65536 on CUDA (the models keep their own defaults).
        max_queue: requests waiting per model; beyond it the server answers 503 with ``retry-after``.
        batching: gather concurrent requests into shared model calls; ``False`` runs one request per
            call (the peer that benchmarks compare against).
        batch_wait_ms: how long the worker waits for more requests when a batch is not full.
        max_inputs: inputs per embeddings request, documents per rerank request, ``k`` and
            ``candidates`` of a search.
        max_input_chars: characters per input, document, query or instruction.
        max_body_bytes: bytes per request body (the declared Content-Length and the actual body).

    Raises:
        ConfigError: no model at all, an option out of range, a model object lacking the protocol.
        MissingDependencyError: fastapi (or later uvicorn) is not installed.

    Example:
        >>> app = create_app("Qwen/Qwen3-Embedding-0.6B", api_keys=["s3cret"])  # doctest: +SKIP
        >>> BackgroundServer(app).start().url  # doctest: +SKIP
        'http://127.0.0.1:40123'
    """
    require("fastapi", purpose="ragkit serve")
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from starlette.exceptions import HTTPException

    from ragkit import __version__

    if embedder is None and reranker is None and index is None:
        raise ConfigError("nothing to serve: give an embedder, a reranker or an index")
    if embedder is not None and not isinstance(embedder, (str, os.PathLike)):
        missing = [a for a in ("dim", "embed_documents", "embed_queries") if not hasattr(embedder, a)]
        if missing:
            raise ConfigError(f"embedder lacks {', '.join(missing)}: see ragkit.embedders.Embedder")
    if reranker is not None and not isinstance(reranker, (str, os.PathLike)):
        if not callable(getattr(reranker, "score", None)):
            raise ConfigError("reranker lacks a score(query, documents) method")
    if max_batch_tokens is not None:
        _positive(max_batch_tokens, "max_batch_tokens")
    for name, value in (
        ("max_queue", max_queue),
        ("max_inputs", max_inputs),
        ("max_input_chars", max_input_chars),
        ("max_body_bytes", max_body_bytes),
    ):
        _positive(value, name)
    _positive(batch_wait_ms, "batch_wait_ms", allow_float=True)
    if isinstance(served_model_names, str) or isinstance(api_keys, str):
        raise ConfigError("served_model_names and api_keys take a list of strings, not a single string")
    for name in served_model_names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"a served model name must be a non-empty string, got {name!r}")
    for key in api_keys:
        if not isinstance(key, str) or not key.strip():
            raise ConfigError("an API key must be a non-empty string")

    service = _Service(
        embedder,
        reranker,
        index=index,
        trust_hosts=bool(trust_hosts),
        served_model_names=served_model_names,
        api_keys=api_keys,
        device=device,
        dtype=dtype,
        max_batch_tokens=max_batch_tokens,
        max_queue=max_queue,
        batching=batching,
        batch_wait_ms=batch_wait_ms,
        max_inputs=max_inputs,
        max_input_chars=max_input_chars,
        max_body_bytes=max_body_bytes,
    )

    @asynccontextmanager
    async def lifespan(app: Any):
        # Loading runs beside the event loop so that /health answers (and /ready says 503) meanwhile.
        threading.Thread(target=service.load, name="ragkit-load", daemon=True).start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.close)

    app = FastAPI(
        title="ragkit",
        version=__version__,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ragkit = service
    ep = service.endpoint
    app.add_route("/v1/embeddings", ep(service.embeddings), methods=["POST"])
    app.add_route("/v1/rerank", ep(service.rerank), methods=["POST"])
    app.add_route("/v1/search", ep(service.search), methods=["POST"])
    app.add_route("/v1/models", ep(service.list_models), methods=["GET"])
    app.add_route("/health", service.health, methods=["GET"])
    app.add_route("/ready", service.ready, methods=["GET"])

    async def http_error(request: Any, exc: Any) -> Any:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _ApiError(
            exc.status_code, str(exc.detail), code=code, headers=dict(exc.headers or {})
        ).response()

    async def unexpected(request: Any, exc: Exception) -> Any:
        logger.error("ragkit serve: unhandled error", exc_info=exc)
        return _internal_error().response()

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
    return app


def _service_of(app: Any) -> _Service | None:
    service = getattr(getattr(app, "state", None), "ragkit", None)
    return service if isinstance(service, _Service) else None


def _uvicorn_server(app: Any, **config: Any) -> Any:
    """A uvicorn server whose shutdown first raises the app's draining flag (new requests get 503)."""
    uvicorn = require("uvicorn", purpose="ragkit serve")
    service = _service_of(app)

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if service is not None:
                service.draining = True
            await super().shutdown(sockets=sockets)

    config.setdefault("timeout_graceful_shutdown", 30)
    config.setdefault("server_header", False)
    return _Server(uvicorn.Config(app, lifespan="on", **config))


class BackgroundServer:
    """Run a ragkit (or any ASGI) app with uvicorn in a background thread: tests, notebooks, benchmarks.

    Binds ``host:port`` (port 0: a free one) before the thread starts, so :attr:`url` is right at
    once; :meth:`start` waits until the server accepts connections and, for a ragkit app, until its
    models are loaded (raising the load error if they fail). :meth:`stop` shuts down gracefully.

    Args:
        app: the app, usually from :func:`create_app`.
        host: the address to bind; loopback by default.
        port: the port; 0 picks a free one.
        timeout: seconds :meth:`start` waits for the models.
        log_level: uvicorn's log level.
        **uvicorn_options: more ``uvicorn.Config`` options (``access_log``, ``timeout_keep_alive``...).

    Example:
        >>> with BackgroundServer(create_app(my_embedder)) as server:  # doctest: +SKIP
        ...     httpx.get(server.url + "/ready").status_code
        200
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout: float = 300.0,
        log_level: str = "warning",
        **uvicorn_options: Any,
    ) -> None:
        self.app = app
        self._host = host
        self._timeout = timeout
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port: int = self._socket.getsockname()[1]
        uvicorn_options.setdefault("access_log", False)
        self.server = _uvicorn_server(app, host=host, port=self.port, log_level=log_level, **uvicorn_options)
        self._thread = threading.Thread(target=self._run, name="ragkit-server", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:40123`` (append ``/v1`` for OpenAI clients)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self._socket])
        except BaseException as e:  # reported by start()
            self._error = e

    def start(self) -> BackgroundServer:
        """Start the thread and wait until the server (and a ragkit app's models) are ready."""
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        service = _service_of(self.app)
        while True:
            if self._error is not None or (not self._thread.is_alive()):
                raise RagkitError(f"the server stopped during startup: {self._error!r}") from self._error
            if self.server.started and (service is None or service.status != "loading"):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RagkitError(f"the server was not ready after {self._timeout:g}s")
            time.sleep(0.02)
        if service is not None and service.status == "failed":
            self.stop()
            raise RagkitError(f"the models failed to load: {service.load_error}") from service.load_error
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful shutdown: in-flight requests finish, then the thread ends."""
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------ the command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ragkit serve",
        description="Serve local embedding and rerank models and a saved index over OpenAI-compatible HTTP.",
    )
    p.add_argument("--embedder", metavar="MODEL", help="hub id or local directory of an embedding model")
    p.add_argument("--reranker", metavar="MODEL", help="hub id or local directory of a Qwen3-Reranker")
    p.add_argument("--index", metavar="DIR", help="a saved pipeline, served read-only at /v1/search")
    p.add_argument(
        "--trust-hosts",
        action="store_true",
        help="let --index connect where its manifest says (remote models, PostgreSQL); off by default",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--api-key",
        dest="api_keys",
        metavar="KEY",
        nargs="+",
        action="extend",
        default=[],
        help="accepted bearer key(s); without any, no authentication",
    )
    p.add_argument(
        "--served-model-name",
        dest="served_model_names",
        metavar="NAME",
        nargs="+",
        action="extend",
        default=[],
        help="names clients use, one per served model, the embedder's first "
        "(default: the directory name, or the hub id)",
    )
    p.add_argument("--no-batching", dest="batching", action="store_false", help="one request per model call")
    for flag, kind, help_text in _NUMERIC_OPTIONS:
        name = flag.lstrip("-").replace("-", "_")
        p.add_argument(
            flag,
            type=kind,
            default=_DEFAULTS[name],
            metavar="N",
            help=help_text if _DEFAULTS[name] is None else f"{help_text} (default: %(default)s)",
        )
    p.add_argument(
        "--device", default="auto", help="torch device: auto, cpu, cuda, cuda:N, mps (default: auto)"
    )
    p.add_argument(
        "--dtype",
        default="auto",
        help="auto, float32, bfloat16, float16 (default: auto: bf16 on CUDA, and for embedders on CPUs with "
        "AMX or AVX512-BF16; float32 elsewhere)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads of this process, for a shared machine (default: torch's, at most the usable "
        "CPUs)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_main(argv: list[str] | None = None) -> int:
    """``ragkit serve``: parse the arguments, build the app and run it until SIGINT / SIGTERM.

    Returns:
        The exit status: 0 after a clean shutdown, 1 when the models failed to load or the
        configuration is wrong (the reason is logged). Argument errors exit with status 2 (argparse).

    Example:
        >>> serve_main(["--embedder", "Qwen/Qwen3-Embedding-0.6B", "--port", "8001"])  # doctest: +SKIP
        0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if not (args.embedder or args.reranker or args.index):
        parser.error("give --embedder, --reranker or --index")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(args.log_level.upper())
    try:
        if args.threads is not None:
            from ragkit.runtime import set_threads

            set_threads(args.threads)
        app = create_app(
            args.embedder,
            args.reranker,
            index=args.index,
            trust_hosts=args.trust_hosts,
            served_model_names=args.served_model_names,
            api_keys=args.api_keys,
            device=args.device,
            dtype=args.dtype,
            max_batch_tokens=args.max_batch_tokens,
            max_queue=args.max_queue,
            batching=args.batching,
            batch_wait_ms=args.batch_wait_ms,
            max_inputs=args.max_inputs,
            max_input_chars=args.max_input_chars,
            max_body_bytes=args.max_body_bytes,
        )
        server = _uvicorn_server(app, host=args.host, port=args.port, log_level=args.log_level)
    except RagkitError as e:
        logger.error("ragkit serve: %s", e)
        return 1
    if not _is_loopback(args.host) and not args.api_keys:
        logger.warning(
            "ragkit serve: listening on %s without --api-key: anyone who can reach it may use it", args.host
        )
    service = _service_of(app)
    assert service is not None

    def stop(_: BaseException) -> None:
        server.should_exit = True

    service.on_load_error = stop
    server.run()
    return 1 if service.status == "failed" else 0
