"""The table of metadata-filter cases that every store backend must pass (SQLite, PostgreSQL, ...).

DOCS holds documents' metadata; CASES pairs a filter with the exact set of document ids it selects.
"""

from __future__ import annotations

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
}

CASES: list[tuple[dict, set[str]]] = [
    # equality, type-sensitive: 1 == 1.0, 1 != "1", True is not 1
    ({"lang": "en"}, {"a", "c", "f", "g"}),
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
    # list-valued fields: equality and $in match when any element matches
    ({"tags": "sport"}, {"a", "d"}),
    ({"tags": "news"}, {"a", "b"}),
    ({"tags": {"$in": ["sport", "nothing"]}}, {"a", "d"}),
    ({"lang": {"$in": ["de", "fr"]}}, {"b", "d", "g"}),
    ({"lang": {"$in": []}}, set()),
    ({"year": {"$in": [2021, "2020"]}}, {"b", "d"}),
    # $ne: a missing field matches nothing
    ({"lang": {"$ne": "en"}}, {"b", "d"}),
    ({"draft": {"$ne": True}}, {"a"}),
    ({"year": {"$ne": 2020}}, {"b", "c", "d"}),
    # comparisons compare numbers with numbers and strings with strings
    ({"year": {"$gt": 2020}}, {"b", "c"}),
    ({"year": {"$gte": 2020}}, {"a", "b", "c", "f"}),
    ({"year": {"$lt": 2021}}, {"a", "f"}),
    ({"year": {"$lte": 2021, "$gt": 2020}}, {"b"}),
    ({"score": {"$gte": 1}}, {"b", "c"}),
    ({"lang": {"$gt": "en"}}, {"d"}),
    # $exists
    ({"note": {"$exists": True}}, {"c"}),
    ({"lang": {"$exists": False}}, {"e"}),
    ({"draft": {"$exists": True}}, {"a", "b"}),
    # dotted keys reach nested objects
    ({"author.name": "Ann"}, {"a"}),
    ({"author.age": {"$gte": 30}}, {"a"}),
    ({"author.age": {"$exists": False}}, {"b", "c", "d", "e", "f", "g"}),
    ({"nested.deep.x": 1}, {"f"}),
    ({"author": "Ann"}, set()),  # an object never equals a scalar
    ({"weird key": 1}, {"f"}),
    # implicit AND
    ({"lang": "en", "year": 2020}, {"a", "f"}),
    ({"lang": "en", "tags": "news"}, {"a"}),
    ({}, {"a", "b", "c", "d", "e", "f", "g"}),
]

# Filters that must raise a clear InvalidInputError.
BAD_FILTERS: list = [
    {"lang": {"$regex": "e.*"}},
    {"lang": {"name": "x"}},
    {"": 1},
    {"a..b": 1},
    {"year": {"$gt": None}},
    {"year": {"$gt": True}},
    {"lang": {"$in": "en"}},
    {"tags": ["news"]},
    {"x": float("nan")},
    {"x": {"$exists": "yes"}},
    {1: "a"},
    ["lang", "en"],
]

# Injection attempts: they must match nothing, raise nothing harmful, and leave the data intact.
INJECTIONS: list[dict] = [
    {"lang": "en' OR '1'='1"},
    {"lang": 'en"); DROP TABLE documents; --'},
    {"x') OR 1=1 --": 1},
    {"lang": {"$in": ["' OR 1=1 --"]}},
]
