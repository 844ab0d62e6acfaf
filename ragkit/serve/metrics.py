"""``GET /metrics``: the server's Prometheus metrics (prometheus-client, text format 0.0.4).

The metrics (all prefixed ``ragkit_``):

==========================================  =========  =================================================
name                                        type       labels and meaning
==========================================  =========  =================================================
``http_requests_total``                     counter    ``route`` (the route template, ``unmatched`` for
                                                       any unknown path), ``method`` (``other`` for
                                                       any but GET, HEAD, POST, PUT, DELETE, PATCH,
                                                       OPTIONS), ``status`` (``other`` outside 100-599)
``http_request_errors_total``               counter    the same, for answers with status >= 400
``http_request_duration_seconds``           histogram  ``route``, ``method``: time to the whole answer
``http_requests_in_progress``               gauge      requests being answered now
``batch_size``                              histogram  ``kind``: inputs per model call
``batch_duration_seconds``                  histogram  ``kind``: seconds per model call
``tokens_total``                            counter    ``kind``: tokens through the model
                                                       (``rate(ragkit_tokens_total[1m])`` is tokens/s)
``queue_depth``                             gauge      ``kind``: requests waiting for the model (or
                                                       part-way through it)
``model_load_seconds``                      gauge      ``kind``: how long loading the model took
``connections_open``                        gauge      open client connections
``connections_closed_total``                counter    ``reason``: closed by the transport guard
                                                       (``header_timeout``, ``body_timeout``,
                                                       ``write_timeout``, ``evicted``, ``refused``)
==========================================  =========  =================================================

A status of ``408`` means the transport cut a body that came too slowly, ``499`` that the client left
before the answer (whatever the app then answered, nobody read it).

:class:`Metrics` is also the model workers' observer (``create_app(..., observer=metrics)``): it
implements ``on_batch``, ``on_queue`` and ``on_model_load``. With several worker processes
(``ragkit serve --workers N``) the values live in prometheus-client's multiprocess files: the parent sets
``PROMETHEUS_MULTIPROC_DIR`` to a fresh temporary directory before the workers start (and removes it at
exit), and whichever worker answers ``/metrics`` sums all of them; gauges count live workers only.

``/metrics`` needs no API key by default (like ``/health``): it shows counts and timings, never inputs,
keys or model outputs, and scrapers rarely carry bearer keys. ``Metrics(require_key=True)``
(``--metrics-auth``) asks for the same bearer key as the API.

Example:
    >>> metrics = Metrics()  # doctest: +SKIP
    >>> app = create_app(embedder, observer=metrics)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from ragkit._deps import require
from ragkit.serve.hangups import HANGUP_SCOPE_KEY, Hangup
from ragkit.serve.transport import _CLOSED_SCOPE_KEY

__all__ = ["LATENCY_BUCKETS", "Metrics", "MetricsMiddleware", "multiprocess_mode"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Histogram buckets in seconds for request and model-call durations."""

_SIZE_BUCKETS = tuple(float(2**i) for i in range(12))  # 1 .. 2048 inputs per model call
_CLIENT_GONE = "499"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
"""HTTP methods counted by name; any other (a client can send any token) counts as ``other``."""


def multiprocess_mode() -> bool:
    """Whether prometheus-client keeps its values in ``PROMETHEUS_MULTIPROC_DIR`` files in this process.

    prometheus-client decides when it is first imported, so the variable must be set before that.

    Example:
        >>> multiprocess_mode()  # doctest: +SKIP
        False
    """
    require("prometheus_client", purpose="/metrics (ragkit serve --no-metrics runs without it)")
    from prometheus_client import values

    return values.ValueClass is not values.MutexValue


