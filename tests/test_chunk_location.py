"""Chunk-level ``location`` and ``header`` in both backends: stored, returned on every hit, kept by save
and load, keyed into the embedding cache, and migrated from indexes saved before they existed
(``tests/data/index-format-2``, a PostgreSQL table of schema version 1 made with the old DDL)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import HashEmbedder
from search_backends import backend_pipeline

from ragkit import Document, Pipeline, RecursiveChunker
from ragkit.backends import sqlite_schema
from ragkit.backends.base import Upsert
from ragkit.errors import IntegrityError, InvalidInputError
from ragkit.persistence import FORMAT_VERSION
from ragkit.store import SQLiteStore, document_hash, embed_hash, embed_text, text_hash
from ragkit.types import Chunk, Section

TESTS = Path(__file__).parent


class PagedChunker:
    """A chunker that gives every chunk a location and, when asked, a contextual header."""

    def __init__(self, *, headers: bool = True) -> None:
        self._inner = RecursiveChunker(200, 20)
        self._headers = headers

    def chunk(self, document):
        out = []
        for n, c in enumerate(self._inner.chunk(document)):
            title = document.metadata.get("title", document.id)
            location = {"page": n + 1, "heading": f"{title} > Part {n + 1}"}
            header = f"{title}: " if self._headers else ""
            out.append(c.model_copy(update={"location": location, "header": header}))
        return out


def _chunk(doc_id: str, text: str, *, n: int = 0, location=None, header: str = "") -> Chunk:
    return Chunk(
        id=f"{doc_id}#{n}",
        doc_id=doc_id,
        text=text,
        start=0,
        end=len(text),
        location=location or {},
        header=header,
    )


def _upsert(doc_id: str, text: str, vector, **chunk) -> Upsert:
    return Upsert(
        Document(id=doc_id, text=text),
        (_chunk(doc_id, text, **chunk),),
        np.asarray(vector, np.float32)[None, :],
    )


def _files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _columns(store_path: Path) -> set[str]:
    conn = sqlite3.connect(store_path)
    try:
        return {r[1] for r in conn.execute("PRAGMA table_info(chunks)")}
    finally:
        conn.close()


def _schema_version(store_path: Path) -> int:
    conn = sqlite3.connect(store_path)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------- the store


def test_the_store_round_trips_location_and_header():
    store = SQLiteStore(":memory:")
    where = {"pages": [3, 4], "heading": "Install > From source"}
    store.write([_upsert("a", "run make", [1, 0, 0, 0], location=where, header="Guide: ")])
    store.write([_upsert("b", "plain text", [0, 1, 0, 0])])
    chunks = {c.doc_id: c for c in store.get_chunks([1, 2]).values()}
    assert chunks["a"].location == where and chunks["a"].header == "Guide: "
    assert chunks["a"].text == "run make"  # the stored text stays exact: the header is beside it
    assert chunks["b"].location == {} and chunks["b"].header == ""
    # What the embedder saw, for a reindex; the text alone, for BM25.
    assert [t for _, page in store.iter_texts() for t in page] == ["Guide: run make", "plain text"]
    assert [t for _, page in store.iter_texts(headers=False) for t in page] == ["run make", "plain text"]


def test_the_cache_key_is_the_hash_of_header_and_text():
    store = SQLiteStore(":memory:")
    store.write([_upsert("a", "same text", [1, 0, 0, 0], header="First: ")])
    store.write([_upsert("b", "same text", [0, 1, 0, 0], header="Second: ")])
    store.write([_upsert("c", "same text", [0, 0, 1, 0])])
    a, b, c = (_chunk(d, "same text", header=h) for d, h in (("a", "First: "), ("b", "Second: "), ("c", "")))
    assert len({embed_hash(a), embed_hash(b), embed_hash(c)}) == 3
    assert embed_hash(c) == text_hash("same text")  # no header: the hash an old index already holds
    assert embed_hash(a) == text_hash(embed_text(a)) == text_hash("First: same text")
    cached = store.vectors_for_hashes([embed_hash(a), embed_hash(b), embed_hash(c)])
    np.testing.assert_array_equal(cached[embed_hash(a)], [1, 0, 0, 0])
    np.testing.assert_array_equal(cached[embed_hash(b)], [0, 1, 0, 0])
    np.testing.assert_array_equal(cached[embed_hash(c)], [0, 0, 1, 0])


def test_a_location_that_is_not_json_is_refused_before_anything_is_written():
    store = SQLiteStore(":memory:")
    with pytest.raises(InvalidInputError, match=r"location of chunk 'a#0'"):
        store.write([_upsert("a", "x", [1, 0], location={"pages": {1, 2}})])
    with pytest.raises(InvalidInputError, match=r"location of chunk 'a#0'"):
        store.write([_upsert("a", "x", [1, 0], location={"page": float("nan")})])
    assert store.count_documents() == 0 and store.generation == 0


def test_a_store_of_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    for read_only in (True, False):
        with pytest.raises(IntegrityError, match="schema version 99.*newer ragkit"):
            SQLiteStore(path, read_only=read_only)


# ------------------------------------------------------------------------------ pipelines, both backends


def test_hits_carry_location_and_header_and_bm25_never_sees_the_header(search_backend):
    pipe = backend_pipeline(search_backend, chunker=PagedChunker())
    pipe.add(
        [
            Document(id="guide", text="compile the sources with make", metadata={"title": "Zebraheader"}),
            Document(id="other", text="unrelated words about gardens", metadata={"title": "Notes"}),
        ]
    )
    for mode in ("dense", "lexical", "hybrid"):
        hit = pipe.search("compile the sources with make", k=1, mode=mode)[0]
        assert hit.doc_id == "guide"
        assert (
            hit.location == {"page": 1, "heading": "Zebraheader > Part 1"} and hit.header == "Zebraheader: "
        )
        assert hit.text == "compile the sources with make"
    assert pipe.search("zebraheader", k=5, mode="lexical") == []  # the header is not in the BM25 index
    pipe.close()


def test_equal_texts_under_different_headers_never_share_a_vector(search_backend):
    pipe = backend_pipeline(search_backend, chunker=PagedChunker())
    first = pipe.add(Document(id="a", text="the same paragraph", metadata={"title": "Alpha"}))
    second = pipe.add(Document(id="b", text="the same paragraph", metadata={"title": "Beta"}))
    third = pipe.add(Document(id="c", text="the same paragraph", metadata={"title": "Alpha"}))
    assert (first.embedded, second.embedded, third.embedded) == (1, 1, 0)  # c reuses a's vector
    vectors = {c.doc_id: v for c, v in _chunks_and_vectors(pipe)}
    assert not np.allclose(vectors["a"], vectors["b"])
    np.testing.assert_allclose(vectors["a"], vectors["c"])
    pipe.close()


def _chunks_and_vectors(pipe):
    vids = [int(v) for ids, _ in pipe.backend.iter_texts() for v in ids]
    chunks, vectors = pipe.backend.get_chunks(vids), pipe.backend.get_vectors(vids)
    return [(chunks[v], vectors[v]) for v in vids]


def test_iter_texts_yields_what_the_embedder_saw_on_both_backends(search_backend):
    pipe = backend_pipeline(search_backend, chunker=PagedChunker())
    pipe.add(Document(id="a", text="body words", metadata={"title": "Head"}))
    pipe.add(Document(id="b", text="", metadata={"title": "Empty"}))  # no chunks
    texts = [t for _, page in pipe.backend.iter_texts() for t in page]
    assert texts == ["Head: body words"]
    embedder = HashEmbedder(dim=32, name="second")
    seen = []
    original = embedder.embed_documents
    embedder.embed_documents = lambda batch: (seen.extend(batch), original(batch))[1]
    pipe.reindex(embedder, show_progress=False)
    assert seen == ["Head: body words"]  # a reindex embeds header + text, as the add did
    assert pipe.search("body words", k=1)[0].location["page"] == 1
    pipe.close()


def _titled(text: str, headings: tuple[str, ...] | None, **metadata) -> Document:
    sections = [] if headings is None else [Section(start=0, end=len(text), headings=headings)]
    return Document(id="d", text=text, metadata=metadata, sections=sections)


def test_the_same_text_with_new_sections_is_chunked_again(search_backend):
    pipe = backend_pipeline(search_backend, chunker=RecursiveChunker(200, 0))
    text = "Install\n\npip install thing"
    assert pipe.add(_titled(text, None)).added == 1
    for headings, location in [(("Install",), {"heading": "Install"}), (("Setup",), {"heading": "Setup"})]:
        result = pipe.add(_titled(text, headings))
        # Chunked again; the text is the same, so the vector comes from the cache.
        assert (result.updated, result.chunks, result.embedded) == (1, 1, 0)
        assert pipe.search("pip install thing", k=1)[0].location == location
        assert pipe.add(_titled(text, headings)).unchanged == 1
    result = pipe.add(_titled(text, None))  # sections gone: the locations go too
    assert result.updated == 1 and pipe.search("pip install thing", k=1)[0].location == {}
    pipe.close()


def test_a_new_title_is_chunked_again_when_headers_embed_it(search_backend):
    text = "pip install thing"
    pipe = backend_pipeline(search_backend, chunker=RecursiveChunker(200, 0, contextual_headers=True))
    pipe.add(_titled(text, ("Install",), title="Old title"))
    result = pipe.add(_titled(text, ("Install",), title="New title"))
    assert (result.updated, result.chunks, result.embedded) == (1, 1, 1)
    hit = pipe.search("pip install thing", k=1)[0]
    assert hit.header == "New title\nInstall\n\n" and hit.metadata["title"] == "New title"
    # A title that gives the same header (whitespace aside) changes the metadata only.
    result = pipe.add(_titled(text, ("Install",), title="New   title", lang="en"))
    assert (result.metadata_updated, result.chunks, result.embedded) == (1, 0, 0)
    pipe.close()


def test_without_headers_a_new_title_is_a_metadata_update():
    pipe = Pipeline(HashEmbedder(), chunker=RecursiveChunker(200, 0))
    pipe.add(_titled("pip install thing", ("Install",), title="Old title"))
    result = pipe.add(_titled("pip install thing", ("Install",), title="New title"))
    assert (result.metadata_updated, result.chunks, result.embedded) == (1, 0, 0)
    assert pipe.search("pip install thing", k=1)[0].metadata["title"] == "New title"
    pipe.close()


def test_a_title_change_outside_the_cut_header_embeds_nothing(search_backend):
    # chunk_size 40: a header keeps at most 20 characters, so the end of a long title is cut off.
    pipe = backend_pipeline(search_backend, chunker=RecursiveChunker(40, 0, contextual_headers=True))
    pipe.add(_titled("pip install thing", None, title="A long title about things, version one"))
    result = pipe.add(_titled("pip install thing", None, title="A long title about things, version two"))
    assert (result.updated, result.chunks, result.embedded) == (1, 1, 0)  # the same header: cached
    pipe.close()


def test_location_and_header_survive_save_and_load(tmp_path):
    path = tmp_path / "idx"
    pipe = Pipeline(HashEmbedder(), chunker=PagedChunker())
    pipe.add(Document(id="guide", text="install from source with make", metadata={"title": "Guide"}))
    pipe.save(path)
    pipe.close()
    assert json.loads((path / "manifest.json").read_text())["format_version"] == FORMAT_VERSION == 3
    again = Pipeline.load(path, embedder=HashEmbedder(), chunker=PagedChunker(), read_only=True)
    hit = again.search("install from source", k=1)[0]
    assert hit.location == {"page": 1, "heading": "Guide > Part 1"} and hit.header == "Guide: "
    assert "p. 1, Guide > Part 1" in repr(again.search("install from source", k=1))
    again.close()


@pytest.mark.pg
def test_location_and_header_survive_save_and_load_on_postgres(tmp_path, pg_table):
    from ragkit.backends import PostgresBackend

    dsn, table = pg_table
    pipe = Pipeline(HashEmbedder(), chunker=PagedChunker(), backend=PostgresBackend(dsn, table=table))
    pipe.add(Document(id="guide", text="install from source with make", metadata={"title": "Guide"}))
    pipe.save(tmp_path / "idx")
    pipe.close()
    backend = PostgresBackend(dsn, table=table, read_only=True)
    again = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), chunker=PagedChunker(), backend=backend)
    hit = again.search("install from source", k=1)[0]
    assert hit.location == {"page": 1, "heading": "Guide > Part 1"} and hit.header == "Guide: "
    again.close()


# -------------------------------------------------------------------------- migration: the local format


def _copy_format_2(tmp_path: Path) -> Path:
    path = tmp_path / "v2"
    shutil.copytree(TESTS / "data" / "index-format-2", path)
    return path


def _store_of(path: Path) -> Path:
    return path / json.loads((path / "manifest.json").read_text())["backend"]["store"]


def test_a_format_2_index_loads_read_only_without_writing_a_byte(tmp_path):
    path = _copy_format_2(tmp_path)
    before = _files(path)
    pipe = Pipeline.load(path, embedder=HashEmbedder(), read_only=True)
    assert len(pipe) == 12
    assert pipe.search("format two document 5 about topic2 beta", k=1)[0].doc_id == "d5"
    for mode in ("dense", "lexical", "hybrid"):
        hits = pipe.search("topic2 beta", k=4, mode=mode)
        assert len(hits) == 4 and all(h.location == {} and h.header == "" for h in hits)
    assert [t for _, page in pipe.backend.iter_texts() for t in page][
        0
    ] == "format two document 0 about topic0 beta"
    pipe.close()
    after = _files(path)
    assert {name: after[name] for name in before} == before  # every file as it was
    # SQLite's WAL readers leave an empty -wal and a -shm beside the store; nothing else appears.
    store = _store_of(path).name
    assert set(after) - set(before) <= {f"{store}-wal", f"{store}-shm"}
    assert not (path / f"{store}-wal").exists() or (path / f"{store}-wal").stat().st_size == 0
    assert _schema_version(_store_of(path)) == 1 and "location" not in _columns(_store_of(path))


def test_a_format_2_index_migrates_at_its_first_write_and_saves_the_current_format(tmp_path):
    path = _copy_format_2(tmp_path)
    pipe = Pipeline.load(path, embedder=HashEmbedder(), chunker=PagedChunker(headers=False))
    # Old chunks kept their hashes (no header: the hash of the text), so equal text is a cache hit.
    reused = pipe.add(
        Document(id="copy", text="format two document 3 about topic0 beta", metadata={"title": "C"})
    )
    assert reused.embedded == 0
    store = _store_of(path)
    assert _schema_version(store) == sqlite_schema.SCHEMA_VERSION == 2
    assert {"location", "header"} <= _columns(store)
    pipe.add(Document(id="new", text="a zebra appears on page one", metadata={"title": "Zoo"}))
    pipe.save()
    pipe.close()
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["counts"] == {
        "documents": 14,
        "chunks": 14,
    }
    again = Pipeline.load(path, embedder=HashEmbedder(), read_only=True)
    new = again.search("a zebra appears on page one", k=1)[0]
    assert new.doc_id == "new" and new.location == {"page": 1, "heading": "Zoo > Part 1"}
    old = again.search("format two document 7 about topic1 beta", k=1, filter={"group": 1})[0]
    assert old.doc_id == "d7" and old.location == {} and old.header == ""
    again.close()


def test_a_format_2_index_keeps_its_document_hashes_so_adding_it_again_rewrites_nothing(tmp_path):
    pipe = Pipeline.load(_copy_format_2(tmp_path), embedder=HashEmbedder())
    docs = list(pipe)
    assert len(docs) == 12 and all(not d.sections for d in docs)
    result = pipe.add(docs)
    assert (result.unchanged, result.chunks, result.embedded) == (12, 0, 0)
    pipe.close()


def test_a_format_1_index_still_loads_with_empty_locations(tmp_path):
    path = tmp_path / "v1"
    shutil.copytree(TESTS / "data" / "index-format-1", path)
    pipe = Pipeline.load(path, embedder=HashEmbedder(), read_only=True)
    hit = pipe.search("version one document 5 about topic2 alpha", k=1)[0]
    assert hit.doc_id == "d5" and hit.location == {} and hit.header == ""
    pipe.close()


def test_the_sqlite_migration_is_one_transaction(tmp_path):
    path = tmp_path / "old.sqlite"
    shutil.copyfile(_store_of(TESTS / "data" / "index-format-2"), path)

    class Failing(sqlite3.Connection):
        def execute(self, sql, *args):
            if sql.startswith("UPDATE meta SET value = ? WHERE key = 'schema_version'"):
                raise sqlite3.OperationalError("disk I/O error (injected)")
            return super().execute(sql, *args)

    conn = sqlite3.connect(path, factory=Failing)
    with pytest.raises(sqlite3.OperationalError, match="injected"):
        sqlite_schema.migrate(conn, 1)
    conn.close()
    assert "location" not in _columns(path) and _schema_version(path) == 1  # the columns rolled back too
    store = SQLiteStore(path)  # a real writer migrates it
    assert store.get_chunks([1])[1].location == {} and _schema_version(path) == 2
    store.close()


# ------------------------------------------------------------------------ migration: PostgreSQL schema 1

# The DDL of ragkit's PostgreSQL schema version 1 (ragkit 0.1, before chunks had location and header).
_OLD_DDL = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE {meta} (key text PRIMARY KEY, value jsonb NOT NULL);
CREATE TABLE {docs} (seq bigint GENERATED ALWAYS AS IDENTITY, id text PRIMARY KEY, text text NOT NULL,
                     metadata json NOT NULL, hash text NOT NULL);
CREATE UNIQUE INDEX {docs_seq} ON {docs} (seq);
CREATE TABLE {chunks} (
    vid bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    doc_id text REFERENCES {docs} (id) ON DELETE CASCADE,
    n integer, text text NOT NULL DEFAULT '', start integer, "end" integer, hash text,
    metadata jsonb NOT NULL DEFAULT '{{}}', embedding vector(4) NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED,
    UNIQUE (doc_id, n));
CREATE INDEX {hash_idx} ON {chunks} (hash);
CREATE INDEX {tsv_idx} ON {chunks} USING gin (tsv);
CREATE INDEX {md_idx} ON {chunks} USING gin (metadata jsonb_path_ops);
INSERT INTO {meta} VALUES ('generation', '2'), ('schema_version', '1'), ('language', '"english"'),
                          ('dim', '4');
"""


