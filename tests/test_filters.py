"""The filter parser and metadata validator (ragkit.filters) and both SQL emitters, run directly.

The whole shared table (tests/filter_cases.py) runs through ``sqlite_where`` on an in-memory SQLite
database and through ``postgres_where`` on the test PostgreSQL server; hand-built ``Or``/``Not``
trees and random trees (hypothesis) are checked against a plain-Python evaluator of the semantics.
The dict grammar's logical operators are tested in tests/test_filter_grammar.py.
"""

from __future__ import annotations

import datetime
import enum
import json
import operator
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from filter_cases import ALL, BAD_FILTERS, BIG, CASES, DOCS, INJECTIONS, SMALL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_server import fresh_table, server_dsn

from ragkit.backends.postgres_filter import SHORT_IN, postgres_where
from ragkit.backends.sqlite_filter import sqlite_where
from ragkit.errors import InvalidInputError
from ragkit.filters import OPERATORS, And, Condition, Node, Not, Or, check_metadata, parse_filter


def _ids(cases: list) -> list[str]:
    return [str(c[0] if isinstance(c, tuple) else c)[:80] for c in cases]


def C(key: str, op: str, value: Any) -> Condition:  # noqa: N802 - reads like the node it builds
    return Condition(key, tuple(key.split(".")), op, value)


# ------------------------------------------------------------------------------- a reference evaluator

_MISSING = object()
_CMP = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _lookup(metadata: dict, path: tuple[str, ...]) -> Any:
    value: Any = metadata
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _candidates(value: Any) -> list[Any]:
    """What equality and comparisons look at: the scalar, or a list's elements; never an object."""
    if isinstance(value, dict):
        return []
    return value if isinstance(value, list) else [value]


def _same(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) and _kind(a) not in ("array", "object") and a == b


def evaluate(node: Node | None, metadata: dict) -> bool:
    """The filter semantics, in plain Python, as DESIGN.md and ragkit.filters describe them."""
    if node is None:
        return True
    if isinstance(node, And):
        return all(evaluate(c, metadata) for c in node.children)
    if isinstance(node, Or):
        return any(evaluate(c, metadata) for c in node.children)
    if isinstance(node, Not):
        return not evaluate(node.child, metadata)
    value = _lookup(metadata, node.path)
    if node.op == "exists":
        return (value is not _MISSING) == node.value
    if value is _MISSING:
        return False
    if node.op == "eq":
        return any(_same(c, node.value) for c in _candidates(value))
    if node.op == "in":
        return any(_same(c, v) for c in _candidates(value) for v in node.value)
    if node.op == "ne":
        return not any(_same(c, node.value) for c in _candidates(value))
    if node.op == "nin":
        return not any(_same(c, v) for c in _candidates(value) for v in node.value)
    want = _kind(node.value)

    def key(x: Any) -> Any:
        return x.encode("utf-8") if isinstance(x, str) else x  # byte-wise, as both databases

    return any(_kind(c) == want and _CMP[node.op](key(c), key(node.value)) for c in _candidates(value))


def expected_ids(node: Node | None, docs: dict[str, dict]) -> set[str]:
    return {doc_id for doc_id, md in docs.items() if evaluate(node, md)}


# ------------------------------------------------------------------------------------------ databases


def _sqlite_db(docs: dict[str, dict]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE documents (id TEXT, metadata TEXT)")
    db.executemany("INSERT INTO documents VALUES (?, ?)", [(k, check_metadata(v)) for k, v in docs.items()])
    return db


def sqlite_ids(db: sqlite3.Connection, flt: Any) -> set[str]:
    where, params = sqlite_where(parse_filter(flt))
    return {r[0] for r in db.execute(f"SELECT id FROM documents d WHERE {where}", params)}


class PgTable:
    """A ``(id text, metadata jsonb)`` table on the test server, holding ``docs``."""

    def __init__(self, docs: dict[str, dict]) -> None:
        psycopg = pytest.importorskip("psycopg")
        from psycopg import sql

        self.conn = psycopg.connect(server_dsn(), autocommit=True)
        self.table = fresh_table()
        self._select = sql.SQL("SELECT id FROM {} c WHERE ").format(sql.Identifier(self.table))
        self.conn.execute(
            sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, metadata jsonb NOT NULL)").format(
                sql.Identifier(self.table)
            )
        )
        self.conn.execute(
            sql.SQL("CREATE INDEX ON {} USING gin (metadata jsonb_path_ops)").format(
                sql.Identifier(self.table)
            )
        )
        with self.conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s::jsonb)").format(sql.Identifier(self.table)),
                [(k, check_metadata(v)) for k, v in docs.items()],
            )

    def ids(self, flt: Any) -> set[str]:
        from psycopg import sql

        where, params = postgres_where(parse_filter(flt))
        return {r[0] for r in self.conn.execute(self._select + sql.SQL(where), params)}

    def values(self, flt: Any) -> list[Any]:
        """The filter's SQL value on every row (``True``/``False``, or ``None`` were it three-valued)."""
        from psycopg import sql

        where, params = postgres_where(parse_filter(flt))
        query = (
            sql.SQL("SELECT (") + sql.SQL(where) + sql.SQL(") FROM {} c").format(sql.Identifier(self.table))
        )
        return [r[0] for r in self.conn.execute(query, params)]

    def count(self) -> int:
        from psycopg import sql

        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(self.table))
        return self.conn.execute(query).fetchone()[0]

    def close(self) -> None:
        from psycopg import sql

        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.table)))
        self.conn.close()


