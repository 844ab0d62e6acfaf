from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import HashEmbedder

from ragkit import Document, Pipeline, RecursiveChunker
from ragkit.errors import (
    InputTypeError,
    InvalidInputError,
)
from ragkit.types import content_id

TESTS = Path(__file__).parent
REPO = TESTS.parent

WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()
)


def corpus(n: int, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [
        Document(
            id=f"d{i}",
            text=" ".join(rng.choice(WORDS, size=12)) + f" unique{i}",
            metadata={"group": i % 5, "even": i % 2 == 0, "lang": ["en", "de"][i % 2]},
        )
        for i in range(n)
    ]


def make(embedder=None, **kwargs) -> Pipeline:
    kwargs.setdefault("chunker", RecursiveChunker(200, 20))
    return Pipeline(embedder or HashEmbedder(), **kwargs)


def test_add_accepts_strings_dicts_documents_and_generators():
    pipe = make()
    res = pipe.add(["plain text", {"id": "x", "text": "from a dict", "metadata": {"a": 1}}])
    assert (res.added, res.chunks) == (2, 2)
    pipe.add(Document(id="y", text="a document"))
    pipe.add(d for d in [Document(id="z", text="from a generator")])
    assert len(pipe) == 4
    assert pipe.get(content_id("plain text")).text == "plain text"
    assert pipe.get("x").metadata == {"a": 1}
    assert pipe.get("missing") is None
    assert {d.id for d in pipe} == {content_id("plain text"), "x", "y", "z"}


def test_readding_plain_text_is_a_noop_and_unchanged_chunks_are_not_reembedded():
    emb = HashEmbedder()
    pipe = make(emb)
    long_text = "first paragraph words here.\n\n" + "second paragraph other words.\n\n" + "third part ends."
    pipe.add([Document(id="a", text=long_text), "some plain text"])
    calls = emb.calls
    res = pipe.add(["some plain text", Document(id="a", text=long_text)])
    assert res.unchanged == 2 and emb.calls == calls
    # Change only the last paragraph: the other chunks keep their stored vectors.
    n_chunks = pipe.backend.count_chunks()
    res = pipe.add(Document(id="a", text=long_text.replace("ends", "finishes")))
    assert res.updated == 1
    assert res.embedded == 1 and emb.calls == calls + 1
    assert pipe.backend.count_chunks() == n_chunks
    # Metadata alone: no embedding at all.
    res = pipe.add(Document(id="a", text=long_text.replace("ends", "finishes"), metadata={"k": 1}))
    assert res.metadata_updated == 1 and emb.calls == calls + 1
    assert pipe.get("a").metadata == {"k": 1}


def test_search_finds_the_matching_document_and_scores_are_cosines():
    pipe = make()
    docs = corpus(40)
    pipe.add(docs)
    hits = pipe.search(docs[7].text, k=3)
    assert hits[0].doc_id == "d7"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5) and hits[0].dense_score == hits[0].score
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits.query == docs[7].text and hits.timings["dense"] >= 0
    assert hits[0].text == docs[7].text[hits[0].start : hits[0].end]
    assert hits[0].metadata == docs[7].metadata
    assert all(h.lexical_score is None and h.rerank_score is None for h in hits)


def test_filtered_search_returns_k_hits_whenever_k_chunks_match():
    pipe = make()
    docs = corpus(300)
    pipe.add(docs)
    # The expected set is computed here, from the documents, not by the store the search uses:
    # group 3 and even means i % 10 == 8, so 30 of the 300 documents (one chunk each).
    flt = {"group": 3, "even": True}
    expected = {d.id for d in docs if d.metadata["group"] == 3 and d.metadata["even"]}
    assert len(expected) == 30 and all(len(list(pipe.chunker.chunk(d))) == 1 for d in docs)
    hits = pipe.search("alpha beta", k=len(expected), filter=flt)
    assert {h.doc_id for h in hits} == expected
    # asking for more than match returns exactly the matches, never padding from outside the filter
    assert {h.doc_id for h in pipe.search("alpha beta", k=100, filter=flt)} == expected
    assert len(pipe.search("alpha", k=5, filter={"group": {"$in": [99]}})) == 0


