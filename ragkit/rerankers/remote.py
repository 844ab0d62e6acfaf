"""``RemoteReranker``: scores from a rerank API (Cohere, Jina, vLLM, infinity, TEI, ``ragkit serve``).

Two wire shapes exist. The Cohere shape (Cohere ``/v2/rerank``, Jina, vLLM, infinity, ragkit) sends
``model``, ``query``, ``documents`` and ``top_n`` and gets ``results[{index, relevance_score}]``; the TEI
shape sends ``query`` and ``texts`` and gets a bare list of ``{index, score}``. Both answer best first,
so results are always mapped back by ``index``, never by list order.

Example:
    >>> from ragkit.rerankers import RemoteReranker
    >>> rr = RemoteReranker("Qwen/Qwen3-Reranker-0.6B", provider="vllm")
    >>> rr.score("capital of France", ["Paris is the capital.", "Bananas."])  # doctest: +SKIP
    array([0.97, 0.01], dtype=float32)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ragkit._http import HTTPClient, RetryPolicy, amap_concurrent, map_concurrent
from ragkit._remote import RemoteClient
from ragkit.embedders.base import check_texts
from ragkit.errors import ConfigError, RemoteError
from ragkit.providers import RERANK_PROVIDERS, Provider, resolve_provider
from ragkit.types import check_text

__all__ = ["RemoteReranker"]


class RemoteReranker(RemoteClient):
    """Scores documents against a query through a hosted or self-hosted rerank API.

    It sends the raw query and documents. A server hosting Qwen3-Reranker formats the model's prompt
    itself (vLLM needs to be started with the Qwen3 reranker template; see the README), so the scores
    are P(yes) as with the local :class:`~ragkit.rerankers.Qwen3Reranker`.

    Long candidate lists are split into requests under the provider's limit, sent concurrently, and
    merged by ``index``.

    Args:
        model: the model name, sent as ``model`` in the Cohere shape (TEI serves one model and gets none).
        base_url: the server root (``http://host:8000``); the provider's path (``/v1/rerank``) is
            appended, and a root that already ends in that path's ``/v1`` or ``/v2`` is accepted too.
        api_key: the key; defaults to the provider's variable (``CO_API_KEY`` or ``COHERE_API_KEY``,
            ``JINA_API_KEY``; optional ``VLLM_API_KEY``, ``INFINITY_API_KEY``, ``RAGKIT_API_KEY``).
            Missing for a cloud provider, it raises :class:`~ragkit.errors.ConfigError` here.
        provider: ``"cohere"``, ``"jina"``, ``"vllm"``, ``"tei"``, ``"infinity"``, ``"ragkit"``,
            ``"cohere-compatible"`` (any Cohere-shape server at ``{base_url}/v1/rerank``, the default
            when only ``base_url`` is given) or a :class:`~ragkit.providers.Provider`.
        api: the wire shape, ``"cohere"`` or ``"tei"``; defaults to the provider's.
        batch_size: documents per request; defaults to the provider's limit (TEI: 32, Cohere and
            Jina: 1000), else all in one request.
        max_concurrency: requests in flight at once.
        timeout: seconds for connect, read and write of each request.
        max_retries: retries of a failed request.
        max_retry_time: seconds after which no retry starts.
        backoff: the first retry wait in seconds, doubled each retry (jittered).

    Example:
        >>> rr = RemoteReranker("BAAI/bge-reranker-v2-m3", provider="tei", base_url="http://gpu:8080")
        >>> rr.spec()["api"]
        'tei'
    """

    _presets = RERANK_PROVIDERS
    _default_provider = None
    _generic_provider = "cohere-compatible"
    _role = "reranker"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        provider: str | Provider | Mapping[str, Any] | None = None,
        api: Literal["cohere", "tei"] | None = None,
        batch_size: int | None = None,
        max_concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 5,
        max_retry_time: float = 120.0,
        backoff: float = 0.5,
    ) -> None:
        check_text(model, "model")
        self.model = model
        self._preset, base = resolve_provider(
            provider, base_url, self._presets, default=self._default_provider, generic=self._generic_provider
        )
        if api is None:
            api = self._preset.api  # type: ignore[assignment]
        if api not in ("cohere", "tei"):
            raise ConfigError(f"api must be 'cohere' or 'tei', got {api!r}")
        self._api: Literal["cohere", "tei"] = api  # type: ignore[assignment]
        self._wire_model = self._preset.wire_model(model)

        # A root that already ends in the path's version segment ("http://h/v1" + "/v1/rerank").
        path = self._preset.path
        head = "/" + path.lstrip("/").split("/", 1)[0]
        if head != path and base.partition("?")[0].endswith(head):
            path = path[len(head) :]
        self._path = path

        limit = self._preset.max_batch
        if batch_size is not None:
            if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
                raise ConfigError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
            if limit is not None and batch_size > limit:
                raise ConfigError(
                    f"provider {self._preset.name!r} accepts at most {limit} documents per request; "
                    f"got batch_size={batch_size}"
                )
        self._batch_arg = batch_size
        self._batch_size = batch_size or limit
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be an int >= 1, got {max_concurrency!r}")
        self._max_concurrency = max_concurrency

        key = self._preset.api_key(api_key)
        self._http = HTTPClient(
            base,
            provider=self._preset.name,
            api_key=key,
            key_hint=f" ({' / '.join(self._preset.key_env)})" if self._preset.key_env and not api_key else "",
            timeout=timeout,
            retry=RetryPolicy(max_retries=max_retries, backoff=backoff, max_retry_time=max_retry_time),
            max_connections=max_concurrency,
        )

    def __repr__(self) -> str:
        return (
            f"RemoteReranker({self.model!r}, provider={self._preset.name!r}, "
            f"url={self._http.public_url(self._path)!r}, api={self._api!r})"
        )

    def spec(self) -> dict[str, Any]:
        """How to rebuild this reranker (``class`` plus keyword arguments). Never contains the API key.

        Example:
            >>> RemoteReranker("rerank-v3.5", provider="cohere", api_key="k").spec()["provider"]
            'cohere'
        """
        name = self._preset.name
        preset = name if RERANK_PROVIDERS.get(name) == self._preset else self._preset.to_dict()
        return {
            "class": "ragkit.rerankers.RemoteReranker",
            "model": self.model,
            "provider": preset,
            "base_url": self._http.public_url(),
            "api": self._api,
            "batch_size": self._batch_arg,
            "max_concurrency": self._max_concurrency,
            "timeout": self._http.timeout,
            "max_retries": self._http.retry.max_retries,
            "max_retry_time": self._http.retry.max_retry_time,
            "backoff": self._http.retry.backoff,
        }

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Relevance of each document to ``query``: float32, in the order of ``documents``.

        Example:
            >>> rr.score("capital of France", ["Paris is the capital.", "Bananas."])  # doctest: +SKIP
            array([0.97, 0.01], dtype=float32)
        """
        check_text(query, "query")
        docs = check_texts(documents, "documents")
        if not docs:
            return np.empty(0, dtype=np.float32)

        def one(batch: list[str]) -> np.ndarray:
            return self._decode(self._http.post(self._path, self._payload(query, batch)), len(batch))

        return self._merge(map_concurrent(one, self._batches(docs), self._max_concurrency))

    async def ascore(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """The async twin of :meth:`score` (``httpx.AsyncClient`` end to end).

        Example:
            >>> await rr.ascore("capital of France", ["Paris is the capital."])  # doctest: +SKIP
            array([0.97], dtype=float32)
        """
        check_text(query, "query")
        docs = check_texts(documents, "documents")
        if not docs:
            return np.empty(0, dtype=np.float32)

        async def one(batch: list[str]) -> np.ndarray:
            return self._decode(await self._http.apost(self._path, self._payload(query, batch)), len(batch))

        return self._merge(await amap_concurrent(one, self._batches(docs), self._max_concurrency))

    # -- requests ------------------------------------------------------------------------------------

    def _batches(self, docs: list[str]) -> list[list[str]]:
        n = self._batch_size or len(docs)
        return [docs[i : i + n] for i in range(0, len(docs), n)]

    def _payload(self, query: str, batch: list[str]) -> dict[str, Any]:
        if self._api == "tei":
            return {"query": query, "texts": batch}
        return {"model": self._wire_model, "query": query, "documents": batch, "top_n": len(batch)}

    @staticmethod
    def _merge(parts: list[np.ndarray]) -> np.ndarray:
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _error(self, message: str, body: Any = None) -> RemoteError:
        redact = self._http.redact  # an answer may echo the key or the URL back
        text = None if body is None else redact(json.dumps(body)[:2000])
        return RemoteError(
            redact(f"{self._preset.name}: POST {self._http.public_url(self._path)}: {message}")
            + (f": {text[:200]}" if text else ""),
            status_code=200,
            body=text,
            provider=self._preset.name,
        )

    def _decode(self, body: Any, n: int) -> np.ndarray:
        """The scores of one answer in input order, mapped by ``index``."""
        # TEI answers a bare list, the Cohere shape {"results": [...]}; accept either, whatever was sent.
        results = body.get("results") if isinstance(body, dict) else body
        if not isinstance(results, list):
            raise self._error(f"expected a list of results ({self._api} shape)", body)
        if len(results) != n:
            raise self._error(f"sent {n} documents, the answer scores {len(results)}")
        keys = ("score", "relevance_score") if self._api == "tei" else ("relevance_score", "score")
        scores = np.full(n, np.nan, dtype=np.float32)
        seen = np.zeros(n, dtype=bool)
        for item in results:
            index = item.get("index") if isinstance(item, dict) else None
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n:
                raise self._error(f"a result has no valid 'index' (0..{n - 1})", item)
            if seen[index]:
                raise self._error(f"index {index} appears twice")
            value = next((item[k] for k in keys if k in item), None)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise self._error(f"result {index} has no finite score", item)
            scores[index] = value
            seen[index] = True
        return scores