@pytest.fixture(scope="module")
def sqlite_docs() -> Iterator[sqlite3.Connection]:
    db = _sqlite_db(DOCS)
    yield db
    db.close()


@pytest.fixture(scope="module")
def pg_docs() -> Iterator[PgTable]:
    table = PgTable(DOCS)
    yield table
    table.close()


# ------------------------------------------------------------------------------------- parse_filter


def test_none_and_empty_match_everything():
    assert parse_filter(None) is None
    assert parse_filter({}) is None
    assert sqlite_where(None) == ("1", [])
    assert postgres_where(None) == ("TRUE", [])
    assert sqlite_where(parse_filter({})) == ("1", [])


def test_parse_builds_conditions_in_order():
    assert parse_filter({"author.name": "Ann"}) == Condition("author.name", ("author", "name"), "eq", "Ann")
    node = parse_filter({"lang": "en", "year": {"$gte": 2020, "$lt": 2024}, "x": {"$exists": False}})
    assert isinstance(node, And)
    assert [(c.key, c.op, c.value) for c in node.children] == [
        ("lang", "eq", "en"),
        ("year", "gte", 2020),
        ("year", "lt", 2024),
        ("x", "exists", False),
    ]
    assert parse_filter({"a": {"$eq": 1}}) == parse_filter({"a": 1})
    for name, op in OPERATORS.items():
        value = [1] if op in ("in", "nin") else True if op == "exists" else 1
        assert parse_filter({"k": {name: value}}).op == op


def test_nodes_pass_through_unchanged():
    for node in [C("a", "eq", 1), And(()), Or((C("a", "eq", 1),)), Not(C("b", "exists", True))]:
        assert parse_filter(node) is node
        assert isinstance(node, Node)


def test_in_values_are_normalised_to_a_tuple():
    node = parse_filter({"a": {"$in": [1, "x", None, True, 2.5]}})
    assert node.value == (1, "x", None, True, 2.5)
    assert parse_filter({"a": {"$in": (v for v in [3, 4])}}).value == (3, 4)
    assert sorted(parse_filter({"a": {"$in": {"p", "q"}}}).value) == ["p", "q"]
    hash(node)  # frozen, hashable: a tree can key a cache


def test_values_keep_their_json_type():
    class Colour(enum.IntEnum):
        RED = 1

    class Name(str, enum.Enum):
        ANN = "Ann"

    assert parse_filter({"a": True}).value is True  # not 1
    node = parse_filter({"a": Colour.RED, "b": Name.ANN, "c": np.float64(0.5)})
    values = [c.value for c in node.children]
    assert values == [1, "Ann", 0.5] and [type(v) for v in values] == [int, str, float]
    assert parse_filter({"x": BIG}).value == BIG and parse_filter({"x": SMALL}).value == SMALL


@pytest.mark.parametrize("flt", BAD_FILTERS, ids=_ids(BAD_FILTERS))
def test_bad_filters_raise_invalid_input(flt):
    with pytest.raises(InvalidInputError) as info:
        parse_filter(flt)
    message = str(info.value)
    assert message and len(message) < 300
    message.encode("utf-8")  # a message can always be printed or logged, whatever the filter held
    with pytest.raises(InvalidInputError):  # the emitters parse what they are given, too
        sqlite_where(flt)
    with pytest.raises(InvalidInputError):
        postgres_where(flt)


