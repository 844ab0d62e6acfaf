"""The state of one ``ragkit serve`` app: its models and workers, limits, keys, status, and the request gate.

:class:`Service` loads the models (in a thread at startup), owns one worker per model, checks every
API request (draining, API key, readiness) and reads its body under the limits (size, JSON rules)
before the route's pydantic model validates it.

The JSON rules, beyond the JSON grammar (each a 400 naming what is wrong): ``NaN`` / ``Infinity``
literals and numbers beyond a double (``1e400``); integers outside the signed 64-bit range (no database
stores them); strings that are not valid UTF-8 (a lone surrogate such as ``"\\ud800"``); more than
:data:`MAX_JSON_DEPTH` levels of nesting. A body is UTF-8 (RFC 8259; a leading byte-order mark is
skipped): other bytes are a 400. A body that is not JSON (``Content-Type`` other than
``application/json`` or ``+json``) or that declares another ``charset`` is a 415; an empty one a 400.
Bodies over ``_THREAD_BYTES`` are parsed in a thread, beside the event loop (the nesting and the
surrogate escapes are first found by a scan of the text, so the slow walk of :func:`check_json` runs
only for a body with a surrogate escape).

An error answered before the body was read (401, 413, 415...) goes out at once, with
``connection: close``; the server then reads and drops a bounded rest of the body (see
:func:`lingering`) before closing, so that the close does not reset the connection under the answer.

Example:
    >>> service = app.state.ragkit  # doctest: +SKIP
    >>> service.status, [w.name for w in service.models]  # doctest: +SKIP
    ('ready', ['Qwen3-Embedding-0.6B'])
"""

from __future__ import annotations

import asyncio
import email.message
import gc
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.embedders.aliases import alias_of
from ragkit.embedders.base import canonical_model_name
from ragkit.errors import ConfigError
from ragkit.models import KEYWORDS, load_embedder, load_reranker
from ragkit.serve.batching import NullObserver, Observer, Worker, device_budget
from ragkit.serve.errors import (
    LOADING_RETRY_AFTER_S,
    ApiError,
    ClientGone,
    too_large,
    unavailable,
)
from ragkit.serve.runners import BatchedEmbedder, BatchedReranker, embed_worker, rerank_worker

__all__ = [
    "MAX_JSON_DEPTH",
    "Service",
    "check_json",
    "default_name",
    "lingering",
    "parse_json",
    "same_model",
]

logger = logging.getLogger("ragkit")

MAX_JSON_DEPTH = 64
"""The deepest nesting of arrays and objects a request body may have."""
_INT_RANGE = (-(2**63), 2**63 - 1)
_CLOSE_TIMEOUT_S = 60.0
_DISCARD_BYTES = 16 * 1024 * 1024  # the most of an unread body dropped after an early error answer
_DISCARD_SECONDS = 5.0  # ... and for how long
_THREAD_BYTES = 256 * 1024  # bodies over this are parsed and checked in a thread, not on the event loop
_INT_DIGITS = 19  # digits of the largest 64-bit integer
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string literal
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # how a JSON text spells a (lone) surrogate
_PLAIN_JSON = frozenset(
    ("application/json", "application/json; charset=utf-8", "application/json;charset=utf-8")
)