@pytest.fixture
def pg_table():
    pytest.importorskip("psycopg")
    from pg_server import drop_tables, fresh_table, server_dsn

    dsn, table = server_dsn(), fresh_table()
    yield dsn, table
    drop_tables(dsn, table)


def _old_table(dsn: str, table: str) -> None:
    """A table as ragkit 0.1 left it: two documents of one chunk each."""
    import psycopg
    from psycopg import sql

    names = {
        "meta": f"{table}_meta",
        "docs": f"{table}_documents",
        "docs_seq": f"{table}_documents_seq",
        "chunks": table,
        "hash_idx": f"{table}_hash",
        "tsv_idx": f"{table}_tsv",
        "md_idx": f"{table}_metadata",
    }
    ddl = sql.SQL(_OLD_DDL).format(**{k: sql.Identifier(v) for k, v in names.items()})
    rows = [
        ("a", "alpha words here", [1, 0, 0, 0], {"lang": "en"}),
        ("b", "beta words there", [0, 1, 0, 0], {}),
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(ddl)
        for doc_id, text, vector, md in rows:
            conn.execute(
                sql.SQL("INSERT INTO {} (id, text, metadata, hash) VALUES (%s, %s, %s, %s)").format(
                    sql.Identifier(names["docs"])
                ),
                [doc_id, text, json.dumps(md), text_hash(text)],
            )
            conn.execute(
                sql.SQL(
                    'INSERT INTO {} (doc_id, n, text, start, "end", hash, metadata, embedding) '
                    "VALUES (%s, 0, %s, 0, %s, %s, %s, %s::vector)"
                ).format(sql.Identifier(table)),
                [doc_id, text, len(text), text_hash(text), json.dumps(md), str(vector)],
            )


def _pg_columns(dsn: str, table: str) -> set[str]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", [table]
        )
        return {r[0] for r in rows}