def test_delete_and_update_keep_store_and_index_in_step():
    pipe = make()
    pipe.add(corpus(30))
    assert pipe.delete(["d1", "d2", "nope"]) == 2
    assert len(pipe.backend.index) == pipe.backend.count_chunks()
    found = {h.doc_id for h in pipe.search("alpha beta gamma", k=30)}
    assert not found & {"d1", "d2"}
    pipe.update_metadata("d3", {"group": 42})
    assert [h.doc_id for h in pipe.search("alpha", k=5, filter={"group": 42})] == ["d3"]
    with pytest.raises(InvalidInputError):
        pipe.update_metadata("nope", {})
    # vector ids are never reused: a new document never takes a deleted one's id
    pipe2 = make()
    pipe2.add(corpus(10))
    ever = set(pipe2.backend.index.ids().tolist())
    assert len(ever) == 10
    pipe2.delete(["d8", "d9"])
    assert len(pipe2.backend.index.ids()) == 8
    pipe2.add(Document(id="new", text="brand new words"))
    fresh = set(pipe2.backend.index.ids().tolist()) - ever
    assert len(fresh) == 1 and min(fresh) > max(ever)


def test_delete_by_filter_keeps_store_vectors_and_bm25_in_step():
    pipe = make()
    docs = corpus(30) + [Document(id="empty", text="", metadata={"group": 3})]
    pipe.add(docs)
    lexical_before = pipe.search("unique7", k=1, mode="lexical")  # builds the BM25 index
    assert lexical_before[0].doc_id == "d7"
    gone = {d.id for d in docs if d.metadata["group"] in (2, 3) and d.metadata.get("lang") != "de"}
    gone |= {"empty"}  # a document without chunks is matched by its metadata too
    flt = {"group": {"$in": [2, 3]}, "$not": {"lang": "de"}}  # "empty" has no lang: $not matches it
    assert pipe.delete(filter=flt) == len(gone) == 7
    assert {d.id for d in pipe} == {d.id for d in docs} - gone
    assert len(pipe.backend.index) == pipe.backend.count_chunks() == 30 - 6
    assert not {h.doc_id for h in pipe.search("alpha beta gamma", k=40)} & gone
    for doc_id in sorted(gone - {"empty"}):  # BM25 forgot them, and still finds the rest
        assert doc_id not in {h.doc_id for h in pipe.search(f"unique{doc_id[1:]}", k=3, mode="lexical")}
    assert pipe.search("unique7", k=1, mode="lexical")[0].doc_id == "d7"
    assert pipe.delete(filter=flt) == 0  # nothing left to match
    assert pipe.delete(filter={"lang": {"$nin": ["en"]}}) == 15
    assert {d.metadata["lang"] for d in pipe} == {"en"}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, ["doc_ids or filter", "exactly one"]),
        ({"doc_ids": ["d1"], "filter": {"group": 1}}, ["exactly one"]),
        ({"filter": {}}, ["matches every document", "delete every id"]),
        ({"filter": {"$and": [{}]}}, ["matches every document"]),
        ({"filter": {"$or": []}}, ["$or", "empty list"]),
        ({"filter": {"group": {"$regex": "x"}}}, ["$regex"]),
        ({"filter": ["group", 1]}, ["dict"]),
    ],
)
def test_delete_needs_ids_or_a_selective_filter(kwargs, words):
    pipe = make()
    pipe.add(corpus(5))
    generation = pipe.backend.generation
    with pytest.raises(InvalidInputError) as info:
        pipe.delete(**kwargs)
    for word in words:
        assert word in str(info.value), str(info.value)
    assert len(pipe) == 5 and pipe.backend.generation == generation  # nothing written


def test_empty_text_is_stored_with_zero_chunks():
    pipe = make()
    pipe.add([Document(id="empty", text=""), Document(id="blank", text="  \n ")])
    assert len(pipe) == 2 and pipe.backend.count_chunks() == 0
    assert pipe.search("anything", k=3) == []


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda p: p.add(None), InputTypeError),
        (lambda p: p.add(b"bytes"), InputTypeError),
        (lambda p: p.add([42]), InputTypeError),
        (lambda p: p.add({"id": "a", "text": None}), InputTypeError),
        (lambda p: p.search(None), InputTypeError),
        (lambda p: p.search(b"q"), InputTypeError),
        (lambda p: p.search("q", k=0), InvalidInputError),
        (lambda p: p.search("q", k=-1), InvalidInputError),
        (lambda p: p.search("q", k=2.5), InvalidInputError),
        (lambda p: p.search("q", mode="semantic"), InvalidInputError),
        (lambda p: p.search("q", filter={"a": {"$regex": "x"}}), InvalidInputError),
        (lambda p: p.search_many("not a list"), InputTypeError),
        (lambda p: p.delete([1]), InputTypeError),
    ],
)
def test_bad_input_raises_clear_errors(call, error):
    pipe = make()
    pipe.add("something")
    with pytest.raises(error):
        call(pipe)


