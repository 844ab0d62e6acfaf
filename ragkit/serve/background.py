"""Run a ragkit (or any ASGI) app with uvicorn in a background thread: tests, notebooks, benchmarks.

Example:
    >>> from ragkit.serve import BackgroundServer, create_app
    >>> with BackgroundServer(create_app(my_embedder)) as server:  # doctest: +SKIP
    ...     httpx.get(server.url + "/ready").status_code
    200
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from typing import Any

from ragkit._deps import require
from ragkit.errors import RagkitError
from ragkit.serve.app import service_of
from ragkit.serve.transport import ConnectionGuard, limit_log_floods

__all__ = ["BackgroundServer", "uvicorn_server"]


def uvicorn_server(app: Any, *, guard: ConnectionGuard | None = None, **config: Any) -> Any:
    """A uvicorn server whose shutdown first raises the app's draining flag (new requests get 503).

    Its connections go through ``guard`` (default: a :class:`~ragkit.serve.transport.ConnectionGuard`
    with the default header and body time-outs and connection cap), which reports to the app's
    metrics when its observer has them; repeated accept errors are rate-limited in the log.

    A SIGTERM ends :meth:`run` gracefully and it returns (so ``ragkit serve`` exits 0): uvicorn itself
    raises the signal again once shut down, which would end the process with status 143. SIGINT is
    still raised again (``KeyboardInterrupt``), as uvicorn does.
    """
    uvicorn = require("uvicorn", purpose="ragkit serve")
    service = service_of(app)
    guard = guard if guard is not None else ConnectionGuard()
    observer = getattr(service, "observer", None)
    if guard.on_close is None and callable(getattr(observer, "on_connection_closed", None)):
        guard.on_close = observer.on_connection_closed  # type: ignore[union-attr]
        guard.on_open = observer.on_connections_open  # type: ignore[union-attr]
    limit_log_floods()

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if service is not None:
                service.draining = True
            await super().shutdown(sockets=sockets)

        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            with super().capture_signals():
                try:
                    yield
                finally:
                    # uvicorn re-raises what it caught once this block is left: not a handled SIGTERM.
                    self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]

    config.setdefault("timeout_graceful_shutdown", 30)
    config.setdefault("server_header", False)
    return _Server(uvicorn.Config(app, lifespan="on", http=guard, **config))


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
        guard: the header and body time-outs and the connection cap
            (:class:`~ragkit.serve.transport.ConnectionGuard`; default: its defaults).
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
        guard: ConnectionGuard | None = None,
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
        self.server = uvicorn_server(
            app, host=host, port=self.port, log_level=log_level, guard=guard, **uvicorn_options
        )
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
        service = service_of(self.app)
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
