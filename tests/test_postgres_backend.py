"""PostgresBackend against a real PostgreSQL + pgvector (one server per session, a fresh table per test).

Checked against independent references: numpy brute force for exact search, the shared filter
table and the SQLite store for filter semantics, exact search for HNSW recall, and separate
processes for concurrency and crash safety.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from filter_cases import BAD_FILTERS, CASES, DOCS, INJECTIONS
from pg_server import drop_tables, fresh_table, server_dsn

from ragkit.backends import Backend, PostgresBackend
from ragkit.backends.base import SavedBackend, Upsert
from ragkit.errors import (
    ConfigError,
    IndexMismatchError,
    InputTypeError,
    IntegrityError,
    InvalidInputError,
    RagkitError,
    ReadOnlyError,
    UnavailableError,
)
from ragkit.filters import parse_filter
from ragkit.store import text_hash
from ragkit.types import Chunk, Document

pytest.importorskip("psycopg")
pytest.importorskip("psycopg_pool")

pytestmark = pytest.mark.pg


# --------------------------------------------------------------------------------------------- helpers


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _upsert(
    doc_id: str, metadata: dict, *, n_chunks: int = 2, dim: int = 8, version: int = 1, text: str | None = None
) -> Upsert:
    """A document with ``n_chunks`` chunks (exact slices of its text) and deterministic vectors."""
    text = text if text is not None else " ".join(f"{doc_id}-v{version}-part{i}" for i in range(n_chunks))
    words = text.split(" ")
    chunks, pos = [], 0
    for i, w in enumerate(words[:n_chunks]):
        start = text.index(w, pos)
        pos = start + len(w)
        chunks.append(Chunk(id=f"{doc_id}#{i}", doc_id=doc_id, text=w, start=start, end=pos))
    rng = np.random.default_rng(zlib.crc32(f"{doc_id}/{version}".encode()))
    return Upsert(
        Document(id=doc_id, text=text, metadata=metadata),
        tuple(chunks),
        _unit(rng.normal(size=(len(chunks), dim))),
    )


def _single(doc_id: str, vector: np.ndarray, metadata: dict | None = None, text: str = "") -> Upsert:
    """A document of one chunk whose vector is ``vector``."""
    return Upsert(
        Document(id=doc_id, text=text, metadata=metadata or {}),
        (Chunk(id=f"{doc_id}#0", doc_id=doc_id, text=text, start=0, end=len(text)),),
        np.asarray(vector, np.float32)[None, :],
    )


def _raw(doc_id: str, text: str, metadata: dict | None = None) -> Upsert:
    """An upsert of a Document built without pydantic's checks (as a caller's own code might)."""
    doc = Document.model_construct(id=doc_id, text=text, metadata=metadata or {})
    chunk = Chunk.model_construct(
        id=f"{doc_id}#0", doc_id=doc_id, text=text, start=0, end=len(text), metadata={}
    )
    return Upsert(doc, (chunk,), _unit(np.ones((1, 8))))


class Backends:
    """Opens PostgresBackend instances on this test's table(s); closes them and drops the tables after."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.table = fresh_table()
        self._opened: list[PostgresBackend] = []
        self._tables = {self.table}

    def __call__(self, table: str | None = None, **kwargs) -> PostgresBackend:
        table = table or self.table
        self._tables.add(table)
        backend = PostgresBackend(kwargs.pop("dsn", self.dsn), table=table, **kwargs)
        self._opened.append(backend)
        return backend

    def track(self, backend: PostgresBackend) -> PostgresBackend:
        self._opened.append(backend)
        return backend

    def close(self) -> None:
        for backend in self._opened:
            backend.close()
        for table in self._tables:
            drop_tables(self.dsn, table)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    return server_dsn()


@pytest.fixture
def make(pg_dsn):
    backends = Backends(pg_dsn)
    yield backends
    backends.close()


def _walks_hnsw(make: Backends, backend: PostgresBackend, vector: np.ndarray) -> bool:
    """Whether the planner *can* serve this backend's searches from its HNSW index.

    On a table this small a sequential scan is cheaper, so ask through a second instance whose
    sessions have sequential scans disabled (libpq ``options``): it walks HNSW exactly when the
    query's ORDER BY matches the index expression.
    """
    import psycopg

    dsn = psycopg.conninfo.make_conninfo(make.dsn, options="-c enable_seqscan=off")
    return backend.table + "_hnsw" in make(table=backend.table, dsn=dsn).explain(vector, 5)


def _doc_ids(backend: PostgresBackend, vids) -> set[str]:
    return {c.doc_id for c in backend.get_chunks(list(vids)).values()}


def _top(backend: PostgresBackend, q: np.ndarray, k: int, **kwargs) -> list[np.ndarray]:
    return [vids for _, vids in backend.dense_search(q, k, **kwargs)]


def _all_vids(backend: PostgresBackend) -> np.ndarray:
    pages = [vids for vids, _ in backend.iter_vectors()]
    return np.concatenate(pages) if pages else np.zeros(0, np.int64)


def _state(backend: PostgresBackend) -> tuple:
    """Everything a write could change: documents, chunks, vectors, meta and generation."""
    docs = list(backend.iter_documents())
    chunks = {d.id: backend.chunk_vids(d.id) for d in docs}
    vectors = [(ids.tolist(), v.tobytes()) for ids, v in backend.iter_vectors()]
    return docs, chunks, vectors, backend.get_meta("fingerprint"), backend.generation


def test_it_implements_the_backend_protocol(make):
    backend = make(dim=8)
    assert isinstance(backend, Backend)
    assert backend.acquire_writer() is None  # PostgreSQL serialises writers: nothing to take


# ---------------------------------------------------------------------------------------------- filters


@pytest.fixture(scope="module")
def filter_backend(pg_dsn):
    table = fresh_table()
    backend = PostgresBackend(pg_dsn, table=table, dim=8, index="exact")
    backend.write([_upsert(doc_id, md) for doc_id, md in DOCS.items()])
    yield backend
    backend.close()
    drop_tables(pg_dsn, table)


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_filter_table(filter_backend, flt, expected):
    node = parse_filter(flt)
    assert filter_backend.count_matching(node) == 2 * len(expected)  # two chunks per document
    assert filter_backend.count_matching(flt) == 2 * len(expected)  # a plain dict is parsed too
    # the same filter inside a vector search, evaluated with the ORDER BY: every match, nothing else
    ((scores, found),) = filter_backend.dense_search(np.ones(8, np.float32), k=50, filter=node)
    assert _doc_ids(filter_backend, found) == expected
    assert len(found) == len(scores) == 2 * len(expected)  # unpadded
    ((_, again),) = filter_backend.dense_search(np.ones((1, 8), np.float32), k=50, filter=flt)
    np.testing.assert_array_equal(again, found)


@pytest.mark.parametrize("flt", BAD_FILTERS, ids=[str(f) for f in BAD_FILTERS])
def test_bad_filters_raise(filter_backend, flt):
    with pytest.raises(InvalidInputError):
        filter_backend.count_matching(flt)
    with pytest.raises(InvalidInputError):
        filter_backend.dense_search(np.ones(8, np.float32), k=3, filter=flt)
    with pytest.raises(InvalidInputError):
        filter_backend.lexical_search("document", k=3, filter=flt)


@pytest.mark.parametrize("flt", INJECTIONS, ids=[str(f) for f in INJECTIONS])
def test_injection_attempts_are_inert(filter_backend, flt):
    assert filter_backend.count_matching(flt) == 0
    assert filter_backend.dense_search(np.ones(8, np.float32), 5, filter=flt)[0][1].size == 0
    assert filter_backend.count_documents() == len(DOCS)
    assert filter_backend.count_chunks() == 2 * len(DOCS)


