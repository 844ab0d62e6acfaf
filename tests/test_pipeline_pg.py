"""The Pipeline on PostgreSQL + pgvector: the same behaviour as on SQLite + FAISS, shared by processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import HashEmbedder
from pg_server import drop_tables, fresh_table, server_dsn

from ragkit import Document, Pipeline, RecursiveChunker
from ragkit.errors import IndexMismatchError, ReadOnlyError

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


def _pipe(dsn: str, table: str, **kwargs) -> Pipeline:
    from ragkit.index import PgVectorIndex

    return Pipeline(
        HashEmbedder(),
        index=PgVectorIndex(dsn, table=table, index="exact"),
        chunker=RecursiveChunker(200, 20),
        **kwargs,
    )


def _ranked(hits) -> list[tuple[float, str]]:
    """Scores in order, with the ids of hits whose score is not tied (tied ones may come in any order,
    and a tie at the cut may keep either)."""
    scores = [round(h.score, 5) for h in hits]
    return [
        (s, h.id if scores.count(s) == 1 and s != scores[-1] else "")
        for s, h in zip(scores, hits, strict=True)
    ]


def test_pipeline_on_pgvector_matches_the_default_backend(table):
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
    assert hyb[0].doc_id == "d17" and hyb[0].rrf_score is not None
    assert pg.search("x", k=3, filter={"group": 9})[0].doc_id == "d6"
    pg.close()
    local.close()


def test_saved_pointer_reopens_the_shared_table_and_checks_the_embedder(table, tmp_path):
    dsn, name = table
    pipe = _pipe(dsn, name)
    pipe.add(corpus(10))
    pipe.save(tmp_path / "idx")
    assert not (tmp_path / "idx" / "store.sqlite").exists()
    again = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder())
    assert again.search(corpus(10)[2].text, k=1)[0].doc_id == "d2"
    reader = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), read_only=True)
    with pytest.raises(ReadOnlyError):
        reader.add("nope")
    with pytest.raises(IndexMismatchError):
        Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(dim=32))
    for p in (pipe, again, reader):
        p.close()


def test_another_process_sees_the_writes(table):
    dsn, name = table
    pipe = _pipe(dsn, name)
    pipe.add(corpus(5))
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
        "from conftest import HashEmbedder\n"
        "from ragkit import Pipeline, Document\n"
        "from ragkit.index import PgVectorIndex\n"
        f"p = Pipeline(HashEmbedder(), index=PgVectorIndex({dsn!r}, table={name!r}, index='exact'))\n"
        "p.add(Document(id='child', text='written by another process'))\n"
        "print(len(p), p.search('alpha', k=1)[0].doc_id.startswith('d'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["6", "True"], out.stderr
    assert pipe.search("written by another process", k=1)[0].doc_id == "child"
    pipe.close()
