"""What every HTTP-backed model shares (:class:`RemoteClient`): rebuilding from ``spec()`` with the rule
that a spec from a saved directory never sends an environment API key to a host only it names, closing,
and the context managers.

Example:
    >>> from ragkit.embedders import OpenAIEmbedder
    >>> OpenAIEmbedder.check_hosts({"model": "m", "provider": "tei", "base_url": "http://gpu:8080/v1"})
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ragkit._http import HTTPClient, public_url
from ragkit.errors import ConfigError

__all__ = ["RemoteClient"]


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` with the default port filled in; ``None`` when ``url`` does not parse."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


class RemoteClient:
    """What every HTTP-backed model shares: rebuilding from ``spec()``, closing, context managers.

    Subclasses set ``self._http`` (an :class:`HTTPClient`) and the class attributes that say how they
    pick a provider preset (what their ``__init__`` gives :func:`ragkit.providers.resolve_provider`).
    """

    _http: HTTPClient
    #: the preset table (``EMBEDDING_PROVIDERS`` or ``RERANK_PROVIDERS``)
    _presets: ClassVar[Mapping[str, Any]]
    #: the preset without ``provider=`` nor ``base_url=``, and the one for an unknown ``base_url``
    _default_provider: ClassVar[str | None]
    _generic_provider: ClassVar[str]
    #: what ``Pipeline.load`` calls this component (its keyword argument)
    _role: ClassVar[str]

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, trust_hosts: bool = True) -> Any:
        """Rebuild from ``spec()`` (its ``class`` entry is ignored); the API key comes from the environment.

        Args:
            spec: keyword arguments of the constructor, as :meth:`spec` wrote them.
            trust_hosts: build the client wherever ``spec`` points (your own spec). ``False`` for a spec
                from elsewhere (a saved directory): :meth:`check_hosts` runs first.

        Raises:
            ConfigError: ``trust_hosts=False`` and the spec would send an environment key to a host
                that only the spec names.

        Example:
            >>> type(client).from_spec(client.spec())  # doctest: +SKIP
        """
        kwargs = {k: v for k, v in spec.items() if k != "class"}
        if not trust_hosts:
            cls.check_hosts(kwargs)
        return cls(**kwargs)

    @classmethod
    def check_hosts(cls, spec: Mapping[str, Any]) -> None:
        """Refuse a spec that would send an API key from the environment to a host only the spec names.

        The key the client would read from the environment (each variable of the resolved preset's
        ``key_env`` that is set, when the spec has no ``api_key``) may only go where one of ragkit's own
        presets of this kind sends that variable: the same scheme, host and port as the ``base_url``
        of a built-in preset whose ``key_env`` lists it. So ``provider="openai"`` with another
        ``base_url``, an inline provider dict naming any variable, or ``provider="vllm"`` at a remote
        host while ``VLLM_API_KEY`` is set are refused; a preset that reads no variable
        (``"openai-compatible"``, ``"tei"``, ...) or an unset variable sends nothing and passes.

        Raises:
            ConfigError: naming the (redacted) URL and the variables, and what to do instead.

        Example:
            >>> from ragkit.embedders import OpenAIEmbedder
            >>> OpenAIEmbedder.check_hosts({"model": "m", "provider": "tei", "base_url": "http://gpu:8080/v1"})
        """
        from ragkit.providers import resolve_provider

        if spec.get("api_key"):
            return  # an explicit key: no environment variable is read
        preset, url = resolve_provider(
            spec.get("provider"),
            spec.get("base_url"),
            cls._presets,
            default=cls._default_provider,
            generic=cls._generic_provider,
        )
        origin = _origin(url)
        homes = [(_origin(p.base_url), p.key_env) for p in cls._presets.values()]
        foreign = [
            var
            for var in preset.key_env
            if os.environ.get(var) and not any(origin and o == origin and var in env for o, env in homes)
        ]
        if foreign:
            role = cls._role
            raise ConfigError(
                f"the saved {role} (provider {preset.name!r}) would send the API key in "
                f"{' / '.join(foreign)} from the environment to {public_url(url)}, a host that only the "
                f"saved spec names: pass the {role} yourself (Pipeline.load(path, {role}=...)) or, if "
                "you trust where this directory comes from, load it with trust_hosts=True"
            )

    def close(self) -> None:
        """Close the connection pool; it is reopened if the client is used again.

        Example:
            >>> client.close()  # doctest: +SKIP
        """
        self._http.close()

    async def aclose(self) -> None:
        """Close the connection pools, including the current event loop's.

        Example:
            >>> await client.aclose()  # doctest: +SKIP
        """
        await self._http.aclose()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