@pytest.mark.parametrize(
    ("flt", "words"),
    [
        ({"x": 2**63}, ["'x'", "64 bits"]),
        ({"x": {"$in": [1, -(2**63) - 1]}}, ["'x'", "64 bits"]),
        ({"x": "\ud800"}, ["'x'", "surrogate"]),
        ({"\ud800": 1}, ["surrogate"]),
        ({"x": "a\x00"}, ["NUL"]),
        ({"a..b": 1}, ["'a..b'", "empty segment"]),
        ({'a"b': 1}, ["double quote"]),
        ({"a\\b": 1}, ["backslash"]),
        ({"lang": {"$regex": "e.*"}}, ["$regex", "'lang'", "$in"]),
        ({"lang": {"name": "x"}}, ["dotted keys"]),
        ({"tags": ["news"]}, ["$in"]),
        ({"x": float("nan")}, ["finite"]),
        ({"year": {"$gt": None}}, ["$gt", "number or a str"]),
        ({"lang": {"$in": "en"}}, ["$in", "list"]),
        ({"x": {"$exists": "yes"}}, ["$exists", "true or false"]),
        ({"x": datetime.date(2020, 1, 1)}, ["datetime.date"]),
        ({1: "a"}, ["non-empty str"]),
        (["lang", "en"], ["dict", "list"]),
        ({"x": {"$in": list(range(100_000)) + [None, 2**70]}}, ["64 bits"]),
    ],
    ids=lambda v: str(v)[:40],
)
def test_messages_say_what_is_wrong(flt, words):
    with pytest.raises(InvalidInputError) as info:
        parse_filter(flt)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert len(str(info.value)) < 300  # long values are shortened


def test_hand_built_nodes_are_validated():
    with pytest.raises(InvalidInputError, match="unknown filter operator"):
        Condition("a", ("a",), "regex", "x")
    with pytest.raises(InvalidInputError, match="empty"):
        Condition("a", (), "eq", 1)
    with pytest.raises(InvalidInputError):
        Condition("a", "a", "eq", 1)  # a str is not a path
    with pytest.raises(InvalidInputError):
        Condition("", ("a",), "eq", 1)
    with pytest.raises(InvalidInputError, match="64 bits"):
        Condition("a", ("a",), "in", [2**64])
    with pytest.raises(InvalidInputError):
        Condition("a", ("a",), "gt", None)
    with pytest.raises(InvalidInputError):
        Condition("a", ("a",), "exists", 1)
    with pytest.raises(InvalidInputError):
        And([C("a", "eq", 1), {"b": 1}])
    with pytest.raises(InvalidInputError):
        Or("ab")
    with pytest.raises(InvalidInputError):
        Not({"a": 1})
    assert And([C("a", "eq", 1)]).children == (C("a", "eq", 1),)  # lists become tuples
    # a hand-built path may hold a segment with a dot: it names that key literally
    assert Condition("dot.key", ("dot.key",), "eq", 1).path == ("dot.key",)


# ------------------------------------------------------------------------------------ check_metadata


@pytest.mark.parametrize("doc_id", sorted(DOCS))
def test_check_metadata_round_trips(doc_id):
    text = check_metadata(DOCS[doc_id])
    assert json.loads(text) == DOCS[doc_id]
    assert text == json.dumps(DOCS[doc_id], sort_keys=True, ensure_ascii=False, allow_nan=False)


def test_check_metadata_output():
    assert check_metadata({"b": 1, "a": "é"}) == '{"a": "é", "b": 1}'
    assert check_metadata({"t": (1, 2), "x": np.float64(0.5)}) == '{"t": [1, 2], "x": 0.5}'
    assert check_metadata({}) == "{}"
    assert json.loads(check_metadata({"big": BIG, "small": SMALL})) == {"big": BIG, "small": SMALL}
    from types import MappingProxyType

    assert check_metadata(MappingProxyType({"a": 1})) == '{"a": 1}'


def _circular() -> dict:
    md: dict = {"a": []}
    md["a"].append(md)
    return md


def _deep(n: int) -> dict:
    md: dict = {}
    for _ in range(n):
        md = {"x": md}
    return md