def test_filters_agree_with_the_sqlite_store_on_random_cases(make, tmp_path):
    """The SQLite store is the reference implementation of the filter language: compare on random data."""
    from ragkit.store import SQLiteStore

    rng = np.random.default_rng(7)
    scalars = [0, 1, 1.0, 2, 2.5, -1, 10**12, "0", "1", "a", "b", "B", "é", "", True, False, None]
    values = scalars + [[], [1, "a"], ["a", "b"], [True], [[1]], [None], {"x": 1}, {"x": "a"}, [{"x": 1}]]
    keys = ["a", "b", "c"]
    docs = {}
    for i in range(60):
        md = {k: values[rng.integers(len(values))] for k in keys if rng.random() < 0.7}
        if rng.random() < 0.3:
            md["n"] = {"x": values[rng.integers(len(values))]}
        docs[f"d{i}"] = md
    items = [_upsert(doc_id, md, n_chunks=1) for doc_id, md in docs.items()]
    sqlite = SQLiteStore(tmp_path / "ref.sqlite")
    sqlite.write(items)
    pg = make(dim=8, index="exact")
    pg.write(items)

    def random_clause():
        key = ["a", "b", "c", "n.x", "a.x", "missing"][rng.integers(6)]
        op = ["$eq", "$in", "$ne", "$gt", "$gte", "$lt", "$lte", "$exists"][rng.integers(8)]
        value = scalars[rng.integers(len(scalars))]
        if op == "$eq":
            return key, value
        if op == "$in":
            return key, {"$in": [scalars[j] for j in rng.integers(len(scalars), size=rng.integers(0, 4))]}
        if op == "$exists":
            return key, {"$exists": bool(rng.integers(2))}
        if op in ("$gt", "$gte", "$lt", "$lte") and (isinstance(value, bool) or value is None):
            value = 1
        return key, {op: value}

    checked = 0
    for _ in range(250):
        flt = dict(random_clause() for _ in range(rng.integers(1, 3)))
        expected = {c.doc_id for c in sqlite.get_chunks(sqlite.filter_ids(flt).tolist()).values()}
        found = pg.dense_search(np.ones(8, np.float32), 100, filter=flt)[0][1]
        assert _doc_ids(pg, found) == expected, flt
        assert pg.count_matching(flt) == len(expected), flt
        checked += bool(expected)
    assert checked > 50  # most random filters select something: the comparison is not vacuous
    sqlite.close()


def _no_chunks(doc_id: str) -> bool:
    return doc_id in ("c", "e")  # documents with empty text have no chunks: filters still reach them


@pytest.fixture(scope="module")
def delete_backend(pg_dsn):
    table = fresh_table()
    backend = PostgresBackend(pg_dsn, table=table, dim=8, index="exact")
    yield backend
    backend.close()
    drop_tables(pg_dsn, table)


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=[str(c[0])[:80] for c in CASES])
def test_delete_by_filter_table(delete_backend, flt, expected):
    backend = delete_backend
    if parse_filter(flt) is None:
        with pytest.raises(InvalidInputError, match="matches every document"):
            backend.delete_matching(flt)
        return
    backend.write(
        [
            _upsert(k, md, n_chunks=0 if _no_chunks(k) else 2, text="" if _no_chunks(k) else None)
            for k, md in DOCS.items()
        ]
    )
    assert backend.delete_matching(flt) == len(expected)
    assert {d.id for d in backend.iter_documents()} == set(DOCS) - expected
    assert backend.count_chunks() == 2 * sum(not _no_chunks(k) for k in set(DOCS) - expected)
    assert _doc_ids(backend, _all_vids(backend)) == {k for k in set(DOCS) - expected if not _no_chunks(k)}
    backend.delete(list(DOCS))


def test_delete_by_filter_refuses_bad_and_empty_filters_before_writing(make):
    backend = make(dim=8)
    backend.write([_upsert("a", {"lang": "en"}), _upsert("b", {"lang": "de"})])
    before = _state(backend)
    for flt in [None, {}, {"$and": [{}]}, {"$or": []}, {"lang": {"$regex": "e"}}, ["lang"]]:
        with pytest.raises(InvalidInputError):
            backend.delete_matching(flt)
    assert _state(backend) == before
    assert backend.delete_matching({"lang": {"$nin": ["en"]}}) == 1
    assert backend.delete_matching({"lang": {"$nin": ["en"]}}) == 0  # an empty match writes nothing
    assert [d.id for d in backend.iter_documents()] == ["a"]


def test_a_failure_inside_a_delete_by_filter_deletes_nothing(make, monkeypatch):
    from ragkit.backends.postgres import writes

    backend = make(dim=8)
    backend.write([_upsert(f"d{i}", {"i": i}, n_chunks=1 + i % 2) for i in range(20)])
    before = _state(backend)

    def fail(stage):
        if stage == "matching-chunks-deleted":
            raise RuntimeError("injected failure after the chunks went")

    monkeypatch.setattr(writes, "_write_hook", fail)
    with pytest.raises(RuntimeError, match="injected"):
        backend.delete_matching({"i": {"$gte": 5}})
    assert _state(backend) == before
    monkeypatch.setattr(writes, "_write_hook", None)
    assert backend.delete_matching({"i": {"$gte": 5}}) == 15 and backend.count_chunks() == 7


def test_metadata_keys_and_values_cannot_inject_sql(make):
    backend = make(dim=8)
    nasty = {
        "x') OR 1=1 --": "v",
        'k"; DROP TABLE documents; --': "'; DELETE FROM meta; --",
        "normal": "a' OR '1'='1",
        "$dollar": {"$in": "not an operator here"},
        "uni\u00e9": ["\u2603", "'"],
    }
    backend.write([_upsert("evil", nasty), _upsert("plain", {"normal": "a"})])
    assert backend.get_document("evil").metadata == nasty  # stored and read back verbatim
    assert json.loads(backend.document_states(["evil"])["evil"][1]) == nasty

    def docs(flt):
        return _doc_ids(backend, backend.dense_search(np.ones(8, np.float32), 10, filter=flt)[0][1])

    assert docs({"x') OR 1=1 --": "v"}) == {"evil"}
    assert docs({"normal": "a' OR '1'='1"}) == {"evil"}
    assert docs({"normal": "a"}) == {"plain"}
    assert docs({"uni\u00e9": "'"}) == {"evil"}
    assert backend.count_documents() == 2 and backend.count_chunks() == 4
    assert backend.get_meta("fingerprint") is None and backend.generation == 1


@pytest.mark.parametrize(
    "table",
    [
        "x; DROP TABLE y",
        "Robert'); DROP TABLE students;--",
        "Upper",
        "1abc",
        "a-b",
        'a"b',
        "",
        "a" * 51,
        None,
    ],
)
def test_table_names_are_validated(pg_dsn, table):
    with pytest.raises(ConfigError, match="table must match"):
        PostgresBackend(pg_dsn, table=table)


def test_a_20000_value_in_filter_works(make):
    backend = make(dim=8, index="exact")
    rng = np.random.default_rng(5)
    backend.write(
        [_single(f"d{i}", _unit(rng.normal(size=8)), {"i": i}, f"word{i} common") for i in range(300)]
    )
    wanted = list(range(0, 40_000, 2))  # 20,000 values, 150 of which exist
    flt = {"i": {"$in": wanted}}
    assert backend.count_matching(flt) == 150
    ((_, vids),) = backend.dense_search(np.ones(8, np.float32), 1000, filter=flt)
    assert {int(d[1:]) for d in _doc_ids(backend, vids)} == set(range(0, 300, 2))
    _, lexical = backend.lexical_search("common", 1000, filter=flt)
    assert len(lexical) == 150
    assert backend.count_matching({"i": {"$in": [str(v) for v in wanted]}}) == 0  # "2" is not 2


