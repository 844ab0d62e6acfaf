"""The closed registry of components that a saved pipeline directory may name.

A saved directory is data, and loading it must not run code that it chooses nor send your credentials
where it says. So its ``manifest.json`` names each component by a *registered name* with a JSON spec,
``{"component": "OpenAIEmbedder", "spec": {...}}``, and :func:`build_component` imports and calls only
what this registry holds: ragkit's own classes (fixed ``(module, attribute)`` pairs, imported when
first built) and the classes you add with :func:`register_component`. Manifests of format 1 (ragkit
0.1) named import paths, ``{"class": "ragkit.embedders.remote.OpenAIEmbedder", "spec": {...}}``; the
paths ragkit 0.1 wrote for its own classes are read as the same registered names, and any other path
(``ragkit.cli.main``, ``os.system``) is refused without being imported.

Hosts and credentials: a remote embedder or reranker from a directory is built only if it would not
send an API key from your environment to a host that only the directory names (see
:meth:`ragkit._remote.RemoteClient.check_hosts`); ``trust_hosts=True`` lifts that for a directory you
trust. Specs written by :func:`component_entry` never hold a credential.

Example:
    >>> from ragkit.chunking import RecursiveChunker
    >>> entry = component_entry(RecursiveChunker(200, 20))
    >>> entry
    {'component': 'RecursiveChunker', 'spec': {'chunk_size': 200, 'overlap': 20, 'unit': 'characters'}}
    >>> build_component(entry, role="chunker").chunk_size
    200
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ragkit._secrets import redact_dsn, redact_url
from ragkit.errors import ConfigError

__all__ = ["ROLES", "build_component", "component_entry", "register_component"]

logger = logging.getLogger("ragkit")

ROLES = ("chunker", "embedder", "index", "reranker")
"""The kinds of component a pipeline directory names; ``Pipeline.load`` takes each as a keyword."""


@dataclass(frozen=True)
class _Builtin:
    role: str
    module: str
    attr: str
    aliases: tuple[str, ...] = ()  # public import paths a hand-written 0.1 manifest may have used

    @property
    def paths(self) -> tuple[str, ...]:
        return (f"{self.module}.{self.attr}", *self.aliases)


_BUILTINS: Mapping[str, _Builtin] = {
    "OpenAIEmbedder": _Builtin(
        "embedder", "ragkit.embedders.remote", "OpenAIEmbedder", ("ragkit.embedders.OpenAIEmbedder",)
    ),
    "Qwen3Embedder": _Builtin(
        "embedder", "ragkit.embedders.transformers", "Qwen3Embedder", ("ragkit.embedders.Qwen3Embedder",)
    ),
    "TransformersEmbedder": _Builtin(
        "embedder",
        "ragkit.embedders.transformers",
        "TransformersEmbedder",
        ("ragkit.embedders.TransformersEmbedder",),
    ),
    "Qwen3Reranker": _Builtin(
        "reranker", "ragkit.rerankers.qwen3", "Qwen3Reranker", ("ragkit.rerankers.Qwen3Reranker",)
    ),
    "RemoteReranker": _Builtin(
        "reranker", "ragkit.rerankers.remote", "RemoteReranker", ("ragkit.rerankers.RemoteReranker",)
    ),
    "RecursiveChunker": _Builtin(
        "chunker", "ragkit.chunking", "RecursiveChunker", ("ragkit.RecursiveChunker",)
    ),
    "FaissIndex": _Builtin("index", "ragkit.index.faiss", "FaissIndex", ("ragkit.index.FaissIndex",)),
}
# Format-1 "class" paths (what ragkit 0.1's _component_spec wrote: f"{cls.__module__}.{cls.__qualname__}").
_LEGACY: Mapping[str, str] = {path: name for name, b in _BUILTINS.items() for path in b.paths}
_BY_CLASS: Mapping[tuple[str, str], str] = {(b.module, b.attr): name for name, b in _BUILTINS.items()}

_lock = threading.Lock()
_USER: dict[str, tuple[str, Callable[..., Any]]] = {}  # name -> (role, factory)

_CHUNKER_KEYS = ("chunk_size", "contextual_headers", "overlap", "unit")
_SECRET_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "token",
        "access_token",
        "auth_token",
        "bearer_token",
        "refresh_token",
        "hf_token",
        "secret",
        "client_secret",
        "secret_key",
        "access_key",
        "password",
        "passwd",
        "pwd",
        "sslpassword",
        "credential",
        "credentials",
        "authorization",
        "auth",
    }
)
_SECRET_SUFFIXES = ("_api_key", "_apikey", "_password", "_passwd", "_secret", "_secret_key", "_access_token")


def _article(role: str) -> str:
    return f"an {role}" if role[0] in "aeiou" else f"a {role}"


def _label(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _refusal(role: str, what: Any, why: str) -> ConfigError:
    return ConfigError(
        f"cannot rebuild the saved {role} {_label(what)}: {why}. Pass it explicitly "
        f"(Pipeline.load(path, {role}=...)), or register your class with "
        "ragkit.components.register_component(name, factory, role=...)"
    )


def register_component(name: str, factory: Callable[..., Any], *, role: str) -> None:
    """Let saved directories name ``factory`` as ``name``: your own embedder, reranker, chunker or index.

    Saving records an instance of a registered class as ``{"component": name, "spec": obj.spec()}``;
    loading rebuilds it with ``factory.from_spec(spec)`` when the factory has ``from_spec`` (and
    passes ``trust_hosts`` to it when it takes that keyword), else with ``factory(**spec)``. Register
    before saving and before loading, in every process that loads. Registering a name again replaces
    its factory.

    Args:
        name: the name written to manifests; not one of ragkit's own (``"OpenAIEmbedder"``, ...).
        factory: a class (its instances are recognised by :func:`component_entry`) or a callable.
        role: ``"embedder"``, ``"reranker"``, ``"chunker"`` or ``"index"``; a directory naming it
            for another role is refused.

    Raises:
        ConfigError: an empty or built-in name, an unknown role, a factory that is not callable or is
            one of ragkit's own classes (they are registered already).

    Example:
        >>> class Letters:
        ...     def __init__(self, letters="ae"):
        ...         self.letters = letters
        ...     def spec(self):
        ...         return {"letters": self.letters}
        >>> register_component("letters", Letters, role="embedder")
        >>> component_entry(Letters("xyz"))
        {'component': 'letters', 'spec': {'letters': 'xyz'}}
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ConfigError(f"a component name must be a non-empty str without outer spaces, got {name!r}")
    if name in _BUILTINS:
        raise ConfigError(f"{name!r} is the name of one of ragkit's own components; choose another")
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(map(repr, ROLES))}, got {role!r}")
    if not callable(factory):
        raise ConfigError(f"factory must be a class or a callable, got {type(factory).__name__}")
    builtin = _BY_CLASS.get((getattr(factory, "__module__", ""), getattr(factory, "__qualname__", "")))
    if builtin is not None:
        raise ConfigError(f"{builtin} is one of ragkit's own components: it needs no registration")
    with _lock:
        if name in _USER:
            logger.debug("component %r registered again: the new factory replaces the old one", name)
        _USER.pop(name, None)
        _USER[name] = (role, factory)


