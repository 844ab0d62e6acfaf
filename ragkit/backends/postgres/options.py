"""The settings of a :class:`~ragkit.backends.PostgresBackend`, validated before any connection is made.

:func:`make_options` checks every constructor argument and returns a frozen :class:`Options`; the
same function checks the ``spec`` of a saved manifest entry (:func:`options_from_entry`), which is
untrusted input and must fail with :class:`~ragkit.errors.IntegrityError`, never ``KeyError``.

Example:
    >>> make_options("host=db", table="kb").ef_search
    100
    >>> make_options("host=db", table="Bad Name")
    Traceback (most recent call last):
    ...
    ragkit.errors.ConfigError: table must match [a-z_][a-z0-9_]* and be at most 50 characters, got 'Bad Name'
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragkit.errors import ConfigError, IntegrityError

__all__ = [
    "COMPRESSIONS",
    "INDEXES",
    "MAX_DIM",
    "MAX_EF_SEARCH",
    "MAX_HNSW_HALFVEC",
    "MAX_HNSW_VECTOR",
    "Options",
    "make_options",
    "options_from_entry",
]

logger = logging.getLogger("ragkit")

INDEXES = ("hnsw", "exact")
# HNSW over compressed copies of the float32 column: 2 bytes per dimension, or 1 bit (binary_quantize).
COMPRESSIONS = ("halfvec", "bit")
# pgvector's limits: the vector type holds 16,000 dimensions; HNSW indexes 2,000 (vector) / 4,000 (halfvec).
MAX_DIM = 16_000
MAX_HNSW_VECTOR = 2_000
MAX_HNSW_HALFVEC = 4_000
MAX_EF_SEARCH = 1_000
# 50 characters leave room for the derived names ("_documents", "_staging", ...) under PostgreSQL's 63.
_TABLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,49}$")
_LANGUAGE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Options:
    """Validated constructor arguments (see :class:`~ragkit.backends.PostgresBackend` for each).

    Example:
        >>> make_options("host=db").index
        'hnsw'
    """

    dsn: str
    table: str = "ragkit_chunks"
    dim: int | None = None
    index: str = "hnsw"
    m: int = 16
    ef_construction: int = 64
    ef_search: int = 100
    halfvec: bool | None = None
    language: str | None = None
    max_scan_tuples: int = 20_000
    pool_size: int = 4
    statement_timeout: float | None = 60.0
    compression: str | None = None
    rescore: int = 4


_FIELDS = tuple(f.name for f in dataclasses.fields(Options))


def _int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value!r}")
    return int(value)


def make_options(dsn: Any, **kwargs: Any) -> Options:
    """Check every setting; raise :class:`~ragkit.errors.ConfigError` naming the first bad one.

    Example:
        >>> make_options("host=db", dim=3000).halfvec is None  # decided from dim when the index is built
        True
    """
    unknown = set(kwargs) - set(_FIELDS)
    if unknown:
        raise ConfigError(f"unknown PostgresBackend options: {sorted(unknown)}")
    o = Options(dsn=dsn, **kwargs)
    if not isinstance(o.dsn, str) or not o.dsn.strip():
        raise ConfigError("dsn must be a non-empty PostgreSQL connection string")
    if "\x00" in o.dsn:
        raise ConfigError("dsn must not contain NUL characters")
    if not isinstance(o.table, str) or not _TABLE_RE.match(o.table):
        raise ConfigError(f"table must match [a-z_][a-z0-9_]* and be at most 50 characters, got {o.table!r}")
    if not isinstance(o.index, str) or o.index not in INDEXES:
        raise ConfigError(f"index must be one of {', '.join(INDEXES)}, got {o.index!r}")
    dim = None if o.dim is None else _int("dim", o.dim, 1, MAX_DIM)
    m = _int("m", o.m, 2, 100)
    ef_construction = _int("ef_construction", o.ef_construction, 4, 1000)
    if ef_construction < 2 * m:
        raise ConfigError(f"ef_construction must be at least 2 * m = {2 * m}, got {ef_construction}")
    if o.halfvec is not None and not isinstance(o.halfvec, bool):
        raise ConfigError(f"halfvec must be True, False or None, got {o.halfvec!r}")
    if o.halfvec and o.index == "exact":
        raise ConfigError("halfvec=True applies to the HNSW index; index='exact' reads the float32 vectors")
    if o.compression is not None and o.compression not in COMPRESSIONS:
        raise ConfigError(
            f"compression must be None or one of {', '.join(map(repr, COMPRESSIONS))}, got {o.compression!r}"
        )
    if o.compression is not None and o.index == "exact":
        raise ConfigError(f"compression={o.compression!r} applies to the HNSW index; index='exact' has none")
    halfvec = o.halfvec
    if o.compression == "halfvec":
        if o.halfvec is False:
            raise ConfigError("compression='halfvec' contradicts halfvec=False")
        halfvec = True
    if o.compression == "bit" and o.halfvec:
        raise ConfigError("compression='bit' indexes bits, not halfvec: leave halfvec=None")
    if o.language is not None and (not isinstance(o.language, str) or not _LANGUAGE_RE.match(o.language)):
        raise ConfigError(
            f"language must name a text-search configuration such as 'english', got {o.language!r}"
        )
    timeout = o.statement_timeout
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < 10**7
    ):
        raise ConfigError(f"statement_timeout must be seconds > 0 or None, got {timeout!r}")
    return dataclasses.replace(
        o,
        dim=dim,
        m=m,
        ef_construction=ef_construction,
        ef_search=_int("ef_search", o.ef_search, 1, MAX_EF_SEARCH),
        max_scan_tuples=_int("max_scan_tuples", o.max_scan_tuples, 1),
        pool_size=_int("pool_size", o.pool_size, 1, 1000),
        statement_timeout=None if timeout is None else float(timeout),
        halfvec=halfvec,
        rescore=_int("rescore", o.rescore, 1, MAX_EF_SEARCH),
    )


def options_from_entry(entry: Any) -> Options:
    """The options recorded in a saved manifest entry ``{"kind": "postgres", "spec": {...}}``.

    Raises:
        IntegrityError: the entry is not such a mapping, or a setting in it is missing or invalid.

    Example:
        >>> options_from_entry({"kind": "postgres", "spec": {"dsn": "host=db", "table": "kb"}}).table
        'kb'
    """
    if not isinstance(entry, Mapping) or entry.get("kind") != "postgres":
        raise IntegrityError(f"not a PostgreSQL backend entry: {_describe(entry)}")
    spec = entry.get("spec")
    if not isinstance(spec, Mapping) or not all(isinstance(k, str) for k in spec):
        raise IntegrityError(f"the PostgreSQL backend entry has no valid spec: {_describe(spec)}")
    if not isinstance(spec.get("dsn"), str) or not isinstance(spec.get("table"), str):
        raise IntegrityError("the PostgreSQL backend entry's spec lacks its dsn or table")
    ignored = sorted(set(spec) - set(_FIELDS))
    if ignored:
        logger.warning("ignoring unknown settings in a saved PostgreSQL backend entry: %s", ignored)
    try:
        return make_options(**{k: v for k, v in spec.items() if k in _FIELDS})
    except ConfigError as e:
        raise IntegrityError(f"the PostgreSQL backend entry's spec is invalid: {e}") from e


def _describe(value: Any) -> str:
    # Never the values themselves: a hand-edited entry may hold a DSN with its password.
    if isinstance(value, Mapping):
        keys = sorted(repr(k) for k in value)[:12]
        return f"a mapping with keys {', '.join(keys)}" + (
            f", kind {value.get('kind')!r}" if "kind" in value and isinstance(value.get("kind"), str) else ""
        )
    return f"a {type(value).__name__}"
