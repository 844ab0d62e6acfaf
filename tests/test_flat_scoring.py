"""Exact flat search through the measured-faster BLAS: numpy's path equals brute force and FAISS's own
flat search, on every kind of call; the choice rule is tested with fake timers."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.index import FaissIndex
from ragkit.index.flat_scoring import SCORERS, choose_scorer, flat_scorer, numpy_flat_search


def _unit(a):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def test_numpy_flat_search_is_brute_force_with_ties_masks_and_padding():
    rng = np.random.default_rng(0)
    xb = _unit(rng.standard_normal((300, 16)))
    xb[7] = xb[3]  # a tie: the earlier row first
    ids = rng.permutation(10_000)[:300].astype(np.int64)
    q = _unit(rng.standard_normal((40, 16)))
    q[0] = xb[3]
    scores, got = numpy_flat_search(xb, ids, q, 10)
    full = q @ xb.T
    for row in range(len(q)):
        order = sorted(range(300), key=lambda j: (-full[row, j], j))[:10]
        assert got[row].tolist() == ids[order].tolist()
        assert np.allclose(scores[row], full[row, order], atol=1e-6)
    mask = np.zeros(300, dtype=bool)
    mask[[5, 9]] = True
    s, i = numpy_flat_search(xb, ids, q[:2], 4, mask)
    assert set(i[0, :2].tolist()) == {ids[5], ids[9]} and i[0, 2:].tolist() == [-1, -1]
    assert np.isneginf(s[0, 2:]).all()
    s, i = numpy_flat_search(xb[:3], ids[:3], q[:1], 5)  # k above n
    assert sorted(i[0, :3].tolist()) == sorted(ids[:3].tolist()) and i[0, 3:].tolist() == [-1, -1]
    assert numpy_flat_search(xb[:0], ids[:0], q, 3)[1].tolist() == [[-1] * 3] * 40


@pytest.mark.parametrize("scorer", SCORERS)
def test_faiss_index_flat_search_is_the_same_with_either_scorer(monkeypatch, scorer):
    monkeypatch.setenv("RAGKIT_FLAT_SCORER", scorer)
    rng = np.random.default_rng(1)
    xb = _unit(rng.standard_normal((500, 24)))
    ids = np.arange(1000, 1500)
    index = FaissIndex("flat")
    index.add(ids, xb)
    index.delete(ids[:50])
    q = _unit(rng.standard_normal((20, 24)))
    scores, got = index.search(q, 8)
    live = np.arange(50, 500)
    full = q @ xb[live].T
    expected = ids[live][np.argsort(-full, axis=1, kind="stable")[:, :8]]
    assert (got == expected).all()
    assert np.allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :8], atol=1e-5)
    allowed = ids[40:70]  # ten of these were deleted
    _, got = index.search(q, 25, allowed_ids=allowed)
    assert ((got[:, :20] >= 1050) & (got[:, :20] < 1070)).all() and (got[:, 20:] == -1).all()


def test_the_choice_follows_the_measurement_and_the_override(monkeypatch):
    times = iter([3.0, 1.0, 2.5, 1.2, 2.0, 0.9])  # numpy, faiss alternating: faiss is faster
    assert choose_scorer(lambda: next(times), lambda: next(times)) == "faiss"
    assert choose_scorer(lambda: 0.5, lambda: 0.5) == "numpy"  # a tie keeps numpy's path
    import faiss

    monkeypatch.setenv("RAGKIT_FLAT_SCORER", "faiss")
    assert flat_scorer(faiss, 8) == "faiss"
    monkeypatch.setenv("RAGKIT_FLAT_SCORER", "numpy")
    assert flat_scorer(faiss, 8) == "numpy"
    monkeypatch.delenv("RAGKIT_FLAT_SCORER")
    assert flat_scorer(faiss, 8) in SCORERS and flat_scorer(faiss, 8) == flat_scorer(faiss, 8)  # cached
