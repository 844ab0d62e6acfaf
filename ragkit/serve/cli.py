"""``ragkit serve``: the command line (arguments, logging, and the uvicorn server until SIGINT / SIGTERM).

Besides the models and their limits: where the API keys come from (``--api-key``, ``RAGKIT_API_KEYS``,
``--api-key-file``: :mod:`ragkit.serve.keys`), the transport's time-outs and connection cap
(``--header-timeout``, ``--body-timeout``, ``--write-timeout``, ``--max-connections``:
:mod:`ragkit.serve.transport`),
``/metrics`` (``--metrics-auth``, ``--no-metrics``: :mod:`ragkit.serve.metrics`), worker processes
(``--workers``: :mod:`ragkit.serve.workers`) and the proxies trusted for ``X-Forwarded-*``
(``--forwarded-allow-ips``).

Example:
    $ RAGKIT_API_KEYS=k-1,k-2 ragkit serve --index my-index/ --host 0.0.0.0 --workers 2
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
from typing import Any

from ragkit.errors import RagkitError
from ragkit.serve.app import DEFAULTS, create_app, service_of
from ragkit.serve.background import uvicorn_server
from ragkit.serve.keys import ENV_VAR, KeyRedactor, collect_api_keys
from ragkit.serve.transport import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_WRITE_TIMEOUT,
    ConnectionGuard,
    raise_nofile_limit,
)

__all__ = ["serve_main"]

logger = logging.getLogger("ragkit")

# The tunable limits of `ragkit serve`: flag, type, help (defaults in DEFAULTS under the flag's name).
_NUMERIC_OPTIONS = (
    ("--max-batch-tokens", int, "tokens gathered into one model call (default: 8192 on CPU, 65536 on CUDA)"),
    ("--max-request-tokens", int, "tokens one request may cost; over it the answer is 413"),
    ("--max-queue", int, "requests waiting per model before the server answers 503"),
    ("--batch-wait-ms", float, "milliseconds to wait for more requests when a batch is not full"),
    ("--max-inputs", int, "inputs (or rerank documents) per request"),
    ("--max-input-chars", int, "characters per input"),
    ("--max-body-bytes", int, "bytes per request body"),
)


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
        help=f"accepted bearer key(s); visible in ps: prefer {ENV_VAR} (comma-separated) or --api-key-file. "
        "Without any key, no authentication",
    )
    p.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="a file of accepted bearer keys, one per line ('#' comments and blank lines ignored)",
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
    p.add_argument("--docs", action="store_true", help="serve the interactive API documentation at /docs")
    for flag, kind, help_text in _NUMERIC_OPTIONS:
        name = flag.lstrip("-").replace("-", "_")
        p.add_argument(
            flag,
            type=kind,
            default=DEFAULTS[name],
            metavar="N",
            help=help_text if DEFAULTS[name] is None else f"{help_text} (default: %(default)s)",
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
        help="torch threads of each server process, for a shared machine (default: torch's, at most the "
        "usable CPUs; with --workers N, the usable CPUs // N)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="server processes sharing the port, each with its own models; torch threads are divided "
        "between them unless --threads is given (default: 1)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT,
        metavar="S",
        help="seconds for a request's line and headers, from connect or the request's first byte; then 408 "
        "(default: %(default)g)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT,
        metavar="S",
        help="seconds for a request's body once its headers are in; then 408 (default: %(default)g)",
    )
    p.add_argument(
        "--write-timeout",
        type=float,
        default=DEFAULT_WRITE_TIMEOUT,
        metavar="S",
        help="seconds an answer may stay unread by the client (its socket buffer full); then the "
        "connection closes (default: %(default)g)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="open connections per process, lowered to fit the open-file limit; over it the connection "
        "idle the longest is closed, else the slowest client (default: %(default)s)",
    )
    p.add_argument(
        "--metrics-auth", action="store_true", help="/metrics asks for the API key too (default: open)"
    )
    p.add_argument("--no-metrics", dest="metrics", action="store_false", help="do not serve /metrics")
    p.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        default=None,
        help="comma-separated proxy addresses whose X-Forwarded-For / X-Forwarded-Proto are believed "
        "(default: $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1)",
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


def _log_to_stderr(level: str) -> None:
    root = logging.getLogger()
    if not logger.handlers and not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    # Third-party libraries (faiss's loader, transformers) say INFO only with --log-level debug.
    root.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


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
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    _log_to_stderr(args.log_level)
    try:
        keys = collect_api_keys(args.api_keys, key_file=args.api_key_file)
        # The filter goes on ragkit's handler now, and on uvicorn's once uvicorn has configured them.
        redactor = KeyRedactor(keys)
        redactor.install()
        guard = ConnectionGuard(
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            write_timeout=args.write_timeout,
            max_connections=args.max_connections,
        )
        options: dict[str, Any] = {
            "embedder": args.embedder,
            "reranker": args.reranker,
            "index": args.index,
            "trust_hosts": args.trust_hosts,
            "served_model_names": args.served_model_names,
            "api_keys": keys,
            "device": args.device,
            "dtype": args.dtype,
            "max_batch_tokens": args.max_batch_tokens,
            "max_request_tokens": args.max_request_tokens,
            "max_queue": args.max_queue,
            "batching": args.batching,
            "batch_wait_ms": args.batch_wait_ms,
            "max_inputs": args.max_inputs,
            "max_input_chars": args.max_input_chars,
            "max_body_bytes": args.max_body_bytes,
            "docs": args.docs,
        }
        server_options: dict[str, Any] = {"host": args.host, "port": args.port, "log_level": args.log_level}
        if args.forwarded_allow_ips is not None:
            server_options["forwarded_allow_ips"] = args.forwarded_allow_ips
        raise_nofile_limit()  # before the workers start: they inherit it
        if not _is_loopback(args.host) and not keys:
            logger.warning(
                "ragkit serve: listening on %s without an API key: anyone who can reach it may use it",
                args.host,
            )
        if args.workers > 1:
            return _run_workers(args, options, guard, server_options)
        if args.threads is not None:
            from ragkit import runtime

            runtime.set_threads(args.threads)
        observer = None
        if args.metrics:
            from ragkit.serve.metrics import Metrics

            observer = Metrics(require_key=args.metrics_auth)
        app = create_app(**options, observer=observer)
        server = uvicorn_server(app, guard=guard, **server_options)
        redactor.install()
    except RagkitError as e:
        logger.error("ragkit serve: %s", e)
        return 1
    service = service_of(app)
    assert service is not None

    def stop(_: BaseException) -> None:
        server.should_exit = True

    service.on_load_error = stop
    server.run()
    return 1 if service.status == "failed" else 0


def _run_workers(
    args: argparse.Namespace, options: dict[str, Any], guard: Any, server: dict[str, Any]
) -> int:
    from ragkit.serve.workers import WorkerApp, run_workers, threads_per_worker

    recipe = WorkerApp(
        options,
        threads=args.threads if args.threads is not None else threads_per_worker(args.workers),
        metrics=args.metrics,
        metrics_auth=args.metrics_auth,
        log_level=args.log_level,
        guard=guard,
    )
    logger.info("ragkit serve: %d workers, %d torch threads each", args.workers, recipe.threads)
    return run_workers(recipe, workers=args.workers, **server)
