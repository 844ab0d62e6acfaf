"""Metadata filters: one parser, a small tree, and one SQL emitter per backend.

A filter is a dict from field names to conditions. Every backend (``ragkit.backends.sqlite_filter``,
``ragkit.backends.postgres_filter``) emits SQL from the same tree, so the language means the same
everywhere::

    {"lang": "en"}                          equality (a list-valued field: any element equals)
    {"lang": {"$eq": "en"}}                 the same, spelled as an operator
    {"lang": {"$in": ["en", "de"]}}         any of several values (long lists are fine)
    {"lang": {"$ne": "en"}}                 present and not equal (a missing field does not match)
    {"year": {"$gte": 2020, "$lt": 2024}}   $gt / $gte / $lt / $lte: numbers with numbers, strings
                                            with strings (byte-wise); a list: any element of that type
    {"note": {"$exists": False}}            presence (JSON null is present)
    {"author.name": "Ann"}                  dotted keys reach nested objects (never list positions)
    {"lang": "en", "year": 2020}            several keys, or several operators on one key: AND

Comparison is type-sensitive: ``1 == 1.0``, ``1 != "1"``, ``True != 1``; an object never equals a
scalar; a missing field matches nothing except ``{"$exists": False}``. Values are ``str``, ``bool``,
``int`` (signed 64 bits), finite ``float`` or ``None``; strings must be valid Unicode without NUL
characters (what PostgreSQL's ``jsonb`` can hold).

:func:`parse_filter` validates a filter once and returns a tree of frozen nodes: :class:`Condition`
(one operator on one field) under :class:`And`; :class:`Or` and :class:`Not` are part of the tree
already (every emitter handles them) though the dict grammar does not produce them yet.
:func:`check_metadata` is the matching validator for the metadata written to a store.

Example:
    >>> parse_filter({"author.name": "Ann"})
    Condition(key='author.name', path=('author', 'name'), op='eq', value='Ann')
    >>> [c.op for c in parse_filter({"year": {"$gte": 2020, "$lt": 2024}}).children]
    ['gte', 'lt']
    >>> parse_filter({}) is None
    True
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ragkit.errors import InvalidInputError

__all__ = [
    "And",
    "Condition",
    "Node",
    "Not",
    "OPERATORS",
    "Or",
    "check_metadata",
    "emit_sql",
    "parse_filter",
]

OPERATORS: dict[str, str] = {
    "$eq": "eq",
    "$in": "in",
    "$ne": "ne",
    "$gt": "gt",
    "$gte": "gte",
    "$lt": "lt",
    "$lte": "lte",
    "$exists": "exists",
}
"""The dict grammar's operators, each with the :attr:`Condition.op` it becomes.

Example:
    >>> OPERATORS["$gte"]
    'gte'
"""
_OPS = frozenset(OPERATORS.values())
_COMPARISONS = frozenset({"gt", "gte", "lt", "lte"})
_LOGICAL = frozenset({"$and", "$or", "$not", "$nor"})
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_MAX_DEPTH = 100  # nesting of metadata (lists and dicts)
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
        op: one of ``"eq", "in", "ne", "gt", "gte", "lt", "lte", "exists"``.
        value: a scalar; a tuple of scalars for ``"in"``; a number or str for comparisons; a
            bool for ``"exists"``.

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
        if op == "in":
            if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
                raise InvalidInputError(f"$in on {_show(key)} needs a list of values, got {_show(value)}")
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
    >>> isinstance(parse_filter({"a": 1, "b": 2}), Node)
    True
"""


# ---------------------------------------------------------------------------------------------- parser


def _split_key(key: Any) -> tuple[str, ...]:
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"filter keys must be non-empty str, got {_show(key)}")
    if key in _LOGICAL:
        raise InvalidInputError(
            f"filter operator {key!r} is not supported: keys name fields, and several keys combine with AND"
        )
    return tuple(_check_segment(p, key) for p in key.split("."))


def parse_filter(filter: Mapping[str, Any] | Node | None) -> Node | None:
    """Validate a metadata filter and return its tree (``None``: match everything).

    ``None`` and ``{}`` give ``None``; a :data:`Node` is returned unchanged (nodes are validated when
    built). A single condition is returned as such; several as an :class:`And`, in the filter's order.

    Raises:
        InvalidInputError: the filter is not a dict, a key or value is unusable (empty segments,
            quotes, NaN, ints beyond 64 bits, lone surrogates, lists as values, ...) or an operator
            is unknown; the message says which and why.

    Example:
        >>> parse_filter({"lang": {"$in": ["en", "de"]}, "draft": False})  # doctest: +NORMALIZE_WHITESPACE
        And(children=(Condition(key='lang', path=('lang',), op='in', value=('en', 'de')),
                      Condition(key='draft', path=('draft',), op='eq', value=False)))
    """
    if filter is None or isinstance(filter, (Condition, And, Or, Not)):
        return filter
    if not isinstance(filter, Mapping):
        raise InvalidInputError(f"filter must be a dict, got {_type_name(filter)}")
    conditions: list[Condition] = []
    for key, spec in filter.items():
        path = _split_key(key)
        if isinstance(spec, Mapping):
            if not spec or not all(isinstance(k, str) and k.startswith("$") for k in spec):
                raise InvalidInputError(
                    f"filter on {_show(key)}: a dict value must hold operators ($in, $ne, $gt, ...); "
                    "reach nested fields with dotted keys such as 'a.b'"
                )
            for name, value in spec.items():
                op = OPERATORS.get(name)
                if op is None:
                    raise InvalidInputError(
                        f"unknown filter operator {_show(name)} on {_show(key)}: use {', '.join(OPERATORS)}"
                    )
                conditions.append(Condition(key, path, op, value))
        else:
            conditions.append(Condition(key, path, "eq", spec))
    if not conditions:
        return None
    return conditions[0] if len(conditions) == 1 else And(tuple(conditions))


