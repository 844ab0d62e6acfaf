"""Diversity (maximal marginal relevance): the greedy rule against a direct transcription of
Carbonell & Goldstein's formula, and search(diversity=...) on both backends and in every mode, with
the order of stages it documents (fusion, MMR, reranker, max_per_doc)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from conftest import HashEmbedder
from search_backends import backend_pipeline, corpus

from ragkit import Document
from ragkit.diversity import check_diversity, mmr
from ragkit.errors import InvalidInputError


def reference_mmr(relevance, vectors, k, lam):
    """MMR written out: argmax over the rest of (1-λ) rel - λ max cos(d, taken); ties to the more
    relevant, then the earlier candidate."""
    rel = np.asarray(relevance, dtype=np.float64)
    rel = np.ones_like(rel) if rel.max() == rel.min() else (rel - rel.min()) / (rel.max() - rel.min())
    unit = [v / np.linalg.norm(v) for v in np.asarray(vectors, dtype=np.float64)]
    taken: list[int] = []
    while len(taken) < min(k, len(rel)):
        best, best_key = None, None
        for i in range(len(rel)):
            if i in taken:
                continue
            penalty = max((float(unit[i] @ unit[j]) for j in taken), default=0.0)
            key = ((1 - lam) * rel[i] - lam * penalty, rel[i], -i)
            if best_key is None or key > best_key:
                best, best_key = i, key
        taken.append(best)
    return taken


@pytest.mark.parametrize("lam", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_mmr_matches_the_formula_on_random_candidates(lam):
    rng = np.random.default_rng(int(lam * 10))
    for trial in range(20):
        n, dim = int(rng.integers(1, 40)), int(rng.integers(2, 16))
        centres = rng.standard_normal((3, dim))
        vectors = centres[rng.integers(0, 3, n)] + 0.3 * rng.standard_normal((n, dim))
        relevance = np.round(rng.random(n), 2)  # rounded: ties happen
        k = int(rng.integers(1, n + 3))
        assert mmr(relevance, vectors, k, diversity=lam) == reference_mmr(relevance, vectors, k, lam), trial


def test_mmr_zero_is_the_relevance_order_and_one_spreads_out():
    rng = np.random.default_rng(3)
    relevance = rng.random(30)
    vectors = rng.standard_normal((30, 8))
    assert mmr(relevance, vectors, 30, diversity=0.0) == list(np.argsort(-relevance, kind="stable"))
    # Three tight clusters: at λ=1 the first three picks come from three different clusters.
    centres = np.eye(3, 8) * 10
    clustered = np.repeat(centres, 5, axis=0) + 0.01 * rng.standard_normal((15, 8))
    picks = mmr(np.linspace(1, 0, 15), clustered, 3, diversity=1.0)
    assert sorted(p // 5 for p in picks) == [0, 1, 2]
    assert mmr([], np.zeros((0, 4)), 5, diversity=0.5) == []


def test_mmr_bad_inputs():
    with pytest.raises(InvalidInputError):
        mmr([1.0, 2.0], np.zeros((3, 2)), 2, diversity=0.5)
    with pytest.raises(InvalidInputError):
        mmr([1.0, float("inf")], np.ones((2, 2)), 2, diversity=0.5)
    for bad in (-0.01, 1.5, float("nan"), True, "0.3"):
        with pytest.raises(InvalidInputError):
            check_diversity(bad)
    assert check_diversity(None) is None and check_diversity(0) is None and check_diversity(1) == 1.0


# -- search(diversity=...) on both backends -----------------------------------------------------

DUPES = [
    Document(id=f"dup{i}", text="solar panel battery storage inverter " * 3 + f"copy{i}") for i in range(6)
]
OTHERS = [
    Document(id="wind", text="solar wind turbine farm offshore"),
    Document(id="grid", text="battery grid frequency regulation"),
    Document(id="roof", text="panel roof mounting bracket"),
]


def _pipe(search_backend, **kwargs):
    pipe = backend_pipeline(search_backend, **kwargs)
    pipe.add([*DUPES, *OTHERS, *corpus(20)])
    return pipe


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_diversity_replaces_near_duplicates_in_every_mode(search_backend, mode):
    pipe = _pipe(search_backend)
    # "or": PostgreSQL's web-search syntax requires every term otherwise; bm25s drops it as a stop word.
    query = "solar or panel or battery or storage"
    plain = pipe.search(query, k=4, mode=mode)
    assert all(h.doc_id.startswith("dup") for h in plain)
    diverse = pipe.search(query, k=4, mode=mode, diversity=0.7)
    assert len(diverse) == 4 and diverse[0].id == plain[0].id  # the most relevant stays first
    assert sum(not h.doc_id.startswith("dup") for h in diverse) >= 2
    assert [h.rank for h in diverse] == [1, 2, 3, 4]
    # Zero is today's ranking, exactly.
    assert pipe.search(query, k=4, mode=mode, diversity=0) == plain


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_diversity_is_mmr_over_the_candidates_stored_vectors(search_backend, mode):
    pipe = _pipe(search_backend)
    for query, lam in (("solar panel battery storage", 0.4), ("alpha beta gamma", 0.8)):
        candidates = pipe.search(query, k=30, mode=mode, candidates=30)
        vectors = pipe.backend.get_vectors([_vid(pipe, h) for h in candidates])
        matrix = np.stack([vectors[_vid(pipe, h)] for h in candidates])
        expected = reference_mmr([h.score for h in candidates], matrix, 5, lam)
        got = pipe.search(query, k=5, mode=mode, candidates=30, diversity=lam)
        assert [h.id for h in got] == [candidates[i].id for i in expected]
        assert [h.score for h in got] == [candidates[i].score for i in expected]  # scores are kept


def _vid(pipe, hit) -> int:
    spans = dict(pipe.backend.chunk_vids(hit.doc_id))
    return spans[int(hit.id.rsplit("#", 1)[1])]


def test_default_depth_widens_with_diversity_and_max_per_doc_applies_after(search_backend):
    pipe = _pipe(search_backend, chunker=None, embedder=HashEmbedder())
    query = "solar panel battery storage"
    diverse = pipe.search(query, k=3, diversity=0.9)  # candidates default: max(50, k), not k
    assert {h.doc_id for h in diverse} - {d.id for d in DUPES}
    capped = pipe.search(query, k=5, diversity=0.3, max_per_doc=1)
    assert len(capped) == 5 and len({h.doc_id for h in capped}) == 5


class WordReranker:
    """Scores a text by how many times it says "battery"; records what it was asked to score."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def score(self, query, documents):
        self.seen.append(list(documents))
        return np.float32([d.count("battery") + 0.01 * len(d) for d in documents])


