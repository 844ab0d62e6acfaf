"""PgVectorIndex against a real PostgreSQL + pgvector (one server per session, a fresh table per test).

Checked against independent references: FAISS flat and numpy brute force for exact search, the
SQLite store for filter semantics (the shared case table and random filters), exact search for HNSW
recall, and separate processes for concurrency and crash safety.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from filter_cases import BAD_FILTERS, CASES, DOCS, INJECTIONS
from pg_server import drop_tables, fresh_table, server_dsn

from ragkit.errors import (
    ConfigError,
    IndexMismatchError,
    IntegrityError,
    InvalidInputError,
    ReadOnlyError,
    UnavailableError,
)
from ragkit.index.pgvector import PgVectorIndex, compile_pg_filter
from ragkit.store import SQLiteStore, text_hash
from ragkit.types import Chunk, Document

pytest.importorskip("psycopg")
pytest.importorskip("psycopg_pool")

pytestmark = pytest.mark.pg


# --------------------------------------------------------------------------------------------- helpers


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _item(
    doc_id: str, metadata: dict, *, n_chunks: int = 2, dim: int = 8, version: int = 1, text: str | None = None
):
    """A document with ``n_chunks`` chunks (exact slices of its text) and deterministic vectors."""
    text = text if text is not None else " ".join(f"{doc_id}-v{version}-part{i}" for i in range(n_chunks))
    words = text.split(" ")
    chunks, pos = [], 0
    for i, w in enumerate(words[:n_chunks]):
        start = text.index(w, pos)
        pos = start + len(w)
        chunks.append(Chunk(id=f"{doc_id}#{i}", doc_id=doc_id, text=w, start=start, end=pos))
    rng = np.random.default_rng(zlib.crc32(f"{doc_id}/{version}".encode()))
    vectors = _unit(rng.normal(size=(len(chunks), dim)))
    return Document(id=doc_id, text=text, metadata=metadata), chunks, vectors


class Indexes:
    """Opens PgVectorIndex instances on this test's table(s); closes them and drops the tables after."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.table = fresh_table()
        self._opened: list[PgVectorIndex] = []
        self._tables = {self.table}

    def __call__(self, table: str | None = None, **kwargs) -> PgVectorIndex:
        table = table or self.table
        self._tables.add(table)
        index = PgVectorIndex(kwargs.pop("dsn", self.dsn), table=table, **kwargs)
        self._opened.append(index)
        return index

    def close(self) -> None:
        for index in self._opened:
            index.close()
        for table in self._tables:
            drop_tables(self.dsn, table)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    return server_dsn()


@pytest.fixture
def make(pg_dsn):
    indexes = Indexes(pg_dsn)
    yield indexes
    indexes.close()


def _walks_hnsw(make: Indexes, index: PgVectorIndex, vector: np.ndarray) -> bool:
    """Whether the planner *can* serve this index's searches from its HNSW index.

    On a table this small a sequential scan is cheaper, so ask through a second instance whose
    sessions have sequential scans disabled (libpq ``options``): it walks HNSW exactly when the
    query's ORDER BY matches the index expression.
    """
    import psycopg

    dsn = psycopg.conninfo.make_conninfo(make.dsn, options="-c enable_seqscan=off")
    return index.table + "_hnsw" in make(table=index.table, dsn=dsn).explain(vector, 5)


def _doc_ids(index: PgVectorIndex, vids) -> set[str]:
    return {c.doc_id for c in index.get_chunks(list(vids)).values()}


# ---------------------------------------------------------------------------------------------- filters


@pytest.fixture(scope="module")
def filter_index(pg_dsn):
    table = fresh_table()
    index = PgVectorIndex(pg_dsn, table=table, dim=8, index="exact")
    index.write([_item(doc_id, md) for doc_id, md in DOCS.items()])
    yield index
    index.close()
    drop_tables(pg_dsn, table)


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_filter_table(filter_index, flt, expected):
    assert _doc_ids(filter_index, filter_index.filter_ids(flt)) == expected
    # the same filter inside a vector search, evaluated with the ORDER BY: every match, nothing else
    _, ids = filter_index.search(np.ones(8, np.float32), k=50, filter=flt)
    found = ids[0][ids[0] >= 0]
    assert _doc_ids(filter_index, found) == expected
    assert len(found) == 2 * len(expected)  # two chunks per document