# ----------------------------------------------------------------------------------------------- search


def test_exact_search_equals_numpy(make):
    rng = np.random.default_rng(0)
    X = _unit(rng.normal(size=(3000, 48)))
    Q = _unit(rng.normal(size=(25, 48)))
    backend = make(dim=48, index="exact")
    backend.write([_single(f"r{i}", X[i], {"odd": i % 2}) for i in range(len(X))])
    row = {vid: int(c.doc_id[1:]) for vid, c in backend.get_chunks(_all_vids(backend).tolist()).items()}
    top = np.argsort(-(Q @ X.T), axis=1, kind="stable")[:, :10]

    results = backend.dense_search(Q, 10)
    assert len(results) == len(Q)
    for i, (scores, vids) in enumerate(results):
        assert scores.dtype == np.float32 and vids.dtype == np.int64
        assert [row[int(v)] for v in vids] == top[i].tolist()
        np.testing.assert_allclose(scores, (Q @ X.T)[i, top[i]], atol=2e-6)

    # a filter applies before the top-k cut
    odd = np.flatnonzero(np.arange(len(X)) % 2)
    top_odd = odd[np.argsort(-(Q @ X[odd].T), axis=1, kind="stable")[:, :10]]
    for i, (_, vids) in enumerate(backend.dense_search(Q, 10, filter={"odd": 1})):
        assert [row[int(v)] for v in vids] == top_odd[i].tolist()

    # fewer matches than k: all of them, unpadded
    few = backend.dense_search(Q[:2], 5, filter={"odd": {"$in": []}})
    assert [len(v) for _, v in few] == [0, 0]
    assert backend.delete([f"r{i}" for i in range(100)] + ["unknown"]) == 100
    assert backend.count_chunks() == 2900
    assert not {row[int(v)] for _, vids in backend.dense_search(Q, 10) for v in vids} & set(range(100))


def test_k_far_above_the_collection_costs_what_the_collection_costs(make):
    rng = np.random.default_rng(1)
    X = _unit(rng.normal(size=(500, 16)))
    for index in ("hnsw", "exact"):
        backend = make(table=fresh_table(), dim=16, index=index)
        backend.write([_single(f"d{i}", X[i], {"even": i % 2 == 0}, text=f"shared w{i}") for i in range(500)])
        for k in (10**9, 2**63 + 5, 10**30):
            started = time.perf_counter()
            ((scores, vids),) = backend.dense_search(X[0], k)
            assert len(vids) == 500 and len(set(vids.tolist())) == 500 and (np.diff(scores) <= 1e-6).all()
            ((_, even),) = backend.dense_search(X[0], k, filter={"even": True})
            assert len(even) == 250
            assert len(backend.lexical_search("shared", k)[1]) == 500
            assert time.perf_counter() - started < 10
        # k between ef_search's cap and the collection's size: still k hits
        ((_, vids),) = backend.dense_search(X[1], 1200 if index == "exact" else 400)
        assert len(vids) == (500 if index == "exact" else 400)
    with pytest.raises(InvalidInputError):
        backend.dense_search(X[0], 0)
    with pytest.raises(InputTypeError):
        backend.dense_search(X[0], 2.5)
    with pytest.raises(InputTypeError):
        backend.lexical_search("x", True)


def test_bad_query_vectors_are_refused(make):
    backend = make(dim=4, index="exact")
    backend.write([_upsert("a", {}, dim=4)])
    for bad in (
        np.zeros((1, 4)),
        np.full((1, 4), np.nan),
        np.ones((1, 5)),
        np.ones((1, 4), np.complex64),
        np.array([["a", "b", "c", "d"]]),
        np.ones((2, 2, 4)),
    ):
        with pytest.raises(InvalidInputError):
            backend.dense_search(bad, 1)
    assert backend.dense_search(np.zeros((0, 4), np.float32), 3) == []


