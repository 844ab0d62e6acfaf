"""Validation of what callers pass to a PostgreSQL backend, before anything reaches the server.

Every check raises a ragkit error (:class:`~ragkit.errors.InputTypeError` for a wrong type,
:class:`~ragkit.errors.InvalidInputError` for a wrong value), never a driver error half-way through
a transaction. Text must be storable in PostgreSQL: no NUL character, no lone surrogate.

Example:
    >>> check_text("ok", "query")
    'ok'
    >>> check_text("a\\x00b", "query")
    Traceback (most recent call last):
    ...
    ragkit.errors.InvalidInputError: query contains a NUL character, which PostgreSQL text cannot hold
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ragkit.errors import InputTypeError, InvalidInputError
from ragkit.filters import Node, parse_filter

__all__ = ["LIMIT_MAX", "as_filter", "as_vids", "check_k", "check_mapping", "check_str_list", "check_text"]

# Above any table's row count; keeps LIMIT inside bigint for a k such as 10**30.
LIMIT_MAX = 2**62


def check_text(value: Any, what: str) -> str:
    """``value`` if it is a ``str`` that PostgreSQL can store (no NUL, valid UTF-8).

    Example:
        >>> check_text("\\ud800", "text")
        Traceback (most recent call last):
        ...
        ragkit.errors.InvalidInputError: text is not valid Unicode (a lone surrogate at position 0)
    """
    if not isinstance(value, str):
        raise InputTypeError(f"{what} must be a str, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInputError(f"{what} contains a NUL character, which PostgreSQL text cannot hold")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidInputError(
                f"{what} is not valid Unicode (a lone surrogate at position {e.start})"
            ) from e
    return value


def check_str_list(values: Any, what: str) -> list[str]:
    """A list of storable strings from a sequence of them (a lone ``str`` is refused, not iterated).

    Example:
        >>> check_str_list(("a", "b"), "doc_ids")
        ['a', 'b']
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise InputTypeError(f"{what} must be a sequence of str, got {type(values).__name__}")
    return [check_text(v, f"{what}[{i}]") for i, v in enumerate(values)]


def check_k(k: Any, what: str = "k") -> int:
    """A positive int (``bool`` refused).

    Example:
        >>> check_k(np.int64(3))
        3
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InputTypeError(f"{what} must be a positive int, got {type(k).__name__}")
    if k < 1:
        raise InvalidInputError(f"{what} must be a positive int, got {k!r}")
    return int(k)


def as_vids(ids: Any, what: str = "vids") -> list[int]:
    """Vector ids as a list of Python ints in ``[0, 2**63)``.

    Example:
        >>> as_vids(np.array([3, 1]))
        [3, 1]
    """
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (np.ndarray, Iterable)):
        raise InputTypeError(f"{what} must be a sequence of ints, got {type(ids).__name__}")
    values = ids if isinstance(ids, np.ndarray) else list(ids)
    if not isinstance(values, np.ndarray) and any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values
    ):
        raise InputTypeError(f"{what} must be integers")
    a = np.asarray(values) if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if a.size == 0:
        return []
    if a.ndim != 1:
        raise InvalidInputError(f"{what} must be 1-D, got shape {a.shape}")
    if a.dtype != object and a.dtype.kind not in "iu":
        raise InputTypeError(f"{what} must be integers, got dtype {a.dtype}")
    out = [int(i) for i in a] if a.dtype == object else a.tolist()
    if min(out) < 0 or max(out) >= 2**63:
        raise InvalidInputError(f"{what} must be in [0, 2**63)")
    return out


def as_filter(filter: Any) -> Node | None:
    """A parsed filter: ``None``, a :class:`~ragkit.filters.Node`, or a dict given to ``parse_filter``.

    Example:
        >>> as_filter(None) is None
        True
    """
    return parse_filter(filter)  # nodes and None pass through; anything else is checked


def check_mapping(value: Any, what: str) -> Mapping[str, Any]:
    """``value`` if it is a mapping (metadata, updates)."""
    if not isinstance(value, Mapping):
        raise InputTypeError(f"{what} must be a dict, got {type(value).__name__}")
    return value