def _pg_version(backend) -> int:
    return backend.get_meta("schema_version")


@pytest.mark.pg
def test_an_old_postgres_table_reads_read_only_and_migrates_when_opened_for_writing(pg_table):
    from ragkit.backends import PostgresBackend

    dsn, table = pg_table
    _old_table(dsn, table)
    reader = PostgresBackend(dsn, table=table, index="exact", read_only=True)
    chunks = reader.get_chunks([1, 2])
    assert {c.doc_id: (c.location, c.header) for c in chunks.values()} == {"a": ({}, ""), "b": ({}, "")}
    assert chunks[1].metadata == {"lang": "en"}
    assert [t for _, page in reader.iter_texts() for t in page] == ["alpha words here", "beta words there"]
    _, vids = reader.dense_search(np.float32([1, 0, 0, 0]), 1)[0]
    assert vids.tolist() == [1]
    assert reader.lexical_search("beta", 5)[1].tolist() == [2]
    assert _pg_version(reader) == 1 and "location" not in _pg_columns(dsn, table)  # read-only: untouched

    writer = PostgresBackend(dsn, table=table, index="exact")
    assert _pg_version(writer) == 2 and {"location", "header"} <= _pg_columns(dsn, table)
    assert writer.generation == 2  # a migration is not a write of data
    writer.integrity_check()
    assert writer.vectors_for_hashes([text_hash("alpha words here")])  # old hashes stay valid
    writer.write([_upsert("c", "gamma", [0, 0, 1, 0], location={"page": 2}, header="Doc: ")])
    (vid,) = [v for v, c in writer.get_chunks([1, 2, 3]).items() if c.doc_id == "c"]
    got = writer.get_chunks([vid])[vid]
    assert got.location == {"page": 2} and got.header == "Doc: " and got.text == "gamma"
    assert writer.get_chunks([1])[1].location == {}
    # The reader opened before the migration still works (it reads the defaults until reopened).
    assert set(reader.get_chunks([1, vid])) == {1, vid}
    reopened = PostgresBackend(dsn, table=table, index="exact", read_only=True)
    assert reopened.get_chunks([vid])[vid].location == {"page": 2}
    for backend in (reader, writer, reopened):
        backend.close()


