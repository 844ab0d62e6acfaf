"""Provider presets for the remote embedder and reranker: plain data, one entry per service.

A provider differs from another only in its URL, path, key variable, limits and model spellings, so
each is a :class:`Provider` value in :data:`EMBEDDING_PROVIDERS` or :data:`RERANK_PROVIDERS`, never a
class. Pass the name (``provider="dashscope"``) or your own :class:`Provider` to
:class:`~ragkit.embedders.remote.OpenAIEmbedder` and :class:`~ragkit.rerankers.remote.RemoteReranker`.

Example:
    >>> EMBEDDING_PROVIDERS["dashscope"].max_batch
    10
    >>> EMBEDDING_PROVIDERS["openrouter"].wire_model("Qwen/Qwen3-Embedding-4B")
    'qwen/qwen3-embedding-4b'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from ragkit._secrets import redact_url
from ragkit.embedders.base import canonical_model_name
from ragkit.errors import ConfigError

__all__ = ["EMBEDDING_PROVIDERS", "Provider", "RERANK_PROVIDERS", "resolve_provider"]

Api = Literal["openai", "cohere", "tei"]


@dataclass(frozen=True)
class Provider:
    """How to talk to one service: where it is, how to authenticate, and what it accepts.

    Args:
        name: the preset's name, as passed in ``provider=``.
        base_url: the default API root; the request path is appended to it.
        path: the request path under ``base_url`` (``"/embeddings"``, ``"/v2/rerank"``, ``"/rerank"``).
        api: the wire shape: ``"openai"`` (``/v1/embeddings``), ``"cohere"`` (``query``, ``documents``,
            ``top_n`` → ``results[{index, relevance_score}]``) or ``"tei"`` (``query``, ``texts`` → a bare
            list of ``{index, score}``).
        key_env: environment variables that may hold the API key, tried in order.
        key_required: whether a request without a key is pointless (cloud services) or normal (a local
            vLLM, TEI or ragkit server).
        max_batch: the most inputs (embeddings) or documents (rerank) one request may carry; ``None``
            when the service sets no limit.
        dimensions: the values of ``dimensions`` the service accepts; ``None`` when not checked here.
        encodings: the ``encoding_format`` values the service supports.
        model_names: canonical model name → the service's spelling of it, so that
            ``"Qwen/Qwen3-Embedding-4B"`` reaches OpenRouter as ``"qwen/qwen3-embedding-4b"``.
        server_instruction: the server applies the query instruction itself when told
            ``input_type="query"`` and ``instruction`` (ragkit's own server), so the client must not.

    Example:
        >>> local = Provider("my-vllm", base_url="http://gpu-box:8000/v1", key_required=False)
        >>> local.wire_model("Qwen/Qwen3-Embedding-0.6B")
        'Qwen/Qwen3-Embedding-0.6B'
    """

    name: str
    base_url: str
    path: str = "/embeddings"
    api: Api = "openai"
    key_env: tuple[str, ...] = ()
    key_required: bool = True
    max_batch: int | None = None
    dimensions: frozenset[int] | None = None
    encodings: tuple[str, ...] = ("base64", "float")
    model_names: Mapping[str, str] = field(default_factory=dict)
    server_instruction: bool = False

    def wire_model(self, model: str) -> str:
        """The model name to send: the service's spelling when this preset knows the model.

        Example:
            >>> EMBEDDING_PROVIDERS["vercel"].wire_model("Qwen3-Embedding-8B")
            'alibaba/qwen3-embedding-8b'
        """
        return self.model_names.get(canonical_model_name(model), model)

    def api_key(self, explicit: str | None) -> str | None:
        """The key to send: ``explicit`` if given, else the first variable of :attr:`key_env` that is set.

        Raises:
            ConfigError: the service needs a key and none was found; the message names the variable.

        Example:
            >>> EMBEDDING_PROVIDERS["vllm"].api_key(None) is None or True
            True
        """
        if explicit:
            return explicit
        for var in self.key_env:
            value = os.environ.get(var)
            if value:
                return value
        if self.key_required:
            where = f"set {' or '.join(self.key_env)} or pass api_key=" if self.key_env else "pass api_key="
            raise ConfigError(f"provider {self.name!r} needs an API key: {where}")
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of this preset (for ``spec()``); ``Provider(**d)`` rebuilds it.

        The ``base_url`` goes through :func:`ragkit._secrets.redact_url`: a password or an ``?api-key=``
        in it is not written out (a preset that holds one rebuilds without it).

        Example:
            >>> Provider(**EMBEDDING_PROVIDERS["tei"].to_dict()) == EMBEDDING_PROVIDERS["tei"]
            True
        """
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["base_url"] = redact_url(self.base_url)
        d["key_env"] = list(self.key_env)
        d["encodings"] = list(self.encodings)
        d["dimensions"] = sorted(self.dimensions) if self.dimensions is not None else None
        d["model_names"] = dict(self.model_names)
        return d

    def __post_init__(self) -> None:
        # Normalise the containers so that a preset rebuilt from JSON compares equal to the original.
        object.__setattr__(self, "key_env", tuple(self.key_env))
        object.__setattr__(self, "encodings", tuple(self.encodings))
        if self.dimensions is not None:
            object.__setattr__(self, "dimensions", frozenset(self.dimensions))
        object.__setattr__(self, "model_names", MappingProxyType(dict(self.model_names)))
        if self.api not in ("openai", "cohere", "tei"):
            raise ConfigError(f"Provider.api must be 'openai', 'cohere' or 'tei', got {self.api!r}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"Provider.max_batch must be >= 1 or None, got {self.max_batch!r}")

    def __hash__(self) -> int:
        # model_names is a mapping, so the generated hash would fail; these fields identify a preset.
        return hash((self.name, self.base_url, self.path, self.api))


def _spellings(fmt: str, sizes: tuple[str, ...] = ("0.6B", "4B", "8B")) -> dict[str, str]:
    # canonical "qwen3-embedding-4b" -> the provider's spelling of the same model
    return {f"qwen3-embedding-{s.lower()}": fmt.format(size=s, lsize=s.lower()) for s in sizes}


_DASHSCOPE_DIMS = frozenset({64, 128, 256, 512, 768, 1024, 1536, 2048})

EMBEDDING_PROVIDERS: Mapping[str, Provider] = MappingProxyType(
    {
        p.name: p
        for p in (
            Provider("openai", "https://api.openai.com/v1", key_env=("OPENAI_API_KEY",), max_batch=2048),
            # Any other OpenAI-compatible server, given by base_url. It reads no environment variable:
            # an OPENAI_API_KEY must not travel to a third-party URL unasked.
            Provider("openai-compatible", "", key_required=False),
            Provider(
                "openrouter",
                "https://openrouter.ai/api/v1",
                key_env=("OPENROUTER_API_KEY",),
                max_batch=2048,
                model_names=_spellings("qwen/qwen3-embedding-{lsize}"),
            ),
            Provider(
                "deepinfra",
                "https://api.deepinfra.com/v1/openai",
                key_env=("DEEPINFRA_API_KEY", "DEEPINFRA_TOKEN"),
                max_batch=1024,
                model_names=_spellings("Qwen/Qwen3-Embedding-{size}"),
            ),
            Provider(
                "vercel",
                "https://ai-gateway.vercel.sh/v1",
                key_env=("AI_GATEWAY_API_KEY", "VERCEL_AI_GATEWAY_API_KEY"),
                max_batch=2048,
                model_names=_spellings("alibaba/qwen3-embedding-{lsize}"),
            ),
            # Alibaba Cloud Model Studio, international endpoint; in mainland China use
            # base_url="https://dashscope.aliyuncs.com/compatible-mode/v1". Limits of text-embedding-v4.
            Provider(
                "dashscope",
                "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
                key_env=("DASHSCOPE_API_KEY",),
                max_batch=10,
                dimensions=_DASHSCOPE_DIMS,
                encodings=("float",),
            ),
            Provider("vllm", "http://localhost:8000/v1", key_env=("VLLM_API_KEY",), key_required=False),
            # text-embeddings-inference: --max-client-batch-size defaults to 32.
            Provider("tei", "http://localhost:8080/v1", key_required=False, max_batch=32),
            Provider(
                "ragkit",
                "http://localhost:8000/v1",
                key_env=("RAGKIT_API_KEY",),
                key_required=False,
                server_instruction=True,
            ),
        )
    }
)

RERANK_PROVIDERS: Mapping[str, Provider] = MappingProxyType(
    {
        p.name: p
        for p in (
            Provider(
                "cohere",
                "https://api.cohere.com",
                path="/v2/rerank",
                api="cohere",
                key_env=("CO_API_KEY", "COHERE_API_KEY"),
                max_batch=1000,
            ),
            Provider(
                "jina",
                "https://api.jina.ai",
                path="/v1/rerank",
                api="cohere",
                key_env=("JINA_API_KEY",),
                max_batch=1000,
            ),
            # Any server speaking the Cohere shape at {base_url}/v1/rerank (LiteLLM, SGLang, ...).
            Provider("cohere-compatible", "", path="/v1/rerank", api="cohere", key_required=False),
            Provider(
                "vllm",
                "http://localhost:8000",
                path="/v1/rerank",
                api="cohere",
                key_env=("VLLM_API_KEY",),
                key_required=False,
            ),
            Provider(
                "tei", "http://localhost:8080", path="/rerank", api="tei", key_required=False, max_batch=32
            ),
            Provider(
                "infinity",
                "http://localhost:7997",
                path="/rerank",
                api="cohere",
                key_env=("INFINITY_API_KEY",),
                key_required=False,
            ),
            Provider(
                "ragkit",
                "http://localhost:8000",
                path="/v1/rerank",
                api="cohere",
                key_env=("RAGKIT_API_KEY",),
                key_required=False,
            ),
        )
    }
)


def resolve_provider(
    provider: str | Provider | Mapping[str, Any] | None,
    base_url: str | None,
    presets: Mapping[str, Provider],
    *,
    default: str | None,
    generic: str,
) -> tuple[Provider, str]:
    """Pick the preset and the base URL, once, at construction.

    ``provider`` wins when given (a name, a :class:`Provider`, or its ``to_dict()``). Without it, a
    ``base_url`` on a known cloud host selects that host's preset, any other ``base_url`` selects
    ``generic``, and no ``base_url`` selects ``default``.

    Example:
        >>> p, url = resolve_provider(None, "https://openrouter.ai/api/v1", EMBEDDING_PROVIDERS,
        ...                           default="openai", generic="openai-compatible")
        >>> p.name
        'openrouter'
    """
    if isinstance(provider, Provider):
        preset = provider
    elif isinstance(provider, Mapping):
        try:
            preset = Provider(**provider)
        except TypeError as e:
            raise ConfigError(f"not a provider preset: {e}") from e
    elif isinstance(provider, str):
        if provider not in presets:
            raise ConfigError(f"unknown provider {provider!r}; known: {', '.join(sorted(presets))}")
        preset = presets[provider]
    elif provider is None:
        if base_url:
            host = urlsplit(base_url).netloc.lower()
            by_host = {urlsplit(p.base_url).netloc: p for p in presets.values() if _is_cloud(p)}
            preset = by_host.get(host, presets[generic])
        elif default is not None:
            preset = presets[default]
        else:
            raise ConfigError(f"give provider= (one of {', '.join(sorted(presets))}) or base_url=")
    else:
        raise ConfigError(f"provider must be a str, a Provider or None, got {type(provider).__name__}")
    url = (base_url or preset.base_url).rstrip("/")
    if not url:
        raise ConfigError(f"provider {preset.name!r} has no default address: pass base_url=")
    if urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"base_url must start with http:// or https://, got {redact_url(url)!r}")
    return preset, url


def _is_cloud(p: Provider) -> bool:
    host = urlsplit(p.base_url).hostname or ""
    return bool(host) and host not in ("localhost", "127.0.0.1")
