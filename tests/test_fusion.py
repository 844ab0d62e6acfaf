"""Fusion of dense and lexical rankings: RRF and the convex combination against hand arithmetic, and
hybrid search's fused scores recomputed independently from the two single-mode rankings on both
backends."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HashEmbedder
from search_backends import WORDS, backend_pipeline, corpus

from ragkit import Pipeline, RecursiveChunker
from ragkit.errors import ConfigError, InputTypeError, InvalidInputError
from ragkit.fusion import (
    DEFAULT_ALPHA,
    DEFAULT_FUSION,
    DEFAULT_RRF_K,
    FUSIONS,
    RRF_K,
    check_alpha,
    convex_fuse,
    rrf_fuse,
)
from ragkit.retrieval import HYBRID_DEPTH

# -- reciprocal-rank fusion ---------------------------------------------------------------------


def test_rrf_against_hand_computed_scores():
    fused = rrf_fuse([[1, 2, 3], [3, 1, 4]])
    assert RRF_K == 60
    expected = {1: 1 / 61 + 1 / 62, 2: 1 / 62, 3: 1 / 63 + 1 / 61, 4: 1 / 63}
    assert [d for d, _ in fused] == [1, 3, 2, 4]
    for doc, score in fused:
        assert score == pytest.approx(expected[doc], abs=1e-15)


def test_rrf_weights_and_k():
    fused = dict(rrf_fuse([[1, 2], [2, 1]], rrf_k=10, weights=[2.0, 0.5]))
    assert fused[1] == pytest.approx(2 / 11 + 0.5 / 12)
    assert fused[2] == pytest.approx(2 / 12 + 0.5 / 11)
    assert rrf_fuse([[1, 2], [2, 1]], weights=[0, 1])[0][0] == 2
    assert rrf_fuse([[5]], rrf_k=0) == [(5, 1.0)]
    assert rrf_fuse([]) == [] and rrf_fuse([[], []]) == []


def test_rrf_ties_and_repeats_are_deterministic():
    # Equal fused scores: the better single rank first, then the smaller id.
    assert [d for d, _ in rrf_fuse([[9, 3], [5, 3]], rrf_k=0)] == [5, 9, 3]  # all three score exactly 1.0
    assert rrf_fuse([[6, 5], [5, 6]]) == rrf_fuse([[5, 6], [6, 5]])
    assert [d for d, _ in rrf_fuse([[6, 5], [5, 6]])] == [5, 6]
    # A repeated id counts once, at its best position.
    assert dict(rrf_fuse([[1, 1, 2]]))[1] == pytest.approx(1 / 61)
    assert dict(rrf_fuse([[1, 1, 2]]))[2] == pytest.approx(1 / 63)
    assert rrf_fuse([np.array([3, 4], dtype=np.int64)])[0] == (3, 1 / 61)


def test_rrf_bad_inputs():
    with pytest.raises(InvalidInputError):
        rrf_fuse([[1]], rrf_k=-1)
    with pytest.raises(InvalidInputError):
        rrf_fuse([[1], [2]], weights=[1.0])
    with pytest.raises(InvalidInputError):
        rrf_fuse([[1]], weights=[-1.0])
    with pytest.raises(InputTypeError):
        rrf_fuse([[1.5]])  # type: ignore[list-item]
    with pytest.raises(InputTypeError):
        rrf_fuse(["abc"])  # type: ignore[list-item]


# -- convex combination ---------------------------------------------------------------------------


def test_convex_against_hand_computed_scores():
    dense = {1: 0.9, 2: 0.7, 4: 0.5}  # normalised: 1, 0.5, 0
    lexical = {2: 12.0, 3: 4.0, 5: 8.0}  # normalised: 1, 0, 0.5
    fused = dict(convex_fuse([dense, lexical], [0.3, 0.7]))
    expected = {1: 0.3, 2: 0.3 * 0.5 + 0.7, 3: 0.0, 4: 0.0, 5: 0.7 * 0.5}
    assert fused.keys() == expected.keys()
    for doc, score in expected.items():
        assert fused[doc] == pytest.approx(score, abs=1e-12)
    # alpha = 1 is the dense ranking, alpha = 0 the lexical one (on the ids each side returned).
    assert [d for d, _ in convex_fuse([dense, lexical], [1, 0])][:2] == [1, 2]
    assert [d for d, _ in convex_fuse([dense, lexical], [0, 1])][:2] == [2, 5]


def test_convex_edge_cases():
    assert convex_fuse([]) == [] and convex_fuse([{}, {}], [0.5, 0.5]) == []
    assert convex_fuse([{3: 0.2, 4: 0.2}]) == [(3, 1.0), (4, 1.0)]  # all equal: all at the top
    assert convex_fuse([{9: -0.5}, {}], [1, 1]) == [(9, 1.0)]
    # Ties: the best single rank, then the smaller id; input order does not matter.
    assert [d for d, _ in convex_fuse([{6: 1.0, 5: 0.0}, {5: 1.0, 6: 0.0}])] == [5, 6]
    assert convex_fuse([{6: 1.0, 5: 0.0}, {5: 1.0, 6: 0.0}]) == convex_fuse(
        [{5: 1.0, 6: 0.0}, {6: 1.0, 5: 0.0}]
    )
    assert convex_fuse([{np.int64(2): np.float32(1.0)}]) == [(2, 1.0)]


def test_convex_bad_inputs():
    with pytest.raises(InvalidInputError):
        convex_fuse([{1: float("nan")}])
    with pytest.raises(InvalidInputError):
        convex_fuse([{1: 1.0}], [1.0, 2.0])
    with pytest.raises(InvalidInputError):
        convex_fuse([{1: 1.0}], [-1.0])
    with pytest.raises(InputTypeError):
        convex_fuse({1: 1.0})  # type: ignore[arg-type]
    with pytest.raises(InputTypeError):
        convex_fuse([[1, 2]])  # type: ignore[list-item]
    with pytest.raises(InputTypeError):
        convex_fuse([{"a": 1.0}])  # type: ignore[dict-item]
    for bad in (-0.1, 1.01, float("nan"), True, "0.5", None):
        with pytest.raises(InvalidInputError):
            check_alpha(bad)
    assert check_alpha(0) == 0.0 and check_alpha(np.float32(0.25)) == 0.25


def test_module_constants():
    assert FUSIONS == ("rrf", "convex") and DEFAULT_FUSION in FUSIONS and 0 <= DEFAULT_ALPHA <= 1


# -- hybrid search on both backends ---------------------------------------------------------------


def _minmax(scores: dict[str, float]) -> dict[str, float]:
    low, high = min(scores.values()), max(scores.values())
    return {c: (1.0 if high == low else (s - low) / (high - low)) for c, s in scores.items()}


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.8, 1.0])
@pytest.mark.parametrize("candidates", [None, 12])
def test_convex_hybrid_equals_the_two_rankings_fused_by_hand(search_backend, alpha, candidates):
    # candidates=None reads HYBRID_DEPTH hits per side; an explicit depth reads that many.
    depth = HYBRID_DEPTH if candidates is None else candidates
    pipe = backend_pipeline(search_backend)
    pipe.add(corpus(150))
    for query in ("alpha beta unique3", "gamma delta", "kappa unique17 zeta"):
        for flt in (None, {"group": {"$in": [1, 2]}}):
            dense = pipe.search(query, k=depth, mode="dense", filter=flt)
            lexical = pipe.search(query, k=depth, mode="lexical", filter=flt)
            hybrid = pipe.search(
                query, k=12, mode="hybrid", fusion="convex", alpha=alpha, filter=flt, candidates=candidates
            )
            d = _minmax({h.id: h.score for h in dense}) if dense else {}
            lx = _minmax({h.id: h.score for h in lexical}) if lexical else {}
            expected = {c: alpha * d.get(c, 0.0) + (1 - alpha) * lx.get(c, 0.0) for c in {*d, *lx}}
            assert len(hybrid) == 12, query
            for hit in hybrid:
                assert hit.fused_score == hit.score
                assert hit.score == pytest.approx(expected[hit.id], abs=1e-5)
                assert hit.dense_score == (next((h.score for h in dense if h.id == hit.id), None))
            # Best first, and nothing left out that scores above the last hit returned.
            scores = [h.score for h in hybrid]
            assert scores == sorted(scores, reverse=True)
            returned = {h.id for h in hybrid}
            assert not [c for c, s in expected.items() if s > scores[-1] + 1e-5 and c not in returned]


@pytest.mark.parametrize("candidates", [None, 8])
def test_rrf_hybrid_is_the_default_and_uses_rrf_k(search_backend, candidates):
    depth = HYBRID_DEPTH if candidates is None else candidates
    pipe = backend_pipeline(search_backend, rrf_k=10)
    pipe.add(corpus(150))
    dense = pipe.search("alpha beta", k=depth, mode="dense")
    lexical = pipe.search("alpha beta", k=depth, mode="lexical")
    hybrid = pipe.search("alpha beta", k=8, mode="hybrid", candidates=candidates)
    assert (pipe.fusion, Pipeline(HashEmbedder()).rrf_k) == (DEFAULT_FUSION, DEFAULT_RRF_K)
    ranks = [{h.id: r for r, h in enumerate(side, start=1)} for side in (dense, lexical)]
    expected = {c: sum(1 / (10 + r[c]) for r in ranks if c in r) for c in {*ranks[0], *ranks[1]}}
    assert len(hybrid) == 8
    for hit in hybrid:
        assert hit.score == hit.fused_score == pytest.approx(expected[hit.id], abs=1e-9)
    assert min(h.score for h in hybrid) >= sorted(expected.values(), reverse=True)[7] - 1e-12
    assert pipe.search("alpha beta", k=8, mode="hybrid", fusion="rrf", candidates=candidates) == hybrid


def test_pipeline_fusion_defaults_and_errors(search_backend):
    pipe = backend_pipeline(search_backend, fusion="convex", alpha=0.25)
    pipe.add(corpus(10))
    assert (pipe.fusion, pipe.alpha) == ("convex", 0.25)
    default = pipe.search("alpha", k=5, mode="hybrid")
    assert default == pipe.search("alpha", k=5, mode="hybrid", fusion="convex", alpha=0.25)
    assert pipe.search("alpha", k=5, mode="dense", fusion="convex")[0].fused_score is None
    for kwargs in ({"fusion": "rank"}, {"fusion": 1}, {"alpha": 2}, {"alpha": "x"}, {"alpha": True}):
        with pytest.raises(InvalidInputError):
            pipe.search("alpha", mode="hybrid", **kwargs)
    with pytest.raises(ConfigError):
        Pipeline(HashEmbedder(), fusion="borda")
    with pytest.raises(ConfigError):
        Pipeline(HashEmbedder(), alpha=-1)


def test_async_search_fuses_the_same_way(search_backend):
    import asyncio

    pipe = backend_pipeline(search_backend, chunker=RecursiveChunker(200, 20))
    pipe.add(corpus(20))
    sync = pipe.search(" ".join(WORDS[:3]), k=6, mode="hybrid", fusion="convex", alpha=0.6)
    got = asyncio.run(pipe.asearch(" ".join(WORDS[:3]), k=6, mode="hybrid", fusion="convex", alpha=0.6))
    assert [(h.id, round(h.score, 6)) for h in got] == [(h.id, round(h.score, 6)) for h in sync]
