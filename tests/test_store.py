from __future__ import annotations

import zlib

import numpy as np
import pytest
from filter_cases import ALL, BAD_FILTERS, CASES, DOCS, INJECTIONS

from ragkit.backends.base import Upsert
from ragkit.errors import IntegrityError, InvalidInputError, ReadOnlyError
from ragkit.filters import parse_filter
from ragkit.store import SQLiteStore
from ragkit.types import Chunk, Document


def _item(doc_id: str, metadata: dict, text: str | None = None, n_chunks: int = 2):
    text = text if text is not None else f"document {doc_id} " * 3
    doc = Document(id=doc_id, text=text, metadata=metadata)
    chunks = [
        Chunk(id=f"{doc_id}#{i}", doc_id=doc_id, text=text, start=0, end=len(text)) for i in range(n_chunks)
    ]
    vectors = np.random.default_rng(zlib.crc32(doc_id.encode())).normal(size=(n_chunks, 8)).astype(np.float32)
    return Upsert(doc, tuple(chunks), vectors)


@pytest.fixture(scope="module")
def filter_store(tmp_path_factory):
    store = SQLiteStore(tmp_path_factory.mktemp("filters") / "store.sqlite")
    store.write([_item(doc_id, md) for doc_id, md in DOCS.items()])
    return store


def _doc_ids(store: SQLiteStore, flt) -> set[str]:
    vids = store.filter_ids(flt)
    return {c.doc_id for c in store.get_chunks(vids.tolist()).values()}


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_filter_table(filter_store, flt, expected):
    assert _doc_ids(filter_store, flt) == expected


@pytest.mark.parametrize("flt", BAD_FILTERS, ids=[str(f) for f in BAD_FILTERS])
def test_bad_filters_raise(filter_store, flt):
    with pytest.raises(InvalidInputError):
        filter_store.filter_ids(flt)


@pytest.mark.parametrize("flt", INJECTIONS, ids=[str(f) for f in INJECTIONS])
def test_injection_attempts_are_inert(filter_store, flt):
    before = filter_store.count_documents()
    assert _doc_ids(filter_store, flt) == set()
    assert filter_store.count_documents() == before == len(DOCS)


def _without_chunks(doc_id: str) -> bool:
    return doc_id in ("c", "e")  # documents with empty text have no chunks: filters still reach them


@pytest.fixture(scope="module")
def delete_store(tmp_path_factory):
    return SQLiteStore(tmp_path_factory.mktemp("deletes") / "store.sqlite")


# Filters that match everything by construction ({}) are refused by the pipeline and backends.
DELETE_CASES = [c for c in CASES if parse_filter(c[0]) is not None]


@pytest.mark.parametrize(("flt", "expected"), DELETE_CASES, ids=[str(c[0])[:80] for c in DELETE_CASES])
def test_delete_by_filter_table(delete_store, flt, expected):
    node = parse_filter(flt)
    items = [_item(k, md, n_chunks=0 if _without_chunks(k) else 2) for k, md in DOCS.items()]
    written = delete_store.write(items)
    owners = [k for k in DOCS if not _without_chunks(k) for _ in range(2)]
    vids = dict(zip(written.added_ids, owners, strict=True))
    generation = delete_store.generation
    deleted, removed = delete_store.delete_documents(filter=node)
    assert deleted == len(expected)
    assert {d.id for d in delete_store.iter_documents()} == ALL - expected
    assert sorted(removed) == sorted(v for v, k in vids.items() if k in expected)
    assert delete_store.count_chunks() == 2 * sum(not _without_chunks(k) for k in ALL - expected)
    assert delete_store.generation == generation + 1
    delete_store.delete_documents(list(DOCS))


class _FailingWriter:
    """The store's writer connection, failing the second batch of document deletes (mid-transaction)."""

    def __init__(self, conn):
        self._conn, self.deletes = conn, 0

    def execute(self, sql, *args):
        if sql.startswith("DELETE FROM documents"):
            self.deletes += 1
            if self.deletes == 2:
                raise RuntimeError("injected failure after the first 500 deletes")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_a_failure_inside_a_delete_by_filter_deletes_nothing(tmp_path):
    store = SQLiteStore(tmp_path / "store.sqlite")
    store.write([_item(f"d{i}", {"i": i, "keep": i % 7 == 0}, n_chunks=1) for i in range(1200)])
    before = (store.count_documents(), store.count_chunks(), store.generation)
    store._writer = failing = _FailingWriter(store._writer)
    with pytest.raises(RuntimeError, match="injected"):
        store.delete_documents(filter=parse_filter({"keep": False}))
    assert failing.deletes == 2  # the first batch was deleted, then rolled back
    store._writer = failing._conn
    assert (store.count_documents(), store.count_chunks(), store.generation) == before
    deleted, removed = store.delete_documents(filter=parse_filter({"keep": False}))
    assert deleted == len(removed) == 1200 - 172 and store.count_documents() == 172


def test_upsert_replaces_chunks_with_fresh_ids_and_bumps_generation(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite")
    g0 = store.generation
    first = store.write([_item("a", {"v": 1}, n_chunks=3)])
    assert store.generation == g0 + 1
    second = store.write([_item("a", {"v": 2}, n_chunks=2)])
    assert sorted(second.removed_ids) == sorted(first.added_ids)
    assert not set(second.added_ids) & set(first.added_ids)  # ids are never reused
    assert store.count_chunks() == 2 and store.count_documents() == 1
    assert store.get_document("a").metadata == {"v": 2}
    deleted, removed = store.delete_documents(["a", "nope"])
    assert deleted == 1 and sorted(removed) == sorted(second.added_ids)
    third = store.write([_item("b", {})])
    assert min(third.added_ids) > max(second.added_ids)  # AUTOINCREMENT: deleted ids stay retired


def test_vectors_round_trip_and_embedding_cache(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite")
    item = _item("a", {}, text="same text", n_chunks=1)
    vectors = item.vectors
    store.write([item])
    ((ids, stored),) = list(store.iter_vectors())
    np.testing.assert_array_equal(stored, vectors)
    from ragkit.store import text_hash

    cached = store.vectors_for_hashes([text_hash("same text"), text_hash("other")])
    assert list(cached) == [text_hash("same text")]
    np.testing.assert_array_equal(cached[text_hash("same text")], vectors[0])


def test_read_only_store_refuses_writes(tmp_path):
    path = tmp_path / "s.sqlite"
    SQLiteStore(path).write([_item("a", {})])
    ro = SQLiteStore(path, read_only=True)
    assert ro.count_documents() == 1
    with pytest.raises(ReadOnlyError):
        ro.write([_item("b", {})])


def test_damaged_file_raises_integrity_error(tmp_path):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(IntegrityError):
        SQLiteStore(path)


def test_metadata_must_be_json(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite")
    with pytest.raises(InvalidInputError):
        store.write([_item("a", {"x": float("nan")})])
    assert store.count_documents() == 0  # the failed transaction left nothing behind