@pytest.mark.slow
def test_hnsw_recall_and_filtered_iterative_scans(make, pg_dsn):
    """20k clustered vectors (Gaussian mixture, d=384), HNSW m=16, ef_construction=64, ef_search=100.

    The mixture of benchmarks/index_search.py (unit spread around n/1000 centres: clusters overlap).
    """
    import psycopg
    from psycopg import sql

    from ragkit.backends.postgres_filter import postgres_where

    n, d, n_clusters = 20_000, 384, 20
    rng = np.random.default_rng(42)
    centers = rng.normal(size=(n_clusters, d))
    X = _unit(centers[rng.integers(n_clusters, size=n)] + rng.normal(size=(n, d)))
    Q = _unit(centers[rng.integers(n_clusters, size=200)] + rng.normal(size=(200, d)))

    exact = make(dim=d, index="exact")
    for start in range(0, n, 5000):
        exact.write(
            [
                _single(f"d{i}", X[i], {"bucket": i % 100}, f"doc {i}")
                for i in range(start, min(n, start + 5000))
            ]
        )
    started = time.perf_counter()
    hnsw = make(index="hnsw")  # opening it with index="hnsw" builds the graph in bulk
    build = time.perf_counter() - started
    assert hnsw.dim == d and hnsw.count_chunks() == n

    truth = _top(exact, Q, 10)
    started = time.perf_counter()
    found = _top(hnsw, Q, 10)
    qps = len(Q) / (time.perf_counter() - started)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found, strict=True)])
    print(f"\nHNSW build {build:.1f}s, recall@10 {recall:.3f}, {qps:.0f} queries/s (one client)")
    assert recall >= 0.95

    # A selective filter (1% of the rows) that the GIN index cannot serve: the planner walks HNSW.
    flt = {"bucket": {"$gte": 7, "$lt": 8}}
    assert hnsw.table + "_hnsw" in hnsw.explain(Q[0], 10, filter=flt)
    assert hnsw.count_matching(flt) == n // 100
    allowed = {int(v) for v in _top(exact, Q[:1], n, filter=flt)[0]}
    assert len(allowed) == n // 100
    truth = _top(exact, Q[:50], 10, filter=flt)
    found = _top(hnsw, Q[:50], 10, filter=flt)
    assert all(len(f) == 10 and set(f.tolist()) <= allowed for f in found)  # k hits, all matching
    filtered_recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found, strict=True)])
    print(f"filtered (1%) recall@10 {filtered_recall:.3f}")
    assert filtered_recall >= 0.9

    # Why iterative scans: with ef_search alone, the walk yields ~ef_search rows before the filter.
    where, params = postgres_where(parse_filter(flt), column="c.metadata")
    statement = (
        sql.SQL("SELECT c.vid FROM {} c WHERE ").format(sql.Identifier(hnsw.table))
        + sql.SQL(where)
        + sql.SQL(" ORDER BY c.embedding <=> %s::vector LIMIT 10")
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL hnsw.ef_search = 40")
        conn.execute("SET LOCAL hnsw.iterative_scan = off")
        short = [len(conn.execute(statement, [*params, str(q.tolist())]).fetchall()) for q in Q[:20]]
    assert np.mean(short) < 5

    # A scan that gives up early (a 10-candidate first batch, no further iterations: ~0.1 matching
    # rows) comes back short; the exact fallback still returns the k best matching rows.
    capped = make(index="hnsw", ef_search=10, max_scan_tuples=1)
    for got, want in zip(_top(capped, Q[:5], 10, filter=flt), truth[:5], strict=True):
        np.testing.assert_array_equal(got, want)
    # Fewer matches than k: all of them, unpadded.
    few = {"bucket": {"$gte": 7, "$lt": 8}, "missing": {"$exists": False}}
    assert [len(v) for v in _top(hnsw, Q[:2], 300, filter=few)] == [200, 200]
    # An equality filter (GIN-indexable): whatever plan the planner picks, k matching hits.
    bucket3 = {int(v) for v in _top(exact, Q[:1], n, filter={"bucket": 3})[0]}
    assert all(
        len(f) == 10 and set(f.tolist()) <= bucket3 for f in _top(hnsw, Q[:10], 10, filter={"bucket": 3})
    )


def test_hnsw_built_on_an_empty_table_is_maintained_by_writes(make):
    backend = make(dim=16)  # HNSW from the start: inserts go into the graph
    items = [_upsert(f"d{i}", {"i": i}, dim=16, n_chunks=1) for i in range(200)]
    backend.write(items)
    assert backend.get_meta("hnsw") == {"m": 16, "ef_construction": 64, "halfvec": False}
    assert _walks_hnsw(make, backend, items[0].vectors[0])
    queries = np.concatenate([u.vectors for u in items[:20]])
    hits = [int(vids[0]) for _, vids in backend.dense_search(queries, 1)]
    chunks = backend.get_chunks(hits)
    assert [chunks[i].doc_id for i in hits] == [f"d{i}" for i in range(20)]


def test_dimensions_halfvec_and_limits(make):
    with pytest.raises(ConfigError, match="Matryoshka"):
        make(dim=4096)
    with pytest.raises(ConfigError, match="halfvec"):
        make(dim=3000, halfvec=False)
    with pytest.raises(ConfigError, match="halfvec"):
        make(dim=8, index="exact", halfvec=True)
    with pytest.raises(ConfigError, match="16000"):
        make(dim=16_001, index="exact")
    # 2,001..4,000 dimensions: HNSW over halfvec, scores still from the float32 column
    rng = np.random.default_rng(3)
    big = make(table=fresh_table(), dim=3000)
    X = _unit(rng.normal(size=(60, 3000)))
    big.write([_single(f"d{i}", X[i]) for i in range(60)])
    assert big.get_meta("hnsw")["halfvec"] is True
    assert _walks_hnsw(make, big, X[0])
    for i, (scores, vids) in enumerate(big.dense_search(X[:5], 3)):
        assert big.get_chunks(vids[:1].tolist())[int(vids[0])].doc_id == f"d{i}"
        np.testing.assert_allclose(scores[0], 1.0, atol=1e-6)
    # beyond 4,000: exact search only
    huge = make(table=fresh_table(), dim=4096, index="exact")
    Y = _unit(rng.normal(size=(20, 4096)))
    huge.write([_single(f"d{i}", Y[i]) for i in range(20)])
    assert [huge.get_chunks(v.tolist())[int(v[0])].doc_id for v in _top(huge, Y[:3], 1)] == ["d0", "d1", "d2"]
    with pytest.raises(ConfigError, match="Matryoshka"):
        make(table=huge.table)  # index="hnsw" on a 4096-d table
    # a new table refuses a first write HNSW cannot index, before writing anything
    fresh = make(table=fresh_table())
    with pytest.raises(ConfigError, match="Matryoshka"):
        fresh.write([_single("x", _unit(np.ones(4096)))])
    assert fresh.dim is None and fresh.count_documents() == 0


def test_table_dimension_is_checked(make):
    backend = make()  # dim=None: taken from the first write
    assert backend.dim is None and backend.count_chunks() == 0
    assert all(len(v) == 0 for _, v in backend.dense_search(np.ones((2, 8), np.float32), 3))
    other = make()  # opened before any vector exists: learns the dimension later
    backend.write([_upsert("a", {})])
    assert backend.dim == 8 and other.dim == 8
    with pytest.raises(IndexMismatchError, match="8-dimensional"):
        make(dim=16)
    with pytest.raises(IndexMismatchError, match="8-dimensional"):
        other.write([_upsert("b", {}, dim=16)])
    with pytest.raises(InvalidInputError):
        other.dense_search(np.ones(16, np.float32), 1)
    assert backend.count_documents() == 1
    backend.integrity_check()


# ------------------------------------------------------------------------------------ store semantics


def test_upsert_delete_and_update_metadata(make):
    store = make(dim=8)
    g0 = store.generation
    assert store.write([_upsert("a", {"v": 1}, n_chunks=3)]) is None
    assert store.generation == g0 + 1
    first = [v for _, v in store.chunk_vids("a")]
    assert len(first) == 3
    store.write([_upsert("a", {"v": 2}, n_chunks=2, version=2)])
    second = [v for _, v in store.chunk_vids("a")]
    assert len(second) == 2 and not set(second) & set(first)  # ids are never reused
    assert store.count_chunks() == 2 and store.count_documents() == 1
    assert store.get_document("a").metadata == {"v": 2}
    assert [n for n, _ in store.chunk_vids("a")] == [0, 1]
    chunks = store.get_chunks(second + [first[0]])  # a removed id is absent
    assert sorted(chunks) == sorted(second)
    doc = store.get_document("a")
    assert all(doc.text[c.start : c.end] == c.text and c.metadata == {"v": 2} for c in chunks.values())
    assert set(store.get_vectors(second + [first[0]])) == set(second)

    # last version of an id within one call wins
    store.write([_upsert("b", {"v": 1}), _upsert("b", {"v": 3}, version=3)])
    assert store.get_document("b").metadata == {"v": 3} and len(store.chunk_vids("b")) == 2

    assert store.update_metadata("a", {"v": 5, "lang": "en"}) is True
    assert store.update_metadata("nope", {}) is False
    assert store.get_document("a").metadata == {"v": 5, "lang": "en"}
    assert store.count_matching({"lang": "en"}) == 2  # the chunks' copy changed too
    assert all(c.metadata["v"] == 5 for c in store.get_chunks(second).values())

    g = store.generation
    assert store.delete(["a", "nope", "a"]) == 1
    assert store.generation == g + 1
    assert store.get_document("a") is None and store.count_documents() == 1
    assert store.get_chunks(second) == {} and store.get_vectors(second) == {}
    store.write([_upsert("c", {})])
    assert min(v for _, v in store.chunk_vids("c")) > max(v for _, v in store.chunk_vids("b"))  # retired
    assert store.delete([]) == 0
    with pytest.raises(InputTypeError):
        store.delete("c")  # a str is not a list of ids


def test_write_with_metadata_updates_is_one_transaction(make):
    from ragkit.backends.postgres import writes

    store = make(dim=8)
    store.write([_upsert("a", {"v": 1}), _upsert("b", {"v": 1})])
    g = store.generation
    store.write([_upsert("c", {"v": 1})], {"a": {"v": 2}, "ghost": {"v": 2}})
    assert store.generation == g + 1  # one transaction
    assert store.get_document("a").metadata == {"v": 2} and store.get_document("ghost") is None
    assert store.count_matching({"v": 2}) == 2 and store.count_documents() == 3
    store.write([], {"b": {"v": 3}})  # metadata only
    assert store.get_document("b").metadata == {"v": 3} and store.generation == g + 2

    before = _state(store)
    with pytest.raises(InvalidInputError):  # a bad vector: neither the upserts nor the updates
        store.write([_upsert("d", {}), _single("bad", np.zeros(8))], {"a": {"v": 9}})
    with pytest.raises(InvalidInputError):  # bad metadata among the updates
        store.write([_upsert("d", {})], {"a": {"v": float("nan")}})
    with pytest.raises(InputTypeError):
        store.write([_upsert("d", {})], {"a": "not a dict"})
    with pytest.raises(InputTypeError):
        store.write(_upsert("d", {}))  # one Upsert, not a sequence of them
    for stage in ("chunks-written", "metadata-updated"):  # a failure inside the transaction

        def hook(at: str, stage=stage) -> None:
            if at == stage:
                raise RuntimeError("boom")

        writes._write_hook = hook
        try:
            with pytest.raises(RuntimeError, match="boom"):
                store.write([_upsert("d", {}), _upsert("a", {"v": 7}, version=7)], {"b": {"v": 9}})
        finally:
            writes._write_hook = None
    assert _state(store) == before


def test_reads_round_trip_exactly(make):
    store = make(dim=8)
    metadata = {
        "f": 0.1,
        "big": 2**62,
        "neg": -2.5,
        "u": "h\u00e9llo \u2603",
        "nested": {"l": [1, None, True]},
    }
    empty = Document(id="empty", text="", metadata={"kind": "empty"})
    item = _upsert("a", metadata, n_chunks=2)
    store.write([item, Upsert(empty, (), np.zeros((0, 0), np.float32))])
    assert store.get_document("a") == item.document and store.get_document("empty") == empty
    assert [d.id for d in store.iter_documents(batch_size=1)] == ["a", "empty"]
    states = store.document_states(["a", "empty", "nope"])
    assert states["a"][0] == text_hash(item.document.text) and json.loads(states["a"][1]) == metadata
    assert set(states) == {"a", "empty"}
    ((vids, stored),) = list(store.iter_vectors())
    np.testing.assert_array_equal(stored, item.vectors)  # float32 exactly as written
    assert stored.dtype == np.float32 and vids.dtype == np.int64
    got = store.get_vectors(vids.tolist() + [10**12])
    assert list(got) == vids.tolist()
    np.testing.assert_array_equal(got[int(vids[1])], item.vectors[1])
    assert got[int(vids[1])].dtype == np.float32
    h = text_hash(item.chunks[1].text)
    cached = store.vectors_for_hashes([h, text_hash("other")])
    assert list(cached) == [h]
    np.testing.assert_array_equal(cached[h], item.vectors[1])
    pages = list(store.iter_texts(batch_size=1))
    assert [t for _, texts in pages for t in texts] == [c.text for c in item.chunks]
    assert store.chunk_vids("a") == list(enumerate(vids.tolist()))
    for bad in (["1"], [1.5], "12", [True], np.ones((2, 2), np.int64), [-1]):
        with pytest.raises((InputTypeError, InvalidInputError)):
            store.get_chunks(bad)
        with pytest.raises((InputTypeError, InvalidInputError)):
            store.get_vectors(bad)
    for bad in (None, 3, b"a"):
        with pytest.raises(InputTypeError):
            store.get_document(bad)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(8),
        np.full(8, np.nan),
        np.full(8, np.inf),
        np.ones(7),
        "complex",
        "strings",
    ],
    ids=["zero", "nan", "inf", "wrong-dim", "complex", "strings"],
)
def test_a_bad_vector_in_a_batch_writes_nothing(make, bad):
    store = make(dim=8)
    store.write([_upsert("keep", {"v": 1})])
    before = _state(store)
    item = _single("bad", np.ones(8))
    if isinstance(bad, str):
        # what a caller's own Upsert-like object could carry past the dataclass's float32 coercion
        raw = np.ones((1, 8), np.complex64) + 1j if bad == "complex" else np.array([["x"] * 8])
        object.__setattr__(item, "vectors", raw)
    else:
        object.__setattr__(item, "vectors", np.asarray(bad)[None, :])
    with pytest.raises((InvalidInputError, IndexMismatchError)):
        store.write([_upsert("keep", {"v": 2}), _upsert("new", {}), item])
    assert _state(store) == before
    # replace_vectors checks its pages the same way: a good page, then a bad one: nothing is swapped
    vids = _all_vids(store)
    good = _unit(np.ones((len(vids), 8)))
    if isinstance(bad, str) and bad == "complex":
        page = np.ones((len(vids), 8), np.complex64) + 1j
    elif isinstance(bad, str):
        page = np.full((len(vids), 8), "x")
    elif np.shape(bad) != (8,):
        page = np.ones((len(vids), 7), np.float32)
    else:
        page = good.copy()
        page[-1] = bad
    with pytest.raises(InvalidInputError):
        store.replace_vectors([(vids[:1], good[:1]), (vids[1:], page[1:])], {"model": "bad"})
    assert _state(store) == before