@pytest.mark.parametrize("flt", BAD_FILTERS, ids=[str(f) for f in BAD_FILTERS])
def test_bad_filters_raise(filter_index, flt):
    with pytest.raises(InvalidInputError):
        filter_index.filter_ids(flt)
    with pytest.raises(InvalidInputError):
        filter_index.search(np.ones(8, np.float32), k=3, filter=flt)
    with pytest.raises(InvalidInputError):
        filter_index.lexical_search("document", k=3, filter=flt)


@pytest.mark.parametrize("flt", INJECTIONS, ids=[str(f) for f in INJECTIONS])
def test_injection_attempts_are_inert(filter_index, flt):
    assert _doc_ids(filter_index, filter_index.filter_ids(flt)) == set()
    assert filter_index.count_documents() == len(DOCS)
    assert filter_index.count_chunks() == 2 * len(DOCS)


def test_filters_agree_with_the_sqlite_store_on_random_cases(pg_dsn, make, tmp_path):
    """The SQLite store is the reference implementation of the filter language: compare on random data."""
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
    items = [_item(doc_id, md, n_chunks=1) for doc_id, md in docs.items()]
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
        assert _doc_ids(pg, pg.filter_ids(flt)) == expected, flt
        checked += bool(expected)
    assert checked > 50  # most random filters select something: the comparison is not vacuous
    sqlite.close()


def test_metadata_keys_and_values_cannot_inject_sql(make):
    index = make(dim=8)
    nasty = {
        "x') OR 1=1 --": "v",
        'k"; DROP TABLE documents; --': "'; DELETE FROM meta; --",
        "normal": "a' OR '1'='1",
        "$dollar": {"$in": "not an operator here"},
        "uni\u00e9": ["\u2603", "'"],
    }
    index.write([_item("evil", nasty), _item("plain", {"normal": "a"})])
    assert index.get_document("evil").metadata == nasty  # stored and read back verbatim
    assert index.document_states(["evil"])["evil"][1] == json.dumps(nasty, sort_keys=True, ensure_ascii=False)
    assert _doc_ids(index, index.filter_ids({"x') OR 1=1 --": "v"})) == {"evil"}
    assert _doc_ids(index, index.filter_ids({"normal": "a' OR '1'='1"})) == {"evil"}
    assert _doc_ids(index, index.filter_ids({"normal": "a"})) == {"plain"}
    assert _doc_ids(index, index.filter_ids({"uni\u00e9": "'"})) == {"evil"}
    assert index.count_documents() == 2 and index.count_chunks() == 4
    assert index.get_meta("fingerprint") is None and index.generation == 1


@pytest.mark.parametrize(
    "table",
    ["x; DROP TABLE y", "Robert'); DROP TABLE students;--", "Upper", "1abc", "a-b", 'a"b', "", "a" * 51],
)
def test_table_names_are_validated(pg_dsn, table):
    with pytest.raises(ConfigError, match="table must match"):
        PgVectorIndex(pg_dsn, table=table)


# ----------------------------------------------------------------------------------------------- search