def _name_of(cls: type) -> str | None:
    name = _BY_CLASS.get((cls.__module__, cls.__qualname__))
    if name is not None:
        module = sys.modules.get(cls.__module__)
        return name if getattr(module, cls.__qualname__, None) is cls else None
    with _lock:
        users = list(_USER.items())
    return next((n for n, (_, factory) in reversed(users) if factory is cls), None)


def _is_secret_key(key: str) -> bool:
    lowered = key.lower().replace("-", "_")
    return lowered in _SECRET_KEYS or lowered.endswith(_SECRET_SUFFIXES)


def _scrub(value: Any, key: str, removed: list[str]) -> Any:
    """The spec without credentials: secret-named keys dropped, URLs and DSNs redacted (recursive)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if _is_secret_key(k):
                removed.append(k)
            else:
                out[k] = _scrub(v, k, removed)
        return out
    if isinstance(value, list):
        return [_scrub(v, key, removed) for v in value]
    if isinstance(value, str):
        if key.lower().endswith(("dsn", "conninfo")):
            return redact_dsn(value)
        if "://" in value or key.lower().endswith(("url", "uri")):
            return redact_url(value)
    return value


def component_entry(obj: Any) -> dict[str, Any] | None:
    """How a manifest records ``obj``: ``{"component": name, "spec": spec}``, or ``None``.

    ``None`` when the exact type of ``obj`` is not registered (a subclass is not its base: it may
    behave differently) or its ``spec()`` returns ``None``; the pipeline then asks for that component
    at load. The spec is ``obj.spec()`` through JSON (sorted keys, tuples as lists), without its
    ``class`` entry, with every credential removed: keys named like one (``api_key``, ``password``,
    ``token``, ``*_secret``, ...) are dropped, URLs lose their userinfo and credential parameters,
    connection strings their passwords. A registered class without ``spec()`` gets ``{}``.

    Example:
        >>> from ragkit.embedders import OpenAIEmbedder
        >>> emb = OpenAIEmbedder("bge-m3", provider="tei", base_url="http://me:pw@gpu:8080/v1", dim=8)
        >>> entry = component_entry(emb)
        >>> entry["component"], entry["spec"]["base_url"]
        ('OpenAIEmbedder', 'http://gpu:8080/v1')
        >>> component_entry(object()) is None
        True
    """
    name = _name_of(type(obj))
    if name is None:
        return None
    spec_fn = getattr(obj, "spec", None)
    spec = spec_fn() if callable(spec_fn) else {}
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{type(obj).__name__}.spec() must return a dict, got {type(spec).__name__}")
    canonical = json.loads(json.dumps(dict(spec), sort_keys=True, default=str))
    canonical.pop("class", None)
    removed: list[str] = []
    clean = _scrub(canonical, "", removed)
    if removed:
        logger.warning(
            "not saving %s of %s: credentials stay out of saved directories; pass the component at load",
            ", ".join(sorted(set(removed))),
            name,
        )
    return {"component": name, "spec": clean}


def _resolve(entry: Any, role: str) -> tuple[str, Mapping[str, Any]]:
    """The registered name and the spec of ``entry``, or the refusal."""
    if not isinstance(entry, Mapping):
        raise _refusal(role, entry, "not a component entry (a dict with 'component' and 'spec')")
    keys = set(entry)
    if "component" in keys and keys <= {"component", "spec"}:
        name = entry["component"]
        known = isinstance(name, str) and (name in _BUILTINS or name in _USER)
        if not known:
            raise _refusal(role, name, "not a registered component")
    elif "class" in keys and keys <= {"class", "spec"}:
        path = entry["class"]
        name = _LEGACY.get(path) if isinstance(path, str) else None
        if name is None:
            raise _refusal(role, path, "not one of ragkit's own classes, and only those are rebuilt")
    else:
        raise _refusal(role, entry, "a malformed entry (expected 'component' and 'spec')")
    spec = entry.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping) or not all(isinstance(k, str) for k in spec):
        raise _refusal(role, name, "its spec is not an object with string keys")
    if "class" in spec and not isinstance(spec["class"], str):
        raise _refusal(role, name, "its spec has a 'class' that is not a str")
    return name, {k: v for k, v in spec.items() if k != "class"}  # specs name their class: ignored


def _check_keys(role: str, name: str, factory: Any, spec: Mapping[str, Any]) -> None:
    """Refuse spec keys the factory's signature does not take (unless it takes ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: the call itself will tell
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    taken = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(spec) - taken)
    if unknown:
        raise _refusal(role, name, f"its spec has unknown keys {unknown}")


