"""PostgreSQL emitter for metadata filters: a :mod:`ragkit.filters` tree to SQL over a ``jsonb`` column.

Keys and values only ever travel as psycopg ``%s`` parameters; the SQL text depends on the tree's
shape alone (and, for ``$in``, on whether the list is short or long):

* equality uses containment, ``metadata @> '{"a": {"b": v}}' OR metadata @> '{"a": {"b": [v]}}'``
  (the second form is "a list holding v"). Containment compares JSON types as such (1 == 1.0,
  1 != "1", true != 1) and can use the GIN index on ``metadata``;
* a short ``$in`` (up to 32 values) is the same containment against one ``jsonb[]`` parameter,
  ``metadata @> ANY(%s::jsonb[])``, still served by the GIN index; a long one reads the field and
  looks it (or each element of a list) up in a hashed set built once per statement from one JSON
  parameter, ``x IN (SELECT jsonb_array_elements(%s::jsonb))``: 100,000 values are one parameter,
  not 200,000 containment terms that each row would test;
* ``$exists``/``$ne``/``$nin`` test ``metadata -> 'a' -> 'b'`` with ``text`` parameters: ``->`` with a text
  key reads object fields only (never an array position, unlike ``#>``), which is SQLite's
  ``$."a"."b"`` exactly;
* ``$gt``/``$gte``/``$lt``/``$lte`` look at the value, or at each element of a list, comparing
  numbers as ``jsonb`` numbers (sent as JSON text: exact for every 64-bit int) and strings
  byte-wise (``COLLATE "C"``, as SQLite does).

Every condition is two-valued for a ``NOT NULL`` column (never SQL NULL: a missing field reaches
only ``IS [NOT] NULL`` tests, ``COALESCE`` or a ``CASE`` that ends ``ELSE FALSE``), so ``Not`` is a
plain ``NOT`` and matches exactly the rows its child does not.

Example:
    >>> from ragkit.filters import emit_sql, parse_filter
    >>> sql, params = postgres_where(parse_filter({"lang": "en"}))
    >>> sql
    '(c.metadata @> %s::jsonb OR c.metadata @> %s::jsonb)'
    >>> params
    ['{"lang": "en"}', '{"lang": ["en"]}']
"""

from __future__ import annotations

import json
from typing import Any

from ragkit.errors import InvalidInputError
from ragkit.filters import Condition, Node, emit_sql

__all__ = ["MAX_PARAMS", "SHORT_IN", "postgres_where"]

MAX_PARAMS = 65_535
"""The most bind parameters one PostgreSQL statement may carry (the wire protocol's 16-bit count).

Example:
    >>> deep = ".".join("abcdefghijklmnopqrstuvwxyz")  # 26 segments: 80 parameters per comparison
    >>> postgres_where({"$or": [{deep: {"$gt": i}} for i in range(1000)]})
    Traceback (most recent call last):
        ...
    ragkit.errors.InvalidInputError: this filter needs 80000 query parameters, more than PostgreSQL's 65535: ...
"""  # noqa: E501

SHORT_IN = 32
"""The longest ``$in`` list matched by containment (GIN-indexable); longer ones use a hashed lookup.

Example:
    >>> sql, _ = postgres_where({"k": {"$in": list(range(SHORT_IN + 1))}})
    >>> "@>" in sql
    False
"""

_SQL_OP = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _nested(parts: tuple[str, ...], value: Any) -> Any:
    """``{"a": {"b": value}}``: a containment pattern for the path ``a.b``."""
    for part in reversed(parts):
        value = {part: value}
    return value


def _field(column: str, parts: tuple[str, ...], params: list[Any]) -> str:
    # `-> text` reads an object field and yields NULL on anything else: never an array position.
    params.extend(parts)
    return "(" + column + "".join(" -> %s::text" for _ in parts) + ")"


def _equals(column: str, parts: tuple[str, ...], value: Any, params: list[Any]) -> str:
    # `@>` with a scalar matches the scalar; with a one-element list it matches a list holding it.
    # (PostgreSQL's "an array contains a primitive" exception applies at the top level only.)
    params.extend([_json(_nested(parts, value)), _json(_nested(parts, [value]))])
    return f"({column} @> %s::jsonb OR {column} @> %s::jsonb)"


