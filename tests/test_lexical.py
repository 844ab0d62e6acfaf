"""BM25Index against an independent BM25 formula, filtering, persistence."""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter

import numpy as np
import pytest

from ragkit.errors import (
    ConfigError,
    InputTypeError,
    IntegrityError,
    InvalidInputError,
    MissingDependencyError,
)
from ragkit.lexical import BM25Index

CORPUS = [
    "The quick brown fox jumps over the lazy dog",
    "A fox is a quick animal; the fox hunts at night",
    "Dogs and cats are pets",
    "Quantum computing uses qubits",
    "The lazy cat sleeps all day, lazy lazy cat",
    "Brown bears and brown foxes live in forests",
]
IDS = np.array([100, 101, 102, 103, 104, 105], dtype=np.int64)


def reference_bm25(corpus: list[str], query: str, k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """Lucene's BM25 (8.0+, which drops the constant (k1 + 1) factor), written from the formula.

    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5));
    score(q, d) = sum over query tokens t of idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl)).
    """
    tokenize = re.compile(r"(?u)\b\w\w+\b").findall
    docs = [Counter(tokenize(d.lower())) for d in corpus]
    lengths = np.array([sum(c.values()) for c in docs], dtype=np.float64)
    avgdl = lengths.mean()
    n = len(docs)
    scores = np.zeros(n)
    for term in tokenize(query.lower()):
        df = sum(1 for c in docs if term in c)
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, c in enumerate(docs):
            tf = c.get(term, 0)
            scores[i] += idf * tf / (tf + k1 * (1 - b + b * lengths[i] / avgdl))
    return scores


@pytest.fixture
def plain_index() -> BM25Index:
    index = BM25Index(stemmer=None, stopwords=None)
    index.build(IDS, CORPUS)
    return index


@pytest.mark.parametrize("query", ["fox", "lazy dog", "brown fox quick", "cat cat lazy", "qubits"])
@pytest.mark.parametrize(("k1", "b"), [(1.5, 0.75), (0.9, 0.4), (1.2, 1.0)])
def test_scores_equal_the_bm25_formula(query, k1, b):
    index = BM25Index(stemmer=None, stopwords=None, k1=k1, b=b)
    index.build(IDS, CORPUS)
    scores, ids = index.search(query, k=len(CORPUS))
    expected = reference_bm25(CORPUS, query, k1=k1, b=b)
    positive = expected > 0
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert sorted(ids.tolist()) == sorted(IDS[positive].tolist())
    by_id = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    for doc_id, want in zip(IDS[positive].tolist(), expected[positive].tolist(), strict=True):
        assert by_id[doc_id] == pytest.approx(want, rel=1e-5)
    assert np.all(np.diff(scores) <= 0), "best first"


def test_k_cuts_and_search_many_matches_search(plain_index):
    scores, ids = plain_index.search("fox lazy", k=2)
    full_scores, full_ids = plain_index.search("fox lazy", k=10)
    assert ids.tolist() == full_ids[:2].tolist()
    np.testing.assert_array_equal(scores, full_scores[:2])
    many = plain_index.search_many(["fox lazy", "qubits", ""], k=2)
    assert [m[1].tolist() for m in many] == [ids.tolist(), [103], []]


def test_allowed_ids_filters_before_the_top_k_cut():
    # 20 chunks say "apple" three times and outrank 5 chunks that say it once; only the weak ones are allowed.
    texts = ["apple apple apple pie"] * 20 + ["apple and other fruit"] * 5 + ["no match here"] * 5
    ids = np.arange(1000, 1030, dtype=np.int64)
    index = BM25Index(stemmer=None, stopwords=None)
    index.build(ids, texts)
    allowed = ids[20:]  # 5 weak matches and 5 non-matches
    _, got = index.search("apple", k=3, allowed_ids=allowed)
    assert got.tolist() == [1020, 1021, 1022]  # k hits, although 20 better chunks are excluded
    # Fewer than k only when fewer allowed chunks score: 5 matching, not the 5 that do not.
    _, got = index.search("apple", k=8, allowed_ids=allowed)
    assert got.tolist() == [1020, 1021, 1022, 1023, 1024]
    # An id the index does not hold and an empty allow-list both just match nothing.
    assert index.search("apple", k=3, allowed_ids=np.array([5], dtype=np.int64))[1].size == 0
    assert index.search("apple", k=3, allowed_ids=np.array([], dtype=np.int64))[1].size == 0
    assert [r[1].tolist() for r in index.search_many(["apple"], 2, allowed_ids=allowed)] == [[1020, 1021]]


def test_equal_scores_are_ordered_by_id_even_at_the_cut():
    ids = np.array([9, 3, 7, 1, 5], dtype=np.int64)
    index = BM25Index(stemmer=None, stopwords=None)
    index.build(ids, ["same words"] * 5)
    assert index.search("words", k=3)[1].tolist() == [1, 3, 5]
    assert index.search("words", k=5)[1].tolist() == [1, 3, 5, 7, 9]


def test_empty_corpus_and_queries_without_known_terms():
    empty = BM25Index(stemmer=None)
    scores, ids = empty.search("anything", k=3)
    assert scores.shape == (0,) and ids.shape == (0,) and ids.dtype == np.int64
    empty.build(np.array([], dtype=np.int64), [])
    assert len(empty) == 0 and empty.search("anything", k=3)[1].size == 0

    index = BM25Index(stemmer=None)  # English stop words on
    index.build(np.array([1, 2, 3]), ["the fox", "", "of the and"])
    assert len(index) == 3
    for query in ["", "   ", "the of", "unknownword", "!!!"]:
        assert index.search(query, k=5)[1].size == 0, query
    assert index.search("fox", k=5)[1].tolist() == [1]

    only_stopwords = BM25Index(stemmer=None)
    only_stopwords.build(np.array([1, 2]), ["the of", "and"])
    assert len(only_stopwords) == 2 and only_stopwords.search("the", k=2)[1].size == 0


def test_stemming_auto_uses_pystemmer_and_explicit_without_it_raises(monkeypatch):
    pytest.importorskip("Stemmer")
    index = BM25Index()  # stemmer="auto", language="en"
    assert index.stemmer == "en"
    index.build(np.array([1, 2]), ["she was running fast", "a quiet library"])
    assert index.search("runs", k=2)[1].tolist() == [1]
    unstemmed = BM25Index(stemmer=None)
    unstemmed.build(np.array([1, 2]), ["she was running fast", "a quiet library"])
    assert unstemmed.search("runs", k=2)[1].size == 0
    assert BM25Index(language="xx").stemmer is None  # no Snowball stemmer for it: auto means none

    monkeypatch.setitem(sys.modules, "Stemmer", None)  # what an uninstalled package looks like
    assert BM25Index().stemmer is None
    with pytest.raises(MissingDependencyError, match="PyStemmer"):
        BM25Index(stemmer="english")


def test_non_english_text():
    index = BM25Index(language="fr", stemmer=None, stopwords="fr")
    index.build(
        np.array([1, 2, 3]),
        ["Le café de la gare est fermé", "Привет мир, большой мир", "東京タワー 東京タワーの夜景"],
    )
    assert index.search("café fermé", k=3)[1].tolist() == [1]
    assert index.search("мир", k=3)[1].tolist() == [2]
    # A run of CJK characters is one token: the exact run matches, a part of it does not (documented).
    assert index.search("東京タワー", k=3)[1].tolist() == [3]
    assert index.search("東京", k=3)[1].size == 0


def test_save_load_round_trip_without_pickle(tmp_path, plain_index):
    files = plain_index.save(tmp_path / "bm25")
    assert files == sorted(files) and "bm25.json" in files and "ids.npy" in files
    on_disk = sorted(p.name for p in (tmp_path / "bm25").iterdir())
    assert on_disk == files, "exactly the reported files, no temporary leftovers"
    for name in files:
        assert name.endswith((".npy", ".json")), name
        if name.endswith(".npy"):
            np.load(tmp_path / "bm25" / name, allow_pickle=False)  # raises on a pickled object array
        else:
            json.loads((tmp_path / "bm25" / name).read_text("utf-8"))

    loaded = BM25Index(stemmer=None, stopwords="de", k1=0.1)  # the saved settings win
    loaded.load(tmp_path / "bm25")
    assert loaded.spec() == plain_index.spec() and len(loaded) == len(plain_index)
    for query in ["fox", "lazy dog", "brown fox quick", "nothing"]:
        a, b = plain_index.search(query, k=4), loaded.search(query, k=4)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert loaded.search("brown", k=2, allowed_ids=np.array([105]))[1].tolist() == [105]


def test_save_empty_over_a_previous_save_and_reload(tmp_path, plain_index):
    plain_index.save(tmp_path)
    empty = BM25Index(stemmer=None)
    assert empty.save(tmp_path) == ["bm25.json", "ids.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm25.json", "ids.npy"]
    plain_index.load(tmp_path)
    assert len(plain_index) == 0 and plain_index.search("fox", k=3)[1].size == 0


def test_load_fails_loudly_on_damage(tmp_path, plain_index):
    plain_index.save(tmp_path)
    with pytest.raises(IntegrityError):
        BM25Index().load(tmp_path / "missing")
    np.save(tmp_path / "ids.npy", IDS[:-1], allow_pickle=False)
    with pytest.raises(IntegrityError, match="count"):
        BM25Index().load(tmp_path)
    plain_index.save(tmp_path)
    (tmp_path / "vocab.index.json").unlink()
    with pytest.raises(IntegrityError):
        BM25Index().load(tmp_path)
    plain_index.save(tmp_path)
    config = json.loads((tmp_path / "bm25.json").read_text())
    config["format_version"] = 99
    (tmp_path / "bm25.json").write_text(json.dumps(config))
    with pytest.raises(IntegrityError, match="format_version"):
        BM25Index().load(tmp_path)


def test_bad_inputs_raise_typed_errors(plain_index):
    with pytest.raises(InvalidInputError):
        plain_index.search("fox", k=0)
    with pytest.raises(InvalidInputError):
        plain_index.search("fox", k=True)
    with pytest.raises(InputTypeError):
        plain_index.search(None, k=1)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError):
        plain_index.search(b"fox", k=1)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError):
        plain_index.search_many("fox", k=1)
    with pytest.raises(InputTypeError):
        plain_index.search("fox", k=1, allowed_ids=np.array([1.5]))
    index = BM25Index(stemmer=None)
    with pytest.raises(InputTypeError):
        index.build(np.array([1, 2]), ["a text", None])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="2 ids for 1 texts"):
        index.build(np.array([1, 2]), ["one text"])
    with pytest.raises(InvalidInputError, match="unique"):
        index.build(np.array([1, 1]), ["a", "b"])
    with pytest.raises(InputTypeError):
        index.build(np.array([0.5, 1.5]), ["a", "b"])
    with pytest.raises(ConfigError):
        BM25Index(stopwords="klingon")
    with pytest.raises(ConfigError):
        BM25Index(b=1.5)
    with pytest.raises(ConfigError):
        BM25Index(k1=-1)
    with pytest.raises(ConfigError):
        BM25Index(stemmer=3)  # type: ignore[arg-type]
    # Type errors stay catchable as the built-ins.
    assert issubclass(InputTypeError, TypeError) and issubclass(InvalidInputError, ValueError)