@pytest.mark.parametrize(
    ("metadata", "where"),
    [
        ([1, 2], None),
        (None, None),
        ("text", None),
        ({1: "a"}, None),
        ({"a": {2: "b"}}, "['a']"),
        ({"tags": {"x", "y"}}, "['tags']"),
        ({"raw": b"bytes"}, "['raw']"),
        ({"when": datetime.datetime(2020, 1, 1)}, "['when']"),
        ({"vec": np.zeros(3)}, "['vec']"),
        ({"n": np.int64(3)}, "['n']"),
        ({"d": Decimal("1.5")}, "['d']"),
        ({"x": float("nan")}, "['x']"),
        ({"x": [1.0, float("inf")]}, "['x'][1]"),
        ({"a": {"b": [0, 2**63]}}, "['a']['b'][1]"),
        ({"a": -(2**63) - 1}, "['a']"),
        ({"s": "\ud800"}, "['s']"),
        ({"s": ["ok", "\udfff"]}, "['s'][1]"),
        ({"\ud800": 1}, None),
        ({"a": {"\udc80": 1}}, "['a']"),
        ({"s": "a\x00b"}, "['s']"),
        ({"a\x00": 1}, None),
        ({"o": object()}, "['o']"),
        (_circular(), "['a'][0]"),
        (_deep(150), None),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, (str, type(None))) else str(v),
)
def test_check_metadata_refuses_what_cannot_be_stored(metadata, where):
    with pytest.raises(InvalidInputError) as info:
        check_metadata(metadata)
    message = str(info.value)
    message.encode("utf-8")
    assert len(message) < 300
    if where:
        assert "metadata" + where in message, message


# ------------------------------------------------------------------------------------ the whole table


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=_ids(CASES))
def test_table_cases_agree_with_the_evaluator(flt, expected):
    assert expected_ids(parse_filter(flt), DOCS) == expected


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=_ids(CASES))
def test_sqlite_table(sqlite_docs, flt, expected):
    assert sqlite_ids(sqlite_docs, flt) == expected


@pytest.mark.pg
@pytest.mark.parametrize(("flt", "expected"), CASES, ids=_ids(CASES))
def test_postgres_table(pg_docs, flt, expected):
    assert pg_docs.ids(flt) == expected


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=_ids(CASES))
def test_sqlite_conditions_are_never_null(sqlite_docs, flt, expected):
    """Two-valued SQL: a NULL anywhere would make NOT (and a $not) drop rows instead of keeping them."""
    where, params = sqlite_where(parse_filter(flt))
    values = [r[0] for r in sqlite_docs.execute(f"SELECT ({where}) FROM documents d", params)]
    assert len(values) == len(DOCS) and set(values) <= {0, 1}


@pytest.mark.pg
@pytest.mark.parametrize(("flt", "expected"), CASES, ids=_ids(CASES))
def test_postgres_conditions_are_never_null(pg_docs, flt, expected):
    values = pg_docs.values(flt)
    assert len(values) == len(DOCS) and set(values) <= {True, False}


@pytest.mark.parametrize("flt", INJECTIONS, ids=_ids(INJECTIONS))
def test_sqlite_injections_are_inert(sqlite_docs, flt):
    assert sqlite_ids(sqlite_docs, flt) == set()
    assert sqlite_docs.execute("SELECT count(*) FROM documents").fetchone()[0] == len(DOCS)
    sql, _ = sqlite_where(parse_filter(flt))
    assert "OR 1=1" not in sql and "DROP" not in sql and "'1'='1" not in sql


@pytest.mark.pg
@pytest.mark.parametrize("flt", INJECTIONS, ids=_ids(INJECTIONS))
def test_postgres_injections_are_inert(pg_docs, flt):
    assert pg_docs.ids(flt) == set()
    assert pg_docs.count() == len(DOCS)
    sql, _ = postgres_where(parse_filter(flt))
    assert "OR 1=1" not in sql and "DROP" not in sql and sql.count("%") == sql.count("%s")


def test_sql_text_depends_on_the_shape_only():
    for where in (sqlite_where, postgres_where):
        a = where(parse_filter({"lang": "en'--", "year": {"$gte": 2020}}))[0]
        b = where(parse_filter({"zz": "other", "w": {"$gte": 7}}))[0]
        assert a == b
        a = where(parse_filter({"k": {"$in": [f"v{i}" for i in range(100)]}}))[0]
        b = where(parse_filter({"j": {"$in": [f"w{i}" for i in range(5000)]}}))[0]
        assert a == b  # one parameter for the whole list