class Service:
    """The state of one server (models, limits, keys, status) and the gate every API request passes."""

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
        max_request_tokens: int | None,
        max_queue: int,
        batching: bool,
        batch_wait_ms: float,
        max_inputs: int,
        max_input_chars: int,
        max_body_bytes: int,
        observer: Observer | None = None,
    ) -> None:
        self._sources = {"embedding": embedder, "rerank": reranker}
        self._index = index
        self._trust_hosts = trust_hosts
        self._names = list(served_model_names)
        self._keys = [k.encode("utf-8") for k in api_keys]  # create_app admits visible ASCII only
        self._device, self._dtype = device, dtype
        self._max_batch_tokens = max_batch_tokens
        self.observer: Observer = observer or NullObserver()
        self._worker_options = {
            "max_queue": max_queue,
            "batching": batching,
            "batch_wait": batch_wait_ms / 1000.0,
            "max_request_tokens": max_request_tokens,
            "observer": self.observer,
        }
        self.max_inputs = max_inputs
        self.max_input_chars = max_input_chars
        self.max_body_bytes = max_body_bytes
        self.models: list[Worker] = []
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
            built = {}
            for task, source in self._sources.items():
                if source is not None:
                    start = time.perf_counter()
                    built[task] = self._build(task, source)
                    self._observe_load(task, time.perf_counter() - start)
            pipeline = None
            if self._index is not None:
                from ragkit.pipeline import Pipeline

                start = time.perf_counter()
                pipeline = Pipeline.load(
                    self._index,
                    embedder=built.get("embedding"),
                    reranker=built.get("rerank"),
                    read_only=True,
                    trust_hosts=self._trust_hosts,
                )
                # Without --embedder / --reranker the index's own models (from its manifest) are served.
                for task, model in (("embedding", pipeline.embedder), ("rerank", pipeline.reranker)):
                    if model is not None and task not in built:
                        built[task] = model
                        self._observe_load(task, time.perf_counter() - start)
            built = {task: built[task] for task in ("embedding", "rerank") if task in built}
            if len(self._names) > len(built):
                raise ConfigError(
                    f"{len(self._names)} served model names for {len(built)} served models "
                    f"({', '.join(built)}): give one name per model, the embedder's first"
                )
            by_task: dict[str, Worker] = {}
            for i, (task, model) in enumerate(built.items()):
                name = self._names[i] if i < len(self._names) else default_name(self._sources[task], model)
                make = embed_worker if task == "embedding" else rerank_worker
                budget = self._max_batch_tokens or device_budget(model)
                by_task[task] = make(name, model, max_batch_tokens=budget, **self._worker_options)
            workers = list(by_task.values())
            names = [w.name for w in workers]
            if len(set(names)) != len(names):
                for w in workers:
                    w.close()
                raise ConfigError(f"two served models have the same name {names}: use --served-model-name")
            if pipeline is not None:
                pipeline.embedder = BatchedEmbedder(by_task["embedding"])  # type: ignore[arg-type]
                if pipeline.reranker is not None:
                    pipeline.reranker = BatchedReranker(by_task["rerank"])  # type: ignore[arg-type]
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
            "quiet": True,  # a server must not warn or draw a progress bar per request
        }
        if task == "embedding":
            return load_embedder(source, **options)
        return load_reranker(source, **options)

    def _observe_load(self, task: str, seconds: float) -> None:
        try:
            self.observer.on_model_load(task, seconds)
        except Exception:
            logger.debug("ragkit serve: the observer failed", exc_info=True)

    def close(self) -> None:
        """Stop the workers (queued requests finish first) and close the pipeline."""
        with self._lock:
            self._closed = True
            self.draining = True
            workers, pipeline = self.models, self.pipeline
        for worker in workers:
            worker.close(timeout=_CLOSE_TIMEOUT_S)  # a model call stuck past this must not hang the exit
        if pipeline is not None:
            pipeline.close()

    # -- the gate

    def check(self, request: Any) -> None:
        """Draining, API key and readiness, in that order; raises the :class:`ApiError` to answer."""
        if self.draining:
            raise unavailable("the server is shutting down", "shutting_down")
        if not self.authorized(request.headers.get("authorization")):
            raise ApiError(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"www-authenticate": "Bearer"},
            )
        if self.status != "ready":
            if self.status == "loading":
                raise unavailable("the models are loading", "loading", LOADING_RETRY_AFTER_S)
            raise unavailable("the models failed to load", "unavailable")

    def authorized(self, header: str | None) -> bool:
        """Whether the ``Authorization`` header carries an accepted key (constant time per key)."""
        from ragkit.serve.keys import bearer_matches

        return not self._keys or bearer_matches(header, self._keys)

    async def read_json(self, request: Any) -> Any:
        """The JSON body, under ``max_body_bytes`` (declared and actual size) and the module's JSON rules."""
        content_type = request.headers.get("content-type")
        if content_type and content_type.lower() not in _PLAIN_JSON:  # what clients send: no parse
            message = email.message.Message()
            message["content-type"] = content_type
            subtype = message.get_content_subtype()
            if message.get_content_maintype() != "application" or not (
                subtype == "json" or subtype.endswith("+json")
            ):
                raise ApiError(
                    415,
                    f"the request body must be JSON (Content-Type: application/json), got {content_type!r}",
                    code="unsupported_media_type",
                )
            charset = message.get_param("charset")
            if isinstance(charset, str) and charset.strip().lower() not in ("utf-8", "utf8"):
                raise ApiError(
                    415,
                    f"the request body must be UTF-8 (JSON is UTF-8, RFC 8259), got charset={charset!r}",
                    code="unsupported_media_type",
                )
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise ApiError(400, "invalid Content-Length header", code="invalid_header") from None
            if size > limit:
                raise too_large(f"the request body is {size} bytes", limit)
        chunks, size, more = [], 0, True
        while more:
            chunk, more = await _receive_chunk(request)
            size += len(chunk)
            if size > limit:
                raise too_large("the request body is larger", limit)
            chunks.append(chunk)
        raw = b"".join(chunks)
        request._body = raw  # what FastAPI reads next (starlette caches the body here)
        if not raw.strip():
            raise ApiError(400, "the request body is empty: send a JSON object", code="invalid_json")
        if len(raw) > _THREAD_BYTES:  # parsing megabytes takes seconds: every other request would wait
            body = await asyncio.to_thread(parse_json, raw)
        else:
            body = parse_json(raw)
        if not isinstance(body, dict):
            raise ApiError(
                400, f"the request body must be a JSON object, got {_json_type(body)}", code="invalid_json"
            )
        request._json = body  # FastAPI validates this against the route's model
        return body

    def model(self, task: str, requested: str | None) -> Worker:
        """The served model a request names (or the first one of ``task``); 404 for unknown names."""
        mine = [w for w in self.models if w.task == task]
        if requested is None:
            if not mine:
                raise ApiError(404, f"no {task} model is served here", code="model_not_found", param="model")
            return mine[0]
        for worker in self.models:
            if same_model(requested, worker.name):
                if worker.task != task:
                    raise ApiError(
                        400,
                        f"the model {requested!r} is a {worker.task} model, not a {task} model",
                        code="wrong_model_task",
                        param="model",
                    )
                return worker
        served = ", ".join(repr(w.name) for w in mine) or "none"
        raise ApiError(
            404,
            f"the model {requested!r} does not exist or is not served here; {task} models: {served}",
            code="model_not_found",
            param="model",
        )


