"""The HTTP layer shared by the remote embedder and reranker: one retry policy, typed errors.

Both clients post JSON through :class:`HTTPClient`, which has a sync (``httpx.Client``) and an async
(``httpx.AsyncClient``) path. The decisions (retry or not, how long to wait, which error to raise) live in
:class:`_Attempts`, so the two loops that call it stay a few lines each and cannot drift apart.

Retried: connection errors, timeouts, HTTP 408, 409, 429 and 5xx. The wait honours ``retry-after-ms`` and
``retry-after`` (seconds or an HTTP date) and otherwise backs off exponentially with jitter; retries stop
after ``max_retries`` or when the next wait would pass ``max_retry_time`` seconds since the first try.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx

from ragkit._secrets import redact_text, redact_url, url_secrets
from ragkit.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    RateLimitError,
    RemoteError,
    UnavailableError,
)

__all__ = [
    "HTTPClient",
    "RetryPolicy",
    "amap_concurrent",
    "map_concurrent",
    "parse_retry_after",
    "public_url",
]

logger = logging.getLogger("ragkit")

T = TypeVar("T")
R = TypeVar("R")

RETRY_STATUSES = frozenset({408, 409, 429})
_BODY_LIMIT = 2000  # characters of a response body kept on the error
_EXCERPT_LIMIT = 300  # characters of it quoted in the message
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "x-vercel-id", "cf-ray")


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    Args:
        max_retries: retries after the first try (so at most ``max_retries + 1`` requests).
        backoff: the first wait in seconds; each later one doubles, up to ``max_backoff``, and is
            multiplied by a random factor in [0.5, 1] (jitter) so that clients do not retry in step.
        max_backoff: the longest computed wait.
        max_retry_time: no retry starts later than this many seconds after the first try; a
            ``retry-after`` that would pass it ends the retries at once.

    Example:
        >>> RetryPolicy(backoff=1.0).backoff_delay(3) <= 8.0
        True
    """

    max_retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_time: float = 120.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        for name in ("backoff", "max_backoff", "max_retry_time"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")

    def backoff_delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (0-based) when the server gave no ``retry-after``."""
        return min(self.max_backoff, self.backoff * 2**retry) * random.uniform(0.5, 1.0)


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """The wait the server asks for, in seconds, from ``retry-after-ms`` or ``retry-after``.

    ``retry-after`` may be a number of seconds or an HTTP date. Unparseable values are ignored.

    Example:
        >>> parse_retry_after({"retry-after-ms": "250"})
        0.25
        >>> parse_retry_after({"retry-after": "2"})
        2.0
        >>> from datetime import datetime, timezone
        >>> now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
        >>> parse_retry_after({"retry-after": "Wed, 01 Jan 2025 12:00:03 GMT"}, now=now)
        3.0
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def public_url(url: str) -> str:
    """``url`` for ``spec()``, ``repr()`` and messages: :func:`ragkit._secrets.redact_url`.

    No ``user:password@`` part, and credential query parameters (``api-key``, ``sig``, ...) masked.

    Example:
        >>> public_url("https://me:secret@example.com/v1?api-key=k1")
        'https://example.com/v1?api-key=***'
    """
    return redact_url(url)


def _excerpt(text: str, limit: int = _EXCERPT_LIMIT) -> str:
    """A readable one-line excerpt of a body; HTML pages lose their tags, scripts and styles."""
    if "<" in text[:200] and re.search(r"<(html|head|body|title|h1|!doctype)", text[:1000], re.I):
        text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", text)
        text = re.sub(r"(?s)<[^>]*>", " ", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _server_message(response: httpx.Response) -> str:
    """The error message a server put in its body, for every shape seen in the wild.

    ``{"error": {"message", "type", "code"}}`` (OpenAI, vLLM, DashScope), ``{"error": "...",
    "error_type": ...}`` (TEI), flat ``{"message", "type", "code"}`` (older vLLM, Cohere),
    ``{"detail": ...}`` (FastAPI, Jina), or anything else as an excerpt of the body.
    """
    text = response.text
    try:
        data = response.json()
    except ValueError:
        return _excerpt(text) if text.strip() else "(empty body)"
    if not isinstance(data, dict):
        return _excerpt(text)
    err = data.get("error")
    if isinstance(err, dict):
        source, message = err, err.get("message")
    elif isinstance(err, str):
        source, message = data, err
    else:
        source, message = data, data.get("message") or data.get("detail") or data.get("msg")
    if isinstance(message, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}, ...]
        message = "; ".join(
            f"{'.'.join(map(str, m.get('loc', ())))}: {m.get('msg')}" if isinstance(m, dict) else str(m)
            for m in message
        )
    if not isinstance(message, str) or not message:
        return _excerpt(text)
    extra = [
        f"{key}={source[key]}"
        for key in ("type", "error_type", "code")
        if isinstance(source.get(key), (str, int)) and source.get(key) != ""
    ]
    return _excerpt(message, 1000) + (f" [{', '.join(extra)}]" if extra else "")


def _request_id(response: httpx.Response) -> str | None:
    for name in _REQUEST_ID_HEADERS:
        if name in response.headers:
            return response.headers[name]
    return None


class _Attempts:
    """The retry decisions for one logical request; both the sync and the async loop call it.

    ``on_response`` returns ``None`` when the response is a success, a wait in seconds when the request
    should be tried again, and raises the typed error when it should not. ``on_error`` does the same
    for an exception raised by httpx (no response at all).
    """

    def __init__(self, client: HTTPClient, url: str) -> None:
        self.client = client
        self.url = public_url(url)  # only ever shown: in logs and messages
        self.tries = 0
        self.start = time.monotonic()

    def _wait(self, retry_after: float | None) -> float | None:
        policy = self.client.retry
        if self.tries > policy.max_retries:
            return None
        delay = retry_after if retry_after is not None else policy.backoff_delay(self.tries - 1)
        if time.monotonic() - self.start + delay > policy.max_retry_time:
            return None
        return delay

    def _after(self) -> str:
        return f" after {self.tries} attempts" if self.tries > 1 else ""

    def on_response(self, response: httpx.Response) -> float | None:
        self.tries += 1
        status = response.status_code
        if status < 300:
            return None
        retry_after = parse_retry_after(response.headers)
        if status in RETRY_STATUSES or status >= 500:
            delay = self._wait(retry_after)
            if delay is not None:
                logger.info(
                    "%s: HTTP %d from %s, retry %d in %.2fs",
                    self.client.provider,
                    status,
                    self.url,
                    self.tries,
                    delay,
                )
                return delay
        raise self._status_error(response, retry_after)

    def on_error(self, exc: httpx.RequestError) -> float:
        self.tries += 1
        provider, url, redact = self.client.provider, self.url, self.client.redact
        # httpx texts may repeat the URL (userinfo, query): shown scrubbed, and a cause that holds a
        # secret is not chained, since a traceback would print it.
        text, rtext = redact(str(exc)), redact(repr(exc))
        cause = exc if (text, rtext) == (str(exc), repr(exc)) else None
        if isinstance(exc, httpx.UnsupportedProtocol):
            raise ConfigError(f"{provider}: cannot request {url}: {text}") from cause
        if not isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
            raise RemoteError(f"{provider}: POST {url} failed: {rtext}", provider=provider) from cause
        delay = self._wait(None)
        if delay is not None:
            logger.info("%s: %s from %s, retry %d in %.2fs", provider, rtext, url, self.tries, delay)
            return delay
        if isinstance(exc, httpx.TimeoutException):
            what = f"timed out (timeout={self.client.timeout:g}s)"
        elif isinstance(exc, httpx.ConnectError):
            what = f"could not connect ({text})"
        else:
            what = f"failed: {rtext}"
        raise UnavailableError(f"{provider}: POST {url} {what}{self._after()}", provider=provider) from cause

    def _status_error(self, response: httpx.Response, retry_after: float | None) -> RemoteError:
        status, provider, redact = response.status_code, self.client.provider, self.client.redact
        message = redact(_server_message(response))  # a server may echo the key or the URL back
        head = f"{provider}: HTTP {status} from POST {self.url}{self._after()}: {message}"
        kwargs: dict[str, Any] = {
            "status_code": status,
            "body": redact(response.text[:_BODY_LIMIT]),
            "provider": provider,
            "request_id": _request_id(response),
        }
        if kwargs["request_id"]:
            head += f" (request id {kwargs['request_id']})"
        if status in (401, 403):
            return AuthenticationError(f"{head}; check the API key{self.client.key_hint}", **kwargs)
        if status in (400, 413, 422):
            return BadRequestError(head, **kwargs)
        if status in RETRY_STATUSES or status >= 500:
            policy = self.client.retry
            if self.tries <= policy.max_retries:  # stopped by the time budget, not the retry count
                wait = f"waiting {retry_after:g}s as asked" if retry_after is not None else "another retry"
                head += f"; gave up: {wait} would pass max_retry_time={policy.max_retry_time:g}s"
            return (RateLimitError if status == 429 else UnavailableError)(head, **kwargs)
        if 300 <= status < 400:
            where = redact(public_url(response.headers.get("location", "?")))
            return RemoteError(f"{head}; redirected to {where}: check base_url", **kwargs)
        if status == 404:
            return RemoteError(f"{head}; check base_url and the model name", **kwargs)
        return RemoteError(head, **kwargs)


def _json(response: httpx.Response, client: HTTPClient, url: str) -> Any:
    try:
        return response.json()
    except ValueError as e:
        excerpt = client.redact(_excerpt(response.text)) or "(empty)"
        raise RemoteError(
            f"{client.provider}: the answer to POST {public_url(url)} is not valid JSON: {excerpt}",
            status_code=response.status_code,
            body=client.redact(response.text[:_BODY_LIMIT]),
            provider=client.provider,
            request_id=_request_id(response),
        ) from e


class HTTPClient:
    """Posts JSON to one service with retries; a sync and an async path over pooled connections.

    The sync ``httpx.Client`` is created on first use and is safe to share between threads. Async
    calls use one ``httpx.AsyncClient`` per event loop (a client cannot outlive or change its loop,
    and notebooks and ``asyncio.run`` create several).

    The API key, the URL's userinfo and its credential query parameters are secrets: every message,
    log line and ``repr`` shows the URL through :func:`public_url` and passes other text (httpx's
    exception texts, server answers, redirect targets) through :meth:`redact`.

    Args:
        base_url: the API root; paths are appended to its path (before a ``?query``, which is kept).
        provider: the preset name, carried by every error.
        api_key: sent as ``Authorization: Bearer``; never logged or shown.
        key_hint: appended to authentication errors (for example the environment variable read).
        timeout: seconds for each of connect, read and write.
        retry: the retry policy.
        max_connections: the least connection pool size (100 or more; keep-alive for this many).

    Example:
        >>> client = HTTPClient("http://localhost:8000/v1", provider="vllm")
        >>> client.url("/embeddings")
        'http://localhost:8000/v1/embeddings'
    """

    def __init__(
        self,
        base_url: str,
        *,
        provider: str,
        api_key: str | None = None,
        key_hint: str = "",
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 16,
    ) -> None:
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.base_url = base_url.rstrip("/")
        self.provider = provider
        self.key_hint = key_hint
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        self._headers = {"Accept": "application/json", "User-Agent": "ragkit"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._secrets = [*url_secrets(self.base_url), api_key]
        # Sized for many callers at once (a chatbot backend's worker threads), not only one call's batches.
        self._limits = httpx.Limits(
            max_connections=max(max_connections, 100), max_keepalive_connections=max(max_connections, 20)
        )
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._aclients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    def __repr__(self) -> str:
        return f"HTTPClient({public_url(self.base_url)!r}, provider={self.provider!r})"

    def url(self, path: str) -> str:
        """The full URL of ``path``: appended to the base URL's path, before its query if it has one.

        Example:
            >>> HTTPClient("https://h/v1?api-version=2", provider="p").url("/embeddings")
            'https://h/v1/embeddings?api-version=2'
        """
        base, qmark, query = self.base_url.partition("?")
        return base.rstrip("/") + path + qmark + query

    def public_url(self, path: str = "") -> str:
        """:meth:`url` of ``path`` without its secrets, for messages and ``repr``.

        Example:
            >>> HTTPClient("https://me:pw@h/v1?key=k", provider="p").public_url("/embeddings")
            'https://h/v1/embeddings?key=***'
        """
        return public_url(self.url(path))

    def redact(self, text: str) -> str:
        """``text`` with this client's secrets (key, userinfo, credential parameters) replaced by ``***``.

        Example:
            >>> HTTPClient("http://h/v1", provider="p", api_key="sk-12345").redact("bad key sk-12345")
            'bad key ***'
        """
        return redact_text(text, self._secrets)

    def _options(self) -> dict[str, Any]:
        return {"headers": self._headers, "timeout": httpx.Timeout(self.timeout), "limits": self._limits}

    def _sync_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None or self._client.is_closed:
                self._client = httpx.Client(**self._options())
            return self._client

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            # A closed loop's client can no longer be closed properly; dropping it frees its sockets.
            for old in [old for old in self._aclients if old.is_closed()]:
                del self._aclients[old]
            client = self._aclients.get(loop)
            if client is None or client.is_closed:
                client = self._aclients[loop] = httpx.AsyncClient(**self._options())
            return client

    def post(self, path: str, payload: Mapping[str, Any]) -> Any:
        """POST ``payload`` as JSON to ``path`` and return the decoded JSON answer, retrying as needed.

        Raises:
            AuthenticationError, BadRequestError, RateLimitError, UnavailableError, RemoteError.
        """
        url = self.url(path)
        attempts = _Attempts(self, url)
        client = self._sync_client()
        while True:
            try:
                response = client.post(url, json=payload)
            except httpx.InvalidURL as e:
                raise self._invalid_url(e) from None
            except httpx.RequestError as e:
                delay = attempts.on_error(e)
            else:
                delay = attempts.on_response(response)
                if delay is None:
                    return _json(response, self, url)
            time.sleep(delay)

    async def apost(self, path: str, payload: Mapping[str, Any]) -> Any:
        """The async twin of :meth:`post`."""
        url = self.url(path)
        attempts = _Attempts(self, url)
        client = self._async_client()
        while True:
            try:
                response = await client.post(url, json=payload)
            except httpx.InvalidURL as e:
                raise self._invalid_url(e) from None
            except httpx.RequestError as e:
                delay = attempts.on_error(e)
            else:
                delay = attempts.on_response(response)
                if delay is None:
                    return _json(response, self, url)
            await asyncio.sleep(delay)

    def _invalid_url(self, exc: httpx.InvalidURL) -> ConfigError:
        # Not chained: httpx's text is redacted here, the original would be printed as it is.
        return ConfigError(f"{self.provider}: invalid base_url {self.public_url()}: {self.redact(str(exc))}")

    def close(self) -> None:
        """Close the sync connection pool (async pools close with :meth:`aclose` on their loop)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the connection pools of the current event loop and the sync one."""
        self.close()
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._aclients.pop(loop, None)
        if client is not None:
            await client.aclose()


def map_concurrent(fn: Callable[[T], R], items: Sequence[T], max_concurrency: int) -> list[R]:
    """``[fn(x) for x in items]`` with up to ``max_concurrency`` calls in flight, results in input order.

    The first failure is raised once the calls already running have ended; calls not yet started are
    cancelled.

    Example:
        >>> map_concurrent(lambda x: x * x, [1, 2, 3], 2)
        [1, 4, 9]
    """
    if len(items) <= 1 or max_concurrency <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(max_concurrency, len(items)), thread_name_prefix="ragkit-http") as pool:
        futures = [pool.submit(fn, x) for x in items]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()


async def amap_concurrent(
    fn: Callable[[T], Awaitable[R]], items: Sequence[T], max_concurrency: int
) -> list[R]:
    """The async twin of :func:`map_concurrent`: at most ``max_concurrency`` awaits in flight.

    On the first failure the other calls are cancelled and awaited before the error is raised.

    Example:
        >>> async def double(x):
        ...     return 2 * x
        >>> asyncio.run(amap_concurrent(double, [1, 2], 4))
        [2, 4]
    """
    if len(items) == 1:
        return [await fn(items[0])]
    semaphore = asyncio.Semaphore(max(max_concurrency, 1))

    async def one(x: T) -> R:
        async with semaphore:
            return await fn(x)

    tasks = [asyncio.ensure_future(one(x)) for x in items]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
