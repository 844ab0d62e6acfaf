"""``OpenAIEmbedder``: embeddings from any OpenAI-compatible ``/v1/embeddings`` service.

One class covers OpenAI, OpenRouter, DeepInfra, Vercel AI Gateway, DashScope, vLLM,
text-embeddings-inference and ``ragkit serve``; what differs between them is data, in
:mod:`ragkit.providers`.

Example:
    >>> from ragkit.embedders import OpenAIEmbedder
    >>> emb = OpenAIEmbedder("Qwen/Qwen3-Embedding-0.6B", provider="vllm",
    ...                      base_url="http://localhost:8000/v1")  # doctest: +SKIP
    >>> emb.embed_queries(["what is ragkit?"]).shape  # doctest: +SKIP
    (1, 1024)
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ragkit._http import HTTPClient, RetryPolicy, amap_concurrent, map_concurrent
from ragkit._remote import RemoteClient
from ragkit.embedders.base import DEFAULT_QWEN3_TASK, canonical_model_name, check_texts, l2_normalize
from ragkit.errors import ConfigError, InputTypeError, RemoteError
from ragkit.providers import EMBEDDING_PROVIDERS, Provider, resolve_provider

__all__ = ["OpenAIEmbedder", "QWEN3_QUERY_TEMPLATE"]

logger = logging.getLogger("ragkit")

QWEN3_QUERY_TEMPLATE = "Instruct: {instruction}\nQuery:{text}"
"""The Qwen3-Embedding query format (model card); documents are embedded as they are."""

# Native sizes, for checking a requested dim (Matryoshka: 32 up to the native size).
_QWEN3_NATIVE_DIM = {"qwen3-embedding-0.6b": 1024, "qwen3-embedding-4b": 2560, "qwen3-embedding-8b": 4096}
# Families trained with Matryoshka loss: the first k components of a vector are a valid k-dim embedding.
_MRL_FAMILIES = ("qwen3-embedding", "text-embedding-3")
_DEFAULT_BATCH = 64
_PROBE_TEXT = "ragkit"
_PATH = "/embeddings"


def _excerpt(body: Any) -> str:
    text = json.dumps(body)[:200]
    return text + ("..." if len(text) == 200 else "")


class OpenAIEmbedder(RemoteClient):
    """Embeds texts through an OpenAI-compatible ``/v1/embeddings`` API.

    Inputs are split into batches under the provider's limit and sent concurrently; the answers are
    put back in input order by their ``index``, decoded (``base64`` is little-endian float32) and
    L2-normalised. Retries and errors follow :mod:`ragkit._http`.

    For Qwen3-Embedding models (canonical name starting with ``qwen3-embedding``) queries get
    ``"Instruct: {instruction}\\nQuery:{text}"`` before they are sent, since the API cannot know
    what is a query; documents are sent as they are. Against ``provider="ragkit"`` the client sends
    ``input_type="query"`` and ``instruction`` as extra fields instead, and the server applies the
    template, so it is applied exactly once either way.

    ``dim`` is known from the start when given. Otherwise it is learnt from the first answer, and
    reading :attr:`dim` (or :attr:`fingerprint`) before any call sends one tiny probe request.

    Args:
        model: the model name; a provider's own spelling or the Hugging Face id (a preset that knows
            the model translates it: ``"Qwen/Qwen3-Embedding-4B"`` reaches OpenRouter as
            ``"qwen/qwen3-embedding-4b"``).
        base_url: the API root that ``/embeddings`` is appended to (``http://host:8000/v1``). Defaults to
            the provider's; a URL on a known cloud host selects that provider's preset.
        api_key: the key; defaults to the provider's environment variable (``OPENAI_API_KEY``,
            ``OPENROUTER_API_KEY``, ``DEEPINFRA_API_KEY``, ``AI_GATEWAY_API_KEY``,
            ``DASHSCOPE_API_KEY``; optional ``VLLM_API_KEY``, ``RAGKIT_API_KEY``). A cloud provider
            without one raises :class:`~ragkit.errors.ConfigError` here, before any request, naming the
            variable. A custom ``base_url`` with no provider reads no variable: pass ``api_key``.
        provider: a preset name (``"openai"``, ``"openai-compatible"``, ``"openrouter"``,
            ``"deepinfra"``, ``"vercel"``, ``"dashscope"``, ``"vllm"``, ``"tei"``, ``"ragkit"``) or
            a :class:`~ragkit.providers.Provider`. Defaults to OpenAI, or to the preset of ``base_url``.
        dim: ask for vectors of this size (``dimensions`` on the wire), checked against the provider's
            allowed values before any request. ``None`` sends no ``dimensions``.
        encoding_format: ``"base64"``, ``"float"`` or ``"auto"`` (base64 where the provider supports
            it: a quarter of the bytes and exact float32).
        batch_size: inputs per request; defaults to 64, or less where the provider allows less.
        max_concurrency: requests in flight at once.
        timeout: seconds for connect, read and write of each request.
        max_retries: retries of a failed request (see :class:`~ragkit._http.RetryPolicy`).
        max_retry_time: seconds after which no retry starts.
        backoff: the first retry wait in seconds, doubled each retry (jittered).
        instruction: the query task. ``"auto"``: the Qwen3 default task for Qwen3-Embedding models,
            none for others; a string: that task, with the Qwen3 template; ``None``: queries are sent
            as they are.

    Raises:
        ConfigError: an unknown provider, a missing key, a ``dim`` or ``batch_size`` the provider
            does not accept, an encoding it does not support.

    Example:
        >>> emb = OpenAIEmbedder("text-embedding-v4", provider="dashscope", dim=512,
        ...                      api_key="sk-...")
        >>> emb.dim, emb.spec()["provider"]
        (512, 'dashscope')
    """

    _presets = EMBEDDING_PROVIDERS
    _default_provider = "openai"
    _generic_provider = "openai-compatible"
    _role = "embedder"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        provider: str | Provider | Mapping[str, Any] | None = None,
        dim: int | None = None,
        encoding_format: Literal["auto", "base64", "float"] = "auto",
        batch_size: int | None = None,
        max_concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 5,
        max_retry_time: float = 120.0,
        backoff: float = 0.5,
        instruction: str | None = "auto",
    ) -> None:
        self.model = model
        self._canonical = canonical_model_name(model)
        self._preset, base = resolve_provider(
            provider, base_url, self._presets, default=self._default_provider, generic=self._generic_provider
        )
        if self._preset.api != "openai":
            raise ConfigError(f"provider {self._preset.name!r} is not an embeddings API")
        self._wire_model = self._preset.wire_model(model)
        self._qwen3 = self._canonical.startswith("qwen3-embedding")
        self._mrl = self._canonical.startswith(_MRL_FAMILIES)

        self._dim_arg = self._check_dim(dim)
        self._dim: int | None = self._dim_arg

        if encoding_format == "auto":
            encoding_format = "base64" if "base64" in self._preset.encodings else "float"  # type: ignore[assignment]
        if encoding_format not in ("base64", "float"):
            raise ConfigError(f"encoding_format must be 'auto', 'base64' or 'float', got {encoding_format!r}")
        if encoding_format not in self._preset.encodings:
            raise ConfigError(
                f"provider {self._preset.name!r} supports encoding_format "
                f"{' or '.join(map(repr, self._preset.encodings))}, not {encoding_format!r}"
            )
        self._encoding = encoding_format

        limit = self._preset.max_batch
        if batch_size is None:
            batch_size = min(_DEFAULT_BATCH, limit or _DEFAULT_BATCH)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if limit is not None and batch_size > limit:
            raise ConfigError(
                f"provider {self._preset.name!r} accepts at most {limit} inputs per request; "
                f"got batch_size={batch_size}"
            )
        self._batch_size = batch_size
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be an int >= 1, got {max_concurrency!r}")
        self._max_concurrency = max_concurrency

        if instruction == "auto":
            self._task = DEFAULT_QWEN3_TASK if self._qwen3 else None
        elif instruction is None or isinstance(instruction, str):
            self._task = instruction
        else:
            raise ConfigError(f"instruction must be 'auto', a str or None, got {type(instruction).__name__}")
        self._instruction_arg = instruction

        key = self._preset.api_key(api_key)
        retry = RetryPolicy(max_retries=max_retries, backoff=backoff, max_retry_time=max_retry_time)
        self._http = HTTPClient(
            base,
            provider=self._preset.name,
            api_key=key,
            key_hint=f" ({' / '.join(self._preset.key_env)})" if self._preset.key_env and not api_key else "",
            timeout=timeout,
            retry=retry,
            max_connections=max_concurrency,
        )

    def _check_dim(self, dim: int | None) -> int | None:
        if dim is None:
            return None
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ConfigError(f"dim must be a positive int or None, got {dim!r}")
        allowed = self._preset.dimensions
        if allowed is not None and dim not in allowed:
            raise ConfigError(
                f"provider {self._preset.name!r} accepts dim in {sorted(allowed)}, got {dim} "
                "(no request was sent)"
            )
        native = _QWEN3_NATIVE_DIM.get(self._canonical)
        if native is not None and not 32 <= dim <= native:
            raise ConfigError(f"{self._canonical} supports dim from 32 to {native}, got {dim}")
        return dim

    def __repr__(self) -> str:
        return (
            f"OpenAIEmbedder({self.model!r}, provider={self._preset.name!r}, "
            f"base_url={self._http.public_url()!r}, dim={self._dim!r})"
        )

    # -- the Embedder protocol ------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """The vector size: ``dim`` when given, else learnt from the first answer.

        Reading it before any embedding call sends one probe request (one short input).
        """
        if self._dim is None:
            self.embed_documents([_PROBE_TEXT])
        assert self._dim is not None
        return self._dim

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What makes two vector sets comparable; equal to a local ``Qwen3Embedder``'s for the same model.

        A Qwen3-Embedding model served remotely runs the same network (last-token pooling) with the
        same query template, so its fingerprint has ``pooling="last"`` and compares equal to the local
        one of the same model, ``dim`` and instruction. Other models get ``pooling="remote"``.
        Templates use the local embedder's notation: ``"{text}"`` is a text sent as it is.

        Example:
            >>> OpenAIEmbedder("bge-m3", provider="tei", dim=1024).fingerprint["pooling"]
            'remote'
        """
        return {
            "model": self._canonical,
            "dim": self.dim,
            "pooling": "last" if self._qwen3 else "remote",
            "normalize": True,
            "query_template": QWEN3_QUERY_TEMPLATE if self._task is not None else "{text}",
            "document_template": "{text}",
            "instruction": self._task,
        }

    def spec(self) -> dict[str, Any]:
        """How to rebuild this embedder (``class`` plus keyword arguments). Never contains the API key.

        Example:
            >>> OpenAIEmbedder("bge-m3", provider="tei").spec()["class"]
            'ragkit.embedders.OpenAIEmbedder'
        """
        name = self._preset.name
        preset = name if EMBEDDING_PROVIDERS.get(name) == self._preset else self._preset.to_dict()
        return {
            "class": "ragkit.embedders.OpenAIEmbedder",
            "model": self.model,
            "provider": preset,
            "base_url": self._http.public_url(),
            "dim": self._dim_arg,
            "encoding_format": self._encoding,
            "batch_size": self._batch_size,
            "max_concurrency": self._max_concurrency,
            "timeout": self._http.timeout,
            "max_retries": self._http.retry.max_retries,
            "max_retry_time": self._http.retry.max_retry_time,
            "backoff": self._http.retry.backoff,
            "instruction": self._instruction_arg,
        }

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents as they are: a float32 array ``(len(texts), dim)`` of unit rows.

        Example:
            >>> emb.embed_documents(["Paris is the capital of France."]).shape  # doctest: +SKIP
            (1, 1024)
        """
        return self._embed(check_texts(texts), self._document_fields())

    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """Embed queries, with the instruction template where the model uses one.

        Args:
            texts: the queries.
            instruction: this call's task, instead of the one given at construction.

        Example:
            >>> emb.embed_queries(["capital of France?"]).shape  # doctest: +SKIP
            (1, 1024)
        """
        inputs, fields = self._query_inputs(check_texts(texts), instruction)
        return self._embed(inputs, fields)

    async def aembed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """The async twin of :meth:`embed_documents` (``httpx.AsyncClient`` end to end).

        Example:
            >>> await emb.aembed_documents(["Paris is the capital of France."])  # doctest: +SKIP
        """
        return await self._aembed(check_texts(texts), self._document_fields())

    async def aembed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """The async twin of :meth:`embed_queries`.

        Example:
            >>> await emb.aembed_queries(["capital of France?"])  # doctest: +SKIP
        """
        inputs, fields = self._query_inputs(check_texts(texts), instruction)
        return await self._aembed(inputs, fields)

    # -- requests ------------------------------------------------------------------------------------

    def _document_fields(self) -> dict[str, Any]:
        return {"input_type": "document"} if self._preset.server_instruction else {}

    def _query_inputs(self, texts: list[str], instruction: str | None) -> tuple[list[str], dict[str, Any]]:
        if instruction is not None and not isinstance(instruction, str):
            raise InputTypeError(f"instruction must be a str or None, got {type(instruction).__name__}")
        task = instruction if instruction is not None else self._task
        if self._preset.server_instruction:
            # The server applies the template; with "auto" and no known task it picks its model's own.
            if task is not None:
                return texts, {"input_type": "query", "instruction": task}
            return texts, ({"input_type": "query"} if self._instruction_arg == "auto" else {})
        if task is None:
            return texts, {}
        return [QWEN3_QUERY_TEMPLATE.format(instruction=task, text=t) for t in texts], {}

    def _batches(self, inputs: list[str]) -> list[list[str]]:
        n = self._batch_size
        return [inputs[i : i + n] for i in range(0, len(inputs), n)]

    def _payload(self, batch: list[str], fields: dict[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self._wire_model,
            "input": batch,
            "encoding_format": self._encoding,
        }
        if self._dim_arg is not None:
            payload["dimensions"] = self._dim_arg
        payload.update(fields)
        return payload

    def _embed(self, inputs: list[str], fields: dict[str, Any]) -> np.ndarray:
        if not inputs:
            return np.empty((0, self.dim), dtype=np.float32)

        def one(batch: list[str]) -> np.ndarray:
            return self._decode(self._http.post(_PATH, self._payload(batch, fields)), len(batch))

        return self._finish(map_concurrent(one, self._batches(inputs), self._max_concurrency))

    async def _aembed(self, inputs: list[str], fields: dict[str, Any]) -> np.ndarray:
        if not inputs:
            if self._dim is None:
                await self.aembed_documents([_PROBE_TEXT])
            return np.empty((0, self.dim), dtype=np.float32)

        async def one(batch: list[str]) -> np.ndarray:
            return self._decode(await self._http.apost(_PATH, self._payload(batch, fields)), len(batch))

        return self._finish(await amap_concurrent(one, self._batches(inputs), self._max_concurrency))

    def _error(self, message: str, body: Any = None) -> RemoteError:
        where = f"{self._preset.name}: POST {self._http.public_url(_PATH)}"
        redact = self._http.redact  # an answer may echo the key or the URL back
        return RemoteError(
            redact(f"{where}: {message}" + (f": {_excerpt(body)}" if body is not None else "")),
            status_code=200,
            body=None if body is None else redact(json.dumps(body)[:2000]),
            provider=self._preset.name,
        )

    def _decode(self, body: Any, n: int) -> np.ndarray:
        """The ``(n, width)`` float32 rows of one answer, in input order (by ``index``)."""
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise self._error("the answer has no 'data' list", body)
        if len(data) != n:
            raise self._error(
                f"sent {n} inputs, the answer has {len(data)} embeddings (len(data) != len(input))"
            )
        rows: list[np.ndarray | None] = [None] * n
        for item in data:
            index = item.get("index") if isinstance(item, dict) else None
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n:
                raise self._error(f"an item has no valid 'index' (0..{n - 1}): {_excerpt(item)[:80]}")
            if rows[index] is not None:
                raise self._error(f"index {index} appears twice")
            vector = item.get("embedding")
            if isinstance(vector, str):
                try:
                    raw = base64.b64decode(vector, validate=True)
                except (binascii.Error, ValueError) as e:
                    raise self._error(f"embedding {index} is not valid base64") from e
                if len(raw) % 4:
                    raise self._error(f"embedding {index} has {len(raw)} bytes, not a float32 array")
                rows[index] = np.frombuffer(raw, dtype="<f4")
            elif isinstance(vector, list):
                try:
                    rows[index] = np.asarray(vector, dtype=np.float32)
                except (TypeError, ValueError) as e:
                    raise self._error(f"embedding {index} is not a list of numbers") from e
            else:
                raise self._error(f"embedding {index} is neither a list of floats nor base64")
        widths = {r.shape for r in rows if r is not None}
        if len(widths) != 1 or len(next(iter(widths))) != 1 or next(iter(widths))[0] == 0:
            raise self._error(f"the embeddings have unequal or empty shapes: {sorted(widths)}")
        out = np.stack(rows).astype(np.float32)  # type: ignore[arg-type]
        if not np.isfinite(out).all():
            raise self._error("the answer contains NaN or infinite values")
        return out

    def _finish(self, parts: list[np.ndarray]) -> np.ndarray:
        vectors = parts[0] if len(parts) == 1 else np.concatenate(parts)
        width = vectors.shape[1]
        if self._dim_arg is not None and width != self._dim_arg:
            if not (self._mrl and width > self._dim_arg):
                raise self._error(
                    f"dim={self._dim_arg} was asked (dimensions={self._dim_arg}) but the vectors have "
                    f"{width} components: the server does not honour `dimensions` for this model"
                )
            # A Matryoshka model whose server ignored `dimensions`: truncating is the reference MRL step.
            logger.debug("%s ignored dimensions=%d; truncating client-side", self._preset.name, self._dim_arg)
            vectors = vectors[:, : self._dim_arg]
        elif self._dim is None:
            self._dim = width
        elif width != self._dim:
            raise self._error(f"the vectors have {width} components, earlier ones had {self._dim}")
        return l2_normalize(vectors)