def test_exact_search_equals_faiss_flat_and_numpy(make):
    from ragkit.index.faiss import FaissIndex

    rng = np.random.default_rng(0)
    X = _unit(rng.normal(size=(3000, 48)))
    Q = _unit(rng.normal(size=(25, 48)))
    ids = np.arange(10, 3010, dtype=np.int64) * 3
    pg = make(dim=48, index="exact")
    pg.add(ids, X)
    flat = FaissIndex(kind="flat")
    flat.add(ids, X)
    top = np.argsort(-(Q @ X.T), axis=1, kind="stable")[:, :10]

    scores, labels = pg.search(Q, 10)
    f_scores, f_labels = flat.search(Q, 10)
    np.testing.assert_array_equal(labels, ids[top])
    np.testing.assert_array_equal(labels, f_labels)
    np.testing.assert_allclose(scores, np.take_along_axis(Q @ X.T, top, axis=1), atol=2e-6)
    np.testing.assert_allclose(scores, f_scores, atol=2e-6)

    allowed = ids[::7]
    _, a_labels = pg.search(Q, 10, allowed_ids=allowed)
    np.testing.assert_array_equal(a_labels, flat.search(Q, 10, allowed_ids=allowed)[1])

    # fewer candidates than k: padded with -1 / -inf, like FAISS
    scores, labels = pg.search(Q[:2], 5, allowed_ids=ids[:3])
    assert (labels[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert set(labels[0, :3]) == set(ids[:3])

    assert len(pg) == 3000
    pg.delete(ids[:100].tolist() + [999_999_999])  # unknown ids are ignored
    assert len(pg) == 2900
    assert not set(pg.search(Q, 10)[1].ravel()) & set(ids[:100])


def test_add_rejects_bad_input(make):
    pg = make(dim=4, index="exact")
    pg.add([1, 2], _unit(np.eye(4, dtype=np.float32)[:2]))
    with pytest.raises(InvalidInputError, match="already in use"):
        pg.add([2], _unit(np.ones((1, 4), np.float32)))
    with pytest.raises(InvalidInputError, match="zero vector"):
        pg.add([3], np.zeros((1, 4), np.float32))
    with pytest.raises(InvalidInputError, match="NaN"):
        pg.add([3], np.full((1, 4), np.nan, np.float32))
    with pytest.raises(InvalidInputError):
        pg.add([3, 4], np.ones((1, 4), np.float32))
    with pytest.raises(IndexMismatchError):
        pg.add([3], np.ones((1, 5), np.float32))
    with pytest.raises(InvalidInputError):
        pg.search(np.ones((1, 5), np.float32), 1)
    with pytest.raises(InvalidInputError):
        pg.search(np.ones((1, 4), np.float32), 0)
    assert len(pg) == 2
    # add() moved the id sequence past its ids: a later write() draws fresh ones
    result = pg.write([_item("doc", {}, dim=4)])
    assert min(result.added_ids) > 2


@pytest.mark.slow
def test_hnsw_recall_and_filtered_iterative_scans(make, pg_dsn):
    """20k clustered vectors (Gaussian mixture, d=384), HNSW m=16, ef_construction=64, ef_search=100.

    The mixture of benchmarks/index_search.py (unit spread around n/1000 centres: clusters overlap).
    """
    import psycopg
    from psycopg import sql

    n, d, n_clusters = 20_000, 384, 20
    rng = np.random.default_rng(42)
    centers = rng.normal(size=(n_clusters, d))
    X = _unit(centers[rng.integers(n_clusters, size=n)] + rng.normal(size=(n, d)))
    Q = _unit(centers[rng.integers(n_clusters, size=200)] + rng.normal(size=(200, d)))

    exact = make(dim=d, index="exact")
    for start in range(0, n, 5000):
        exact.write(
            [
                (
                    Document(id=f"d{i}", text=f"doc {i}", metadata={"bucket": i % 100}),
                    [Chunk(id=f"d{i}#0", doc_id=f"d{i}", text=f"doc {i}", start=0, end=len(f"doc {i}"))],
                    X[i : i + 1],
                )
                for i in range(start, min(n, start + 5000))
            ]
        )
    started = time.perf_counter()
    hnsw = make(index="hnsw")  # opening it with index="hnsw" builds the graph in bulk
    build = time.perf_counter() - started
    assert hnsw.dim == d and len(hnsw) == n

    _, truth = exact.search(Q, 10)
    started = time.perf_counter()
    _, found = hnsw.search(Q, 10)
    qps = len(Q) / (time.perf_counter() - started)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found, strict=True)])
    print(f"\nHNSW build {build:.1f}s, recall@10 {recall:.3f}, {qps:.0f} queries/s (one client)")
    assert recall >= 0.95

    # A selective filter (1% of the rows) that the GIN index cannot serve: the planner walks HNSW.
    flt = {"bucket": {"$gte": 7, "$lt": 8}}
    assert hnsw.table + "_hnsw" in hnsw.explain(Q[0], 10, filter=flt)
    allowed = set(hnsw.filter_ids(flt).tolist())
    assert len(allowed) == n // 100
    _, truth = exact.search(Q[:50], 10, filter=flt)
    _, found = hnsw.search(Q[:50], 10, filter=flt)
    assert (found >= 0).all() and set(found.ravel()) <= allowed  # k hits on every query, all matching
    filtered_recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found, strict=True)])
    print(f"filtered (1%) recall@10 {filtered_recall:.3f}")
    assert filtered_recall >= 0.9

    # Why iterative scans: with ef_search alone, the walk yields ~ef_search rows before the filter.
    where, params = compile_pg_filter(flt)
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
    _, found = capped.search(Q[:5], 10, filter=flt)
    np.testing.assert_array_equal(found, truth[:5])
    # Fewer matches than k: all of them, then padding.
    few = {"bucket": {"$gte": 7, "$lt": 8}, "missing": {"$exists": False}}
    _, found = hnsw.search(Q[:2], 300, filter=few)
    assert ((found >= 0).sum(axis=1) == 200).all()
    # An equality filter (GIN-indexable): whatever plan the planner picks, k matching hits.
    _, found = hnsw.search(Q[:10], 10, filter={"bucket": 3})
    assert (found >= 0).all() and set(found.ravel()) <= set(hnsw.filter_ids({"bucket": 3}).tolist())


