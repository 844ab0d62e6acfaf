"""Metadata filters: one grammar, one parser, a small tree, and one SQL emitter per backend.

A filter is a dict from field names to conditions. Every backend (``ragkit.backends.sqlite_filter``,
``ragkit.backends.postgres_filter``) emits SQL from the same tree, so the language means the same
everywhere::

    {"lang": "en"}                          equality (a list-valued field: any element equals)
    {"lang": {"$eq": "en"}}                 the same, spelled as an operator
    {"lang": {"$in": ["en", "de"]}}         any of several values (long lists are fine)
    {"lang": {"$nin": ["en", "de"]}}        present and equal to none of them (missing: no match)
    {"lang": {"$ne": "en"}}                 present and not equal (a missing field does not match)
    {"year": {"$gte": 2020, "$lt": 2024}}   $gt / $gte / $lt / $lte: numbers with numbers, strings
                                            with strings (byte-wise); a list: any element of that type
    {"year": {"$not": {"$gte": 2020}}}      not these operators on this field (missing: matches)
    {"note": {"$exists": False}}            presence (JSON null is present)
    {"author.name": "Ann"}                  dotted keys reach nested objects (never list positions)
    {"lang": "en", "year": 2020}            several keys, or several operators on one key: AND
    {"$or": [{"lang": "de"}, {"year": 2020}]}     at least one of the filters
    {"$and": [{"$or": [...]}, {"$or": [...]}]}    every one of the filters (two $or in one filter)
    {"$not": {"lang": "en", "year": 2020}}        exactly what the filter does not match
    {"$nor": [{"lang": "de"}, {"draft": True}]}   none of the filters: {"$not": {"$or": [...]}}

Comparison is type-sensitive: ``1 == 1.0``, ``1 != "1"``, ``True != 1``; an object never equals a
scalar; a missing field matches nothing except ``{"$exists": False}`` (and whatever a ``$not``
around a condition on it matches). Values are ``str``, ``bool``, ``int`` (signed 64 bits), finite
``float`` or ``None``; strings must be valid Unicode without NUL characters (what PostgreSQL's
``jsonb`` can hold).

``$nin`` is ``$ne`` for several values: the field must be present, and neither it nor (for a list)
any element of it may equal a listed value. So ``{"tags": {"$nin": ["news"]}}`` matches ``"sport"``,
``["sport"]`` and ``[]``, not ``["news", "sport"]``; ``{"note": {"$nin": [None]}}`` matches a
present non-null ``note``; ``{"$nin": []}`` matches every document where the field is present.

``$not`` is the exact complement (SQL's three-valued logic never leaks): ``{"$not": C}`` matches
exactly the documents ``C`` does not, those missing ``C``'s fields included. So
``{"lang": {"$not": {"$eq": "en"}}}`` matches a document without ``lang``, while
``{"lang": {"$ne": "en"}}`` does not. A field's ``$not`` takes a dict of that field's operators
(``{"$not": 2020}`` is refused: write ``{"$ne": 2020}``).

Logical operators are keys of a filter dict, beside field keys (everything in one dict is AND-ed);
``$and``, ``$or`` and ``$nor`` take a non-empty list of filter dicts (an empty list is refused: it
is nearly always a list built from nothing, and would silently match everything or nothing),
``$not`` takes one filter dict. ``{}`` matches everything, also inside them (``{"$not": {}}``
matches nothing). Other keys starting with ``$`` are refused (such fields cannot be filtered on).
Logical operators (a field's ``$not`` included) nest at most :data:`MAX_DEPTH` levels, and a
filter holds at most :data:`MAX_CONDITIONS` conditions (an ``$in`` list of any length is one).

:func:`parse_filter` validates a filter once and returns a tree of frozen nodes
(:mod:`ragkit.filter_tree`): :class:`Condition` (one operator on one field) under :class:`And`,
:class:`Or` and :class:`Not`; ``$nor`` becomes ``Not(Or(...))``. :func:`check_metadata` is the
matching validator for the metadata written to a store.

Example:
    >>> parse_filter({"author.name": "Ann"})
    Condition(key='author.name', path=('author', 'name'), op='eq', value='Ann')
    >>> [c.op for c in parse_filter({"year": {"$gte": 2020, "$lt": 2024}}).children]
    ['gte', 'lt']
    >>> parse_filter({"$or": [{"lang": "de"}, {"year": {"$not": {"$gte": 2020}}}]})
    ... # doctest: +NORMALIZE_WHITESPACE
    Or(children=(Condition(key='lang', path=('lang',), op='eq', value='de'),
                 Not(child=Condition(key='year', path=('year',), op='gte', value=2020))))
    >>> parse_filter({}) is None
    True
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ragkit.errors import InvalidInputError
from ragkit.filter_tree import (
    _INT_MAX,
    _INT_MIN,
    OPERATORS,
    And,
    Condition,
    Node,
    Not,
    Or,
    _check_segment,
    _show,
    _text_problem,
    _type_name,
)

__all__ = [
    "And",
    "Condition",
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "Node",
    "Not",
    "OPERATORS",
    "Or",
    "check_metadata",
    "emit_sql",
    "parse_filter",
]

MAX_DEPTH = 16
"""How deeply logical operators (``$and``, ``$or``, ``$not``, ``$nor``, a field's ``$not``) nest.

Every filter within this depth and :data:`MAX_CONDITIONS` runs on every backend, whatever its
shape (SQLite's parser is the tight one: its stack holds about 90 open parentheses).

Example:
    >>> f = {"a": 1}
    >>> for _ in range(MAX_DEPTH):
    ...     f = {"$not": f}
    >>> isinstance(parse_filter(f), Not)
    True
"""

MAX_CONDITIONS = 4096
"""The most conditions one filter may hold (an ``$in`` list of any length is one condition).

Example:
    >>> parse_filter({"$or": [{"k": i} for i in range(MAX_CONDITIONS + 1)]})
    Traceback (most recent call last):
        ...
    ragkit.errors.InvalidInputError: a filter may hold at most 4096 conditions: match many values of one field with {'$in': [...]} (one condition, any length)
"""  # noqa: E501

_LOGICAL = ("$and", "$or", "$not", "$nor")
_NODES = (Condition, And, Or, Not)
_MAX_DEPTH = 100  # nesting of metadata (lists and dicts)
_TRUE = And(())


# ---------------------------------------------------------------------------------------------- parser


def _combine(kind: type[And] | type[Or], parts: list[Node]) -> Node:
    """``kind(parts)``, simplified: same-kind children spliced in, one child alone, and an Or
    holding a match-everything child is match-everything. The meaning never changes."""
    flat: list[Node] = []
    for part in parts:
        if type(part) is kind:
            flat.extend(part.children)
        elif kind is Or and part == _TRUE:
            return _TRUE
        else:
            flat.append(part)
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


def _too_deep() -> InvalidInputError:
    return InvalidInputError(
        f"filter nests logical operators ($and, $or, $not, $nor) more than {MAX_DEPTH} levels deep: "
        "flatten it (several keys of one dict are AND-ed; $in matches any of many values)"
    )


def _too_many() -> InvalidInputError:
    return InvalidInputError(
        f"a filter may hold at most {MAX_CONDITIONS} conditions: match many values of one field "
        "with {'$in': [...]} (one condition, any length)"
    )


def _count(node: Node) -> int:
    if isinstance(node, Condition):
        return 1
    return _count(node.child) if isinstance(node, Not) else sum(_count(c) for c in node.children)


def _split_key(key: Any) -> tuple[str, ...]:
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"filter keys must be non-empty str, got {_show(key)}")
    return tuple(_check_segment(p, key) for p in key.split("."))


def _filter(spec: Any, depth: int, where: str) -> Node:
    """One filter dict (``where`` names it in messages: ``$or[2]``) as a tree; ``{}`` is And(())."""
    if not isinstance(spec, Mapping):
        raise InvalidInputError(f"{where} must be a filter dict, got {_type_name(spec)} {_show(spec, 40)}")
    parts: list[Node] = []
    for key, value in spec.items():
        if isinstance(key, str) and key.startswith("$"):
            parts.append(_logical(key, value, depth))
        elif isinstance(value, Mapping):
            parts.extend(_operators(key, _split_key(key), value, depth))
        else:
            parts.append(Condition(key, _split_key(key), "eq", value))
    return _combine(And, parts)


def _logical(name: str, value: Any, depth: int) -> Node:
    if name not in _LOGICAL:
        hint = (
            f"{name} applies to one field, as in {{'lang': {{{name!r}: ...}}}}"
            if name in OPERATORS
            else "field names starting with '$' cannot be filtered on"
        )
        raise InvalidInputError(
            f"unknown logical operator {_show(name)}: use $and, $or, $not or $nor ({hint})"
        )
    if depth >= MAX_DEPTH:
        raise _too_deep()
    if name == "$not":
        if not isinstance(value, Mapping):
            extra = "; for none of several, write {'$nor': [{...}, ...]}" if isinstance(value, list) else ""
            raise InvalidInputError(
                "$not takes one filter dict, as in {'$not': {'lang': 'en'}}, "
                f"got {_show(value, 40)}{extra}"
            )
        return Not(_filter(value, depth + 1, "$not"))
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidInputError(
            f"{name} takes a list of filter dicts, as in {{{name!r}: [{{'lang': 'de'}}, {{'year': 2020}}]}}, "
            f"got {_show(value, 40)}"
        )
    items = list(value)
    if not items:
        raise InvalidInputError(
            f"{name} got an empty list: give it at least one filter dict, or leave the key out "
            "({} matches everything)"
        )
    children = [_filter(item, depth + 1, f"{name}[{i}]") for i, item in enumerate(items)]
    if name == "$and":
        return _combine(And, children)
    either = _combine(Or, children)
    return either if name == "$or" else Not(either)


def _operators(key: Any, path: tuple[str, ...], spec: Mapping[Any, Any], depth: int) -> list[Node]:
    """The conditions of one field's operator dict, ``{"$gte": 2020, "$not": {...}}``."""
    if not spec or not all(isinstance(k, str) and k.startswith("$") for k in spec):
        raise InvalidInputError(
            f"filter on {_show(key)}: a dict value must hold operators ($in, $ne, $gt, ...); "
            "reach nested fields with dotted keys such as 'a.b'"
        )
    out: list[Node] = []
    for name, value in spec.items():
        if name == "$not":
            if depth >= MAX_DEPTH:
                raise _too_deep()
            if not isinstance(value, Mapping):
                raise InvalidInputError(
                    f"$not on {_show(key)} takes a dict of operators, as in {{'year': {{'$not': "
                    f"{{'$gte': 2020}}}}}}, got {_show(value, 40)}; for 'not equal' write {{'$ne': ...}}"
                )
            out.append(Not(_combine(And, _operators(key, path, value, depth + 1))))
        elif name in _LOGICAL:
            raise InvalidInputError(
                f"{name} combines whole filters, not one field's operators: write "
                f"{{{name!r}: [{{{_show(key, 40)}: ...}}, ...]}} at filter level"
            )
        elif name in OPERATORS:
            out.append(Condition(key, path, OPERATORS[name], value))
        else:
            raise InvalidInputError(
                f"unknown filter operator {_show(name)} on {_show(key)}: use {', '.join(OPERATORS)}, $not"
            )
    return out


def parse_filter(filter: Mapping[str, Any] | Node | None) -> Node | None:
    """Validate a metadata filter and return its tree (``None``: match everything).

    ``None`` and ``{}`` (and filters such as ``{"$and": [{}]}``) give ``None``; a :data:`Node` is
    returned unchanged (nodes are validated when built). One condition is returned as such; several
    keys as an :class:`And`, in the filter's order; ``$or`` as an :class:`Or`, ``$not`` as a
    :class:`Not`, ``$nor`` as ``Not(Or(...))``. Nested ``And``\\ s (``Or``\\ s) are flattened and
    one-child ones dropped, which never changes what matches.

    Raises:
        InvalidInputError: the filter is not a dict, a key or value is unusable (empty segments,
            quotes, NaN, ints beyond 64 bits, lone surrogates, lists as values, ...), an operator
            is unknown or misplaced, ``$and``/``$or``/``$nor`` lack a non-empty list, ``$not``
            lacks a dict, logical operators nest deeper than :data:`MAX_DEPTH`, or the filter
            holds more than :data:`MAX_CONDITIONS` conditions; the message says which and what
            to write instead.

    Example:
        >>> parse_filter({"lang": {"$in": ["en", "de"]}, "draft": False})  # doctest: +NORMALIZE_WHITESPACE
        And(children=(Condition(key='lang', path=('lang',), op='in', value=('en', 'de')),
                      Condition(key='draft', path=('draft',), op='eq', value=False)))
        >>> parse_filter({"$nor": [{"draft": True}]})
        Not(child=Condition(key='draft', path=('draft',), op='eq', value=True))
        >>> parse_filter({"$or": {"lang": "de"}})
        Traceback (most recent call last):
            ...
        ragkit.errors.InvalidInputError: $or takes a list of filter dicts, as in {'$or': [{'lang': 'de'}, {'year': 2020}]}, got {'lang': 'de'}
    """  # noqa: E501
    if filter is None or isinstance(filter, _NODES):
        return filter
    if not isinstance(filter, Mapping):
        raise InvalidInputError(f"filter must be a dict, got {_type_name(filter)}")
    node = _filter(filter, 0, "filter")
    if _count(node) > MAX_CONDITIONS:
        raise _too_many()
    return None if node == _TRUE else node


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
_MAX_NESTING = 3 * MAX_DEPTH + 1  # tree levels; a $nor level is Not(Or(And(...))) at worst
_RUN = 16


def _runs(parts: list[str], op: str) -> str:
    """``(a op b op ...)`` in runs of at most ``_RUN`` terms, runs grouped the same way."""
    while len(parts) > 1:
        runs = [parts[i : i + _RUN] for i in range(0, len(parts), _RUN)]
        parts = [run[0] if len(run) == 1 else "(" + f" {op} ".join(run) + ")" for run in runs]
    return parts[0]


def _join(parts: list[str], op: str) -> str:
    # SQLite's parser stack (about 90 entries) grows with the parentheses open at once and with
    # each "x op (" still to be reduced; its expression depth (1,000) with the length of a flat
    # "a op b op ..." run. So the deepest part comes first (emit_sql sorts them), alone:
    # "(deepest op (the rest, in runs))" costs it one stack entry and one level per tree level.
    if len(parts) == 1:
        return parts[0]
    return f"({parts[0]} {op} {_runs(parts[1:], op)})"


def _heights(node: Node, out: dict[int, int], depth: int = 0) -> int:
    """Each node's height (a condition: 0), by ``id``; raises past :data:`_MAX_NESTING` levels."""
    if depth > _MAX_NESTING:
        raise InvalidInputError(f"filter trees may nest at most {_MAX_NESTING} levels")
    if isinstance(node, Condition):
        height = 0
    elif isinstance(node, Not):
        height = 1 + _heights(node.child, out, depth + 1)
    else:
        height = 1 + max((_heights(c, out, depth + 1) for c in node.children), default=0)
    out[id(node)] = height
    return height


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
        InvalidInputError: a bad filter, a tree nested deeper than ``3 * MAX_DEPTH + 1`` levels
            or holding more than :data:`MAX_CONDITIONS` conditions, or a ``column`` that is not a
            plain (optionally qualified) identifier (it is written into the SQL text).

    Example:
        >>> emit_sql({"a": 1, "b": 2}, "m", lambda c, col: f"{col}.{c.key}=?", true="1", false="0")
        '(m.a=? AND m.b=?)'
    """
    if not isinstance(column, str) or not _COLUMN.fullmatch(column):
        raise InvalidInputError(f"column must be an SQL identifier such as 'd.metadata', got {column!r}")

    conditions = 0
    heights: dict[int, int] = {}

    def walk(node: Node) -> str:
        nonlocal conditions
        if isinstance(node, Condition):
            conditions += 1
            if conditions > MAX_CONDITIONS:
                raise _too_many()
            return condition(node, column)
        if isinstance(node, Not):
            return f"NOT {walk(node.child)}"  # every child's SQL is parenthesised or a literal
        # AND and OR commute: the deepest child goes first, the rest keep their order (the text
        # still depends on the tree's shape alone).
        children = sorted(node.children, key=lambda c: -heights[id(c)])
        parts = [walk(child) for child in children]
        if isinstance(node, And):
            return _join(parts, "AND") if parts else true
        return _join(parts, "OR") if parts else false

    node = parse_filter(filter)
    if node is None:
        return true
    _heights(node, heights)
    sql = walk(node)
    return f"({sql})" if isinstance(node, Not) else sql  # parenthesised as a whole, like the rest