def _one_of(column: str, parts: tuple[str, ...], values: tuple[Any, ...], params: list[Any]) -> str:
    if not values:
        return "FALSE"
    if len(values) <= SHORT_IN:
        params.append([_json(_nested(parts, p)) for v in values for p in (v, [v])])
        return f"({column} @> ANY(%s::jsonb[]))"
    # jsonb `=` is type-sensitive like containment (1 = 1.0, 1 <> '"1"', true <> 1) and hashable;
    # the uncorrelated IN (SELECT ...) is a hashed subplan, built once. A missing field gives
    # NULL IN (...), hence the COALESCE; objects equal no scalar.
    typed = _field(column, parts, params)
    elements = _field(column, parts, params)
    params.append(_json(list(values)))
    scalar = _field(column, parts, params)
    params.append(_json(list(values)))
    return (
        f"(CASE jsonb_typeof({typed}) WHEN 'array' THEN EXISTS (SELECT 1 FROM "
        f"jsonb_array_elements({elements}) AS e(x) "
        f"WHERE COALESCE(e.x IN (SELECT jsonb_array_elements(%s::jsonb)), FALSE)) "
        f"ELSE COALESCE({scalar} IN (SELECT jsonb_array_elements(%s::jsonb)), FALSE) END)"
    )


def _compare(c: Condition, column: str, params: list[Any]) -> str:
    sql_op = _SQL_OP[c.op]
    if isinstance(c.value, str):
        kind, operand = "string", c.value

        def test(x: str) -> str:
            return f"({x} #>> '{{}}') COLLATE \"C\" {sql_op} %s::text"  # byte order, as SQLite
    else:
        kind, operand = "number", _json(c.value)  # as jsonb: a float8 parameter would round to 15 digits

        def test(x: str) -> str:
            return f"{x} {sql_op} %s::jsonb"

    # A scalar is compared directly (the common case, and cheap); a list when any element of that
    # JSON type compares; objects, nested lists and other types never.
    # (Each occurrence of the field in the SQL text takes its own parameters, in text order.)
    typed = _field(column, c.path, params)
    compared = _field(column, c.path, params)
    params.append(operand)
    elements = _field(column, c.path, params)
    params.append(operand)
    return (
        f"(CASE jsonb_typeof({typed}) WHEN '{kind}' THEN {test(compared)} "
        f"WHEN 'array' THEN EXISTS (SELECT 1 FROM jsonb_array_elements({elements}) AS e(x) "
        f"WHERE jsonb_typeof(e.x) = '{kind}' AND {test('e.x')}) ELSE FALSE END)"
    )


def _condition(c: Condition, column: str, params: list[Any]) -> str:
    if c.op == "eq":
        return _equals(column, c.path, c.value, params)
    if c.op == "in":
        return _one_of(column, c.path, c.value, params)
    if c.op == "ne":
        present = _field(column, c.path, params)
        return f"({present} IS NOT NULL AND NOT {_equals(column, c.path, c.value, params)})"
    if c.op == "nin":
        present = _field(column, c.path, params)
        return f"({present} IS NOT NULL AND NOT {_one_of(column, c.path, c.value, params)})"
    if c.op == "exists":
        return f"({_field(column, c.path, params)} IS {'NOT ' if c.value else ''}NULL)"
    return _compare(c, column, params)  # gt / gte / lt / lte (Condition has checked the op)


def postgres_where(node: Node | None, column: str = "c.metadata") -> tuple[str, list[Any]]:
    """SQL condition text over a ``jsonb`` column, and its psycopg ``%s`` parameters in text order.

    Parameters are ``str`` (keys as ``text``, patterns and numbers as ``jsonb`` text), except that a
    short ``$in`` passes one ``list[str]`` (sent as an array, cast to ``jsonb[]``). The text holds
    no other ``%``, so it composes with ``psycopg.sql.SQL``.

    Args:
        node: a parsed filter (:func:`ragkit.filters.parse_filter`); ``None`` matches every row.
            A filter dict is parsed here too.
        column: the ``jsonb NOT NULL`` column, as the statement names it: a plain (optionally
            qualified) identifier such as ``"c.metadata"``; it is written into the SQL text, so
            never pass user input.

    Raises:
        InvalidInputError: a bad filter (see :func:`ragkit.filters.parse_filter`), a tree nested
            deeper than ``ragkit.filters`` allows, holding more than 4096 conditions or needing
            more than 65,535 parameters (PostgreSQL's limit), or a ``column`` that is not an
            identifier.

    Example:
        >>> from ragkit.filters import parse_filter
        >>> sql, params = postgres_where(parse_filter({"year": {"$in": [2020, 2021]}}))
        >>> sql
        '(c.metadata @> ANY(%s::jsonb[]))'
        >>> params
        [['{"year": 2020}', '{"year": [2020]}', '{"year": 2021}', '{"year": [2021]}']]
        >>> postgres_where(None)
        ('TRUE', [])
    """
    params: list[Any] = []
    sql = emit_sql(node, column, lambda c, col: _condition(c, col, params), true="TRUE", false="FALSE")
    if len(params) > MAX_PARAMS:
        raise InvalidInputError(
            f"this filter needs {len(params)} query parameters, more than PostgreSQL's {MAX_PARAMS}: "
            "use fewer conditions or shorter dotted keys ($in with any number of values is one or two)"
        )
    return sql, params