# -------------------------------------------------------------------------------------------- metadata


def _where(path: tuple[Any, ...]) -> str:
    """``metadata['a'][0]``: where in the metadata a problem is (deep paths shortened)."""
    steps = [f"[{_show(p, 40)}]" for p in path]
    if len(steps) > 8:
        steps = [*steps[:3], "...", *steps[-3:]]
    return "metadata" + "".join(steps)


def _check_json(value: Any, path: tuple[Any, ...], active: set[int]) -> None:
    """Raise unless ``value`` is JSON every backend stores alike; ``path`` names it in messages."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        problem = _text_problem(value)
        if problem:
            raise InvalidInputError(f"metadata value at {_where(path)} {problem}")
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidInputError(
                f"metadata value at {_where(path)} is an int outside signed 64 bits "
                f"[-2**63, 2**63 - 1]: {_show(value)}"
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"metadata value at {_where(path)} must be finite, got {value}")
        return
    if not isinstance(value, (dict, list, tuple)):
        raise InvalidInputError(
            f"metadata value at {_where(path)} is a {_type_name(value)}, which is not JSON: "
            "use str, int, float, bool, None, lists and dicts"
        )
    if len(path) >= _MAX_DEPTH:
        raise InvalidInputError(f"metadata is nested deeper than {_MAX_DEPTH} levels at {_where(path)}")
    if id(value) in active:
        raise InvalidInputError(f"metadata is circular: {_where(path)} contains itself")
    active.add(id(value))
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInputError(
                    f"metadata keys must be str, got {_type_name(k)} {_show(k, 40)} in {_where(path)}"
                )
            problem = _text_problem(k)
            if problem:
                raise InvalidInputError(f"metadata key {_show(k, 40)} in {_where(path)} {problem}")
            _check_json(v, (*path, k), active)
    else:
        for i, v in enumerate(value):
            _check_json(v, (*path, i), active)
    active.discard(id(value))


def check_metadata(metadata: Mapping[str, Any]) -> str:
    """Validate a document's metadata and return the JSON text every backend stores.

    The text is ``json.dumps(metadata, sort_keys=True, ensure_ascii=False, allow_nan=False)``: equal
    metadata gives equal text, so a store can tell whether metadata changed by comparing it.

    Raises:
        InvalidInputError: ``metadata`` is not a dict with str keys, or holds something JSON or
            PostgreSQL cannot store exactly: sets, bytes, datetimes, arrays, NaN/inf, ints beyond
            signed 64 bits, lone surrogates, NUL characters. The message names the offending path.

    Example:
        >>> check_metadata({"year": 2020, "lang": "en"})
        '{"lang": "en", "year": 2020}'
        >>> check_metadata({"tags": {"a", "b"}})
        Traceback (most recent call last):
            ...
        ragkit.errors.InvalidInputError: metadata value at metadata['tags'] is a set, which is not JSON: use str, int, float, bool, None, lists and dicts
    """  # noqa: E501
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata must be a dict, got {_type_name(metadata)}")
    metadata = dict(metadata)
    _check_json(metadata, (), set())
    try:
        return json.dumps(metadata, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:  # not expected after the walk above
        raise InvalidInputError(f"metadata cannot be stored as JSON: {e}") from e


# ------------------------------------------------------------------------------------------- emitting

_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}")
_MAX_NESTING = 64


def _join(parts: list[str], op: str) -> str:
    # Balanced parentheses: SQLite limits expression depth (1,000), PostgreSQL's parser and planner
    # recurse too, and a flat "a AND b AND ..." nests one level per term.
    if len(parts) == 1:
        return parts[0]
    mid = len(parts) // 2
    return f"({_join(parts[:mid], op)} {op} {_join(parts[mid:], op)})"


def emit_sql(
    filter: Mapping[str, Any] | Node | None,
    column: str,
    condition: Callable[[Condition, str], str],
    *,
    true: str,
    false: str,
) -> str:
    """SQL text for a filter tree: the one walk every backend's emitter shares.

    ``condition(c, column)`` writes one :class:`Condition` (and appends its bound parameters, in text
    order, wherever the backend keeps them); ``And``/``Or`` become balanced ``AND``/``OR`` chains,
    ``Not`` a ``NOT``; an empty ``And`` is ``true``, an empty ``Or`` is ``false``, no filter is ``true``.

    Raises:
        InvalidInputError: a bad filter, a tree nested deeper than 64 levels, or a ``column`` that
            is not a plain (optionally qualified) identifier (it is written into the SQL text).

    Example:
        >>> emit_sql({"a": 1, "b": 2}, "m", lambda c, col: f"{col}.{c.key}=?", true="1", false="0")
        '(m.a=? AND m.b=?)'
    """
    if not isinstance(column, str) or not _COLUMN.fullmatch(column):
        raise InvalidInputError(f"column must be an SQL identifier such as 'd.metadata', got {column!r}")

    def walk(node: Node, depth: int) -> str:
        if depth > _MAX_NESTING:
            raise InvalidInputError(f"filter trees may nest at most {_MAX_NESTING} levels")
        if isinstance(node, Condition):
            return condition(node, column)
        if isinstance(node, Not):
            return f"(NOT {walk(node.child, depth + 1)})"
        parts = [walk(child, depth + 1) for child in node.children]
        if isinstance(node, And):
            return _join(parts, "AND") if parts else true
        return _join(parts, "OR") if parts else false

    node = parse_filter(filter)
    return true if node is None else walk(node, 0)