def _takes(fn: Callable[..., Any], keyword: str) -> bool:
    try:
        return keyword in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _build_chunker(cls: Any, spec: Mapping[str, Any], embedder: Any) -> Any:
    unknown = sorted(set(spec) - set(_CHUNKER_KEYS))
    if unknown:
        raise ConfigError(f"its spec has unknown keys {unknown}")
    unit = spec.get("unit", "characters")
    if unit not in ("tokens", "characters"):
        raise ConfigError(f"unit must be 'tokens' or 'characters', got {unit!r}")
    size, overlap = spec.get("chunk_size"), spec.get("overlap")
    # Absent means off: specs saved before contextual headers existed, whatever today's default.
    headers = spec.get("contextual_headers", False)
    if unit == "tokens":
        if callable(getattr(embedder, "count_tokens", None)):
            return cls.for_embedder(embedder, chunk_size=size, overlap=overlap, contextual_headers=headers)
        logger.warning(
            "the saved chunker counts %s tokens, but the embedder cannot count tokens: "
            "new documents are cut in characters; pass chunker= to choose",
            size,
        )
    return cls(size, overlap, contextual_headers=headers)


def build_component(
    entry: Mapping[str, Any], *, role: str, trust_hosts: bool = False, embedder: Any = None
) -> Any:
    """Rebuild a component from a manifest entry, calling nothing outside the registry.

    Args:
        entry: ``{"component": name, "spec": {...}}`` (:func:`component_entry`), or a format-1
            ``{"class": path, "spec": {...}}`` whose path is one ragkit 0.1 wrote for its own classes.
        role: what the entry is for; an entry naming a component of another role is refused.
        trust_hosts: build remote clients wherever the spec points. ``False`` (the default) refuses
            one that would send an API key from the environment to a host only the spec names
            (:meth:`ragkit._remote.RemoteClient.check_hosts`) and a spec holding an ``api_key``.
        embedder: for a ``RecursiveChunker`` saved in tokens, the embedder whose tokenizer counts them
            (:meth:`~ragkit.chunking.RecursiveChunker.for_embedder`); without one that can count
            tokens the chunker counts characters.

    Raises:
        ConfigError: an unknown or unregistered name, a role mismatch, a malformed entry, a spec with
            keys the component does not take, a refused host; the message names the component and
            says to pass it explicitly or register it.

    Example:
        >>> build_component({"component": "FaissIndex", "spec": {"kind": "flat"}}, role="index").kind
        'flat'
        >>> build_component({"class": "os.system", "spec": {}}, role="chunker")
        Traceback (most recent call last):
        ...
        ragkit.errors.ConfigError: cannot rebuild the saved chunker 'os.system': not one of ragkit's ...
    """
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(map(repr, ROLES))}, got {role!r}")
    name, spec = _resolve(entry, role)
    builtin = _BUILTINS.get(name)
    if builtin is not None:
        owner = builtin.role
    else:
        with _lock:
            user = _USER.get(name)
        if user is None:  # unregistered meanwhile
            raise _refusal(role, name, "not a registered component")
        owner, factory = user
    if owner != role:
        raise _refusal(role, name, f"it is registered as {_article(owner)}, not {_article(role)}")
    if builtin is not None:
        factory = getattr(importlib.import_module(builtin.module), builtin.attr)
        if name != "RecursiveChunker":
            if spec.get("api_key") and not trust_hosts:
                raise _refusal(role, name, "its spec holds an api_key (ragkit never saves one)")
            _check_keys(role, name, factory, spec)
    from_spec = getattr(factory, "from_spec", None)
    if builtin is None and not callable(from_spec):
        _check_keys(role, name, factory, spec)
    try:
        if name == "RecursiveChunker":
            return _build_chunker(factory, spec, embedder)
        if callable(from_spec):
            if _takes(from_spec, "trust_hosts"):
                return from_spec(dict(spec), trust_hosts=trust_hosts)
            return from_spec(dict(spec))
        return factory(**spec)
    except (ConfigError, TypeError) as e:
        message = str(e)
        if "Pipeline.load(" in message:  # says what to do already (a refused host)
            raise ConfigError(f"cannot rebuild the saved {role} {name!r}: {message}") from e
        raise _refusal(role, name, message) from e