def test_emitters_check_their_column():
    for where in (sqlite_where, postgres_where):
        assert where(parse_filter({"a": 1}), column="metadata")[0].count("metadata") >= 1
        assert "public.t.metadata" in where(parse_filter({"a": 1}), column="public.t.metadata")[0]
        for bad in ["d.metadata; DROP TABLE x", "json(d.metadata)", "", "d.", 'd."m"', "1col", None]:
            with pytest.raises(InvalidInputError):
                where(parse_filter({"a": 1}), column=bad)


def test_emitters_refuse_absurd_nesting():
    node: Node = C("a", "eq", 1)
    for _ in range(101):
        node = Not(node)
    for where in (sqlite_where, postgres_where):
        with pytest.raises(InvalidInputError, match="nest"):
            where(node)


# ------------------------------------------------------------------------------ Or / Not, by hand

HAND_BUILT: list[Node] = [
    Not(C("lang", "eq", "en")),  # a missing lang matches Not(eq)
    Not(C("lang", "ne", "en")),  # ... and Not(ne): neither is the other's complement
    Not(C("lang", "exists", True)),
    Not(C("author.age", "gte", 30)),
    Not(C("tags", "in", ("news", "sport"))),
    Not(C("tags", "in", tuple(f"t{i}" for i in range(40)) + ("news",))),  # a long $in
    Not(C("mixed", "lt", "2")),
    Not(C("items", "eq", 3)),
    Not(C("lang", "in", ())),
    Or((C("lang", "eq", "fr"), C("year", "lt", 2021))),
    Or((C("tags", "eq", "news"), C("note", "exists", True), C("n", "eq", True))),
    Or((C("missing", "eq", 1), C("also.missing", "gt", 0))),
    Or(()),
    And(()),
    Not(Or(())),
    Not(And(())),
    Not(Not(C("tags", "eq", "sport"))),
    Or((Not(C("lang", "exists", True)), And((C("lang", "eq", "en"), Not(C("year", "eq", 2020)))))),
    And((Or((C("lang", "eq", "en"), C("lang", "eq", "de"))), Not(C("tags", "ne", "news")))),
    Not(And((C("author.name", "exists", True), Or((C("author.age", "lt", 40), C("big", "eq", BIG)))))),
    Or(tuple(C(f"k{i}", "exists", True) for i in range(300)) + (C("word", "eq", "é"),)),  # wide
    And(tuple(C(f"k{i}", "exists", False) for i in range(1500))),  # wider than SQLite's depth limit
]


def test_hand_built_cases_are_not_trivial():
    sizes = [len(expected_ids(node, DOCS)) for node in HAND_BUILT]
    assert 0 in sizes and len(DOCS) in sizes and sum(0 < s < len(DOCS) for s in sizes) >= 10


@pytest.mark.parametrize("node", HAND_BUILT, ids=[repr(n)[:80] for n in HAND_BUILT])
def test_sqlite_or_not(sqlite_docs, node):
    assert sqlite_ids(sqlite_docs, node) == expected_ids(node, DOCS)


@pytest.mark.pg
@pytest.mark.parametrize("node", HAND_BUILT, ids=[repr(n)[:80] for n in HAND_BUILT])
def test_postgres_or_not(pg_docs, node):
    assert pg_docs.ids(node) == expected_ids(node, DOCS)


@pytest.mark.parametrize("flt", [f for f, _ in CASES], ids=_ids(CASES))
def test_not_is_the_exact_complement(sqlite_docs, flt):
    node = parse_filter(flt)
    if node is not None:
        assert sqlite_ids(sqlite_docs, Not(node)) == ALL - sqlite_ids(sqlite_docs, node)


@pytest.mark.pg
@pytest.mark.parametrize("flt", [f for f, _ in CASES], ids=_ids(CASES))
def test_postgres_not_is_the_exact_complement(pg_docs, flt):
    node = parse_filter(flt)
    if node is not None:
        assert pg_docs.ids(Not(node)) == ALL - pg_docs.ids(node)


# ----------------------------------------------------------------------------------- long $in lists


def _long_in_docs(n: int = 2_000) -> dict[str, dict]:
    return {f"r{i}": {"k": i, "s": f"v{i}", "tags": [f"t{i % 50}", i % 7]} for i in range(n)}