@pytest.mark.pg
def test_an_old_postgres_tables_document_hashes_stay_valid(pg_table):
    from ragkit.backends import PostgresBackend

    dsn, table = pg_table
    _old_table(dsn, table)
    writer = PostgresBackend(dsn, table=table, index="exact")
    states = writer.document_states(["a", "b"])
    assert states["a"][0] == document_hash(Document(id="a", text="alpha words here"))
    assert states["b"][0] == document_hash(Document(id="b", text="beta words there"))
    writer.close()


@pytest.mark.pg
def test_the_postgres_migration_is_one_transaction(pg_table, monkeypatch):
    from ragkit.backends import PostgresBackend
    from ragkit.backends.postgres.schema import Schema

    dsn, table = pg_table
    _old_table(dsn, table)
    real = Schema.upsert_meta

    def failing(self, conn, key, text):
        if key == "schema_version":
            raise RuntimeError("injected failure after the ALTER TABLE")
        return real(self, conn, key, text)

    monkeypatch.setattr(Schema, "upsert_meta", failing)
    with pytest.raises(RuntimeError, match="injected"):
        PostgresBackend(dsn, table=table, index="exact")
    assert "location" not in _pg_columns(dsn, table)  # the ALTER TABLE rolled back with it
    monkeypatch.setattr(Schema, "upsert_meta", real)
    backend = PostgresBackend(dsn, table=table, index="exact")
    assert _pg_version(backend) == 2 and backend.get_chunks([2])[2].location == {}
    backend.close()


@pytest.mark.pg
def test_a_postgres_table_of_a_newer_schema_is_refused(pg_table):
    import psycopg
    from psycopg import sql

    from ragkit.backends import PostgresBackend

    dsn, table = pg_table
    PostgresBackend(dsn, table=table, index="exact").close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET value = '99' WHERE key = 'schema_version'").format(
                sql.Identifier(f"{table}_meta")
            )
        )
    for read_only in (True, False):
        with pytest.raises(IntegrityError, match="schema version 99.*upgrade ragkit"):
            PostgresBackend(dsn, table=table, index="exact", read_only=read_only)
