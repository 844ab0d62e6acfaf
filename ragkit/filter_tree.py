"""The filter tree: :class:`Condition` leaves under :class:`And`, :class:`Or` and :class:`Not`.

:func:`ragkit.filters.parse_filter` builds these nodes from a filter dict (the user-facing grammar
is documented in :mod:`ragkit.filters`, which re-exports every name here); the SQL emitters
(:mod:`ragkit.backends.sqlite_filter`, :mod:`ragkit.backends.postgres_filter`) walk them. Nodes
are frozen and validated when built, so a hand-built tree is as safe as a parsed one.

Example:
    >>> year = Condition("year", ("year",), "gte", 2020)
    >>> Or((year, Not(Condition("lang", ("lang",), "nin", ["en", "de"])))).children[1].child.value
    ('en', 'de')
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ragkit.errors import InvalidInputError

__all__ = ["And", "Condition", "Node", "Not", "OPERATORS", "Or"]

OPERATORS: dict[str, str] = {
    "$eq": "eq",
    "$in": "in",
    "$nin": "nin",
    "$ne": "ne",
    "$gt": "gt",
    "$gte": "gte",
    "$lt": "lt",
    "$lte": "lte",
    "$exists": "exists",
}
"""The field operators of the dict grammar, each with the :attr:`Condition.op` it becomes.

Example:
    >>> OPERATORS["$gte"], OPERATORS["$nin"]
    ('gte', 'nin')
"""
_OPS = frozenset(OPERATORS.values())
_COMPARISONS = frozenset({"gt", "gte", "lt", "lte"})
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_CONTROL = frozenset(chr(i) for i in range(32))


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)``, shortened: error messages stay readable for a 100,000-value list."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...)"


def _type_name(value: Any) -> str:
    cls = type(value)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored or matched on every backend, or ``None`` when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (it holds a lone surrogate, which UTF-8 cannot encode)"
    if "\x00" in text:
        return "contains a NUL character, which PostgreSQL cannot store"
    return None


# ------------------------------------------------------------------------------------------------ tree


def _check_segment(segment: Any, key: str) -> str:
    if not isinstance(segment, str):
        raise InvalidInputError(f"filter key {_show(key)}: path segments must be str, got {_show(segment)}")
    if not segment:
        raise InvalidInputError(
            f"filter key {_show(key)} has an empty segment: dotted keys name nested fields, as in 'a.b'"
        )
    if '"' in segment:
        raise InvalidInputError(f"filter key {_show(key)}: double quotes in keys are not supported")
    if "\\" in segment or not _CONTROL.isdisjoint(segment):
        raise InvalidInputError(
            f"filter key {_show(key)}: backslashes and control characters in keys are not supported"
        )
    problem = _text_problem(segment)
    if problem:
        raise InvalidInputError(f"filter key {_show(key)} {problem}")
    return segment


def _check_scalar(value: Any, key: str) -> Any:
    """A filter value, validated and normalised to a plain ``str``/``bool``/``int``/``float``/``None``."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidInputError(
                f"filter value for {_show(key)} is an int outside signed 64 bits "
                f"[-2**63, 2**63 - 1]: {_show(value)}"
            )
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"filter value for {_show(key)} must be finite, got {value}")
        return float(value)
    if isinstance(value, str):
        problem = _text_problem(value)
        if problem:
            raise InvalidInputError(f"filter value {_show(value)} for {_show(key)} {problem}")
        return str.__str__(value)
    if isinstance(value, (list, tuple)):
        raise InvalidInputError(
            f"filter on {_show(key)}: a list is not a value; use {{'$in': [...]}} to match any of several"
        )
    raise InvalidInputError(
        f"filter value for {_show(key)} must be a str, number, bool or None, got {_type_name(value)}"
    )


