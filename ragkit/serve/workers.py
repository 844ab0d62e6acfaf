"""``ragkit serve --workers N``: several server processes on one listening socket.

The parent process binds the socket once and runs uvicorn's process supervisor, which starts ``N``
worker processes (spawned, not forked: torch and its thread pools do not survive a fork) and restarts
one that dies. Each worker builds its own app from a :class:`WorkerApp` (a picklable recipe, so no
option, and no API key, travels on a command line or in the environment), loads its own models once
and opens the saved index read-only, so ``/v1/search``, ``/v1/embeddings`` and ``/v1/rerank`` are
answered by whichever worker the kernel hands the connection to.

* **Threads**: torch's threads are divided between the workers (:func:`threads_per_worker`: usable
  CPUs // N, at least 1), unless ``--threads`` says how many each gets.
* **Metrics**: the parent points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh temporary directory before
  the workers start and removes it at exit, so ``/metrics`` from any worker sums all of them (see
  :mod:`ragkit.serve.metrics`). A directory set by the operator is used as it is and kept.
* **Which worker answered**: every answer carries ``x-ragkit-worker: <pid>``.
* **Memory**: each worker holds its own copy of the models and of the index's in-memory parts; see
  the README's server section for measured figures.

Example:
    >>> recipe = WorkerApp({"index": "my-index/", "api_keys": ["k-1"]}, threads=2)  # doctest: +SKIP
    >>> run_workers(recipe, workers=2, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib.util
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragkit.errors import ConfigError
from ragkit.serve.keys import KeyRedactor
from ragkit.serve.transport import ConnectionGuard, limit_log_floods

__all__ = ["WORKER_HEADER", "WorkerApp", "multiprocess_dir", "run_workers", "threads_per_worker"]

WORKER_HEADER = "x-ragkit-worker"
"""The response header naming the process id of the worker that answered."""

_ENV = "PROMETHEUS_MULTIPROC_DIR"
_FAILED = "ragkit-load-failed"  # in that directory: a worker's models failed to load


def threads_per_worker(workers: int, cpus: int | None = None) -> int:
    """Torch threads for each of ``workers`` processes: ``cpus`` (default: the usable CPUs) // workers, >= 1.

    Example:
        >>> threads_per_worker(2, cpus=16), threads_per_worker(4, cpus=2)
        (8, 1)
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive int, got {workers!r}")
    if cpus is None:
        from ragkit.runtime import usable_cpus

        cpus = usable_cpus()
    return max(1, cpus // workers)


def _log_to_stderr(level: str) -> None:
    """ragkit's log to stderr in a spawned worker, which starts with no handler at all."""
    log = logging.getLogger("ragkit")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s %(name)s[{os.getpid()}]: %(message)s")
        )
        log.addHandler(handler)
    log.setLevel(level.upper())


def _stop_all(error: BaseException) -> None:
    """A worker's models failed to load: say so to the parent and stop the whole server (as one process does).

    A restarted worker would fail the same way, over and over; the parent's exit status says it failed.
    """
    directory = os.environ.get(_ENV)
    if directory:
        with contextlib.suppress(OSError):
            Path(directory, _FAILED).write_text(f"{type(error).__name__}\n", encoding="utf-8")
    os.kill(os.getppid(), signal.SIGTERM)