class Metrics:
    """The Prometheus metrics of one ``ragkit serve`` process, or of all its workers (see the module).

    Args:
        require_key: whether ``/metrics`` asks for the API's bearer key (when the server has keys).

    Raises:
        MissingDependencyError: prometheus-client is not installed (``pip install 'ragkit[server]'``).
        ConfigError: ``PROMETHEUS_MULTIPROC_DIR`` was set after prometheus-client was imported.

    Example:
        >>> m = Metrics()
        >>> m.on_batch("embedding", size=4, tokens=120, seconds=0.05)
        >>> b"ragkit_tokens_total" in m.render()[0]
        True
    """

    def __init__(self, *, require_key: bool = False) -> None:
        prom = require("prometheus_client", purpose="/metrics (ragkit serve --no-metrics runs without it)")
        from ragkit.errors import ConfigError

        self.require_key = bool(require_key)
        self.multiprocess = multiprocess_mode()
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory and not self.multiprocess:
            raise ConfigError(
                "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported: set it before the "
                "server process starts"
            )
        # One registry per server (several apps can live in one test process); in multiprocess mode the
        # values go to files and render() collects them from there.
        self.registry = None if self.multiprocess else prom.CollectorRegistry()
        reg = {"registry": self.registry}
        http = ["route", "method", "status"]
        self.requests = prom.Counter("ragkit_http_requests_total", "HTTP requests answered", http, **reg)
        self.errors = prom.Counter(
            "ragkit_http_request_errors_total", "HTTP requests answered with status >= 400", http, **reg
        )
        self.latency = prom.Histogram(
            "ragkit_http_request_duration_seconds",
            "Seconds from the request's headers to the end of its answer",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            **reg,
        )
        self.in_progress = prom.Gauge(
            "ragkit_http_requests_in_progress",
            "HTTP requests being answered",
            multiprocess_mode="livesum",
            **reg,
        )
        self.batch_size = prom.Histogram(
            "ragkit_batch_size", "Inputs per model call", ["kind"], buckets=_SIZE_BUCKETS, **reg
        )
        self.batch_seconds = prom.Histogram(
            "ragkit_batch_duration_seconds",
            "Seconds per model call",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            **reg,
        )
        self.tokens = prom.Counter("ragkit_tokens_total", "Tokens through the model", ["kind"], **reg)
        self.queue = prom.Gauge(
            "ragkit_queue_depth",
            "Requests waiting for the model or part-way through it",
            ["kind"],
            multiprocess_mode="livesum",
            **reg,
        )
        self.load_seconds = prom.Gauge(
            "ragkit_model_load_seconds",
            "Seconds loading the model took",
            ["kind"],
            multiprocess_mode="livemax",
            **reg,
        )
        self.connections = prom.Gauge(
            "ragkit_connections_open", "Open client connections", multiprocess_mode="livesum", **reg
        )
        self.closed = prom.Counter(
            "ragkit_connections_closed_total", "Connections closed by the transport guard", ["reason"], **reg
        )
        # Labelled children by label values: labels() validates and locks on every call, which was a
        # good part of the metrics' cost per request. Every label is bounded, so are these.
        self._http: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
        self._kinds: dict[str, tuple[Any, Any, Any, Any]] = {}

    # -- the observer hook of the model workers

    def _of_kind(self, kind: str) -> tuple[Any, Any, Any, Any]:
        children = self._kinds.get(kind)
        if children is None:
            children = (
                self.batch_size.labels(kind),
                self.batch_seconds.labels(kind),
                self.tokens.labels(kind),
                self.queue.labels(kind),
            )
            self._kinds[kind] = children
        return children

    def on_batch(self, kind: str, size: int, tokens: int, seconds: float) -> None:
        """One model call of ``size`` inputs and ``tokens`` tokens took ``seconds``."""
        sizes, durations, counted, _ = self._of_kind(kind)
        sizes.observe(size)
        durations.observe(seconds)
        counted.inc(max(0, tokens))

    def on_queue(self, kind: str, depth: int) -> None:
        """``depth`` requests now wait for the ``kind`` model."""
        self._of_kind(kind)[3].set(depth)

    def on_model_load(self, kind: str, seconds: float) -> None:
        """Loading the ``kind`` model took ``seconds``."""
        self.load_seconds.labels(kind).set(seconds)

    # -- the transport guard

    def on_connection_closed(self, reason: str) -> None:
        """The transport guard closed a connection (see :data:`ragkit.serve.transport.CLOSE_REASONS`)."""
        self.closed.labels(reason).inc()

    def on_connections_open(self, count: int) -> None:
        """``count`` client connections are open in this process."""
        self.connections.set(count)

    # -- HTTP

    def observe_request(self, route: str, method: str, status: int | str, seconds: float) -> None:
        """One answered request: ``route`` is the route template, never the raw path.

        Every label is bounded whatever the client sends: a method outside GET, HEAD, POST, PUT, DELETE,
        PATCH and OPTIONS counts as ``other``, a status outside 100-599 (and not a number) as ``other``.
        """
        method = method if method in _METHODS else "other"
        status = str(status)
        if not (len(status) == 3 and status.isdigit() and "100" <= status <= "599"):
            status = "other"
        key = (route, method, status)
        children = self._http.get(key)
        if children is None:
            error = status == _CLIENT_GONE or status[:1] in ("4", "5")
            children = (
                self.requests.labels(*key),
                self.errors.labels(*key) if error else None,
                self.latency.labels(route, method),
            )
            self._http[key] = children
        answered, failed, latency = children
        answered.inc()
        if failed is not None:
            failed.inc()
        latency.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and its content type.

        Example:
            >>> body, content_type = Metrics().render()
            >>> content_type.startswith("text/plain")
            True
        """
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """At a worker's exit: drop its live gauges from the multiprocess files (a no-op otherwise)."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())

    # -- wiring into an app

    def mount(self, app: Any, *, api_keys: Sequence[str] = (), path: str = "/metrics") -> None:
        """Serve ``path`` on a Starlette or FastAPI ``app``; count its requests (:class:`MetricsMiddleware`).

        ``api_keys`` are the server's keys; they are asked for only with ``require_key=True``.

        Example:
            >>> metrics.mount(app, api_keys=["s3cret"])  # doctest: +SKIP
        """
        from starlette.responses import Response

        from ragkit.serve.errors import ApiError
        from ragkit.serve.keys import bearer_matches

        keys = [k.encode("utf-8") for k in api_keys] if self.require_key else []

        async def endpoint(request: Any) -> Any:
            if keys and not bearer_matches(request.headers.get("authorization"), keys):
                return ApiError(
                    401,
                    "missing or invalid API key: send 'Authorization: Bearer <key>'",
                    code="invalid_api_key",
                    headers={"www-authenticate": "Bearer"},
                ).response()
            body, content_type = self.render()
            return Response(body, media_type=content_type)

        app.add_route(path, endpoint, methods=["GET"], include_in_schema=False)
        app.add_middleware(MetricsMiddleware, metrics=self, routes=app.router.routes)