def test_hnsw_built_on_an_empty_table_is_maintained_by_writes(make):
    index = make(dim=16)  # HNSW from the start: inserts go into the graph
    items = [_item(f"d{i}", {"i": i}, dim=16, n_chunks=1) for i in range(200)]
    index.write(items)
    assert index.get_meta("hnsw") == {"m": 16, "ef_construction": 64, "halfvec": False}
    assert _walks_hnsw(make, index, items[0][2][0])
    queries = np.concatenate([v for _, _, v in items[:20]])
    _, ids = index.search(queries, 1)
    chunks = index.get_chunks(ids[:, 0].tolist())
    assert [chunks[int(i)].doc_id for i in ids[:, 0]] == [f"d{i}" for i in range(20)]


def test_dimensions_halfvec_and_limits(make):
    with pytest.raises(ConfigError, match="Matryoshka"):
        make(dim=4096)
    with pytest.raises(ConfigError, match="halfvec"):
        make(dim=3000, halfvec=False)
    with pytest.raises(ConfigError, match="halfvec"):
        make(dim=8, index="exact", halfvec=True)
    # 2,001..4,000 dimensions: HNSW over halfvec, scores still from the float32 column
    rng = np.random.default_rng(3)
    big = make(table=fresh_table(), dim=3000)
    X = _unit(rng.normal(size=(60, 3000)))
    big.add(np.arange(1, 61), X)
    assert big.get_meta("hnsw")["halfvec"] is True
    assert _walks_hnsw(make, big, X[0])
    scores, ids = big.search(X[:5], 3)
    np.testing.assert_array_equal(ids[:, 0], np.arange(1, 6))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-6)
    # beyond 4,000: exact search only
    huge = make(table=fresh_table(), dim=4096, index="exact")
    Y = _unit(rng.normal(size=(20, 4096)))
    huge.add(np.arange(1, 21), Y)
    np.testing.assert_array_equal(huge.search(Y[:3], 1)[1][:, 0], [1, 2, 3])
    with pytest.raises(ConfigError, match="Matryoshka"):
        make(table=huge.table)  # index="hnsw" on a 4096-d table


def test_table_dimension_is_checked(make):
    index = make()  # dim=None: taken from the first write
    assert index.dim is None and len(index) == 0
    scores, ids = index.search(np.ones((2, 8), np.float32), 3)
    assert (ids == -1).all() and np.isneginf(scores).all()
    other = make()  # opened before any vector exists: learns the dimension later
    index.write([_item("a", {})])
    assert index.dim == 8 and other.dim == 8
    with pytest.raises(IndexMismatchError, match="8-dimensional"):
        make(dim=16)
    with pytest.raises(IndexMismatchError, match="8-dimensional"):
        other.write([_item("b", {}, dim=16)])
    assert index.count_documents() == 1
    index.integrity_check()