def parse_json(raw: bytes) -> Any:
    """The parsed body: UTF-8 JSON (a leading byte-order mark skipped) that passes :func:`check_json`."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ApiError(
            400,
            f"the request body is not valid UTF-8 (JSON is UTF-8, RFC 8259): invalid byte at {e.start}",
            code="invalid_json",
        ) from None
    # No deeper than there are opening brackets: the exact scan runs only for a body with many.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _nesting(text) > MAX_JSON_DEPTH:
        raise _too_deep()
    try:
        with _gc_paused(len(raw) > _THREAD_BYTES):
            body = _DECODER.decode(text)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if _SURROGATE_ESCAPE.search(text):  # decoded UTF-8 has no surrogates: only an escape makes one
        check_json(body)
    return body


def _nesting(text: str) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets inside strings not counted)."""
    if "[" not in text and "{" not in text:
        return 0
    bare = np.frombuffer(_STRING.sub('""', text).encode("utf-8", "surrogatepass"), dtype=np.uint8)
    steps = (bare == 91).astype(np.int32) + (bare == 123) - (bare == 93) - (bare == 125)  # [ { ] }
    return int(np.cumsum(steps).max(initial=0))


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


class _gc_paused:  # noqa: N801 - used as a context manager, like contextlib's
    """Pause the cyclic garbage collector while a big body is parsed: its millions of new containers
    would trigger collections that cost several times the parse, all of it holding the GIL."""

    def __init__(self, pause: bool) -> None:
        self.pause = pause

    def __enter__(self) -> None:
        global _gc_pausers, _gc_was_enabled
        if self.pause:
            with _gc_lock:
                if _gc_pausers == 0:
                    _gc_was_enabled = gc.isenabled()
                    gc.disable()
                _gc_pausers += 1

    def __exit__(self, *exc: object) -> None:
        global _gc_pausers
        if self.pause:
            with _gc_lock:
                _gc_pausers -= 1
                if _gc_pausers == 0 and _gc_was_enabled:
                    gc.enable()


def _too_deep() -> ApiError:
    return ApiError(
        400, f"the request body nests more than {MAX_JSON_DEPTH} levels deep", code="invalid_json"
    )