def _template(route: Any) -> str | None:
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _route_template(scope: dict[str, Any], routes: Sequence[Any]) -> str:
    """The template of the route that answered (FastAPI's routes leave it in the scope), else matched."""
    found = _template(scope.get("route"))
    if found is not None:
        return found
    from starlette.routing import Match

    partial = None
    for route in routes:
        try:
            match, _ = route.matches(scope)
        except Exception:  # noqa: BLE001 - a route that cannot read this scope did not answer it
            continue
        if match is Match.FULL:
            return _template(route) or "unmatched"
        if match is Match.PARTIAL and partial is None:
            partial = route
    return (_template(partial) if partial is not None else None) or "unmatched"


class MetricsMiddleware:
    """ASGI middleware counting each HTTP request by route template, method and status (see :class:`Metrics`).

    The route template comes from the routing (``scope["route"]``, or else the first of ``routes``
    that matches), so ``/v1/items/abc`` counts as ``/v1/items/{name}`` and an unknown path as
    ``unmatched``: a client cannot make a label of its own.

    Example:
        >>> app.add_middleware(MetricsMiddleware, metrics=Metrics())  # doctest: +SKIP
    """

    def __init__(self, app: Any, *, metrics: Metrics, routes: Sequence[Any] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = []
        gone: list[bool] = []

        async def receive_watched() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.disconnect" and not status:
                gone.append(True)  # whatever the app answers now, nobody reads it
            return message

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive_watched, send_status)
        except BaseException:
            if not status:
                status.append(500)
            raise
        finally:
            self.metrics.in_progress.dec()
            self.metrics.observe_request(
                _route_template(scope, self.routes),
                str(scope.get("method", "")),
                _answered(scope, status, bool(gone)),
                time.perf_counter() - started,
            )


def _answered(scope: dict[str, Any], status: list[int], gone: bool) -> int | str:
    """The status the client saw: 408 when the transport cut a slow body, 499 when the client left first."""
    if scope.get(_CLOSED_SCOPE_KEY) == "body_timeout":
        return 408
    hangup = scope.get(HANGUP_SCOPE_KEY)
    if gone or not status or (isinstance(hangup, Hangup) and hangup.fired):
        return _CLIENT_GONE
    return status[0]
