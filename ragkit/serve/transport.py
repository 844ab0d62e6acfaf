"""The HTTP/1.1 transport of ``ragkit serve``: header and body deadlines and a cap on open connections.

uvicorn's own protocols have no header or body time-out: the keep-alive timer is cancelled by the first
byte of a request, so a client sending one byte every few seconds holds its connection (and a file
descriptor) for as long as it likes. Of the other ASGI servers, hypercorn's ``read_timeout`` is per read
(a trickle resets it) and gunicorn's ``--timeout`` watches workers, not sockets; granian has a header
read time-out but is a different server altogether (its own process model, flags and logging). So the
server stays on uvicorn, and :class:`ConnectionGuard` adds what is missing in a small subclass of
uvicorn's h11 protocol (pure Python, always installed with uvicorn; uvicorn's ``"auto"`` would pick
httptools only where it is installed):

* **header deadline**: from the moment a connection opens, and again from the first byte of each later
  request on a kept-alive connection, the request line and headers must be complete within
  ``header_timeout`` seconds. Otherwise the server answers ``408`` and closes.
* **body deadline**: once the headers are in, the body must be complete within ``body_timeout``
  seconds: ``408`` and close when no answer was started yet, otherwise just close. Time spent by the
  model after the body arrived does not count.
* **write deadline**: an answer the client does not read (the socket's write buffer stays above its
  high-water mark) for ``write_timeout`` seconds closes the connection at once, unsent bytes dropped.
  Pipelined requests are not read ahead while one is answered (uvicorn pauses reading), so a client that
  sends hundreds of requests and never reads holds one connection for ``write_timeout`` at most.
* **idle keep-alive** connections close after uvicorn's ``timeout_keep_alive`` (5 s), as before.
* **connection cap**: at most ``max_connections`` open connections per process, further lowered to fit
  the open-file limit (whose soft value :func:`raise_nofile_limit` first raises to the hard one). A new
  connection over the cap closes another one, the one that has been in its state the longest among,
  in this order: connections idle between requests, or whose answer is sent while the rest of their
  body is still coming (such as an unauthenticated upload after its ``401``); else those whose client
  does not read its answer, or still sends its body before any answer (``503``); else those still
  sending their request line and headers (a new client is among them). Only when the app is at work
  on every connection (the model answering) is the new one answered ``503`` with ``retry-after`` and
  closed. So neither idle sockets nor slow clients exhaust file descriptors or lock out everyone else.
* **request smuggling**: a request with both ``Content-Length`` and ``Transfer-Encoding`` (RFC 9112
  6.1) is answered ``400`` and the connection closed.

The guard's own answers (``400``, ``408``, ``503``) carry the OpenAI error shape
``{"error": {"message", "type", "code"}}``.

:class:`RateLimitFilter` keeps a repeated log line from flooding the log: asyncio writes "socket.accept()
out of system resource" with a traceback each time ``accept()`` fails, which out of file descriptors
was 40,959 times in 4.5 s (tests/test_serve_transport.py); the filter lets one through per interval,
with a count.

Example:
    >>> guard = ConnectionGuard(header_timeout=10, body_timeout=60, write_timeout=30, max_connections=1024)
    >>> import uvicorn  # doctest: +SKIP
    >>> uvicorn.Config(app, http=guard)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ragkit.errors import ConfigError
from ragkit.serve.hangups import HANGUP_SCOPE_KEY, Hangup

try:
    import resource
except ImportError:  # Windows: no open-file limit to read or raise
    resource = None  # type: ignore[assignment]

__all__ = [
    "CLOSE_REASONS",
    "ConnectionGuard",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_WRITE_TIMEOUT",
    "RateLimitFilter",
    "limit_log_floods",
    "raise_nofile_limit",
]

logger = logging.getLogger("ragkit")

DEFAULT_HEADER_TIMEOUT = 10.0
"""Seconds a client has to send the request line and headers (from connect, or its request's first byte)."""

DEFAULT_BODY_TIMEOUT = 60.0
"""Seconds a client has to send the body once the headers are in (8 MiB in 60 s: about 1.2 Mbit/s)."""

DEFAULT_WRITE_TIMEOUT = 30.0
"""Seconds an answer may stay unread by the client (its socket buffer full) before the connection closes."""

DEFAULT_MAX_CONNECTIONS = 1024
"""Open connections per server process (lowered to what the open-file limit allows)."""

CLOSE_REASONS = ("body_timeout", "evicted", "header_timeout", "refused", "write_timeout")
"""Why the guard closed a connection: the ``reason`` label of ``ragkit_connections_closed_total``."""

_CLOSED_SCOPE_KEY = "ragkit.transport_closed"  # in a request's scope: why the guard cut it (for metrics)

# File descriptors kept for everything but client sockets: model files, the index's SQLite files,
# PostgreSQL connections, logs, the event loop's own pipes.
_FD_RESERVE_MIN = 64


def _error_answer(status: str, message: str, kind: str, code: str, headers: str = "") -> bytes:
    """A whole HTTP/1.1 answer with an OpenAI-shaped JSON error body, closing the connection."""
    body = json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


_TIMEOUT_408 = _error_answer(
    "408 Request Timeout", "the request did not arrive in time", "invalid_request_error", "request_timeout"
)
_REFUSED_503 = _error_answer(
    "503 Service Unavailable",
    "too many connections",
    "server_error",
    "too_many_connections",
    "retry-after: 1\r\n",
)


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; return the ``(soft, hard)`` in force.

    Many systems start processes at a soft limit of 1,024 open files with a much higher hard limit;
    a server wants the hard one. Does nothing where the limit cannot be read or raised (``(-1, -1)``
    where there is none, as on Windows).

    Example:
        >>> soft, hard = raise_nofile_limit()
        >>> soft <= hard or hard == resource.RLIM_INFINITY
        True
    """
    if resource is None:
        return (-1, -1)
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return (-1, -1)
    if soft != hard:
        # An infinite hard limit is not a valid soft one on every system: stop at a million.
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    return (soft, hard)


def _fd_budget(soft: int) -> int | None:
    """The client sockets an open-file limit of ``soft`` leaves room for (``None``: no limit known)."""
    if resource is None or soft < 0 or soft == resource.RLIM_INFINITY:
        return None
    return max(16, soft - max(_FD_RESERVE_MIN, soft // 8))


def _positive_seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


class ConnectionGuard:
    """uvicorn's h11 protocol with header and body deadlines and a connection cap (see the module docstring).

    An instance is a protocol factory: pass it as ``uvicorn.Config(app, http=guard)``. It pickles with its
    settings only, so ``--workers`` gives each worker process its own count of connections.

    Args:
        header_timeout: seconds for the request line and headers.
        body_timeout: seconds for the body, once the headers are in.
        write_timeout: seconds an answer may wait for the client to read it (see the module docstring).
        max_connections: open connections per process. At the first connection the guard raises the
            soft open-file limit to the hard one (:func:`raise_nofile_limit`) and lowers the cap to
            what that limit leaves room for.
        on_close: called with a reason of :data:`CLOSE_REASONS` whenever the guard closes a connection
            (metrics); ``on_open`` with the number of open connections after each change.

    Raises:
        ConfigError: a time-out that is not a positive number, a cap below 1.

    Example:
        >>> guard = ConnectionGuard(header_timeout=2, body_timeout=5, max_connections=100)
        >>> guard.header_timeout, guard.write_timeout, guard.max_connections
        (2.0, 30.0, 100)
    """

    def __init__(
        self,
        *,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        on_close: Callable[[str], None] | None = None,
        on_open: Callable[[int], None] | None = None,
    ) -> None:
        self.header_timeout = _positive_seconds(header_timeout, "header_timeout")
        self.body_timeout = _positive_seconds(body_timeout, "body_timeout")
        self.write_timeout = _positive_seconds(write_timeout, "write_timeout")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigError(f"max_connections must be a positive int, got {max_connections!r}")
        self.max_connections = max_connections
        self.on_close = on_close
        self.on_open = on_open
        self._reset()

    def _reset(self) -> None:
        self._open: set[Any] = set()
        self._waiting: OrderedDict[Any, None] = OrderedDict()  # no request in progress, longest first
        self._cap: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_open", "_waiting", "_cap"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def cap(self) -> int:
        """The connection cap in force: ``max_connections``, or less where the open-file limit is lower."""
        if self._cap is None:
            soft, _hard = raise_nofile_limit()
            budget = _fd_budget(soft)
            self._cap = self.max_connections if budget is None else min(self.max_connections, budget)
            if self._cap < self.max_connections:
                logger.warning(
                    "ragkit serve: the open-file limit (%d) leaves room for %d connections, not %d",
                    soft,
                    self._cap,
                    self.max_connections,
                )
        return self._cap

    @property
    def open_connections(self) -> int:
        """Connections open in this process now."""
        return len(self._open)

    def __call__(self, **kwargs: Any) -> asyncio.Protocol:
        return _protocol_class()(guard=self, **kwargs)

    # -- called by the protocol

    def _admit(self, conn: Any) -> bool:
        """Count a new connection; make room by closing another (see the module docstring), or refuse it."""
        if len(self._open) >= self.cap:
            victim = next(iter(self._waiting), None)
            rank = victim.eviction_rank() if victim is not None else None
            if rank is None or rank[0] != 0:  # no idle connection to drop: look at them all
                ranked = [(r, id(c), c) for c in self._open if (r := c.eviction_rank()) is not None]
                if not ranked:
                    self._closed("refused")
                    return False
                victim = min(ranked, key=lambda item: (item[0], item[1]))[2]
            self._waiting.pop(victim, None)
            victim.evict()
        self._open.add(conn)
        self._waiting[conn] = None
        self._changed()
        return True

    def _busy(self, conn: Any) -> None:
        self._waiting.pop(conn, None)

    def _idle(self, conn: Any) -> bool:
        """Mark ``conn`` waiting for a request; ``True`` when it was not already."""
        if conn in self._open and conn not in self._waiting:
            self._waiting[conn] = None
            return True
        return False

    def _lost(self, conn: Any) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self._waiting.pop(conn, None)
            self._changed()

    def _closed(self, reason: str) -> None:
        logger.debug("ragkit serve: connection closed: %s", reason)
        if self.on_close is not None:
            self.on_close(reason)

    def _changed(self) -> None:
        if self.on_open is not None:
            self.on_open(len(self._open))


@functools.lru_cache(maxsize=1)
def _protocol_class() -> type[asyncio.Protocol]:
    """The guarded protocol class, built on first use so that importing this module needs no uvicorn."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def __init__(self, *, guard: ConnectionGuard, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._guard = guard
            self._deadline: asyncio.TimerHandle | None = None
            self._phase: str | None = None  # "header" | "body" | None
            self._counted = False
            self._since = time.monotonic()  # when the current phase (header, body, idle) began
            self._write_since: float | None = None  # when the write buffer filled up, while it stays full
            self._write_deadline: asyncio.TimerHandle | None = None

        # -- the connection

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.conn.next_event = functools.partial(_checked_next_event, self.conn.next_event)  # type: ignore[method-assign]
            if not self._guard._admit(self):
                self.connections.discard(self)
                transport.write(_REFUSED_503)
                transport.close()
                return
            self._counted = True
            self._arm("header")

        def handle_events(self) -> None:
            super().handle_events()
            cycle = self.cycle
            if cycle is not None and HANGUP_SCOPE_KEY not in cycle.scope:
                # Before the app's task starts: uvicorn only schedules it.
                cycle.scope[HANGUP_SCOPE_KEY] = Hangup()  # type: ignore[literal-required]

        def _hung_up(self) -> None:
            """The client is gone: tell the request at work, if it has not started its answer (once it has,
            its work is done: a lingering answer still drains the body, for instance)."""
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                hangup = cycle.scope.get(HANGUP_SCOPE_KEY)
                if isinstance(hangup, Hangup):
                    hangup.fire()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._writable()
            self._hung_up()
            if self._counted:
                self._guard._lost(self)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._phase is None and self.conn.their_state is h11.IDLE:
                self._arm("header")  # the first byte of the next request on a kept-alive connection
            super().data_received(data)
            self._follow()

        def send_400_response(self, msg: str) -> None:
            """uvicorn's answer to a request h11 cannot parse, in the OpenAI error shape."""
            if self.transport.is_closing():
                return
            body = json.dumps(
                {"error": {"message": msg, "type": "invalid_request_error", "code": "bad_request"}}
            )
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body.encode())),
                (b"connection", b"close"),
            ]
            try:
                out = self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request"))
                out += self.conn.send(h11.Data(data=body.encode()))  # type: ignore[operator]
                out += self.conn.send(h11.EndOfMessage())  # type: ignore[operator]
                self.transport.write(out)  # type: ignore[arg-type]
            except h11.LocalProtocolError:  # an answer was already started: just close
                pass
            self.transport.close()

        # -- the write deadline

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._write_deadline is None:
                self._write_since = time.monotonic()
                self._write_deadline = self.loop.call_later(
                    self._guard.write_timeout, self.close_by_guard, "write_timeout", None
                )

        def resume_writing(self) -> None:
            super().resume_writing()
            self._writable()

        def _writable(self) -> None:
            if self._write_deadline is not None:
                self._write_deadline.cancel()
            self._write_deadline, self._write_since = None, None

        # -- eviction at the cap

        def eviction_rank(self) -> tuple[int, float] | None:
            """How readily the cap closes this busy connection (lowest first), ``None``: never."""
            if self.transport.is_closing():
                return None  # already going: closing it again frees nothing
            cycle = self.cycle
            if self._phase == "body" and cycle is not None and cycle.response_complete:
                return (0, self._since)  # answered; the rest of its body is only discarded
            if self._write_since is not None:
                return (1, self._write_since)  # its client does not read the answer
            if self._phase == "body" and (cycle is None or not cycle.response_started):
                return (1, self._since)  # still sending its body
            if self._phase == "header":
                # Still sending its request line and headers: last, as a new client is in this phase too
                # (and its header deadline is short anyway).
                return (2, self._since)
            if self.conn.their_state is h11.IDLE and (cycle is None or cycle.response_complete):
                return (0, self._since)  # idle between requests
            return None  # the app is at work on it

        def evict(self) -> None:
            """Close this connection to make room for a new one: ``503`` when its body had no answer yet."""
            cycle = self.cycle
            unanswered = self._phase == "body" and (cycle is None or not cycle.response_started)
            self.close_by_guard("evicted", _REFUSED_503 if unanswered and self._write_since is None else None)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()

        def _follow(self) -> None:
            """Move the deadline along with h11's view of the client's side of the exchange."""
            state = self.conn.their_state
            if self._phase == "header" and state is not h11.IDLE:
                self._guard._busy(self)
                self._disarm()
                if state is h11.SEND_BODY:
                    self._arm("body")
            elif self._phase == "body" and state is not h11.SEND_BODY:
                self._disarm()
            elif self._phase is None and state is h11.SEND_BODY and not self.transport.is_closing():
                self._guard._busy(self)
                self._arm("body")  # a pipelined request, read from the buffer once the previous one was done
            idle = self.cycle is None or self.cycle.response_complete
            if self._phase is None and state is h11.IDLE and idle and not self.transport.is_closing():
                if self._guard._idle(self):
                    self._since = time.monotonic()
                if self.timeout_keep_alive_task is None:
                    # uvicorn cancels its keep-alive timer on any byte, also on the tail of a body that
                    # arrives after the answer: without a timer again the idle connection would stay open.
                    self.timeout_keep_alive_task = self.loop.call_later(
                        self.timeout_keep_alive, self.timeout_keep_alive_handler
                    )

        # -- deadlines

        def _arm(self, phase: str) -> None:
            self._disarm()
            seconds = self._guard.header_timeout if phase == "header" else self._guard.body_timeout
            self._phase = phase
            self._since = time.monotonic()
            self._deadline = self.loop.call_later(seconds, self._expired, phase)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline, self._phase = None, None

        def _expired(self, phase: str) -> None:
            self._deadline, self._phase = None, None
            cycle = self.cycle
            answer = None
            if phase == "header" or (cycle is not None and not cycle.response_started):
                answer = _TIMEOUT_408
            self.close_by_guard(f"{phase}_timeout", answer)

        def close_by_guard(self, reason: str, answer: bytes | None) -> None:
            """Close this connection for ``reason``, first writing ``answer`` (raw bytes) when given."""
            self._disarm()
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                # The app sees a disconnect and its late answer is dropped (uvicorn's cycle ignores sends);
                # the metrics read why from the request's scope.
                cycle.scope[_CLOSED_SCOPE_KEY] = reason  # type: ignore[literal-required]
                cycle.disconnected = True
                cycle.message_event.set()
                self._hung_up()
            self._guard._closed(reason)
            if self._write_since is not None:
                self._writable()
                self.transport.abort()  # its client reads nothing: drop what is buffered, free the socket now
                return
            if answer is not None:
                self.transport.write(answer)
            self.transport.close()

    def _checked_next_event(next_event: Callable[[], Any]) -> Any:
        event = next_event()
        if isinstance(event, h11.Request):
            names = {name.lower() for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                raise h11.RemoteProtocolError("both Content-Length and Transfer-Encoding")
        return event

    return GuardedH11Protocol


class RateLimitFilter(logging.Filter):
    """A logging filter that lets a record through at most once per ``interval`` seconds per message.

    A record is matched by its unformatted message starting with one of ``prefixes``; others pass
    untouched. The first record after a quiet interval says how many were dropped meanwhile.

    Args:
        prefixes: message beginnings to limit.
        interval: seconds between two records of one message.

    Example:
        >>> f = RateLimitFilter(["socket.accept() out of system resource"], interval=60)
        >>> rec = logging.LogRecord("asyncio", 40, "", 0, "socket.accept() out of system resource", (), None)
        >>> f.filter(rec), f.filter(rec)
        (True, False)
    """

    def __init__(self, prefixes: list[str] | tuple[str, ...], *, interval: float = 60.0) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)
        self.interval = interval
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        prefix = next((p for p in self.prefixes if message.startswith(p)), None)
        if prefix is None:
            return True
        now = time.monotonic()
        last = self._last.get(prefix)
        if last is not None and now - last < self.interval:
            self._dropped[prefix] = self._dropped.get(prefix, 0) + 1
            return False
        self._last[prefix] = now
        dropped = self._dropped.pop(prefix, 0)
        if dropped:
            record.msg = f"{message} ({dropped} more like it in the last {now - last:.0f}s)"  # type: ignore[operator]
        record.exc_info = None  # the same traceback each time says nothing new
        record.exc_text = None
        return True


_FLOODS = ("socket.accept() out of system resource", "Exceeded concurrency limit")


def limit_log_floods(interval: float = 60.0) -> RateLimitFilter:
    """Install a :class:`RateLimitFilter` for the accept-error lines on the ``asyncio`` and uvicorn loggers.

    Idempotent: a second call returns the filter already installed.

    Example:
        >>> limit_log_floods() is limit_log_floods()
        True
    """
    existing = getattr(limit_log_floods, "_installed", None)
    if existing is not None:
        return existing
    flt = RateLimitFilter(_FLOODS, interval=interval)
    for name in ("asyncio", "uvicorn.error"):
        logging.getLogger(name).addFilter(flt)
    limit_log_floods._installed = flt  # type: ignore[attr-defined]
    return flt