def check_json(body: Any) -> None:
    """Raise a 400 :class:`ApiError` for a parsed body that breaks the module's JSON rules.

    Example:
        >>> check_json({"input": "\\ud800"})  # doctest: +SKIP
        ApiError: input: the string is not valid UTF-8 (a lone surrogate)
    """
    stack: list[tuple[Any, str, int, bool]] = [(body, "", 0, False)]
    while stack:
        value, where, depth, is_key = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    what = "a key" if is_key else "the string"
                    raise ApiError(
                        400,
                        f"{where or 'the body'}: {what} is not valid UTF-8 (a lone surrogate)",
                        code="invalid_value",
                        param=where or None,
                    ) from None
            continue
        if isinstance(value, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                raise _too_deep()
            if isinstance(value, dict):
                for key, item in value.items():
                    stack.append((key, where, depth + 1, True))  # a key's param is its object's
                    stack.append((item, f"{where}.{key}" if where else str(key), depth + 1, False))
            else:
                stack.extend((item, f"{where}[{i}]", depth + 1, False) for i, item in enumerate(value))


def _parse_int(text: str) -> int:
    # JSON has no leading zeros, so more digits than 2**63 has is out of range: checked before int(),
    # which refuses over 4,300 digits with a message about sys.set_int_max_str_digits().
    digits = len(text) - text.startswith("-")
    value = int(text) if digits <= _INT_DIGITS else None
    if value is None or not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        shown = text if len(text) <= 30 else f"{text[:30]}... ({digits} digits)"
        raise ValueError(f"the integer {shown} is outside the 64-bit range")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as infinity
        raise ValueError(f"the number {text[:30]} is outside the range of a double")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_parse_int, parse_float=_parse_float)


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def _json_type(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def default_name(source: Any, model: Any) -> str:
    """The served name: the model's alias or hub id, the directory name of a local path, else its name.

    A packaged copy of an aliased model (the offline MiniLM) is served under its alias
    (``all-MiniLM-L6-v2``), never under its directory's name.
    """
    ref = source if isinstance(source, (str, os.PathLike)) and source not in KEYWORDS else None
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
        alias = alias_of(ref)
        if alias is not None:
            return alias
        path = Path(ref).expanduser()
        return path.resolve().name if path.is_dir() else os.fspath(ref)
    fingerprint = getattr(model, "fingerprint", None)
    if isinstance(fingerprint, dict) and isinstance(fingerprint.get("model"), str):
        return alias_of(fingerprint["model"]) or fingerprint["model"]
    return type(model).__name__


def same_model(requested: str, served: str) -> bool:
    """A request names a served model by its served name or any spelling of the same canonical name."""
    if requested == served:
        return True
    try:
        return canonical_model_name(requested) == canonical_model_name(served)
    except ConfigError:
        return False


async def _receive_chunk(request: Any) -> tuple[bytes, bool]:
    """The next piece of the body and whether more follows; remembers when the body is complete."""
    message = await request.receive()
    if message["type"] == "http.disconnect":
        request.state.ragkit_body_done = True
        raise ClientGone()
    more = bool(message.get("more_body", False))
    if not more:
        request.state.ragkit_body_done = True
    return message.get("body", b""), more


def lingering(response: Any, request: Any) -> Any:
    """``response`` to send at once, while the body of ``request`` may still be on its way.

    A request whose body was read (or has none) gets ``response`` as it is. Otherwise the answer goes
    out at once with ``connection: close``; then up to ``_DISCARD_BYTES`` of the body are read and
    dropped (for at most ``_DISCARD_SECONDS``) before the connection closes: closing with unread bytes
    in the receive buffer makes the kernel send a TCP reset, which can destroy the answer on its way
    to the client (a "lingering close"). A body declared bigger than that, or one that the client
    holds back until ``100 Continue``, is not read: the connection closes after the answer.
    """
    headers = request.headers
    if getattr(request.state, "ragkit_body_done", False):
        return response
    if "transfer-encoding" not in headers:
        try:
            declared = int(headers.get("content-length", "0"))
        except ValueError:
            declared = -1
        if declared == 0:
            return response  # no body: the connection can be kept
    else:
        declared = 0
    response.headers["connection"] = "close"
    if declared < 0 or declared > _DISCARD_BYTES or headers.get("expect", "").lower() == "100-continue":
        return response
    return _Lingering(response)


class _Lingering:
    """An ASGI response that sends ``response`` whole, then drains the request body before ending it."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.status_code = response.status_code
        self.headers = response.headers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_then_drain(message: dict[str, Any]) -> None:
            if message["type"] != "http.response.body" or message.get("more_body", False):
                await send(message)
                return
            # The whole answer (its Content-Length is met) is written now; the response ends after the
            # drain, when the server closes the connection (``connection: close``).
            await send({**message, "more_body": True})
            try:
                await asyncio.wait_for(_drain(receive), _DISCARD_SECONDS)
            except asyncio.TimeoutError:
                pass
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.response(scope, receive, send_then_drain)


async def _drain(receive: Any) -> None:
    seen = 0
    while seen <= _DISCARD_BYTES:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