class NaNEmbedder(HashEmbedder):
    def embed_documents(self, texts):
        out = super().embed_documents(texts)
        out[0, 0] = np.nan
        return out


def test_nan_vectors_are_refused_and_nothing_is_stored():
    pipe = make(NaNEmbedder())
    with pytest.raises(InvalidInputError, match="NaN"):
        pipe.add("text")
    assert len(pipe) == 0


class FailingEmbedder(HashEmbedder):
    def __init__(self, fail_after: int):
        super().__init__()
        self.fail_after = fail_after

    def embed_documents(self, texts):
        if self.calls + len(texts) > self.fail_after:
            raise RuntimeError("embedding server went away")
        return super().embed_documents(texts)


def test_failure_midstream_keeps_every_committed_batch():
    pipe = make(FailingEmbedder(fail_after=25))
    with pytest.raises(RuntimeError):
        pipe.add(corpus(60), batch_size=10)
    assert len(pipe) == 20  # two batches of 10 went through, the third failed whole
    assert len(pipe.backend.index) == pipe.backend.count_chunks()


def test_search_many_equals_search():
    pipe = make()
    docs = corpus(50)
    pipe.add(docs)
    queries = [docs[i].text for i in (1, 5, 9)]
    many = pipe.search_many(queries, k=4)
    for q, res in zip(queries, many, strict=True):
        single = pipe.search(q, k=4)
        assert [h.id for h in res] == [h.id for h in single]


def test_query_cache_avoids_reembedding():
    emb = HashEmbedder()
    pipe = make(emb, query_cache_size=2)
    pipe.add(corpus(5))
    calls = emb.calls
    pipe.search("alpha", k=1)
    pipe.search("alpha", k=1)
    assert emb.calls == calls + 1
    pipe.search("beta", k=1)
    pipe.search("gamma", k=1)  # evicts "alpha"
    pipe.search("alpha", k=1)
    assert emb.calls == calls + 4


class OverlapReranker:
    def score(self, query, documents):
        q = set(query.split())
        return np.float32([len(q & set(d.split())) / (1 + len(d.split())) for d in documents])


def test_reranker_scores_candidates_and_keeps_first_stage_scores():
    pipe = make(reranker=OverlapReranker())
    docs = corpus(80)
    pipe.add(docs)
    hits = pipe.search(docs[3].text, k=5)
    assert len(hits) == 5
    assert all(h.rerank_score is not None and h.dense_score is not None for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.score == h.rerank_score for h in hits)
    expected = OverlapReranker().score(docs[3].text, [h.text for h in hits])
    np.testing.assert_allclose([h.rerank_score for h in hits], expected, rtol=1e-6)


def test_lexical_and_hybrid_modes_set_their_scores():
    pipe = make()
    docs = corpus(40)
    pipe.add(docs)
    lex = pipe.search("unique17", k=3, mode="lexical")
    assert lex[0].doc_id == "d17" and lex[0].lexical_score == lex[0].score and lex[0].dense_score is None
    hyb = pipe.search(docs[17].text, k=5, mode="hybrid")
    assert hyb[0].doc_id == "d17"
    assert hyb[0].fused_score == hyb[0].score
    assert hyb[0].dense_score is not None and hyb[0].lexical_score is not None
    # the lexical index follows additions and deletions
    pipe.delete("d17")
    assert all(h.doc_id != "d17" for h in pipe.search("unique17", k=3, mode="lexical"))


def test_max_per_doc_min_score_and_expand():
    pipe = make(chunker=RecursiveChunker(30, 0))
    text = (
        "one two three four five. six seven eight nine ten. eleven twelve thirteen. fourteen fifteen sixteen."
    )
    pipe.add([Document(id="long", text=text), Document(id="other", text="one two three")])
    hits = pipe.search("one two three", k=5, max_per_doc=1)
    assert len({h.doc_id for h in hits}) == len(hits) == 2
    assert all(h.score >= 0.5 for h in pipe.search("one two three", k=5, min_score=0.5))
    first = next(
        h for h in pipe.search("one two three four five", k=5) if h.doc_id == "long" and h.start == 0
    )
    wide = pipe.expand([first], window=1)[0]
    assert wide.start == 0 and wide.end > first.end
    assert wide.text == text[wide.start : wide.end]


def test_async_twins():
    pipe = make()
    docs = corpus(20)

    async def main():
        await pipe.aadd(docs)
        return await asyncio.gather(*(pipe.asearch(d.text, k=1) for d in docs[:5]))

    results = asyncio.run(main())
    assert [r[0].doc_id for r in results] == [d.id for d in docs[:5]]