def test_bad_writes_leave_nothing_behind(make):
    store = make(dim=8)
    store.write([_upsert("keep", {"v": 1})])
    before = _state(store)
    attempts = [
        lambda: store.write([_upsert("x", {"v": float("nan")})]),
        lambda: store.write([_upsert("keep", {"v": 2}), _upsert("nul", {}, text="bad\x00text", n_chunks=1)]),
        lambda: store.write([_upsert("keep", {"v": 2}), _raw("sur", "bad\ud800text")]),
        lambda: store.write([_raw("s\udc00", "text")]),
        lambda: store.write([_upsert("nul\x00id", {})]),
        lambda: store.write([_upsert("k", {"key\x00": 1})]),
        lambda: store.write([_upsert("k", {"v": "\ud800"})]),
        lambda: store.write([_upsert("k", {"v": object()})]),
        lambda: store.write([Upsert(Document(id="y", text="t"), (), np.ones((1, 8), np.float32))]),
        lambda: store.update_metadata("keep", {"v": float("inf")}),
        lambda: store.update_metadata("keep", {"v": "\x00"}),
        lambda: store.set_meta("fingerprint", {"v": float("nan")}),
        lambda: store.set_meta("fingerprint\x00", 1),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidInputError):
            attempt()
    assert _state(store) == before


def test_text_that_postgres_cannot_hold_is_invalid_input_everywhere(make):
    store = make(dim=8)
    store.write([_upsert("a", {"lang": "en"})])
    for text in ("nul\x00", "lone \ud800 surrogate", "\udfff"):
        for call in (
            lambda t=text: store.lexical_search(t, 3),
            lambda t=text: store.get_document(t),
            lambda t=text: store.chunk_vids(t),
            lambda t=text: store.document_states([t]),
            lambda t=text: store.vectors_for_hashes([t]),
            lambda t=text: store.delete([t]),
            lambda t=text: store.update_metadata(t, {}),
            lambda t=text: store.get_meta(t),
            lambda t=text: store.count_matching({"lang": t}),
            lambda t=text: store.dense_search(np.ones(8), 3, filter={"lang": t}),
        ):
            with pytest.raises(InvalidInputError):
                call()
    assert store.count_documents() == 1


def test_meta_generation_and_closed_backend(make):
    index = make(dim=8)
    assert index.get_meta("fingerprint") is None
    g = index.generation
    index.set_meta("fingerprint", {"model": "m", "dim": 8})
    assert index.get_meta("fingerprint") == {"model": "m", "dim": 8} and index.generation == g + 1
    for key in ("generation", "dim", "schema_version", "hnsw", "language"):
        with pytest.raises(InvalidInputError):
            index.set_meta(key, 1)
    with pytest.raises(InputTypeError):
        index.set_meta(3, 1)
    assert index.pgvector_version.count(".") == 2
    with make(table=index.table) as other:
        assert other.count_documents() == 0
    with pytest.raises(ConfigError, match="closed"):
        other.count_documents()
    other.close()  # idempotent
    with pytest.raises(ConfigError, match="closed"):
        other.dense_search(np.ones(8), 1)