class _WorkerHeader:
    """ASGI middleware adding ``x-ragkit-worker: <pid>`` to every HTTP answer."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._header = (WORKER_HEADER.encode(), str(os.getpid()).encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self._header]}
            await send(message)

        await self.app(scope, receive, tagged)


@dataclass(frozen=True)
class WorkerApp:
    """The recipe of one worker's app: ``create_app`` options, threads and metrics; called in each worker.

    Args:
        options: keyword arguments of :func:`ragkit.serve.app.create_app` (model names, ``index``,
            ``api_keys``, limits). They travel to each worker pickled, so each gets its own copy; the
            command line passes names and paths only.
        threads: torch threads of each worker; ``None``: left as torch has them.
        metrics: serve ``/metrics``; ``metrics_auth``: behind the API key.
        log_level: the level of ragkit's log in the worker (uvicorn's own is set by uvicorn).
        guard: the transport guard of the workers' connections (:func:`run_workers` hands it to
            uvicorn); each worker unpickles its own and reports its connections to its metrics.

    Example:
        >>> WorkerApp({"index": "my-index/"}, threads=1)()  # doctest: +SKIP
        <fastapi.applications.FastAPI object at ...>
    """

    options: dict[str, Any]
    threads: int | None = None
    metrics: bool = True
    metrics_auth: bool = False
    log_level: str = "info"
    guard: ConnectionGuard | None = None

    def __call__(self) -> Any:
        """Build the app in this (worker) process; uvicorn calls it with ``factory=True``."""
        _log_to_stderr(self.log_level)
        limit_log_floods()
        if self.threads is not None and importlib.util.find_spec("torch") is not None:
            from ragkit.runtime import set_threads

            set_threads(self.threads)
        from ragkit.serve.app import create_app, service_of

        options = dict(self.options)
        metrics = None
        if self.metrics:
            from ragkit.serve.metrics import Metrics

            metrics = Metrics(require_key=self.metrics_auth)
            options["observer"] = metrics
            atexit.register(metrics.close)  # the worker's live gauges leave the shared files
            if self.guard is not None:
                # The same object as this worker's uvicorn Config.http: both came in one pickle.
                self.guard.on_close = metrics.on_connection_closed
                self.guard.on_open = metrics.on_connections_open
        app = create_app(**options)
        # uvicorn configured this process's logging afresh: the key filter goes on its handlers again.
        KeyRedactor(options.get("api_keys", ())).install()
        app.add_middleware(_WorkerHeader)
        service = service_of(app)
        if service is not None:
            service.on_load_error = _stop_all
        return app


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[str]:
    """``PROMETHEUS_MULTIPROC_DIR`` for the workers: a fresh temporary directory, removed on exit.

    When the variable is already set, that directory is used and kept (it must be empty at start:
    prometheus-client would otherwise add the counts of an earlier run).

    Example:
        >>> with multiprocess_dir() as path:
        ...     os.environ["PROMETHEUS_MULTIPROC_DIR"] == path
        True
    """
    given = os.environ.get(_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        yield given
        return
    path = tempfile.mkdtemp(prefix="ragkit-metrics-")
    os.environ[_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def run_workers(recipe: WorkerApp, *, workers: int, **uvicorn_options: Any) -> int:
    """Serve ``recipe`` from ``workers`` processes sharing one socket, until SIGINT / SIGTERM.

    ``uvicorn_options`` go to ``uvicorn.Config`` (``host``, ``port``, ``log_level``...); the
    connections go through ``recipe.guard`` (default: a :class:`ConnectionGuard` with its defaults).
    Returns when every worker has stopped: 0, or 1 when a worker's models failed to load (which
    stops the whole server, as for one process; the worker logged why). The workers are spawned, so
    a script that calls this must do it under ``if __name__ == "__main__":``.

    Raises:
        ConfigError: ``workers`` below 2 (one process needs no supervisor).

    Example:
        >>> run_workers(WorkerApp({"index": "idx/"}), workers=2, port=8000)  # doctest: +SKIP
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 2:
        raise ConfigError(f"run_workers needs workers >= 2, got {workers!r}")
    from ragkit._deps import require

    uvicorn = require("uvicorn", purpose="ragkit serve --workers")
    from uvicorn.supervisors import Multiprocess

    if recipe.guard is None:
        recipe = dataclasses.replace(recipe, guard=ConnectionGuard())
    uvicorn_options["http"] = recipe.guard
    limit_log_floods()
    uvicorn_options.setdefault("timeout_graceful_shutdown", 30)
    uvicorn_options.setdefault("server_header", False)
    with multiprocess_dir() as directory:
        flag = Path(directory, _FAILED)
        flag.unlink(missing_ok=True)
        config = uvicorn.Config(recipe, factory=True, workers=workers, lifespan="on", **uvicorn_options)
        KeyRedactor(recipe.options.get("api_keys", ())).install()  # on the handlers uvicorn just set up
        sock = config.bind_socket()
        try:
            Multiprocess(config, sockets=[sock]).run()
        finally:
            sock.close()
        failed = flag.exists()
        flag.unlink(missing_ok=True)
    return 1 if failed else 0