def test_concurrent_searches_while_adding_lose_nothing():
    pipe = make()
    pipe.add(corpus(50))
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher():
        try:
            while not stop.is_set():
                hits = pipe.search("alpha beta", k=5)
                assert len(hits) == 5 and all(hit.text for hit in hits)
        except BaseException as e:  # noqa: BLE001 - collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            pipe.add(Document(id=f"new{i}", text=f"fresh words number {i} alpha"))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert len(pipe) == 70
    assert len(pipe.backend.index) == pipe.backend.count_chunks()
    for i in range(20):  # every added document is searchable
        assert f"new{i}" in {h.doc_id for h in pipe.search(f"fresh words number {i} alpha", k=3)}


def test_reindex_swaps_embedder_and_fingerprint():
    pipe = make(HashEmbedder(dim=64))
    docs = corpus(20)
    pipe.add(docs)
    new = HashEmbedder(dim=32, name="other")
    pipe.reindex(new)
    assert pipe.embedder is new and pipe.backend.get_meta("fingerprint") == new.fingerprint
    assert pipe.search(docs[4].text, k=1)[0].doc_id == "d4"
    assert new.calls == pipe.backend.count_chunks() + 1


def test_import_ragkit_is_light():
    heavy = "('torch', 'transformers', 'faiss', 'bm25s')"
    code = f"import sys, ragkit; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.strip() == "[]"


def test_add_progress_bar_shows_the_total_and_chunks_per_second(capsys):
    pipe = Pipeline(HashEmbedder(), chunker=RecursiveChunker(200, 20))
    pipe.add([f"document number {i}" for i in range(150)], show_progress=True, batch_size=64)
    err = capsys.readouterr().err
    assert "150/150" in err and "150 chunks" in err and "chunks/s" in err
    pipe.add((f"generated {i}" for i in range(5)), show_progress=False)  # a generator: no total, no bar
    assert capsys.readouterr().err == ""


# --- structure-aware chunks and contextual headers --------------------------------------------------