# ----------------------------------------------------------------------------------- save and reopen


def test_save_spec_and_repr_hold_no_credentials(make, tmp_path):
    import psycopg

    dsn = psycopg.conninfo.make_conninfo(make.dsn, password="s3cret-pw", sslpassword="k3y-pw")
    backend = make(dsn=dsn, dim=8)  # trust auth ignores the password
    committed: list[SavedBackend] = []
    saved = backend.save(tmp_path, "t1", committed.append)
    assert committed == [saved] and isinstance(saved, SavedBackend)
    assert saved.derived == [] and saved.keep == [] and saved.generation is None  # read from PostgreSQL
    assert list(tmp_path.iterdir()) == []  # writes no file
    text = json.dumps(saved.entry) + repr(backend) + json.dumps(backend.spec())
    assert "s3cret" not in text and "k3y" not in text
    assert saved.entry["kind"] == "postgres"
    spec = saved.entry["spec"]
    assert spec["table"] == backend.table and spec["dim"] == 8 and spec["language"] == "english"
    again = make(**{k: v for k, v in spec.items() if k not in ("table", "dsn")}, table=spec["table"])
    assert again.dim == 8
    if make.dsn.startswith("postgresql://postgres:@"):  # the pgserver URL: the URL form too
        url = make.dsn.replace("postgres:@", "postgres:s3cret-pw@") + "&sslpassword=k3y-pw"
        by_url = make(dsn=url)
        text = json.dumps(by_url.save(tmp_path, "t2", lambda saved: None).entry) + repr(by_url)
        assert "s3cret" not in text and "k3y" not in text and "postgres@" in text


def test_from_saved_needs_trusted_hosts_and_check_saved_compares_tables(make, tmp_path):
    backend = make(dim=8)
    backend.write([_upsert("a", {"lang": "en"})])
    entry = json.loads(json.dumps(backend.save(tmp_path, "t1", lambda saved: None).entry))  # as a manifest

    with pytest.raises(ConfigError) as info:
        PostgresBackend.from_saved(entry, read_only=True, trust_hosts=False)
    message = str(info.value)
    assert backend.table in message and "trust_hosts=True" in message and "Pipeline.load" in message
    assert "backend=PostgresBackend(dsn, table=" in message

    reopened = make.track(PostgresBackend.from_saved(entry, read_only=True, trust_hosts=True))
    assert reopened.read_only and reopened.get_document("a").metadata == {"lang": "en"}
    with pytest.raises(ReadOnlyError):
        reopened.write([_upsert("b", {})])
    writable = make.track(PostgresBackend.from_saved(entry, read_only=False, trust_hosts=True))
    writable.write([_upsert("b", {})])
    assert backend.count_documents() == 2

    backend.check_saved(entry)  # the same table: fine
    with pytest.raises(IndexMismatchError, match=backend.table):
        make(table=fresh_table()).check_saved(entry)
    wider = json.loads(json.dumps(entry))
    wider["spec"]["dim"] = 16
    with pytest.raises(IndexMismatchError, match="dim"):
        backend.check_saved(wider)

    malformed = [
        None,
        [],
        "postgres",
        {},
        {"kind": "local", "spec": entry["spec"]},
        {"kind": "postgres"},
        {"kind": "postgres", "spec": "host=db"},
        {"kind": "postgres", "spec": {"table": backend.table}},
        {"kind": "postgres", "spec": {"dsn": 5, "table": backend.table}},
        {"kind": "postgres", "spec": {**entry["spec"], "table": "Bad; DROP"}},
        {"kind": "postgres", "spec": {**entry["spec"], "m": "16"}},
        {"kind": "postgres", "spec": {**entry["spec"], "dim": -1}},
        {"kind": "postgres", "spec": {**entry["spec"], "pool_size": None}},
        {"kind": "postgres", "spec": {**entry["spec"], "statement_timeout": "1"}},
        {"kind": "postgres", "spec": {**entry["spec"], 7: 1}},
    ]
    for bad in malformed:
        for trust in (False, True):
            with pytest.raises(IntegrityError):
                PostgresBackend.from_saved(bad, read_only=True, trust_hosts=trust)
        with pytest.raises(IntegrityError):
            backend.check_saved(bad)
    secret = {"kind": "postgres", "spec": {"dsn": "host=db password=s3cret", "table": 5}}
    with pytest.raises(IntegrityError) as info:
        PostgresBackend.from_saved(secret, read_only=True, trust_hosts=True)
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        PostgresBackend.from_saved(
            {"kind": "postgres", "spec": {"dsn": "host=evil password=s3cret sslpassword=k3y", "table": "kb"}},
            read_only=True,
            trust_hosts=False,
        )
    assert "host=evil" in str(info.value) and "s3cret" not in str(info.value) and "k3y" not in str(info.value)


def test_read_only(make):
    writer = make(dim=8)
    writer.write([_upsert("a", {"lang": "en"})])
    reader = make(read_only=True)
    assert reader.count_documents() == 1 and reader.get_document("a").metadata == {"lang": "en"}
    assert len(reader.dense_search(np.ones(8, np.float32), 2)[0][1]) == 2
    for attempt in (
        lambda: reader.write([_upsert("b", {})]),
        lambda: reader.write([], {"a": {}}),
        lambda: reader.set_meta("x", 1),
        lambda: reader.delete(["a"]),
        lambda: reader.delete_matching({"lang": "en"}),
        lambda: reader.update_metadata("a", {}),
        lambda: reader.replace_vectors([], {"m": 1}),
        lambda: reader.acquire_writer(),
        lambda: reader.drop(),
    ):
        with pytest.raises(ReadOnlyError):
            attempt()
    # the session itself is read-only too
    with pytest.raises(ReadOnlyError):
        with reader._db.connection() as conn:
            conn.execute(f'DELETE FROM "{reader.table}"')
    writer.write([_upsert("b", {})])
    assert reader.count_documents() == 2  # sees other processes' commits at once
    with pytest.raises(ConfigError, match="no ragkit tables"):
        make(table=fresh_table(), read_only=True)


def test_lexical_search(make):
    store = make(dim=8)
    texts = {
        "cat": "The cat sat on the mat",
        "cats": "Dogs and cats are friends",
        "fox": "A quick brown fox jumps",
        "food": "cat cat cat food for every cat",
        "brown": "brown paper, quick fox",
    }
    store.write(
        [_single(k, _unit(np.ones(8)), {"lang": "de" if k == "cats" else "en"}, t) for k, t in texts.items()]
    )

    def docs(query, **kw):
        scores, ids = store.lexical_search(query, 10, **kw)
        assert scores.dtype == np.float32 and ids.dtype == np.int64 and (np.diff(scores) <= 0).all()
        chunks = store.get_chunks(ids.tolist())
        return [chunks[i].doc_id for i in ids.tolist()]

    found = docs("cat")
    assert found[0] == "food" and set(found) == {"cat", "cats", "food"}  # stemming: cats -> cat
    assert set(docs("cat", filter={"lang": "en"})) == {"cat", "food"}
    assert set(docs("cat", filter=parse_filter({"lang": "en"}))) == {"cat", "food"}
    assert docs('"brown fox"') == ["fox"]  # websearch phrase
    assert set(docs("fox -jumps")) == {"brown"}
    assert docs("the") == []  # stop words only
    assert docs("'); DROP TABLE x; --") == []
    with pytest.raises(InputTypeError):
        store.lexical_search(None, 3)
    with pytest.raises(ConfigError, match="language"):
        make(table=store.table, language="simple")
    with pytest.raises(ConfigError, match="unknown text-search language"):
        make(table=fresh_table(), language="klingon")
    simple = make(table=fresh_table(), dim=8, language="simple")
    simple.write([_upsert("x", {}, text="the cats", n_chunks=2)])
    assert len(simple.lexical_search("the", 5)[1]) == 1  # 'simple' keeps stop words, does not stem