def test_the_reranker_orders_what_mmr_kept(search_backend):
    reranker = WordReranker()
    pipe = _pipe(search_backend, reranker=reranker)
    query = "solar panel battery storage"
    kept = pipe.search(query, k=4, diversity=0.6, candidates=30)
    assert len(reranker.seen[-1]) == 4  # MMR kept k, the reranker scored those
    pipe.reranker = None
    mmr_only = pipe.search(query, k=4, diversity=0.6, candidates=30)
    assert {h.id for h in kept} == {h.id for h in mmr_only}
    scores = [h.rerank_score for h in kept]
    assert scores == sorted(scores, reverse=True) and all(h.score == h.rerank_score for h in kept)


def test_async_diversity_matches_sync(search_backend):
    pipe = _pipe(search_backend)
    sync = pipe.search("solar panel battery", k=4, mode="hybrid", diversity=0.5)
    got = asyncio.run(pipe.asearch("solar panel battery", k=4, mode="hybrid", diversity=0.5))
    assert [h.id for h in got] == [h.id for h in sync]


def test_bad_diversity_is_refused_before_any_work(search_backend):
    pipe = _pipe(search_backend)
    for bad in (-0.5, 2, "high", True, float("nan")):
        with pytest.raises(InvalidInputError):
            pipe.search("solar", diversity=bad)
