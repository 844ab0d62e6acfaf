"""SQLite emitter for metadata filters: a :mod:`ragkit.filters` tree to SQL over SQLite's JSON functions.

The metadata column holds JSON text (what :func:`ragkit.filters.check_metadata` writes). Keys and
values only ever travel as bound ``?`` parameters; the SQL text depends on the tree's shape alone
(and on which JSON types an ``$in`` list holds):

* a field is the JSON path ``$."a"."b"`` (object members only; never an array position);
* equality and comparisons look at the field through ``json_each``, which yields a scalar itself
  and a list's elements, so a list-valued field matches when any element does; an object never
  matches a scalar (``json_type`` rules it out). Each test checks ``json_each``'s ``type`` first:
  numbers match numbers across ``integer``/``real`` (``1 == 1.0``), text matches text (byte-wise,
  SQLite's ``BINARY`` collation), ``true``/``false``/``null`` match by type alone;
* ``$in`` passes its numbers as one JSON-array parameter and its strings as another, matched with
  ``je.atom IN (SELECT value FROM json_each(?))``: SQLite builds that set once per statement, so
  100,000 values cost one parameter and a lookup per element, not a 100,000-term expression;
* ``$exists``, ``$ne`` and ``$nin`` test ``json_type(column, path)``, which is NULL only for a
  missing field (``$nin`` is "present and not ``$in``", as ``$ne`` is "present and not equal").

Every condition is two-valued (never SQL NULL: ``IS``/``IS NOT`` tests, ``EXISTS`` and ``AND``s
of them), so ``Not`` is a plain ``NOT`` and matches exactly the rows its child does not.

Example:
    >>> import sqlite3
    >>> from ragkit.filters import emit_sql, parse_filter
    >>> db = sqlite3.connect(":memory:")
    >>> _ = db.execute("CREATE TABLE documents (id TEXT, metadata TEXT)")
    >>> _ = db.executemany("INSERT INTO documents VALUES (?, ?)", [("a", '{"year": 2020}'), ("b", "{}")])
    >>> where, params = sqlite_where(parse_filter({"year": {"$gte": 2020.0}}))
    >>> db.execute(f"SELECT id FROM documents d WHERE {where}", params).fetchall()
    [('a',)]
"""

from __future__ import annotations

import json
from typing import Any

from ragkit.filters import Condition, Node, emit_sql

__all__ = ["sqlite_where"]

_SQL_OP = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NUMBER = "je.type IN ('integer', 'real')"


def _path(parts: tuple[str, ...]) -> str:
    return "$" + "".join(f'."{p}"' for p in parts)


def _any_element(
    column: str, parts: tuple[str, ...], condition: str, cond_params: list[Any], params: list[Any]
) -> str:
    """``condition`` (on ``json_each`` columns ``je.type``/``je.atom``) holds for the field or an element."""
    path = _path(parts)
    params.extend([path, path, *cond_params])
    return (
        f"(json_type({column}, ?) IS NOT 'object' AND "
        f"EXISTS (SELECT 1 FROM json_each({column}, ?) AS je WHERE {condition}))"
    )


def _equals(value: Any, params: list[Any]) -> str:
    if value is None:
        return "je.type = 'null'"
    if isinstance(value, bool):
        return "je.type = 'true'" if value else "je.type = 'false'"
    params.append(value)
    if isinstance(value, (int, float)):
        return f"({_NUMBER} AND je.atom = ?)"
    return "(je.type = 'text' AND je.atom = ?)"


def _one_of(values: tuple[Any, ...], params: list[Any]) -> str:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    strings = [v for v in values if isinstance(v, str)]
    types = [t for t, v in (("true", True), ("false", False)) if any(x is v for x in values)]
    if any(v is None for v in values):
        types.append("null")
    terms = []
    if numbers:
        params.append(json.dumps(numbers, allow_nan=False))
        terms.append(f"({_NUMBER} AND je.atom IN (SELECT value FROM json_each(?)))")
    if strings:
        params.append(json.dumps(strings, ensure_ascii=False))
        terms.append("(je.type = 'text' AND je.atom IN (SELECT value FROM json_each(?)))")
    if types:
        terms.append("je.type IN (" + ", ".join(f"'{t}'" for t in types) + ")")
    return terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"


def _condition(c: Condition, column: str, params: list[Any]) -> str:
    cond_params: list[Any] = []
    if c.op == "eq":
        return _any_element(column, c.path, _equals(c.value, cond_params), cond_params, params)
    if c.op == "in":
        if not c.value:
            return "0"
        return _any_element(column, c.path, _one_of(c.value, cond_params), cond_params, params)
    if c.op == "ne":
        params.append(_path(c.path))
        equal = _any_element(column, c.path, _equals(c.value, cond_params), cond_params, params)
        return f"(json_type({column}, ?) IS NOT NULL AND NOT {equal})"
    if c.op == "nin":
        params.append(_path(c.path))
        if not c.value:
            return f"(json_type({column}, ?) IS NOT NULL)"
        matched = _any_element(column, c.path, _one_of(c.value, cond_params), cond_params, params)
        return f"(json_type({column}, ?) IS NOT NULL AND NOT {matched})"
    if c.op == "exists":
        params.append(_path(c.path))
        return f"(json_type({column}, ?) IS {'NOT ' if c.value else ''}NULL)"
    # gt / gte / lt / lte (Condition has checked the op)
    cond_params.append(c.value)
    kind = "je.type = 'text'" if isinstance(c.value, str) else _NUMBER
    return _any_element(column, c.path, f"({kind} AND je.atom {_SQL_OP[c.op]} ?)", cond_params, params)


def sqlite_where(node: Node | None, column: str = "d.metadata") -> tuple[str, list[Any]]:
    """SQL condition text over SQLite's JSON functions, and its ``?`` parameters in text order.

    Args:
        node: a parsed filter (:func:`ragkit.filters.parse_filter`); ``None`` matches every row.
            A filter dict is parsed here too.
        column: the JSON-text column, as the statement names it: a plain (optionally qualified)
            identifier such as ``"d.metadata"``; it is written into the SQL text, so never pass
            user input.

    Raises:
        InvalidInputError: a bad filter (see :func:`ragkit.filters.parse_filter`), a tree nested
            deeper than ``ragkit.filters`` allows or holding more than 4096 conditions, or a
            ``column`` that is not an identifier.

    Example:
        >>> from ragkit.filters import parse_filter
        >>> sql, params = sqlite_where(parse_filter({"lang": {"$in": ["en", "de"]}}))
        >>> params
        ['$."lang"', '$."lang"', '["en", "de"]']
        >>> sqlite_where(None)
        ('1', [])
    """
    params: list[Any] = []
    sql = emit_sql(node, column, lambda c, col: _condition(c, col, params), true="1", false="0")
    return sql, params