def _long_in_filters(n_values: int) -> list[tuple[dict, set[str]]]:
    strings = [f"v{i}" for i in range(0, 2 * n_values, 2)]  # every other doc, up to n_values of them
    numbers = [float(i) if i % 3 == 0 else i for i in range(-n_values // 2, n_values // 2)]
    return [
        ({"s": {"$in": strings}}, {f"r{i}" for i in range(0, min(2_000, 2 * n_values), 2)}),
        ({"k": {"$in": numbers}}, {f"r{i}" for i in range(min(2_000, n_values // 2))}),
        (
            {"tags": {"$in": [f"x{i}" for i in range(n_values)] + ["t7"]}},
            {f"r{i}" for i in range(7, 2_000, 50)},
        ),
        ({"tags": {"$in": [*range(1000, 1000 + n_values), 6]}}, {f"r{i}" for i in range(6, 2_000, 7)}),
    ]


@pytest.mark.parametrize("n_values", [20_000, 100_000])
def test_sqlite_long_in(n_values):
    db = _sqlite_db(_long_in_docs())
    for flt, expected in _long_in_filters(n_values):
        started = time.perf_counter()
        assert sqlite_ids(db, flt) == expected
        assert time.perf_counter() - started < 30  # ~0.1 s on a laptop; the old OR chain could not run
    db.close()


@pytest.mark.pg
def test_postgres_long_in():
    table = PgTable(_long_in_docs())
    try:
        for n_values in [SHORT_IN, SHORT_IN + 1, 20_000]:
            for flt, expected in _long_in_filters(n_values):
                assert table.ids(flt) == expected
    finally:
        table.close()


# ---------------------------------------------------------------------- random trees (hypothesis)

SCALARS = [0, 1, 1.0, 2, 2.5, -1, 10**12, BIG, SMALL, "0", "1", "a", "b", "B", "é", "", True, False, None]
VALUES = SCALARS + [[], [1, "a"], ["a", "b"], [True], [[1]], [None], {"x": 1}, {"x": "a"}, [{"x": 1}]]
KEYS = ["a", "b", "c", "n.x", "a.x", "missing", "lang", "tags", "year", "mixed", "items", "author.name"]


def _random_docs() -> dict[str, dict]:
    rng = np.random.default_rng(7)
    docs = dict(DOCS)
    for i in range(60):
        md = {k: VALUES[rng.integers(len(VALUES))] for k in ("a", "b", "c") if rng.random() < 0.7}
        if rng.random() < 0.3:
            md["n"] = {"x": VALUES[rng.integers(len(VALUES))]}
        docs[f"r{i}"] = md
    return docs


RANDOM_DOCS = _random_docs()

_scalar = st.one_of(
    st.sampled_from(SCALARS),
    st.integers(-3, 3),
    st.floats(-3, 3, allow_nan=False).map(lambda x: round(x, 1)),
    st.sampled_from(["a", "b", "é", "ä", "zz"]),
)
_ORDERED = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 2.5, 10**12, BIG, "", "a", "b", "B", "é"]))


@st.composite
def _conditions(draw: Any) -> Condition:
    key = draw(st.sampled_from(KEYS))
    op = draw(st.sampled_from(sorted(OPERATORS.values())))
    if op in ("in", "nin"):
        values = draw(st.lists(_scalar, max_size=5))
        if draw(st.booleans()):
            values += [f"pad{i}" for i in range(SHORT_IN)]  # the long form of $in, on PostgreSQL
        value: Any = values
    elif op == "exists":
        value = draw(st.booleans())
    elif op in ("gt", "gte", "lt", "lte"):
        value = draw(_ORDERED)
    else:
        value = draw(_scalar)
    return C(key, op, value)


_trees = st.recursive(
    _conditions(),
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda c: And(tuple(c))),
        st.lists(children, max_size=3).map(lambda c: Or(tuple(c))),
        children.map(Not),
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def sqlite_random() -> Iterator[sqlite3.Connection]:
    db = _sqlite_db(RANDOM_DOCS)
    yield db
    db.close()


@pytest.fixture(scope="module")
def pg_random() -> Iterator[PgTable]:
    table = PgTable(RANDOM_DOCS)
    yield table
    table.close()


_PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@_PROPERTY
@given(node=_trees)
def test_sqlite_agrees_with_the_evaluator_on_random_trees(sqlite_random, node):
    assert sqlite_ids(sqlite_random, node) == expected_ids(node, RANDOM_DOCS)


@pytest.mark.pg
@_PROPERTY
@given(node=_trees)
def test_postgres_agrees_with_sqlite_and_the_evaluator_on_random_trees(sqlite_random, pg_random, node):
    expected = expected_ids(node, RANDOM_DOCS)
    assert sqlite_ids(sqlite_random, node) == expected
    assert pg_random.ids(node) == expected