# ------------------------------------------------------------------------------------ store semantics


def test_upsert_delete_and_update_metadata(make):
    store = make(dim=8)
    g0 = store.generation
    first = store.write([_item("a", {"v": 1}, n_chunks=3)])
    assert store.generation == g0 + 1
    assert first.removed_ids == [] and len(first.added_ids) == 3
    second = store.write([_item("a", {"v": 2}, n_chunks=2, version=2)])
    assert sorted(second.removed_ids) == sorted(first.added_ids)
    assert not set(second.added_ids) & set(first.added_ids)  # ids are never reused
    assert store.count_chunks() == 2 and store.count_documents() == 1
    assert store.get_document("a").metadata == {"v": 2}
    assert [n for n, _ in store.chunk_vids("a")] == [0, 1]
    assert store.chunk_vids("a") == list(enumerate(second.added_ids))
    chunks = store.get_chunks(second.added_ids + [first.added_ids[0]])  # a removed id is absent
    assert sorted(chunks) == sorted(second.added_ids)
    doc = store.get_document("a")
    assert all(doc.text[c.start : c.end] == c.text and c.metadata == {"v": 2} for c in chunks.values())

    # last version of an id within one call wins
    third = store.write([_item("b", {"v": 1}), _item("b", {"v": 3}, version=3)])
    assert store.get_document("b").metadata == {"v": 3} and len(third.added_ids) == 2

    assert store.update_metadata("a", {"v": 5, "lang": "en"}) is True
    assert store.update_metadata("nope", {}) is False
    assert store.get_document("a").metadata == {"v": 5, "lang": "en"}
    assert _doc_ids(store, store.filter_ids({"lang": "en"})) == {"a"}  # the chunks' copy changed too
    assert all(c.metadata["v"] == 5 for c in store.get_chunks(second.added_ids).values())

    deleted, removed = store.delete_documents(["a", "nope"])
    assert deleted == 1 and sorted(removed) == sorted(second.added_ids)
    assert store.get_document("a") is None and store.count_documents() == 1
    fourth = store.write([_item("c", {})])
    assert min(fourth.added_ids) > max(third.added_ids)  # deleted ids stay retired
    assert store.delete_documents([]) == (0, [])


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
    doc, chunks, vectors = _item("a", metadata, n_chunks=2)
    store.write([(doc, chunks, vectors), (empty, [], np.zeros((0, 0), np.float32))])
    assert store.get_document("a") == doc and store.get_document("empty") == empty
    assert [d.id for d in store.iter_documents(batch_size=1)] == ["a", "empty"]
    states = store.document_states(["a", "empty", "nope"])
    assert states["a"] == (text_hash(doc.text), json.dumps(metadata, sort_keys=True, ensure_ascii=False))
    assert set(states) == {"a", "empty"}
    ((ids, stored),) = list(store.iter_vectors())
    np.testing.assert_array_equal(stored, vectors)  # float32 exactly as written
    assert stored.dtype == np.float32 and ids.dtype == np.int64
    cached = store.vectors_for_hashes([text_hash(chunks[1].text), text_hash("other")])
    assert list(cached) == [text_hash(chunks[1].text)]
    np.testing.assert_array_equal(cached[text_hash(chunks[1].text)], vectors[1])
    pages = list(store.iter_texts(batch_size=1))
    assert [t for _, texts in pages for t in texts] == [c.text for c in chunks]
    np.testing.assert_array_equal(store.filter_ids(None), ids)