class RecordingEmbedder(HashEmbedder):
    """A HashEmbedder that keeps every document text it was asked to embed."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen: list[str] = []

    def embed_documents(self, texts):
        self.seen.extend(texts)
        return super().embed_documents(texts)


def manual() -> Document:
    from ragkit.types import Section

    text = "# Install\n\nRun pip install.\n\n# Usage\n\nCall search with a query."
    usage = text.index("# Usage")
    return Document(
        id="manual",
        text=text,
        metadata={"title": "Zebra manual"},
        sections=[
            Section(start=0, end=usage - 2, headings=("Install",)),
            Section(start=usage, end=len(text), headings=("Usage",)),
        ],
    )


def headed(**kwargs) -> RecursiveChunker:
    return RecursiveChunker(200, 20, contextual_headers=True, **kwargs)


def test_the_embedder_sees_the_header_and_hits_keep_the_exact_text_and_location():
    emb = RecordingEmbedder()
    pipe = make(emb, chunker=headed())
    pipe.add(manual())
    assert emb.seen == [
        "Zebra manual\nInstall\n\n# Install\n\nRun pip install.",
        "Zebra manual\nUsage\n\n# Usage\n\nCall search with a query.",
    ]
    hit = pipe.search("Call search with a query.", k=1, mode="dense")[0]
    assert (hit.text, hit.location, hit.header) == (
        "# Usage\n\nCall search with a query.",
        {"heading": "Usage"},
        "Zebra manual\nUsage\n\n",
    )
    assert manual().text[hit.start : hit.end] == hit.text


def test_lexical_search_does_not_see_the_header():
    pipe = make(chunker=headed())
    pipe.add(manual())
    assert len(pipe.search("zebra", k=5, mode="lexical")) == 0  # only the title (the header) says zebra
    assert len(pipe.search("pip", k=5, mode="lexical")) == 1


def test_the_embedding_cache_is_keyed_by_header_and_text():
    emb = HashEmbedder()
    pipe = make(emb, chunker=headed())
    body = "The same abstract in two documents."
    pipe.add([Document(id="a", text=body, metadata={"title": "First"})])
    pipe.add([Document(id="b", text=body, metadata={"title": "Second"})])
    assert emb.calls == 2  # the same text under another header is embedded again
    res = pipe.add([Document(id="c", text=body, metadata={"title": "First"})])
    assert (emb.calls, res.embedded) == (2, 0)  # the same header and text reuse the stored vector


def test_a_chunk_with_a_header_never_reuses_the_vector_of_the_same_text_without_one():
    class Alternating:  # a user's chunker: the same text, with and without a header
        contextual_headers = False

        def chunk(self, doc):
            base = RecursiveChunker(200, 0).chunk(doc)
            header = doc.metadata.get("header", "")
            return [c.model_copy(update={"header": header}) for c in base]

    emb = RecordingEmbedder()
    pipe = make(emb, chunker=Alternating())
    pipe.add([Document(id="a", text="shared words")])
    pipe.add([Document(id="b", text="shared words", metadata={"header": "H\n\n"})])
    assert emb.seen == ["shared words", "H\n\nshared words"]


@pytest.mark.parametrize("built_with", [True, False])
def test_toggling_contextual_headers_on_an_index_is_refused(tmp_path, built_with):
    from ragkit.errors import IndexMismatchError

    chunker = headed() if built_with else RecursiveChunker(200, 20)
    with make(chunker=chunker) as pipe:
        pipe.add(manual())
        pipe.save(tmp_path / "idx")
    other = RecursiveChunker(200, 20, contextual_headers=not built_with)
    with pytest.raises(IndexMismatchError, match="contextual headers") as info:
        Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), chunker=other)
    assert f"contextual_headers={built_with}" in str(info.value)
    same = RecursiveChunker(100, 0, contextual_headers=built_with)  # other sizes are fine
    Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), chunker=same).close()
    # Another embedder is still the embedder's mismatch, whatever the headers.
    with pytest.raises(IndexMismatchError, match="different embedder"):
        Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(name="other"), chunker=chunker)


def test_an_index_without_headers_keeps_its_fingerprint():
    pipe = make()
    assert pipe.backend.get_meta("fingerprint") == HashEmbedder().fingerprint
    assert make(chunker=headed()).backend.get_meta("fingerprint") == {
        **HashEmbedder().fingerprint,
        "contextual_headers": True,
    }


def test_save_and_load_keep_contextual_headers(tmp_path):
    from ragkit.errors import IndexMismatchError

    pipe = make(chunker=headed())
    pipe.add(manual())
    pipe.save(tmp_path / "idx")
    pipe.close()
    again = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder())
    assert again.chunker.contextual_headers is True
    again.add(Document(id="more", text="Another page.", metadata={"title": "T"}))
    assert again.search("another page", k=1, mode="lexical")[0].header == "T\n\n"
    again.save()
    again.reload()
    again.close()
    with pytest.raises(IndexMismatchError, match="contextual headers"):
        Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), chunker=RecursiveChunker(200, 20))


def test_reindex_embeds_header_and_text_and_records_the_option():
    pipe = make(chunker=headed())
    pipe.add(manual())
    new = RecordingEmbedder(name="other")
    pipe.reindex(new, show_progress=False)
    assert new.seen == [
        "Zebra manual\nInstall\n\n# Install\n\nRun pip install.",
        "Zebra manual\nUsage\n\n# Usage\n\nCall search with a query.",
    ]
    assert pipe.backend.get_meta("fingerprint") == {**new.fingerprint, "contextual_headers": True}
    Pipeline(RecordingEmbedder(name="other"), backend=pipe.backend, chunker=headed())


def test_swapping_in_a_chunker_that_toggles_headers_is_refused_at_the_next_add(tmp_path):
    from ragkit.errors import IndexMismatchError

    pipe = make()
    pipe.add(manual())
    pipe.chunker = headed()
    with pytest.raises(IndexMismatchError, match="without contextual headers"):
        pipe.add(Document(id="new", text="More text."))
    assert len(pipe) == 1
    pipe.save(tmp_path / "idx")  # the manifest keeps the vectors' fingerprint, not the new chunker's
    pipe.close()
    with pytest.raises(IndexMismatchError, match="without contextual headers"):
        Pipeline.load(tmp_path / "idx", embedder=HashEmbedder())
    again = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), chunker=RecursiveChunker(200, 20))
    assert len(again) == 1
    again.close()


def test_contextual_headers_on_both_backends(search_backend):
    from search_backends import backend_pipeline

    from ragkit.errors import IndexMismatchError

    emb = RecordingEmbedder()
    pipe = backend_pipeline(search_backend, emb, chunker=headed())
    pipe.add(manual())
    assert emb.seen[0].startswith("Zebra manual\nInstall\n\n")
    hit = pipe.search("Call search with a query.", k=1, mode="dense")[0]
    assert (hit.location, hit.header) == ({"heading": "Usage"}, "Zebra manual\nUsage\n\n")
    assert len(pipe.search("zebra", k=5, mode="lexical")) == 0
    pipe.chunker = RecursiveChunker(200, 20)
    with pytest.raises(IndexMismatchError, match="with contextual headers"):
        pipe.add(Document(id="x", text="plain"))
    pipe.close()