def test_replace_vectors_same_and_new_dimension(make):
    store = make(dim=8)
    store.write([_upsert(f"d{i}", {"i": i}) for i in range(5)])
    ((ids, _),) = list(store.iter_vectors())
    rng = np.random.default_rng(1)
    new = _unit(rng.normal(size=(len(ids), 8)))
    g = store.generation
    store.replace_vectors([(ids[:4], new[:4]), (ids[4:], new[4:])], {"model": "new"})
    np.testing.assert_array_equal(next(store.iter_vectors())[1], new)
    assert store.get_meta("fingerprint") == {"model": "new"} and store.generation == g + 1

    with pytest.raises(IntegrityError, match="changed while re-embedding"):
        store.replace_vectors([(ids[:3], new[:3])], {"model": "partial"})
    with pytest.raises(InvalidInputError):
        store.replace_vectors([(ids[:3], new)], {"model": "mismatched"})
    with pytest.raises(InvalidInputError):
        store.replace_vectors([(ids, new)], {"model": float("nan")})
    with pytest.raises(InvalidInputError):  # the same vid twice
        store.replace_vectors([(ids, new), (ids[:1], new[:1])], {"model": "twice"})
    np.testing.assert_array_equal(next(store.iter_vectors())[1], new)
    assert store.get_meta("fingerprint") == {"model": "new"} and store.generation == g + 1

    elsewhere = make()  # another process, opened while the table held 8 dimensions
    assert elsewhere.dim == 8
    wider = _unit(rng.normal(size=(len(ids), 12)))
    store.replace_vectors(iter([(ids, wider)]), {"model": "wider"})
    assert store.dim == 12
    store.integrity_check()
    np.testing.assert_array_equal(next(store.iter_vectors())[1], wider)
    assert _walks_hnsw(make, store, wider[0])
    assert [int(v[0]) for v in _top(store, wider, 1)] == ids.tolist()
    with pytest.raises(IndexMismatchError, match="no longer holds"):
        elsewhere.dense_search(new[:1], 1)  # still thinking in 8 dimensions: a clear error, then it adapts
    assert elsewhere.dim == 12
    assert [int(v[0]) for v in _top(elsewhere, wider[:2], 1)] == ids[:2].tolist()


def test_statement_timeout_is_enforced(make):
    backend = make(dim=8, statement_timeout=0.2)
    with pytest.raises(UnavailableError, match="statement_timeout"):
        with backend._db.connection() as conn:
            conn.execute("SELECT pg_sleep(3)")
    assert backend.count_documents() == 0  # the pool recovered


def test_deadlocks_are_retried_then_reported(make, monkeypatch):
    import psycopg

    from ragkit.backends.postgres import writes

    store = make(dim=8)
    failures = {"left": 2}

    def flaky(at: str) -> None:
        if at == "documents-upserted" and failures["left"]:
            failures["left"] -= 1
            raise psycopg.errors.DeadlockDetected("deadlock detected (simulated)")

    monkeypatch.setattr(writes, "_write_hook", flaky)
    g = store.generation
    store.write([_upsert("a", {})])  # two deadlocks, then through
    assert failures["left"] == 0 and store.generation == g + 1 and store.count_documents() == 1

    failures["left"] = 10
    before = _state(store)
    with pytest.raises(UnavailableError, match="3 times"):
        store.write([_upsert("b", {})])
    assert failures["left"] == 7 and _state(store) == before


def test_missing_extension_rights_give_a_clear_error(pg_dsn):
    import uuid

    import psycopg
    from psycopg import sql

    suffix = uuid.uuid4().hex[:10]
    role, db = f"ragkit_user_{suffix}", f"ragkit_noext_{suffix}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(role))
            )
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("the test database role may not create roles and databases")
    try:
        dsn = psycopg.conninfo.make_conninfo(pg_dsn, dbname=db, user=role)
        with pytest.raises(ConfigError, match="CREATE EXTENSION vector"):
            PostgresBackend(dsn)
        with pytest.raises(ConfigError, match="not enabled"):
            PostgresBackend(dsn, read_only=True)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_unreachable_server_is_unavailable_and_bad_options_are_config_errors():
    with pytest.raises(UnavailableError, match="cannot connect") as info:
        PostgresBackend("host=127.0.0.1 port=1 dbname=x user=x password=s3cret connect_timeout=2")
    assert "s3cret" not in str(info.value)
    for kwargs in (
        {"dsn": ""},
        {"dsn": None},
        {"dsn": "host=x", "index": "ivf"},
        {"dsn": "host=x", "m": 1},
        {"dsn": "host=x", "m": 16, "ef_construction": 8},
        {"dsn": "host=x", "ef_search": 0},
        {"dsn": "host=x", "pool_size": True},
        {"dsn": "host=x", "statement_timeout": 0},
        {"dsn": "host=x", "language": "Robert'); --"},
        {"dsn": "host=x", "halfvec": "yes"},
    ):
        with pytest.raises(ConfigError):
            PostgresBackend(**kwargs)


def test_import_is_light_and_a_missing_psycopg_names_the_extra():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, ragkit, ragkit.backends, ragkit.backends.postgres\n"
            "from ragkit.backends import PostgresBackend\n"
            "print('psycopg' in sys.modules)\n"
            "sys.modules['psycopg'] = None\n"
            "from ragkit.errors import MissingDependencyError\n"
            "try:\n"
            "    PostgresBackend('host=db')\n"
            "except MissingDependencyError as e:\n"
            "    print(e)\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines()[0] == "False"
    assert "pip install 'ragkit[pg]'" in out


def test_every_error_is_a_ragkit_error(make):
    """A tour of caller mistakes: each one is a RagkitError, never a driver or built-in error."""
    store = make(dim=8)
    store.write([_upsert("a", {})])
    mistakes = [
        lambda: store.write(None),
        lambda: store.write([("doc", [], np.zeros((0, 8)))]),
        lambda: store.write([], {"a": None}),
        lambda: store.write([], []),
        lambda: store.delete(None),
        lambda: store.delete([1]),
        lambda: store.document_states("a"),
        lambda: store.vectors_for_hashes([None]),
        lambda: store.get_chunks(None),
        lambda: store.get_vectors([2**64]),
        lambda: store.iter_documents(batch_size=0).__next__(),
        lambda: store.iter_texts(batch_size="x").__next__(),
        lambda: store.dense_search(None, 3),
        lambda: store.dense_search([[1, 2]], 3),
        lambda: store.dense_search(np.ones(8), 3, filter="lang"),
        lambda: store.lexical_search(b"bytes", 3),
        lambda: store.lexical_search("x", -1),
        lambda: store.count_matching(42),
        lambda: store.replace_vectors(None, {}),
        lambda: store.replace_vectors([("ids", "vectors")], {}),
        lambda: store.replace_vectors([(np.array([1.5]), np.ones((1, 8)))], {}),
        lambda: store.replace_vectors([1, 2], {}),
        lambda: store.update_metadata("a", None),
        lambda: store.explain(np.ones(8), 0),
        lambda: store.check_saved(None),
    ]
    for mistake in mistakes:
        with pytest.raises(RagkitError):
            mistake()
    assert store.count_documents() == 1