def test_bad_writes_leave_nothing_behind(make):
    store = make(dim=8)
    store.write([_item("keep", {"v": 1})])
    g = store.generation
    with pytest.raises(InvalidInputError):
        store.write([_item("x", {"v": float("nan")})])
    with pytest.raises(InvalidInputError):
        store.write([_item("keep", {"v": 2}), _item("nul", {}, text="bad\x00text", n_chunks=1)])
    with pytest.raises(InvalidInputError):
        store.write([(Document(id="y", text="t"), [], np.ones((1, 8), np.float32))])  # 0 chunks, 1 vector
    assert store.generation == g and store.count_documents() == 1
    assert store.get_document("keep").metadata == {"v": 1}


def test_meta_generation_save_load_and_spec(make, tmp_path):
    import psycopg

    dsn = psycopg.conninfo.make_conninfo(make.dsn, password="s3cret")  # trust auth ignores it
    index = make(dsn=dsn, dim=8)
    assert index.get_meta("fingerprint") is None
    g = index.generation
    index.set_meta("fingerprint", {"model": "m", "dim": 8})
    assert index.get_meta("fingerprint") == {"model": "m", "dim": 8} and index.generation == g + 1
    for key in ("generation", "dim", "schema_version"):
        with pytest.raises(InvalidInputError):
            index.set_meta(key, 1)
    spec = index.spec()
    assert "s3cret" not in json.dumps(spec) and spec["table"] == index.table and spec["dim"] == 8
    again = make(**{k: v for k, v in spec.items() if k != "table"}, table=spec["table"])
    assert again.get_meta("fingerprint") == {"model": "m", "dim": 8}
    index.save(tmp_path / "pointer.json")
    assert "s3cret" not in (tmp_path / "pointer.json").read_text()
    again.load(tmp_path / "pointer.json")
    with pytest.raises(IndexMismatchError):
        make(table=fresh_table()).load(tmp_path / "pointer.json")
    (tmp_path / "junk.json").write_text("{]")
    with pytest.raises(IntegrityError):
        index.load(tmp_path / "junk.json")


def test_read_only(make):
    writer = make(dim=8)
    writer.write([_item("a", {"lang": "en"})])
    reader = make(read_only=True)
    assert reader.count_documents() == 1 and reader.get_document("a").metadata == {"lang": "en"}
    assert (reader.search(np.ones(8, np.float32), 2)[1] >= 0).all()
    for attempt in (
        lambda: reader.write([_item("b", {})]),
        lambda: reader.set_meta("x", 1),
        lambda: reader.delete([1]),
        lambda: reader.update_metadata("a", {}),
        lambda: reader.delete_documents(["a"]),
    ):
        with pytest.raises(ReadOnlyError):
            attempt()
    writer.write([_item("b", {})])
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
        [
            (
                Document(id=k, text=t, metadata={"lang": "de" if k == "cats" else "en"}),
                [Chunk(id=f"{k}#0", doc_id=k, text=t, start=0, end=len(t))],
                _unit(np.ones((1, 8), np.float32)),
            )
            for k, t in texts.items()
        ]
    )

    def docs(query, **kw):
        scores, ids = store.lexical_search(query, 10, **kw)
        assert scores.dtype == np.float32 and ids.dtype == np.int64 and (np.diff(scores) <= 0).all()
        chunks = store.get_chunks(ids.tolist())
        return [chunks[i].doc_id for i in ids.tolist()]

    found = docs("cat")
    assert found[0] == "food" and set(found) == {"cat", "cats", "food"}  # stemming: cats -> cat
    assert set(docs("cat", filter={"lang": "en"})) == {"cat", "food"}
    assert docs('"brown fox"') == ["fox"]  # websearch phrase
    assert set(docs("fox -jumps")) == {"brown"}
    assert docs("the") == []  # stop words only
    assert docs("cat", allowed_ids=[]) == []
    with pytest.raises(ConfigError, match="language"):
        make(table=store.table, language="simple")
    with pytest.raises(ConfigError, match="unknown text-search language"):
        make(table=fresh_table(), language="klingon")
    simple = make(table=fresh_table(), dim=8, language="simple")
    simple.write([_item("x", {}, text="the cats", n_chunks=2)])
    assert len(simple.lexical_search("the", 5)[1]) == 1  # 'simple' keeps stop words, does not stem


