"""The dict grammar's logical operators ($and, $or, $not, $nor, a field's $not) and $nin, its limits
and its messages, on SQLite and PostgreSQL.

The shared table (tests/filter_cases.py) covers what each operator selects; here a second reference
evaluator reads the filter *dicts* directly (it shares no code with ``parse_filter``, only the leaf
semantics of tests/test_filters.py's evaluator), and random dicts (hypothesis) are checked against
it on both backends.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from filter_cases import ALL, CASES, DOCS, _nested_not
from hypothesis import given
from hypothesis import strategies as st
from test_filters import (
    _ORDERED,
    _PROPERTY,
    KEYS,
    RANDOM_DOCS,
    SHORT_IN,
    C,
    PgTable,
    _ids,
    _scalar,
    _sqlite_db,
    evaluate,
    expected_ids,
    sqlite_ids,
)

from ragkit.backends.postgres_filter import MAX_PARAMS, postgres_where
from ragkit.backends.sqlite_filter import sqlite_where
from ragkit.errors import InvalidInputError
from ragkit.filters import MAX_CONDITIONS, MAX_DEPTH, OPERATORS, And, Not, Or, parse_filter


@pytest.fixture(scope="module")
def sqlite_docs() -> Iterator[sqlite3.Connection]:
    db = _sqlite_db(DOCS)
    yield db
    db.close()


@pytest.fixture(scope="module")
def sqlite_random() -> Iterator[sqlite3.Connection]:
    db = _sqlite_db(RANDOM_DOCS)
    yield db
    db.close()


@pytest.fixture(scope="module")
def pg_docs() -> Iterator[PgTable]:
    table = PgTable(DOCS)
    yield table
    table.close()


@pytest.fixture(scope="module")
def pg_random() -> Iterator[PgTable]:
    table = PgTable(RANDOM_DOCS)
    yield table
    table.close()


# ------------------------------------------------------------------------ a dict-level evaluator


def _field_matches(key: str, spec: Any, metadata: dict) -> bool:
    if not isinstance(spec, dict):
        return evaluate(C(key, "eq", spec), metadata)
    for name, value in spec.items():
        if name == "$not":
            if _field_matches(key, value, metadata):
                return False
        elif not evaluate(C(key, OPERATORS[name], value), metadata):
            return False
    return True


def evaluate_dict(flt: dict, metadata: dict) -> bool:
    """What a filter dict selects, read straight from the dict: every key must hold."""
    for key, spec in flt.items():
        if key == "$and":
            ok = all(evaluate_dict(f, metadata) for f in spec)
        elif key == "$or":
            ok = any(evaluate_dict(f, metadata) for f in spec)
        elif key == "$nor":
            ok = not any(evaluate_dict(f, metadata) for f in spec)
        elif key == "$not":
            ok = not evaluate_dict(spec, metadata)
        else:
            ok = _field_matches(key, spec, metadata)
        if not ok:
            return False
    return True


def dict_ids(flt: dict, docs: dict[str, dict]) -> set[str]:
    return {doc_id for doc_id, md in docs.items() if evaluate_dict(flt, md)}


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=_ids(CASES))
def test_the_dict_evaluator_agrees_with_the_table(flt, expected):
    assert dict_ids(flt, DOCS) == expected


def test_the_table_covers_every_operator_under_not_and_in_each_logical_operator():
    text = " ".join(repr(dict(f)) if isinstance(f, dict) else repr(f) for f, _ in CASES)
    for name in [*OPERATORS, "$and", "$or", "$nor"]:
        assert f"'{name}'" in text, name
    negated = [f[k]["$not"] for f, _ in CASES for k in f if isinstance(f[k], dict) and "$not" in f[k]]
    assert {name for inner in negated for name in inner} >= set(OPERATORS)
    sizes = [len(e) for f, e in CASES if any(k.startswith("$") for k in f)]
    assert 0 in sizes and len(ALL) in sizes and sum(0 < s < len(ALL) for s in sizes) >= 20


# -------------------------------------------------------------------------------- trees it builds


def test_logical_operators_build_or_not_and():
    en, de, y = C("lang", "eq", "en"), C("lang", "eq", "de"), C("year", "eq", 2020)
    assert parse_filter({"$or": [{"lang": "en"}, {"lang": "de"}]}) == Or((en, de))
    assert parse_filter({"$and": [{"lang": "en"}, {"year": 2020}]}) == And((en, y))
    assert parse_filter({"$not": {"lang": "en"}}) == Not(en)
    assert parse_filter({"$nor": [{"lang": "en"}, {"lang": "de"}]}) == Not(Or((en, de)))
    assert parse_filter({"year": {"$not": {"$gte": 2020}}}) == Not(C("year", "gte", 2020))
    assert parse_filter({"year": {"$not": {"$gt": 1, "$lt": 5}}}) == Not(
        And((C("year", "gt", 1), C("year", "lt", 5)))
    )
    assert parse_filter({"lang": {"$nin": ("en", "de")}}) == C("lang", "nin", ["en", "de"])
    # beside field keys, in the dict's order
    assert parse_filter({"lang": "en", "$or": [{"year": 2020}, {"lang": "de"}], "x": 1}) == And(
        (en, Or((y, de)), C("x", "eq", 1))
    )
    hash(parse_filter({"$or": [{"a": 1}, {"$not": {"b": 2}}]}))  # frozen, hashable


def test_trees_are_flattened_without_changing_their_meaning():
    a, b, c = C("a", "eq", 1), C("b", "eq", 2), C("c", "eq", 3)
    assert parse_filter({"$and": [{"a": 1, "b": 2}, {"c": 3}]}) == And((a, b, c))
    assert parse_filter({"a": 1, "$and": [{"b": 2}, {"c": 3}]}) == And((a, b, c))
    assert parse_filter({"$or": [{"$or": [{"a": 1}, {"b": 2}]}, {"c": 3}]}) == Or((a, b, c))
    assert parse_filter({"$or": [{"a": 1}]}) == a  # one child alone
    assert parse_filter({"$or": [{"a": 1, "b": 2}, {"c": 3}]}) == Or((And((a, b)), c))  # kinds kept
    assert parse_filter({"$not": {"$not": {"a": 1}}}) == Not(Not(a))  # Not is never dropped


def test_filters_that_match_everything_by_construction_parse_to_none():
    for flt in [{}, {"$and": [{}]}, {"$and": [{}, {}]}, {"$or": [{}, {"a": 1}]}, {"$or": [{"$and": [{}]}]}]:
        assert parse_filter(flt) is None, flt
    assert parse_filter({"a": 1, "$and": [{}]}) == C("a", "eq", 1)
    assert parse_filter({"$not": {}}) == Not(And(()))  # nothing
    assert parse_filter({"$nor": [{}]}) == Not(And(()))
    assert parse_filter({"$or": [{"$not": {}}, {"a": 1}]}) == Or((Not(And(())), C("a", "eq", 1)))


# ------------------------------------------------------------------------------------ messages


@pytest.mark.parametrize(
    ("flt", "words"),
    [
        ({"$or": {"lang": "en"}}, ["$or", "list of filter dicts", "[{'lang': 'de'}"]),
        ({"$and": "x"}, ["$and", "list of filter dicts"]),
        ({"$or": []}, ["$or", "empty list", "{} matches everything"]),
        ({"$nor": []}, ["$nor", "empty list"]),
        ({"$or": [{"a": 1}, 5]}, ["$or[1]", "filter dict", "int"]),
        ({"$and": [{"a": 1}, {"$or": [["x"]]}]}, ["$or[0]", "filter dict", "list"]),
        ({"$not": [{"a": 1}]}, ["$not", "one filter dict", "$nor"]),
        ({"$not": 1}, ["$not", "one filter dict"]),
        ({"$xor": [{"a": 1}]}, ["'$xor'", "$and, $or, $not or $nor"]),
        ({"$in": ["en"]}, ["'$in'", "applies to one field", "{'lang': {'$in': ...}}"]),
        ({"$price": 1}, ["'$price'", "cannot be filtered on"]),
        ({"lang": {"$or": [{"$eq": "en"}]}}, ["$or", "'lang'", "filter level"]),
        ({"year": {"$not": 2020}}, ["$not", "'year'", "$ne", "dict of operators"]),
        ({"year": {"$not": {"$regex": "x"}}}, ["$regex", "'year'"]),
        ({"lang": {"$nin": "en"}}, ["$nin", "'lang'", "list"]),
        ({"lang": {"$nin": [["en"]]}}, ["$nin", "'lang'", "each value"]),
        ({"lang": {"$nin": [1, 2**64]}}, ["'lang'", "64 bits"]),
        (_nested_not({"a": 1}, MAX_DEPTH + 1), [str(MAX_DEPTH), "levels deep"]),
        ({"a": _nested_not({"$eq": 1}, MAX_DEPTH + 1)}, [str(MAX_DEPTH), "levels deep"]),
        ({"$or": [{"k": i} for i in range(MAX_CONDITIONS + 1)]}, [str(MAX_CONDITIONS), "$in"]),
    ],
    ids=lambda v: str(v)[:40],
)
def test_messages_say_what_is_wrong_and_what_to_write(flt, words):
    with pytest.raises(InvalidInputError) as info:
        parse_filter(flt)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert len(str(info.value)) < 300


# -------------------------------------------------------------------------------------- limits


def _widest(levels: int) -> dict:
    """The deepest tree ``levels`` logical levels can make: each $nor is Not(Or(And(...), ...))."""
    flt: dict = {"lang": "en"}
    for i in range(levels):
        flt = {"$nor": [{f"k{i}": {"$exists": False}, **flt}, {"year": {"$nin": [i, 2020]}}]}
    return flt


def _depth(node: Any) -> int:
    if isinstance(node, Not):
        return 1 + _depth(node.child)
    if isinstance(node, (And, Or)):
        return 1 + max(map(_depth, node.children), default=0)
    return 0


def test_depth_is_counted_in_logical_operators_a_fields_not_included():
    assert parse_filter(_nested_not({"a": 1}, MAX_DEPTH)) is not None
    assert parse_filter({"a": _nested_not({"$eq": 1}, MAX_DEPTH)}) is not None
    assert parse_filter(_nested_not({"a": _nested_not({"$eq": 1}, 16)}, MAX_DEPTH - 16)) is not None
    with pytest.raises(InvalidInputError, match="levels deep"):
        parse_filter(_nested_not({"a": _nested_not({"$eq": 1}, 17)}, MAX_DEPTH - 16))
    assert _depth(parse_filter(_widest(MAX_DEPTH))) == 3 * MAX_DEPTH
    with pytest.raises(InvalidInputError, match="levels deep"):
        parse_filter(_widest(MAX_DEPTH + 1))


def test_the_deepest_filter_allowed_runs_on_sqlite(sqlite_docs):
    flt = _widest(MAX_DEPTH)
    assert sqlite_ids(sqlite_docs, flt) == dict_ids(flt, DOCS) == expected_ids(parse_filter(flt), DOCS)


@pytest.mark.pg
def test_the_deepest_filter_allowed_runs_on_postgres(pg_docs):
    flt = _widest(MAX_DEPTH)
    assert pg_docs.ids(flt) == dict_ids(flt, DOCS)


def _many(n: int) -> dict:
    return {"$or": [{"lang": f"x{i}"} for i in range(n - 2)] + [{"tags": "news"}, {"year": {"$gt": 2021}}]}


def test_the_most_conditions_allowed_run_on_sqlite(sqlite_docs):
    assert sqlite_ids(sqlite_docs, _many(MAX_CONDITIONS)) == {"a", "b", "c", "i"}
    with pytest.raises(InvalidInputError, match="at most"):
        parse_filter(_many(MAX_CONDITIONS + 1))
    wide = Or(tuple(C(f"k{i}", "eq", i) for i in range(MAX_CONDITIONS + 1)))  # hand-built
    with pytest.raises(InvalidInputError, match="at most"):
        sqlite_where(wide)
    with pytest.raises(InvalidInputError, match="at most"):
        postgres_where(wide)


@pytest.mark.pg
def test_the_most_conditions_allowed_run_on_postgres(pg_docs):
    assert pg_docs.ids(_many(MAX_CONDITIONS)) == {"a", "b", "c", "i"}


def test_postgres_parameters_are_bounded_with_a_clear_error():
    deep = ".".join(f"s{i}" for i in range(40))  # 3 * 40 + 2 parameters per comparison
    fine = {"$or": [{deep: {"$gt": i}} for i in range(MAX_PARAMS // 122)]}
    assert len(postgres_where(fine)[1]) <= MAX_PARAMS
    with pytest.raises(InvalidInputError, match="65535"):
        postgres_where({"$or": [{deep: {"$gt": i}} for i in range(MAX_PARAMS // 122 + 1)]})


def test_long_nin_lists_are_one_parameter():
    for n in (500, 100_000):
        flt = {"k": {"$nin": list(range(n))}}
        assert len(sqlite_where(flt)[1]) == 4  # the field's path three times and one JSON list
        assert len(postgres_where(flt)[1]) == 6  # the key four times and the JSON list twice


# ------------------------------------------------------------------ random dicts (hypothesis)


@st.composite
def _field_entries(draw: Any) -> tuple[str, Any]:
    key = draw(st.sampled_from(KEYS))
    ops = draw(st.lists(st.sampled_from(sorted(OPERATORS)), min_size=0, max_size=2, unique=True))
    if not ops:
        return key, draw(_scalar)
    spec: dict[str, Any] = {}
    for name in ops:
        if name in ("$in", "$nin"):
            values = draw(st.lists(_scalar, max_size=4))
            spec[name] = values + ([f"pad{i}" for i in range(SHORT_IN)] if draw(st.booleans()) else [])
        elif name == "$exists":
            spec[name] = draw(st.booleans())
        elif name in ("$gt", "$gte", "$lt", "$lte"):
            spec[name] = draw(_ORDERED)
        else:
            spec[name] = draw(_scalar)
    return key, ({"$not": spec} if draw(st.booleans()) else spec)


_leaf_filters = st.lists(_field_entries(), min_size=1, max_size=2).map(dict)


def _beside(pair: tuple[dict, tuple[str, Any]]) -> dict:
    flt, (key, spec) = pair
    return {**flt, key: spec}


_filters = st.recursive(
    _leaf_filters,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"$and": fs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"$or": fs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"$nor": fs}),
        inner.map(lambda f: {"$not": f}),
        st.tuples(inner, _field_entries()).map(_beside),
    ),
    max_leaves=8,
)


@_PROPERTY
@given(flt=_filters)
def test_sqlite_agrees_with_the_dict_evaluator_on_random_filters(sqlite_random, flt):
    assert sqlite_ids(sqlite_random, flt) == dict_ids(flt, RANDOM_DOCS)


@pytest.mark.pg
@_PROPERTY
@given(flt=_filters)
def test_postgres_agrees_with_the_dict_evaluator_on_random_filters(pg_random, flt):
    assert pg_random.ids(flt) == dict_ids(flt, RANDOM_DOCS)


def test_random_filters_are_not_vacuous():
    """The strategy reaches every logical operator and selects neither always nothing nor always all."""
    seen: list[tuple[str, int]] = []

    @_PROPERTY
    @given(flt=_filters)
    def collect(flt):
        seen.append((repr(flt), len(dict_ids(flt, RANDOM_DOCS))))

    collect()
    text = " ".join(r for r, _ in seen)
    assert all(f"'{op}'" in text for op in ("$and", "$or", "$nor", "$not", "$nin"))
    sizes = [n for _, n in seen]
    assert sum(0 < n < len(RANDOM_DOCS) for n in sizes) > len(sizes) // 4