def test_explain_shows_the_plan(make):
    backend = make(dim=8)
    with pytest.raises(InvalidInputError, match="no vectors"):
        make(table=fresh_table(), index="exact").explain(np.ones(8), 3)
    backend.write([_upsert(f"d{i}", {"i": i}) for i in range(20)])
    plan = backend.explain(np.ones(8), 3, filter={"i": {"$gte": 3}})
    assert "Limit" in plan and backend.table in plan


# --------------------------------------------------------------------------------------- processes


def _concurrent_worker(dsn: str, table: str, worker: int, n_docs: int, batch: int, out) -> None:
    problems: list[str] = []
    writes = 0
    try:
        backend = PostgresBackend(dsn, table=table, dim=16, pool_size=2)
        for start in range(0, n_docs, batch):
            items = [
                _upsert(f"w{worker}-{i}", {"worker": worker, "i": i}, dim=16, n_chunks=1 + i % 3)
                for i in range(start, start + batch)
            ]
            backend.write(items)
            writes += 1
            for item in items:  # read your own writes, through every read path
                doc = item.document
                if backend.get_document(doc.id) != doc:
                    problems.append(f"{doc.id}: get_document")
                if len(backend.chunk_vids(doc.id)) != len(item.chunks):
                    problems.append(f"{doc.id}: chunk_vids")
                flt = {"worker": worker, "i": doc.metadata["i"]}
                ((scores, vids),) = backend.dense_search(item.vectors[:1], 1, filter=flt)
                chunk = backend.get_chunks(vids.tolist()).get(int(vids[0])) if len(vids) else None
                if chunk is None or chunk.doc_id != doc.id or scores[0] < 0.999:
                    problems.append(f"{doc.id}: search")
            ((_, vids),) = backend.dense_search(items[-1].vectors[:1], 1)
            if backend.get_chunks(vids.tolist())[int(vids[0])].doc_id != items[-1].document.id:
                problems.append(f"batch {start}: unfiltered search misses own newest chunk")
        # concurrent upserts of existing documents (new text, metadata and chunk count), with
        # metadata-only updates of the others in the same transaction
        backend.write(
            [
                _upsert(f"w{worker}-{i}", {"worker": worker, "i": i, "v": 2}, dim=16, version=2)
                for i in range(0, n_docs, 2)
            ],
            {f"w{worker}-{i}": {"worker": worker, "i": i, "touched": True} for i in range(1, n_docs, 2)},
        )
        writes += 1
        backend.close()
    except Exception as e:  # noqa: BLE001 - reported to the parent
        problems.append(f"{type(e).__name__}: {e}")
    out.put((worker, writes, problems))


def test_four_processes_write_and_search_concurrently(pg_dsn):
    table = fresh_table()  # created by the workers themselves, racing each other
    n_docs, batch, workers = 40, 10, 4
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_concurrent_worker, args=(pg_dsn, table, w, n_docs, batch, queue))
        for w in range(workers)
    ]
    try:
        for p in procs:
            p.start()
        results = [queue.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert all(not problems for _, _, problems in results), results
        with PostgresBackend(pg_dsn, table=table) as backend:
            assert backend.count_documents() == workers * n_docs
            assert backend.generation == sum(w for _, w, _ in results)  # every write, once
            for w in range(workers):
                for i in range(n_docs):
                    if i % 2 == 0:
                        item = _upsert(f"w{w}-{i}", {"worker": w, "i": i, "v": 2}, dim=16, version=2)
                        metadata = item.document.metadata
                    else:
                        item = _upsert(f"w{w}-{i}", {"worker": w, "i": i}, dim=16, n_chunks=1 + i % 3)
                        metadata = {"worker": w, "i": i, "touched": True}
                    doc = backend.get_document(item.document.id)
                    assert doc.text == item.document.text and doc.metadata == metadata
                    vids = [v for _, v in backend.chunk_vids(doc.id)]
                    got = backend.get_chunks(vids)
                    assert [got[v].text for v in vids] == [c.text for c in item.chunks]
                    assert all(got[v].metadata == metadata for v in vids)
            assert backend.count_chunks() == sum(
                len(backend.chunk_vids(d.id)) for d in backend.iter_documents()
            )
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        drop_tables(pg_dsn, table)


def _killed_writer(dsn: str, table: str, flag: str, stage: str) -> None:
    from ragkit.backends.postgres import writes

    backend = PostgresBackend(dsn, table=table)

    def hook(at: str) -> None:
        if at == stage:
            Path(flag).write_text(at)
            time.sleep(120)  # inside the open transaction, until the parent's SIGKILL

    writes._write_hook = hook
    backend.write(
        [_upsert("a", {"v": 2}, n_chunks=5, version=2), _upsert("b", {"v": 2}, version=2)], {"c": {"v": 2}}
    )


def _killed_deleter(dsn: str, table: str, flag: str, stage: str) -> None:
    from ragkit.backends.postgres import writes

    backend = PostgresBackend(dsn, table=table)

    def hook(at: str) -> None:
        if at == stage:
            Path(flag).write_text(at)
            time.sleep(120)  # inside the open transaction, until the parent's SIGKILL

    writes._write_hook = hook
    backend.delete_matching({"$or": [{"v": 1}, {"kind": "empty"}]})


@pytest.mark.parametrize("stage", ["matching-selected", "matching-chunks-deleted"])
def test_sigkill_mid_delete_by_filter_deletes_nothing(make, tmp_path, stage):
    store = make(dim=8)
    store.write([_upsert("a", {"v": 1}, n_chunks=3), _upsert("b", {"v": 2}), _upsert("c", {"v": 1})])
    store.write([_upsert("e", {"kind": "empty"}, n_chunks=0, text="")])
    before = _state(store)
    flag = tmp_path / "in-transaction"
    proc = mp.get_context("spawn").Process(
        target=_killed_deleter, args=(make.dsn, store.table, str(flag), stage)
    )
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert proc.is_alive() and time.monotonic() < deadline, "the deleter never reached the hook"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
    finally:
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == -signal.SIGKILL
    assert _state(store) == before
    started = time.perf_counter()  # the killed session's row locks are gone
    assert store.delete_matching({"$or": [{"v": 1}, {"kind": "empty"}]}) == 3
    assert time.perf_counter() - started < 10
    assert [d.id for d in store.iter_documents()] == ["b"]


@pytest.mark.parametrize("stage", ["documents-upserted", "chunks-written", "metadata-updated"])
def test_sigkill_mid_upsert_keeps_the_previous_version(make, tmp_path, stage):
    store = make(dim=8)
    store.write([_upsert("a", {"v": 1}, n_chunks=3), _upsert("b", {"v": 1}), _upsert("c", {"v": 1})])
    before = _state(store)
    flag = tmp_path / "in-transaction"
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_killed_writer, args=(make.dsn, store.table, str(flag), stage))
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert proc.is_alive() and time.monotonic() < deadline, "the writer never reached the hook"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
    finally:
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == -signal.SIGKILL
    assert _state(store) == before
    # the killed session's locks are gone: the next upsert of the same documents goes straight through
    started = time.perf_counter()
    store.write([_upsert("a", {"v": 3}, version=3)], {"c": {"v": 3}})
    assert time.perf_counter() - started < 10
    assert store.get_document("a").metadata == {"v": 3} and store.get_document("c").metadata == {"v": 3}
