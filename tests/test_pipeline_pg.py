"""The Pipeline on PostgreSQL + pgvector: the same behaviour as on the local backend, shared by processes,
and the persistence guarantees that apply to a shared backend."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import HashEmbedder
from pg_server import drop_tables, fresh_table, server_dsn

from ragkit import Document, Pipeline, RecursiveChunker
from ragkit.errors import ConfigError, IndexMismatchError, InvalidInputError, ReadOnlyError

pytestmark = pytest.mark.pg

TESTS = Path(__file__).parent
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def corpus(n: int) -> list[Document]:
    rng = np.random.default_rng(0)
    return [
        Document(
            id=f"d{i}", text=" ".join(rng.choice(WORDS, size=10)) + f" unique{i}", metadata={"group": i % 4}
        )
        for i in range(n)
    ]


@pytest.fixture
def table():
    dsn = server_dsn()
    name = fresh_table()
    yield dsn, name
    drop_tables(dsn, name)


def _backend(dsn: str, table: str, **kwargs):
    from ragkit.backends import PostgresBackend

    kwargs.setdefault("index", "exact")
    return PostgresBackend(dsn, table=table, **kwargs)


def _pipe(dsn: str, table: str, embedder=None, **kwargs) -> Pipeline:
    kwargs.setdefault("chunker", RecursiveChunker(200, 20))
    return Pipeline(embedder or HashEmbedder(), backend=_backend(dsn, table), **kwargs)


def _ranked(hits) -> list[tuple[float, str]]:
    """Scores in order, with the ids of hits whose score is not tied (tied ones may come in any order,
    and a tie at the cut may keep either)."""
    scores = [round(h.score, 5) for h in hits]
    return [
        (s, h.id if scores.count(s) == 1 and s != scores[-1] else "")
        for s, h in zip(scores, hits, strict=True)
    ]


def test_pipeline_on_postgres_matches_the_local_backend(table):
    dsn, name = table
    docs = corpus(60)
    pg = _pipe(dsn, name)
    local = Pipeline(HashEmbedder(), chunker=RecursiveChunker(200, 20))
    for pipe in (pg, local):
        pipe.add(docs)
        pipe.delete(["d5"])
        pipe.update_metadata("d6", {"group": 9})
    assert len(pg) == len(local) == 59
    for q in (docs[3].text, "alpha beta", docs[40].text):
        for flt in (None, {"group": {"$in": [1, 9]}}):
            assert _ranked(pg.search(q, k=5, filter=flt)) == _ranked(local.search(q, k=5, filter=flt))
    lex = pg.search("unique17", k=3, mode="lexical")
    assert lex[0].doc_id == "d17" and lex[0].lexical_score is not None
    hyb = pg.search(docs[17].text, k=3, mode="hybrid")
    assert hyb[0].doc_id == "d17" and hyb[0].fused_score is not None
    assert pg.search("x", k=3, filter={"group": 9})[0].doc_id == "d6"
    pg.close()
    local.close()


def test_delete_by_filter_on_postgres_matches_the_local_backend(table):
    dsn, name = table
    docs = corpus(40) + [Document(id="empty", text="", metadata={"group": 2})]
    pg = _pipe(dsn, name)
    local = Pipeline(HashEmbedder(), chunker=RecursiveChunker(200, 20))
    for pipe in (pg, local):
        pipe.add(docs)
        assert pipe.delete(filter={"group": {"$in": [2]}, "$not": {"$or": [{"group": 3}]}}) == 11
        assert pipe.delete(filter={"$nor": [{"group": {"$lt": 3}}]}) == 10
        with pytest.raises(InvalidInputError, match="matches every document"):
            pipe.delete(filter={})
    assert (
        sorted(d.id for d in pg)
        == sorted(d.id for d in local)
        == sorted(d.id for d in docs if d.metadata["group"] in (0, 1))
    )
    assert pg.backend.count_chunks() == local.backend.count_chunks() == 20
    assert {h.doc_id for h in pg.search("alpha", k=40)} == {h.doc_id for h in local.search("alpha", k=40)}
    pg.close()
    local.close()


def test_reindex_expand_and_max_per_doc_on_postgres(table):
    dsn, name = table
    pipe = _pipe(dsn, name, chunker=RecursiveChunker(30, 0))
    text = "one two three four five. six seven eight nine ten. eleven twelve thirteen. fourteen fifteen."
    pipe.add([Document(id="long", text=text), Document(id="other", text="one two three")])
    hits = pipe.search("one two three", k=5, max_per_doc=1)
    assert sorted(h.doc_id for h in hits) == ["long", "other"]
    first = next(
        h for h in pipe.search("one two three four five", k=5) if h.doc_id == "long" and h.start == 0
    )
    wide = pipe.expand([first], window=1)[0]
    assert wide.start == 0 and wide.end > first.end and wide.text == text[wide.start : wide.end]
    new = HashEmbedder(dim=32, name="other")
    pipe.reindex(new)
    assert pipe.backend.get_meta("fingerprint") == new.fingerprint
    assert new.calls == pipe.backend.count_chunks()
    assert pipe.search("one two three", k=1)[0].doc_id == "other"
    pipe.close()
    with pytest.raises(IndexMismatchError):  # the table now holds the new embedder's vectors
        _pipe(dsn, name)


def test_a_failed_batch_writes_nothing_and_bad_vectors_are_refused(table):
    dsn, name = table

    class ZeroFor(HashEmbedder):
        def _embed(self, texts):
            out = super()._embed(texts)
            out[["void" in t for t in texts]] = 0.0
            return out

    pipe = _pipe(dsn, name, embedder=ZeroFor())
    pipe.add(Document(id="m", text="metadata changes here", metadata={"v": 1}))
    with pytest.raises(InvalidInputError, match="zero"):
        pipe.add([Document(id="m", text="metadata changes here", metadata={"v": 2}), "a void text"])
    assert pipe.get("m").metadata == {"v": 1} and len(pipe) == 1
    with pytest.raises(InvalidInputError):
        pipe.search("void")
    assert not pipe._query_cache
    for bad in ({"id": "x", "text": "t", "metadata": {"n": 2**64}}, {"id": "x", "text": "lone \ud800"}):
        with pytest.raises(InvalidInputError):
            pipe.add(bad)
    assert len(pipe) == 1
    assert len(pipe.search("metadata", k=10**9)) == 1
    assert len(pipe.search("metadata", k=5, filter={"v": {"$in": list(range(20_000))}})) == 1
    pipe.close()


def test_a_saved_directory_does_not_connect_to_the_dsn_it_names(table, tmp_path):
    dsn, name = table
    pipe = _pipe(dsn, name)
    pipe.add(corpus(10))
    pipe.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["backend"]["kind"] == "postgres" and not list((tmp_path / "idx").glob("store*"))
    with pytest.raises(ConfigError, match="trust_hosts"):
        Pipeline.load(tmp_path / "idx", embedder=HashEmbedder())
    again = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), backend=_backend(dsn, name))
    assert again.search(corpus(10)[2].text, k=1)[0].doc_id == "d2"
    trusted = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), trust_hosts=True, read_only=True)
    assert trusted.search(corpus(10)[3].text, k=1)[0].doc_id == "d3"
    with pytest.raises(ReadOnlyError):
        trusted.add("nope")
    with pytest.raises(IndexMismatchError):
        Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), backend=_backend(dsn, fresh_table()))
    with pytest.raises(IndexMismatchError):
        Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(dim=32), backend=_backend(dsn, name))
    for p in (pipe, again, trusted):
        p.close()


def test_no_credential_reaches_the_manifest(table, tmp_path):
    dsn, name = table
    # Extra credentials the server ignores over its unix socket: they must not reach the directory.
    sep = "&" if "?" in dsn else "?"
    secret_dsn = f"{dsn}{sep}password=hunter2&sslpassword=sslsecret"
    from ragkit.backends import PostgresBackend

    pipe = Pipeline(HashEmbedder(), backend=PostgresBackend(secret_dsn, table=name, index="exact"))
    pipe.save(tmp_path / "idx")
    text = (tmp_path / "idx" / "manifest.json").read_text() + repr(pipe.backend) + repr(pipe)
    assert "hunter2" not in text and "sslsecret" not in text
    pipe.close()


@pytest.mark.parametrize("kind", ["new", "local", "own"])
def test_a_killed_save_leaves_the_old_manifest_or_the_new_one(table, tmp_path, kind):
    dsn, name = table
    seed = _pipe(dsn, name)
    seed.add(corpus(6))
    seed.close()
    code = """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from conftest import HashEmbedder
    from ragkit import Pipeline, RecursiveChunker, persistence
    from ragkit.backends import PostgresBackend
    path, stage, dsn, table = sys.argv[1:5]
    pipe = Pipeline(HashEmbedder(), backend=PostgresBackend(dsn, table=table, index="exact"))
    def hook(s):
        if s == stage:
            os.kill(os.getpid(), signal.SIGKILL)
    persistence.save_hook = hook
    pipe.save(path)
    """
    for stage in ("begin", "manifest-writing", "manifest-written", "committed", "cleaned"):
        path = tmp_path / stage
        if kind == "local":
            local = Pipeline(HashEmbedder(), chunker=RecursiveChunker(200, 20))
            local.add(Document(id="local-only", text="a local pipeline was here"))
            local.save(path)
            local.close()
        elif kind == "own":
            first = _pipe(dsn, name)
            first.save(path)
            first.close()
        script = textwrap.dedent(code.format(tests=str(TESTS)))
        proc = subprocess.run(
            [sys.executable, "-c", script, str(path), stage, dsn, name],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == -signal.SIGKILL, (stage, proc.stderr)
        if not (path / "manifest.json").exists():
            assert kind == "new"
            continue
        kind_now = json.loads((path / "manifest.json").read_text())["backend"]["kind"]
        if kind_now == "local":
            assert kind == "local" and stage not in ("committed", "cleaned")
            pipe = Pipeline.load(path, embedder=HashEmbedder(), read_only=True)
            assert [d.id for d in pipe] == ["local-only"]
        else:
            pipe = Pipeline.load(path, embedder=HashEmbedder(), backend=_backend(dsn, name))
            assert len(pipe) == 6 and pipe.search(corpus(6)[4].text, k=1)[0].doc_id == "d4"
        pipe.close()


def test_another_process_sees_the_writes(table):
    dsn, name = table
    pipe = _pipe(dsn, name)
    pipe.add(corpus(5))
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
        "from conftest import HashEmbedder\n"
        "from ragkit import Pipeline, Document\n"
        "from ragkit.backends import PostgresBackend\n"
        f"p = Pipeline(HashEmbedder(), backend=PostgresBackend({dsn!r}, table={name!r}, index='exact'))\n"
        "p.add(Document(id='child', text='written by another process'))\n"
        "print(len(p), p.search('alpha', k=1)[0].doc_id.startswith('d'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["6", "True"], out.stderr
    assert pipe.search("written by another process", k=1)[0].doc_id == "child"
    pipe.close()