def test_replace_vectors_same_and_new_dimension(make):
    store = make(dim=8)
    store.write([_item(f"d{i}", {"i": i}) for i in range(5)])
    ((ids, old),) = list(store.iter_vectors())
    rng = np.random.default_rng(1)
    new = _unit(rng.normal(size=(len(ids), 8)))
    g = store.generation
    store.replace_vectors([(ids[:4], new[:4]), (ids[4:], new[4:])], {"fingerprint": {"model": "new"}})
    np.testing.assert_array_equal(next(store.iter_vectors())[1], new)
    assert store.get_meta("fingerprint") == {"model": "new"} and store.generation == g + 1

    with pytest.raises(IntegrityError, match="changed while re-embedding"):
        store.replace_vectors([(ids[:3], new[:3])], {"fingerprint": {"model": "partial"}})
    np.testing.assert_array_equal(next(store.iter_vectors())[1], new)
    assert store.get_meta("fingerprint") == {"model": "new"}

    elsewhere = make()  # another process, opened while the table held 8 dimensions
    assert elsewhere.dim == 8
    wider = _unit(rng.normal(size=(len(ids), 12)))
    store.replace_vectors([(ids, wider)], {"fingerprint": {"model": "wider"}})
    assert store.dim == 12
    store.integrity_check()
    np.testing.assert_array_equal(next(store.iter_vectors())[1], wider)
    assert _walks_hnsw(make, store, wider[0])
    np.testing.assert_array_equal(store.search(wider, 1)[1][:, 0], ids)
    with pytest.raises(IndexMismatchError, match="no longer holds"):
        elsewhere.search(new[:1], 1)  # still thinking in 8 dimensions: a clear error, then it adapts
    assert elsewhere.dim == 12
    np.testing.assert_array_equal(elsewhere.search(wider[:2], 1)[1][:, 0], ids[:2])


def test_statement_timeout_is_enforced(make):
    index = make(dim=8, statement_timeout=0.2)
    with pytest.raises(UnavailableError, match="statement_timeout"):
        with index._connection() as conn:
            conn.execute("SELECT pg_sleep(3)")
    assert index.count_documents() == 0  # the pool recovered


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
            PgVectorIndex(dsn)
        with pytest.raises(ConfigError, match="not enabled"):
            PgVectorIndex(dsn, read_only=True)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_unreachable_server_is_unavailable():
    with pytest.raises(UnavailableError, match="cannot connect"):
        PgVectorIndex("host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2")


def test_the_pipeline_runs_on_it_as_a_store(make, hash_embedder):
    """Today's Pipeline already accepts it as ``store=`` (FAISS and BM25 derived from it)."""
    from ragkit import Pipeline

    store = make(dim=hash_embedder.dim)
    pipe = Pipeline(hash_embedder, store=store)
    pipe.add(
        [
            Document(id="fr", text="Paris is the capital of France", metadata={"lang": "en"}),
            Document(id="de", text="Berlin ist die Hauptstadt", metadata={"lang": "de"}),
            Document(id="it", text="Rome is the capital of Italy", metadata={"lang": "en"}),
        ]
    )
    assert store.get_meta("fingerprint") == hash_embedder.fingerprint
    hits = pipe.search("capital of France", k=2)
    assert hits[0].doc_id == "fr"
    assert {h.doc_id for h in pipe.search("capital", k=5, filter={"lang": "de"})} == {"de"}
    assert pipe.search("Rome Italy", k=1, mode="lexical")[0].doc_id == "it"
    pipe.update_metadata("it", {"lang": "it"})
    assert {h.doc_id for h in pipe.search("capital", k=5, filter={"lang": "en"})} == {"fr"}
    assert pipe.delete(["fr"]) == 1 and len(pipe) == 2 and store.count_documents() == 2


# --------------------------------------------------------------------------------------- processes