@dataclass(frozen=True)
class Condition:
    """One operator on one field: the leaf of a filter tree. Built valid or not at all.

    Attributes:
        key: the field as written in the filter (``"author.name"``), for messages.
        path: the object keys leading to the field (``("author", "name")``); emitters use this.
        op: one of ``"eq", "in", "nin", "ne", "gt", "gte", "lt", "lte", "exists"``.
        value: a scalar; a tuple of scalars for ``"in"`` and ``"nin"``; a number or str for
            comparisons; a bool for ``"exists"``.

    Example:
        >>> Condition("year", ("year",), "in", [2020, 2021])
        Condition(key='year', path=('year',), op='in', value=(2020, 2021))
    """

    key: str
    path: tuple[str, ...]
    op: str
    value: Any

    def __post_init__(self) -> None:
        key = self.key
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"filter keys must be non-empty str, got {_show(key)}")
        if isinstance(self.path, str) or not isinstance(self.path, Iterable):
            raise InvalidInputError(f"Condition.path must be a tuple of str, got {_show(self.path)}")
        path = tuple(_check_segment(p, key) for p in self.path)
        if not path:
            raise InvalidInputError(f"filter key {_show(key)}: Condition.path is empty")
        op, value = self.op, self.value
        name = f"${op}"
        if not isinstance(op, str) or op not in _OPS:
            raise InvalidInputError(
                f"unknown filter operator {_show(op)} on {_show(key)}: use {', '.join(OPERATORS)}"
            )
        if op in ("in", "nin"):
            if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
                raise InvalidInputError(f"{name} on {_show(key)} needs a list of values, got {_show(value)}")
            value = tuple(value)
            for v in value:
                if isinstance(v, (list, tuple)):
                    raise InvalidInputError(
                        f"{name} on {_show(key)}: each value must be a str, number, bool or None, "
                        f"got a list {_show(v, 40)}"
                    )
            value = tuple(_check_scalar(v, key) for v in value)
        elif op == "exists":
            if not isinstance(value, bool):
                raise InvalidInputError(f"$exists on {_show(key)} needs true or false, got {_show(value)}")
        elif op in _COMPARISONS:
            if isinstance(value, bool) or value is None or not isinstance(value, (int, float, str)):
                raise InvalidInputError(f"{name} on {_show(key)} needs a number or a str, got {_show(value)}")
            value = _check_scalar(value, key)
        else:
            value = _check_scalar(value, key)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "value", value)


def _children(node: Any, what: str) -> tuple[Any, ...]:
    if isinstance(node.children, (str, bytes, Mapping)) or not isinstance(node.children, Iterable):
        raise InvalidInputError(f"{what}.children must be a tuple of nodes, got {_show(node.children)}")
    children = tuple(node.children)
    for child in children:
        if not isinstance(child, (Condition, And, Or, Not)):
            raise InvalidInputError(f"{what}.children must be filter nodes, got {_type_name(child)}")
    return children


@dataclass(frozen=True)
class And:
    """Every child matches (no children: everything matches).

    Example:
        >>> And((Condition("a", ("a",), "eq", 1), Condition("b", ("b",), "exists", True))).children[1].op
        'exists'
    """

    children: tuple[Node, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", _children(self, "And"))


@dataclass(frozen=True)
class Or:
    """At least one child matches (no children: nothing matches).

    Example:
        >>> len(Or([Condition("a", ("a",), "eq", 1), Condition("a", ("a",), "eq", 2)]).children)
        2
    """

    children: tuple[Node, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", _children(self, "Or"))


@dataclass(frozen=True)
class Not:
    """Exactly the rows its child does not match (a row missing the child's field included).

    Example:
        >>> Not(Condition("lang", ("lang",), "eq", "en")).child.value
        'en'
    """

    child: Node

    def __post_init__(self) -> None:
        if not isinstance(self.child, (Condition, And, Or, Not)):
            raise InvalidInputError(f"Not.child must be a filter node, got {_type_name(self.child)}")


Node = Condition | And | Or | Not
"""A filter tree: a :class:`Condition`, or an :class:`And`, :class:`Or` or :class:`Not` of trees.

Example:
    >>> isinstance(Not(Condition("a", ("a",), "eq", 1)), Node)
    True
"""
