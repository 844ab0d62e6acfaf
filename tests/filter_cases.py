"""The table of metadata-filter cases that every store backend must pass (SQLite, PostgreSQL, ...).

DOCS holds documents' metadata; CASES pairs a filter with the exact set of document ids it selects
(every operator, $and/$or/$not/$nor and a field's $not, nested, on missing fields, nulls, lists and
mismatched types);
BAD_FILTERS must raise ``InvalidInputError``; INJECTIONS must match nothing and change nothing.
The expected sets are written by hand: they are the specification (tests/test_filters.py also checks
them against a plain-Python evaluator).
"""

from __future__ import annotations

import datetime

from ragkit.filters import MAX_CONDITIONS, MAX_DEPTH

BIG = 2**63 - 1  # the largest int a filter or metadata may hold (signed 64 bits)
SMALL = -(2**63)


class _Values(list):
    """A long list whose repr stays short: test ids are ``str(filter)``."""

    def __repr__(self) -> str:
        return f"<{len(self)} values: {list.__repr__(self[:3])[:-1]}, ...>"


def _long(matching: list, n: int = 5_000, kind: str = "str") -> _Values:
    """``n`` values that match nothing in DOCS, with ``matching`` spread through them."""
    filler = [f"zz-{i}" for i in range(n)] if kind == "str" else [10_000 + i * 0.5 for i in range(n)]
    step = max(1, n // (len(matching) + 1))
    for j, value in enumerate(matching):
        filler.insert((j + 1) * step, value)
    return _Values(filler)


class _Deep(dict):
    """A deeply nested filter whose repr stays short: test ids are ``str(filter)``."""

    def __repr__(self) -> str:
        return f"<{self.levels} x $not around {self.inner!r}>"


def _nested_not(inner: dict, levels: int) -> dict:
    """``{"$not": {"$not": ... inner}}``, ``levels`` deep."""
    flt: dict = inner
    for _ in range(levels):
        flt = {"$not": flt}
    deep = _Deep(flt)
    deep.levels, deep.inner = levels, inner
    return deep


def _circular() -> dict:
    flt: dict = {}
    flt["$not"] = flt
    return flt


DOCS: dict[str, dict] = {
    "a": {
        "lang": "en",
        "year": 2020,
        "score": 0.5,
        "tags": ["news", "sport"],
        "draft": False,
        "author": {"name": "Ann", "age": 31},
    },
    "b": {
        "lang": "de",
        "year": 2021,
        "score": 1.0,
        "tags": ["news"],
        "draft": True,
        "author": {"name": "Bob"},
    },
    "c": {"lang": "en", "year": 2022, "score": 2, "tags": [], "note": None},
    "d": {"lang": "fr", "year": "2020", "tags": "sport"},
    "e": {},
    "f": {"lang": "en", "year": 2020.0, "nested": {"deep": {"x": 1}}, "weird key": 1, "n": 1},
    "g": {"n": True, "lang": ["en", "de"]},
    "h": {
        "word": "é",
        "big": BIG,
        "neg": SMALL,
        "items": [{"x": 1}, [1, 2], 3],  # objects and lists inside a list are never elements that match
        "mixed": [1, "1", True, None, 2.5],
        "author": {"name": "Zoë", "tags": ["x"]},
        "dot.key": 1,  # a key with a dot: unreachable, "dot.key" in a filter means dot -> key
        "dot": {"key": 2},
        "clé": "v",
        "ctrl": 'a\nb\t"q"\\',
    },
    "i": {"lang": "EN", "tags": ["Sport", "news", ["sport"]], "score": -1.5, "year": 1999},
}

ALL = set(DOCS)

CASES: list[tuple[dict, set[str]]] = [
    # equality, type-sensitive: 1 == 1.0, 1 != "1", True is not 1
    ({"lang": "en"}, {"a", "c", "f", "g"}),
    ({"lang": {"$eq": "en"}}, {"a", "c", "f", "g"}),
    ({"lang": ""}, set()),
    ({"year": 2020}, {"a", "f"}),
    ({"year": 2020.0}, {"a", "f"}),
    ({"year": "2020"}, {"d"}),
    ({"score": 1}, {"b"}),
    ({"n": 1}, {"f"}),
    ({"n": True}, {"g"}),
    ({"draft": False}, {"a"}),
    ({"draft": True}, {"b"}),
    ({"note": None}, {"c"}),
    ({"missing": "x"}, set()),
    ({"clé": "v"}, {"h"}),
    ({"ctrl": 'a\nb\t"q"\\'}, {"h"}),
    ({"word": "é"}, {"h"}),
    # ints use all 64 bits, exactly (as floats, BIG and BIG - 1 would be equal)
    ({"big": BIG}, {"h"}),
    ({"big": BIG - 1}, set()),
    ({"big": {"$in": [BIG - 1, BIG - 2]}}, set()),
    ({"big": {"$gt": BIG - 1}}, {"h"}),
    ({"big": {"$gte": BIG}}, {"h"}),
    ({"big": {"$gt": 9.2e18}}, {"h"}),
    ({"neg": SMALL}, {"h"}),
    ({"neg": {"$lte": SMALL}}, {"h"}),
    ({"neg": {"$gt": SMALL}}, set()),
    # list-valued fields: equality and $in match when any element matches
    ({"tags": "sport"}, {"a", "d"}),
    ({"tags": "news"}, {"a", "b", "i"}),
    ({"tags": "Sport"}, {"i"}),
    ({"tags": {"$in": ["sport", "nothing"]}}, {"a", "d"}),
    ({"lang": {"$in": ["de", "fr"]}}, {"b", "d", "g"}),
    ({"lang": {"$in": []}}, set()),
    ({"year": {"$in": [2021, "2020"]}}, {"b", "d"}),
    ({"year": {"$in": [2020]}}, {"a", "f"}),
    ({"n": {"$in": [True]}}, {"g"}),
    ({"n": {"$in": [1.0, "1"]}}, {"f"}),
    ({"draft": {"$in": [False, None]}}, {"a"}),
    ({"note": {"$in": [None]}}, {"c"}),
    ({"mixed": True}, {"h"}),
    ({"mixed": None}, {"h"}),
    ({"mixed": "1"}, {"h"}),
    ({"mixed": 2.5}, {"h"}),
    ({"mixed": False}, set()),
    ({"items": 3}, {"h"}),
    ({"items": {"$in": [1, 2]}}, set()),  # [1, 2] is an element, not elements
    ({"items.x": 1}, set()),  # dotted keys never reach into lists
    ({"author.tags": "x"}, {"h"}),
    # $ne: a missing field matches nothing; on a list, no element may be equal
    ({"lang": {"$ne": "en"}}, {"b", "d", "i"}),
    ({"draft": {"$ne": True}}, {"a"}),
    ({"year": {"$ne": 2020}}, {"b", "c", "d", "i"}),
    ({"tags": {"$ne": "news"}}, {"c", "d"}),
    ({"tags": {"$ne": "sport"}}, {"b", "c", "i"}),
    ({"mixed": {"$ne": 1}}, set()),
    ({"mixed": {"$ne": False}}, {"h"}),
    ({"author": {"$ne": "Ann"}}, {"a", "b", "h"}),  # an object is never equal to a scalar
    ({"note": {"$ne": None}}, set()),
    # comparisons compare numbers with numbers and strings with strings
    ({"year": {"$gt": 2020}}, {"b", "c"}),
    ({"year": {"$gte": 2020}}, {"a", "b", "c", "f"}),
    ({"year": {"$lt": 2021}}, {"a", "f", "i"}),
    ({"year": {"$lte": 2021, "$gt": 2020}}, {"b"}),
    ({"year": {"$gte": 2020, "$ne": 2021}}, {"a", "c", "f"}),
    ({"year": {"$gte": "2000"}}, {"d"}),
    ({"score": {"$gte": 1}}, {"b", "c"}),
    ({"score": {"$lt": 1}}, {"a", "i"}),
    ({"lang": {"$gt": "en"}}, {"d"}),
    ({"tags": {"$gt": "o"}}, {"a", "d"}),  # "sport" in a list; "Sport" < "o"
    ({"mixed": {"$gt": 2}}, {"h"}),
    ({"mixed": {"$gt": 3}}, set()),
    ({"mixed": {"$lt": "2"}}, {"h"}),
    ({"items": {"$gte": 2}}, {"h"}),
    ({"items": {"$lt": 2}}, set()),  # the 1s are inside an object and a nested list
    # strings compare byte-wise (UTF-8), not by a locale's collation
    ({"word": {"$gt": "z"}}, {"h"}),
    ({"lang": {"$lt": "a"}}, {"i"}),
    # $exists
    ({"note": {"$exists": True}}, {"c"}),
    ({"lang": {"$exists": False}}, {"e", "h"}),
    ({"draft": {"$exists": True}}, {"a", "b"}),
    ({"lang": {"$exists": True, "$ne": "en"}}, {"b", "d", "i"}),
    # dotted keys reach nested objects
    ({"author.name": "Ann"}, {"a"}),
    ({"author.age": {"$gte": 30}}, {"a"}),
    ({"author.age": {"$exists": False}}, ALL - {"a"}),
    ({"author.name": {"$exists": True}, "author.age": {"$exists": False}}, {"b", "h"}),
    ({"author": {"$exists": True}, "author.name": {"$ne": "Ann"}}, {"b", "h"}),
    ({"nested.deep": {"$exists": True}}, {"f"}),
    ({"nested.deep.x.y": {"$exists": False}}, ALL),
    ({"tags.0": {"$exists": True}}, set()),  # no list positions
    ({"nested.deep.x": 1}, {"f"}),
    ({"author": "Ann"}, set()),  # an object never equals a scalar
    ({"weird key": 1}, {"f"}),
    ({"dot.key": 2}, {"h"}),
    ({"dot.key": 1}, set()),
    # implicit AND
    ({"lang": "en", "year": 2020}, {"a", "f"}),
    ({"lang": "en", "tags": "news"}, {"a"}),
    ({}, ALL),
    # long $in lists: one parameter, any length; the type rules still hold
    ({"lang": {"$in": _long(["de", "fr"])}}, {"b", "d", "g"}),
    ({"tags": {"$in": _long(["Sport"])}}, {"i"}),
    ({"year": {"$in": _long([2021.0, 1999], kind="number")}}, {"b", "i"}),
    ({"n": {"$in": _long([1], kind="number")}}, {"f"}),
    ({"n": {"$in": _long([True, "1"])}}, {"g"}),
    ({"mixed": {"$in": _long([None])}}, {"h"}),
    ({"big": {"$in": _Values([BIG - 1 - i for i in range(5_000)])}}, set()),
    ({"big": {"$in": _Values([BIG - i for i in range(5_000)])}}, {"h"}),
    ({"lang": {"$in": _long(["de"])}, "year": {"$in": _long([2021], kind="number")}}, {"b"}),
    # $nin: $ne for several values. The field must be present; on a list, no element may equal one
    ({"lang": {"$nin": ["en", "de"]}}, {"d", "i"}),
    ({"lang": {"$nin": ["en"]}}, {"b", "d", "i"}),  # as {"$ne": "en"}
    ({"lang": {"$nin": []}}, {"a", "b", "c", "d", "f", "g", "i"}),  # present
    ({"tags": {"$nin": ["news"]}}, {"c", "d"}),
    ({"tags": {"$nin": ["news", "sport"]}}, {"c"}),
    ({"tags": {"$nin": ["Sport"]}}, {"a", "b", "c", "d"}),
    ({"year": {"$nin": [2020]}}, {"b", "c", "d", "i"}),  # 2020.0 is 2020, "2020" is not
    ({"year": {"$nin": [2020.0, "2020"]}}, {"b", "c", "i"}),
    ({"n": {"$nin": [1]}}, {"g"}),  # True is not 1
    ({"n": {"$nin": [1.0]}}, {"g"}),
    ({"n": {"$nin": [True]}}, {"f"}),
    ({"n": {"$nin": ["1"]}}, {"f", "g"}),
    ({"draft": {"$nin": [0]}}, {"a", "b"}),  # False is not 0
    ({"note": {"$nin": [None]}}, set()),  # present, but null
    ({"draft": {"$nin": [None]}}, {"a", "b"}),
    ({"mixed": {"$nin": [False, 3]}}, {"h"}),
    ({"mixed": {"$nin": [None]}}, set()),
    ({"author": {"$nin": ["Ann"]}}, {"a", "b", "h"}),  # an object equals no scalar
    ({"author.name": {"$nin": ["Ann", "Bob"]}}, {"h"}),
    ({"items": {"$nin": [1, 2]}}, {"h"}),  # the 1s and 2s are inside an object and a nested list
    ({"items": {"$nin": [3]}}, set()),
    ({"missing": {"$nin": ["x"]}}, set()),
    ({"lang": {"$nin": ["en"]}, "year": {"$gte": 2000}}, {"b"}),
    ({"lang": {"$exists": True, "$nin": ["en", "fr"]}}, {"b", "i"}),
    ({"lang": {"$nin": _long(["en", "de"])}}, {"d", "i"}),
    ({"big": {"$nin": _Values([BIG - i for i in range(5_000)])}}, set()),
    ({"big": {"$nin": _Values([BIG - 1 - i for i in range(5_000)])}}, {"h"}),
    # a field's $not: exactly the documents its operators do not match, missing field included
    ({"lang": {"$not": {"$eq": "en"}}}, {"b", "d", "e", "h", "i"}),
    ({"lang": {"$not": {"$ne": "en"}}}, {"a", "c", "e", "f", "g", "h"}),
    ({"lang": {"$not": {"$in": ["en", "de"]}}}, {"d", "e", "h", "i"}),
    ({"lang": {"$not": {"$nin": ["en", "de"]}}}, {"a", "b", "c", "e", "f", "g", "h"}),
    ({"tags": {"$not": {"$in": _long(["news"])}}}, {"c", "d", "e", "f", "g", "h"}),
    ({"year": {"$not": {"$gte": 2020}}}, {"d", "e", "g", "h", "i"}),
    ({"year": {"$not": {"$gte": 2020, "$lt": 2022}}}, {"c", "d", "e", "g", "h", "i"}),
    ({"year": {"$gte": 2000, "$not": {"$eq": 2021}}}, {"a", "c", "f"}),
    ({"year": {"$not": {"$not": {"$gte": 2020}}}}, {"a", "b", "c", "f"}),
    ({"score": {"$not": {"$gt": 0}}}, {"d", "e", "f", "g", "h", "i"}),
    ({"author.age": {"$not": {"$lte": 31}}}, ALL - {"a"}),
    ({"mixed": {"$not": {"$lt": "2"}}}, ALL - {"h"}),
    ({"note": {"$not": {"$exists": True}}}, ALL - {"c"}),
    ({"note": {"$not": {"$exists": False}}}, {"c"}),
    ({"tags": {"$not": {"$eq": "sport"}}}, {"b", "c", "e", "f", "g", "h", "i"}),
    ({"n": {"$not": {"$eq": 1}}}, ALL - {"f"}),
    ({"n": {"$not": {"$eq": True}}}, ALL - {"g"}),
    ({"draft": {"$not": {"$in": [0, 1]}}}, ALL),
    # $not of a whole filter
    ({"$not": {"lang": "en"}}, {"b", "d", "e", "h", "i"}),
    ({"$not": {"lang": "en", "year": 2020}}, ALL - {"a", "f"}),
    ({"$not": {"year": {"$gt": 2020}}}, ALL - {"b", "c"}),
    ({"$not": {"$not": {"tags": "news"}}}, {"a", "b", "i"}),
    ({"$not": {"missing": "x"}}, ALL),
    ({"$not": {"missing": {"$exists": False}}}, set()),
    ({"$not": {}}, set()),
    ({"$not": {"lang": {"$nin": ["en"]}}}, {"a", "c", "e", "f", "g", "h"}),
    # $or / $and / $nor
    ({"$or": [{"lang": "fr"}, {"year": {"$lt": 2021}}]}, {"a", "d", "f", "i"}),
    ({"$or": [{"lang": "de"}]}, {"b", "g"}),
    ({"$or": [{"tags": "news"}, {"note": {"$exists": True}}, {"n": True}]}, {"a", "b", "c", "g", "i"}),
    ({"$or": [{"missing": 1}, {"also.missing": {"$gt": 0}}]}, set()),
    ({"$or": [{"year": 2020}, {"year": "2020"}]}, {"a", "d", "f"}),
    ({"$or": [{"n": 1}, {"n": True}]}, {"f", "g"}),
    ({"$or": [{"year": "2021"}, {"score": "1"}]}, set()),  # "2021" is not 2021
    ({"$or": [{}, {"lang": "en"}]}, ALL),
    ({"$or": [{"$not": {}}, {"lang": "fr"}]}, {"d"}),
    ({"$or": [{"author.name": "Ann"}, {"author.name": {"$exists": False}}]}, ALL - {"b", "h"}),
    ({"lang": "en", "$or": [{"year": 2020}, {"note": None}]}, {"a", "c", "f"}),
    ({"$and": [{"lang": "en"}, {"year": 2020}]}, {"a", "f"}),
    ({"$and": [{}]}, ALL),
    ({"$and": [{"lang": "en"}, {"$not": {"lang": "en"}}]}, set()),
    (
        {"$and": [{"$or": [{"lang": "en"}, {"lang": "de"}]}, {"$or": [{"tags": "news"}, {"n": True}]}]},
        {"a", "b", "g"},
    ),
    ({"year": {"$gte": 2020}, "$and": [{"year": {"$lt": 2022}}, {"$not": {"year": 2021}}]}, {"a", "f"}),
    ({"$nor": [{"lang": "en"}, {"lang": "de"}]}, {"d", "e", "h", "i"}),
    ({"$nor": [{"tags": {"$exists": True}}]}, {"e", "f", "g", "h"}),
    ({"$nor": [{"year": {"$gt": 3000}}]}, ALL),
    ({"$nor": [{}]}, set()),
    # nesting
    (
        {
            "$or": [
                {"$and": [{"lang": "en"}, {"$not": {"year": 2020}}]},
                {"$not": {"lang": {"$exists": True}}},
            ]
        },
        {"c", "e", "g", "h"},
    ),
    (
        {
            "$not": {
                "$or": [
                    {
                        "author.name": {"$exists": True},
                        "$or": [{"author.age": {"$lt": 40}}, {"big": BIG}],
                    }
                ]
            }
        },
        ALL - {"a", "h"},
    ),
    (
        {"$or": [{"$nor": [{"tags": "news"}, {"tags": {"$exists": False}}]}, {"n": {"$nin": [True]}}]},
        {"c", "d", "f"},
    ),
    (_nested_not({"lang": "en"}, MAX_DEPTH), {"a", "c", "f", "g"}),  # 32 levels: the most allowed
    (_nested_not({"lang": "en"}, MAX_DEPTH - 1), {"b", "d", "e", "h", "i"}),
]

# Filters that must raise a clear InvalidInputError.
BAD_FILTERS: list = [
    {"lang": {"$regex": "e.*"}},
    {"lang": {"name": "x"}},
    {"lang": {"$gt": 1, "name": "x"}},
    {"lang": {}},
    {"": 1},
    {"a..b": 1},
    {"a.": 1},
    {".a": 1},
    {'a"b': 1},
    {"a\\b": 1},
    {"a\nb": 1},
    {"year": {"$gt": None}},
    {"year": {"$gt": True}},
    {"year": {"$gt": [2020]}},
    {"lang": {"$in": "en"}},
    {"lang": {"$in": 5}},
    {"lang": {"$in": {"en": 1}}},
    {"lang": {"$in": [["en"]]}},
    {"tags": ["news"]},
    {"x": float("nan")},
    {"x": float("inf")},
    {"x": {"$lt": float("-inf")}},
    {"x": {"$in": [1, float("nan")]}},
    {"x": b"bytes"},
    {"x": datetime.date(2020, 1, 1)},
    {"x": {"$ne": {"$in": [1]}}},
    {"x": {"$exists": "yes"}},
    {"x": {"$exists": 1}},
    # ints beyond signed 64 bits (they used to leak OverflowError from sqlite3)
    {"x": 2**63},
    {"x": -(2**63) - 1},
    {"x": {"$gt": 2**64}},
    {"x": {"$in": [1, 2**63]}},
    # strings that are not valid Unicode (lone surrogates used to leak UnicodeEncodeError) or hold NUL
    {"x": "\ud800"},
    {"\ud800": 1},
    {"a.\udfff": 1},
    {"x": {"$in": ["ok", "\ud800"]}},
    {"x": "a\x00b"},
    {"a\x00": 1},
    {1: "a"},
    ["lang", "en"],
    "lang",
    # $nin takes a list of scalars, like $in
    {"lang": {"$nin": "en"}},
    {"lang": {"$nin": 5}},
    {"lang": {"$nin": [["en"]]}},
    {"x": {"$nin": [float("nan")]}},
    {"x": {"$nin": [2**63]}},
    # logical operators: $and / $or / $nor take a non-empty list of filter dicts, $not one dict
    {"$or": {"lang": "en"}},
    {"$or": "lang"},
    {"$or": None},
    {"$or": []},
    {"$and": []},
    {"$nor": []},
    {"$or": [1]},
    {"$or": [{"a": 1}, "b"]},
    {"$and": [["a", 1]]},
    {"$or": [{"a": {"$regex": "x"}}]},
    {"$not": [{"a": 1}]},
    {"$not": 1},
    {"$not": None},
    {"$not": {"$or": []}},
    # unknown or misplaced operators
    {"$xor": [{"a": 1}]},
    {"$in": [1]},
    {"$regex": "x"},
    {"$": 1},
    {"lang": {"$or": [{"$eq": "en"}]}},
    {"lang": {"$and": [{"$eq": "en"}]}},
    {"lang": {"$nor": [{"$eq": "en"}]}},
    # a field's $not takes a dict of that field's operators
    {"year": {"$not": 2020}},
    {"year": {"$not": {}}},
    {"year": {"$not": {"x": 1}}},
    {"year": {"$not": [{"$gt": 1}]}},
    {"year": {"$not": {"$gt": None}}},
    # limits: nesting and size
    _nested_not({"lang": "en"}, MAX_DEPTH + 1),
    {"$or": [_nested_not({"lang": "en"}, MAX_DEPTH)]},
    _circular(),
    {"$or": [{"k": i} for i in range(MAX_CONDITIONS + 1)]},
]

# Injection attempts: they must match nothing, raise nothing harmful, and leave the data intact.
INJECTIONS: list[dict] = [
    {"lang": "en' OR '1'='1"},
    {"lang": 'en"); DROP TABLE documents; --'},
    {"x') OR 1=1 --": 1},
    {"lang": {"$in": ["' OR 1=1 --"]}},
    {"lang": {"$in": ["x'); DROP TABLE documents; --", "en' --"]}},
    {"lang": {"$in": _Values(f"' OR 1=1 -- {i}" for i in range(40))}},
    {"lang": {"$gt": "z' OR 1=1 --"}},
    {"x]' OR 1=1 --": {"$exists": True}},
    {"lang": "%s"},
    {"lang": "?"},
    {"%s": 1},
    {"lang": {"$in": ["%s", "?", "%(x)s"]}},
]