def _concurrent_worker(dsn: str, table: str, worker: int, n_docs: int, batch: int, out) -> None:
    problems: list[str] = []
    writes = 0
    try:
        index = PgVectorIndex(dsn, table=table, dim=16, pool_size=2)
        for start in range(0, n_docs, batch):
            items = [
                _item(f"w{worker}-{i}", {"worker": worker, "i": i}, dim=16, n_chunks=1 + i % 3)
                for i in range(start, start + batch)
            ]
            result = index.write(items)
            writes += 1
            if len(result.added_ids) != sum(len(c) for _, c, _ in items):
                problems.append(f"batch {start}: {len(result.added_ids)} ids")
            for doc, _, vectors in items:  # read your own writes, through every read path
                if index.get_document(doc.id) != doc:
                    problems.append(f"{doc.id}: get_document")
                scores, ids = index.search(vectors[:1], 1, filter={"worker": worker, "i": doc.metadata["i"]})
                chunk = index.get_chunks(ids[0].tolist()).get(int(ids[0, 0]))
                if chunk is None or chunk.doc_id != doc.id or scores[0, 0] < 0.999:
                    problems.append(f"{doc.id}: search")
            _, ids = index.search(items[-1][2][:1], 1)
            if index.get_chunks(ids[0].tolist())[int(ids[0, 0])].doc_id != items[-1][0].id:
                problems.append(f"batch {start}: unfiltered search misses own newest chunk")
        # concurrent upserts of existing documents (new text, metadata and chunk count)
        index.write(
            [
                _item(f"w{worker}-{i}", {"worker": worker, "i": i, "v": 2}, dim=16, version=2)
                for i in range(0, n_docs, 2)
            ]
        )
        writes += 1
        index.close()
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
        with PgVectorIndex(pg_dsn, table=table) as index:
            assert index.count_documents() == workers * n_docs
            assert index.generation == sum(w for _, w, _ in results)  # every write, once
            for w in range(workers):
                for i in range(n_docs):
                    doc, chunks, vectors = (
                        _item(f"w{w}-{i}", {"worker": w, "i": i, "v": 2}, dim=16, version=2)
                        if i % 2 == 0
                        else _item(f"w{w}-{i}", {"worker": w, "i": i}, dim=16, n_chunks=1 + i % 3)
                    )
                    assert index.get_document(doc.id) == doc
                    vids = [v for _, v in index.chunk_vids(doc.id)]
                    got = index.get_chunks(vids)
                    assert [got[v].text for v in vids] == [c.text for c in chunks]
            assert index.count_chunks() == sum(len(index.chunk_vids(d.id)) for d in index.iter_documents())
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        drop_tables(pg_dsn, table)


def _killed_writer(dsn: str, table: str, flag: str, stage: str) -> None:
    import ragkit.index.pgvector as pgvector

    index = pgvector.PgVectorIndex(dsn, table=table)

    def hook(at: str) -> None:
        if at == stage:
            Path(flag).write_text(at)
            time.sleep(120)  # inside the open transaction, until the parent's SIGKILL

    pgvector._write_hook = hook
    index.write([_item("a", {"v": 2}, n_chunks=5, version=2), _item("b", {"v": 2}, version=2)])


@pytest.mark.parametrize("stage", ["documents-upserted", "chunks-written"])
def test_sigkill_mid_upsert_keeps_the_previous_version(make, tmp_path, stage):
    store = make(dim=8)
    store.write([_item("a", {"v": 1}, n_chunks=3), _item("b", {"v": 1})])
    before = (
        store.get_document("a"),
        store.get_document("b"),
        store.chunk_vids("a"),
        list(store.iter_vectors()),
        store.generation,
    )
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
    after = (
        store.get_document("a"),
        store.get_document("b"),
        store.chunk_vids("a"),
        list(store.iter_vectors()),
        store.generation,
    )
    assert after[:3] == before[:3] and after[4] == before[4]
    for (ids_a, v_a), (ids_b, v_b) in zip(after[3], before[3], strict=True):
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_array_equal(v_a, v_b)
    # the killed session's locks are gone: the next upsert of the same documents goes straight through
    started = time.perf_counter()
    store.write([_item("a", {"v": 3}, version=3)])
    assert time.perf_counter() - started < 10
    assert store.get_document("a").metadata == {"v": 3}
