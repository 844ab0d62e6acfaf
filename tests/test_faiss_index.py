"""FaissIndex against numpy brute force: exact kinds exactly, HNSW by recall, every kind by invariants."""

from __future__ import annotations

import importlib.util
import itertools
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from ragkit.errors import ConfigError, InputTypeError, IntegrityError, InvalidInputError, RagkitError
from ragkit.index import FaissIndex, VectorIndex

KINDS = ["flat", "hnsw", "ivf"]


def mixture(n: int, d: int, centres: int, *, seed: int, spread: float = 1.0) -> np.ndarray:
    """Unit vectors drawn from a Gaussian mixture: clustered like real embeddings."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, d))
    x = means[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def brute(xb: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, allowed=None):
    """The reference: numpy inner products in float64, top-k by score."""
    mask = np.ones(len(ids), bool) if allowed is None else np.isin(ids, list(allowed))
    xs, xi = xb[mask].astype(np.float64), ids[mask]
    s = q.astype(np.float64) @ xs.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    scores = np.full((len(q), k), -np.inf)
    out = np.full((len(q), k), -1, np.int64)
    m = order.shape[1]
    scores[:, :m] = np.take_along_axis(s, order, axis=1)
    out[:, :m] = xi[order]
    return scores, out


def check_rows(scores, ids, *, k, expected_hits, allowed, truth):
    """Invariants of any search result: shape, dtypes, padding, order, membership, true scores."""
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert scores.shape == ids.shape and scores.shape[1] == k
    for srow, irow, want in zip(scores, ids, expected_hits, strict=True):
        hits = irow[irow >= 0]
        assert len(hits) == want, f"{len(hits)} hits where {want} qualify"
        assert (irow[: len(hits)] >= 0).all() and (irow[len(hits) :] == -1).all()
        assert np.isneginf(srow[len(hits) :]).all() and np.isfinite(srow[: len(hits)]).all()
        assert len(set(hits.tolist())) == len(hits)
        assert (np.diff(srow[: len(hits)]) <= 1e-6).all()
        if allowed is not None:
            assert set(hits.tolist()) <= set(allowed)
        for s, i in zip(srow[: len(hits)], hits, strict=True):
            assert abs(s - truth(i)) < 1e-4


# ---------------------------------------------------------------------------- fixtures

N, D = 3000, 32


@pytest.fixture(scope="module")
def data():
    xb = mixture(N, D, 20, seed=0)
    ids = np.arange(N, dtype=np.int64) * 7 + 3  # sparse, non-positional ids
    q = mixture(40, D, 20, seed=1)
    return xb, ids, q


@pytest.fixture(scope="module")
def built(data):
    xb, ids, _ = data
    out = {}
    for kind in KINDS:
        index = FaissIndex(kind, nlist=16, nprobe=2)
        index.add(ids, xb)
        out[kind] = index
    return out


def truth_of(xb, ids, q_row):
    lookup = dict(zip(ids.tolist(), range(len(ids)), strict=True))
    return lambda i: float(xb[lookup[int(i)]] @ q_row)


# ---------------------------------------------------------------------------- exactness


def test_is_a_vector_index():
    assert isinstance(FaissIndex(), VectorIndex)


def test_flat_equals_numpy(data, built):
    xb, ids, q = data
    scores, got = built["flat"].search(q, 10)
    ref_s, ref_i = brute(xb, ids, q, 10)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    np.testing.assert_array_equal(got, ref_i)


@pytest.mark.parametrize("n_allowed", [1, 9, 10, 11, 300, 2000])
def test_flat_filtered_equals_numpy(data, built, n_allowed):
    xb, ids, q = data
    allowed = np.random.default_rng(n_allowed).choice(ids, n_allowed, replace=False)
    # unknown ids in the filter are ignored
    scores, got = built["flat"].search(q, 10, allowed_ids=np.concatenate([allowed, [1, 2, 10**12]]))
    ref_s, ref_i = brute(xb, ids, q, 10, allowed)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    np.testing.assert_array_equal(got, ref_i)


def test_k_larger_than_index_pads(data):
    xb, ids, q = data
    index = FaissIndex("flat")
    index.add(ids[:5], xb[:5])
    scores, got = index.search(q[:3], 8)
    ref_s, ref_i = brute(xb[:5], ids[:5], q[:3], 8)
    np.testing.assert_array_equal(got, ref_i)
    assert np.isneginf(scores[:, 5:]).all() and (got[:, 5:] == -1).all()


def test_empty_index_returns_padding():
    scores, got = FaissIndex().search(np.ones((2, 4), np.float32), 3)
    assert scores.shape == (2, 3) and np.isneginf(scores).all() and (got == -1).all()


def test_vectors_are_normalised_so_scores_are_cosines():
    index = FaissIndex("flat")
    index.add([1, 2], np.float32([[3, 4], [0, 10]]))
    scores, got = index.search(np.float32([[6, 8]]), 2)
    assert got.tolist() == [[1, 2]]
    np.testing.assert_allclose(scores, [[1.0, 0.8]], atol=1e-6)


# ---------------------------------------------------------------------------- HNSW recall


@pytest.fixture(scope="module")
def big():
    """20k clustered vectors at d=384 (100 centres), HNSW with the default parameters stated here."""
    n, d = 20_000, 384
    x = mixture(n + 200, d, 100, seed=7)
    xb, q = x[:n], x[n:]
    ids = np.arange(n, dtype=np.int64) + 1_000_000
    index = FaissIndex("hnsw", hnsw_m=32, ef_construction=80, ef_search=64)
    index.add(ids, xb)
    return xb, ids, q, index


@pytest.mark.slow
def test_hnsw_recall_at_10(big):
    xb, ids, q, index = big
    _, got = index.search(q, 10)
    _, ref = brute(xb, ids, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), ref.tolist(), strict=True)])
    assert recall >= 0.95, recall


@pytest.mark.slow
@pytest.mark.parametrize("n_allowed", [3, 10, 25, 500, 8000, 15000])
def test_hnsw_filter_returns_k_whenever_k_allowed(big, n_allowed):
    xb, ids, q, index = big
    allowed = np.random.default_rng(n_allowed).choice(ids, n_allowed, replace=False)
    scores, got = index.search(q[:20], 10, allowed_ids=allowed)
    for row in range(20):
        check_rows(
            scores[row : row + 1],
            got[row : row + 1],
            k=10,
            expected_hits=[min(10, n_allowed)],
            allowed=allowed.tolist(),
            truth=truth_of(xb, ids, q[row]),
        )
    if n_allowed <= 25:  # small sets are answered exactly
        _, ref = brute(xb, ids, q[:20], 10, allowed)
        np.testing.assert_array_equal(got, ref)


def test_hnsw_starved_graph_walk_is_completed(data, monkeypatch):
    """With the exact shortcut switched off and a tiny ef, a selective filter starves the graph walk
    (checked on the raw walk); the search must still return k hits."""
    xb, ids, q = data
    index = FaissIndex("hnsw", hnsw_m=4, ef_search=1)
    index.add(ids, xb)
    monkeypatch.setattr(index, "_exact_limit", lambda: 0)
    # allowed: the cluster farthest from the queries, so the walk from the entry point rarely meets it
    far = np.argsort(xb @ q.mean(axis=0))[:40]
    allowed = ids[far]
    _, raw = index._approx(q, 10, np.sort(allowed), len(allowed))
    short = (raw >= 0).sum(axis=1) < 10
    assert short.any(), "the raw walk was not starved; the test proves nothing"
    scores, got = index.search(q, 10, allowed_ids=allowed)
    for row in range(len(q)):
        check_rows(
            scores[row : row + 1],
            got[row : row + 1],
            k=10,
            expected_hits=[10],
            allowed=allowed.tolist(),
            truth=truth_of(xb, ids, q[row]),
        )
    # the starved rows were recomputed exactly
    ref_s, ref_i = brute(xb, ids, q[short], 10, allowed)
    np.testing.assert_allclose(scores[short], ref_s, atol=1e-5)
    np.testing.assert_array_equal(got[short], ref_i)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
@pytest.mark.parametrize("n_allowed", [1, 10, 40, 2500])
def test_filter_returns_k_whenever_k_allowed(data, built, kind, n_allowed):
    xb, ids, q = data
    allowed = np.random.default_rng(n_allowed).choice(ids, n_allowed, replace=False)
    scores, got = built[kind].search(q, 10, allowed_ids=allowed)
    for row in range(len(q)):
        check_rows(
            scores[row : row + 1],
            got[row : row + 1],
            k=10,
            expected_hits=[min(10, n_allowed)],
            allowed=allowed.tolist(),
            truth=truth_of(xb, ids, q[row]),
        )


@pytest.mark.parametrize("kind", KINDS)
def test_approximate_kinds_agree_with_numpy(data, built, kind):
    xb, ids, q = data
    _, got = built[kind].search(q, 10)
    _, ref = brute(xb, ids, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), ref.tolist(), strict=True)])
    # the fixture's IVF visits 2 of its 16 lists, a deliberately narrow setting
    assert recall >= {"flat": 1.0, "hnsw": 0.9, "ivf": 0.5}[kind], recall


# ---------------------------------------------------------------------------- deletion


@pytest.mark.parametrize("kind", KINDS)
def test_delete_keeps_ids_stable(data, kind):
    xb, ids, q = data
    index = FaissIndex(kind, nlist=16, nprobe=16, rebuild_ratio=0.2)
    index.add(ids, xb)
    rng = np.random.default_rng(5)
    gone = rng.choice(ids, 400, replace=False)  # 13% < rebuild_ratio: HNSW keeps tombstones
    index.delete(gone)
    index.delete([gone[0], 10**15])  # already deleted and unknown ids: no-op
    if kind == "hnsw":
        assert len(index._tombs) == 400 and index._index.ntotal == N
    live = np.setdiff1d(ids, gone)
    assert len(index) == len(live)
    np.testing.assert_array_equal(index.ids(), live)
    # every remaining vector still answers to its own id; deleted ids never come back
    keep = np.isin(ids, live)
    scores, got = index.search(xb[keep][:300], 1)
    np.testing.assert_array_equal(got[:, 0], ids[keep][:300])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    _, got = index.search(q, 50)
    assert not np.isin(got, gone).any()
    _, got = index.search(q, 10, allowed_ids=gone[:30])
    assert (got == -1).all()
    # a deleted id may come back with a new vector
    index.add(gone[:1], xb[:1])
    assert index.search(xb[:1], 1)[1][0, 0] in (gone[0], ids[0]) and len(index) == len(live) + 1
    _, got = index.search(xb[:1], 2, allowed_ids=gone[:1])
    assert got.tolist() == [[gone[0], -1]]


def test_hnsw_rebuilds_past_rebuild_ratio(data):
    xb, ids, q = data
    index = FaissIndex("hnsw", rebuild_ratio=0.2)
    index.add(ids, xb)
    first = ids[:500]
    index.delete(first)
    assert len(index._tombs) == 500 and index._index.ntotal == N
    second = ids[500:700]  # 700 > 0.2 * 3000: the graph is rebuilt without them
    index.delete(second)
    assert len(index._tombs) == 0 and index._index.ntotal == N - 700 == len(index)
    assert index.active_kind == "hnsw"
    scores, got = index.search(xb[700:800], 1)
    np.testing.assert_array_equal(got[:, 0], ids[700:800])
    _, got = index.search(q, 100)
    assert not np.isin(got, ids[:700]).any()


def test_delete_everything(data):
    xb, ids, q = data
    for kind in KINDS:
        index = FaissIndex(kind, nlist=16)
        index.add(ids, xb)
        index.delete(ids)
        assert len(index) == 0 and index.ids().size == 0
        assert (index.search(q, 5)[1] == -1).all()


# ---------------------------------------------------------------------------- auto


def test_auto_switches_to_hnsw_past_threshold_and_back(data):
    xb, ids, q = data
    index = FaissIndex(auto_threshold=100, rebuild_ratio=0.5)
    index.add(ids[:60], xb[:60])
    assert index.active_kind == "flat" and index.kind == "auto"
    index.add(ids[60:120], xb[60:120])
    assert index.active_kind == "hnsw" and len(index) == 120
    _, got = index.search(xb[:120], 1)
    np.testing.assert_array_equal(got[:, 0], ids[:120])
    index.delete(ids[:70])  # 70 tombstones > 0.5 * 120: rebuilt, and 50 live vectors fit flat
    assert index.active_kind == "flat" and len(index) == 50
    scores, got = index.search(q, 10)
    ref_s, ref_i = brute(xb[70:120], ids[70:120], q, 10)
    np.testing.assert_array_equal(got, ref_i)
    big = FaissIndex(auto_threshold=100)
    big.add(ids[:101], xb[:101])  # a first batch above the threshold goes straight to HNSW
    assert big.active_kind == "hnsw"
    big.clear()
    assert big.active_kind == "flat" and len(big) == 0 and big.dim is None


# ---------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("kind", [*KINDS, "auto"])
def test_save_load_identical(data, tmp_path, kind):
    xb, ids, q = data
    index = FaissIndex(kind, nlist=16, nprobe=3, auto_threshold=1000)
    index.add(ids, xb)
    index.delete(ids[::10])  # HNSW keeps these as tombstones, which must survive the round trip
    path = tmp_path / "index.faiss"
    index.save(path)
    assert json.loads((tmp_path / "index.faiss.json").read_text())["bytes"] == path.stat().st_size
    loaded = FaissIndex()
    loaded.load(str(path))
    assert loaded.spec() == index.spec() and loaded.active_kind == index.active_kind
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    allowed = ids[1:500:3]
    for kwargs in ({}, {"allowed_ids": allowed}):
        a = index.search(q, 10, **kwargs)
        b = loaded.search(q, 10, **kwargs)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    loaded.add([1], xb[:1])  # the loaded index stays writable
    loaded.delete(ids[1:3])
    assert len(loaded) == len(index) - 1


def test_save_load_empty(tmp_path):
    FaissIndex("hnsw", dim=8, ef_search=5).save(tmp_path / "e.faiss")
    loaded = FaissIndex.from_spec({"kind": "flat"})
    loaded.load(tmp_path / "e.faiss")
    assert loaded.spec() == FaissIndex("hnsw", dim=8, ef_search=5).spec() and len(loaded) == 0


def test_spec_round_trip():
    index = FaissIndex("ivf", dim=16, nlist=4, nprobe=2, rebuild_ratio=0.3)
    spec = index.spec()
    assert json.loads(json.dumps(spec)) == spec
    assert FaissIndex.from_spec(spec).spec() == spec
    with pytest.raises(ConfigError, match="unknown"):
        FaissIndex.from_spec({**spec, "metric": "l2"})
    with pytest.raises(InputTypeError):
        FaissIndex.from_spec("flat")


@pytest.fixture
def saved(data, tmp_path):
    xb, ids, _ = data
    index = FaissIndex("hnsw")
    index.add(ids[:500], xb[:500])
    path = tmp_path / "index.faiss"
    index.save(path)
    return path


def test_truncated_file_fails_loudly(saved):
    blob = saved.read_bytes()
    saved.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(IntegrityError, match="truncated"):
        FaissIndex().load(saved)


def test_corrupted_header_fails_loudly(saved):
    # Content checksums are the manifest's (tests/test_persistence.py); a damaged header is caught here.
    blob = bytearray(saved.read_bytes())
    blob[:4] = b"XXXX"
    saved.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError):
        FaissIndex().load(saved)


def test_bad_sidecar_fails_loudly(saved):
    side = saved.with_name(saved.name + ".json")
    meta = json.loads(side.read_text())
    for broken in ("{not json", json.dumps({**meta, "format_version": 99}), json.dumps({**meta, "live": 3})):
        side.write_text(broken)
        with pytest.raises(IntegrityError):
            FaissIndex().load(saved)
    side.write_text(json.dumps({**meta, "active_kind": "ivf"}))  # checksum fine, wrong structure
    with pytest.raises(IntegrityError, match="ivf"):
        FaissIndex().load(saved)
    side.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        FaissIndex().load(saved)
    with pytest.raises(FileNotFoundError):
        FaissIndex().load(saved.with_name("nope.faiss"))


def test_failed_load_leaves_index_unchanged(data, saved):
    xb, ids, q = data
    index = FaissIndex("flat")
    index.add(ids[:10], xb[:10])
    saved.write_bytes(b"garbage")
    with pytest.raises(IntegrityError):
        index.load(saved)
    assert len(index) == 10 and index.active_kind == "flat"


# ---------------------------------------------------------------------------- threads


@pytest.mark.parametrize("kind", ["auto", "ivf"])
def test_concurrent_searches_with_a_writer(data, kind):
    """8 threads search while 1 thread adds and deletes: with kind="auto" every add crosses the
    threshold into HNSW and every delete rebuilds it back to flat. Nothing crashes and every result
    row is valid."""
    xb, ids, q = data
    index = FaissIndex(kind, auto_threshold=500, rebuild_ratio=0.1, nlist=8, nprobe=2)
    index.add(ids[:400], xb[:400])
    lookup = dict(zip(ids.tolist(), range(len(ids)), strict=True))
    errors: list[BaseException] = []
    done = threading.Event()
    seen = set()

    def writer():
        try:
            for start in range(400, N, 200):
                index.add(ids[start : start + 200], xb[start : start + 200])
                seen.add(index.active_kind)
                index.delete(ids[start - 400 : start - 200])
                seen.add(index.active_kind)
        except BaseException as e:  # noqa: BLE001 - reported by the test body
            errors.append(e)
        finally:
            done.set()

    overlapping = []

    def reader(seed: int):
        rng = np.random.default_rng(seed)
        try:
            for it in itertools.count():
                if done.is_set() and it >= 5:
                    break
                overlapping.append(not done.is_set())
                allowed = rng.choice(ids, 50, replace=False) if rng.random() < 0.5 else None
                sub = q[rng.integers(0, len(q), 4)]
                scores, got = index.search(sub, 10, allowed_ids=allowed)
                for srow, irow, qrow in zip(scores, got, sub, strict=True):
                    hits = irow[irow >= 0]
                    assert (irow[len(hits) :] == -1).all() and len(set(hits.tolist())) == len(hits)
                    assert (np.diff(srow[: len(hits)]) <= 1e-6).all()
                    if allowed is not None:
                        assert set(hits.tolist()) <= set(allowed.tolist())
                    for s, i in zip(srow[: len(hits)], hits, strict=True):
                        assert abs(s - xb[lookup[int(i)]] @ qrow) < 1e-4
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    assert sum(overlapping) >= 8, "the readers never ran alongside the writer"
    assert seen == ({"flat", "hnsw"} if kind == "auto" else {"ivf"})
    deleted = ids[: N - 400]  # the writer deleted every batch but the last two
    np.testing.assert_array_equal(index.ids(), ids[N - 400 :])
    _, got = index.search(q, 100)
    assert not np.isin(got, deleted).any()


# ---------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors(data):
    xb, ids, q = data
    index = FaissIndex("flat")
    index.add(ids[:10], xb[:10])
    bad = xb[10:12].copy()
    bad[0, 3] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        index.add([100, 101], bad)
    bad[0, 3] = np.inf
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        index.search(bad, 3)
    with pytest.raises(InvalidInputError, match="zero vector"):
        index.add([100], np.zeros((1, D), np.float32))
    for k in (0, -1, 1.5, True, "3", None):
        with pytest.raises(InvalidInputError, match="k must be a positive int"):
            index.search(q, k)
    with pytest.raises(InvalidInputError, match=f"16 dimensions, the index has {D}"):
        index.add([100], np.ones((1, 16), np.float32))
    with pytest.raises(InvalidInputError, match=f"16 dimensions, the index has {D}"):
        index.search(np.ones((1, 16), np.float32), 3)
    for bad_ids in ([1.0], np.array([1.5]), ["a"], [True], "12", 5, None):
        with pytest.raises(InputTypeError):
            index.add(bad_ids, xb[:1])
    with pytest.raises(InvalidInputError, match="2 ids for 1 vectors"):
        index.add([100, 101], xb[:1])
    with pytest.raises(InvalidInputError, match="duplicates"):
        index.add([100, 100], xb[:2])
    with pytest.raises(InvalidInputError, match="already in the index"):
        index.add(ids[:1], xb[:1])
    with pytest.raises(InvalidInputError, match=">= 0"):
        index.add([-1], xb[:1])
    with pytest.raises(InputTypeError):
        index.search(q, 3, allowed_ids=[0.5])
    with pytest.raises(InputTypeError):
        index.delete(["x"])
    assert len(index) == 10  # no failed call changed anything
    assert issubclass(InvalidInputError, ValueError) and issubclass(InputTypeError, TypeError)


def test_ivf_needs_enough_vectors_to_train(data):
    xb, ids, _ = data
    with pytest.raises(InvalidInputError, match="at least 39"):
        FaissIndex("ivf").add(ids[:20], xb[:20])
    with pytest.raises(InvalidInputError, match="at least 3900"):
        FaissIndex("ivf", nlist=100).add(ids, xb)
    index = FaissIndex("ivf")
    index.add(ids[:39], xb[:39])  # one centroid is enough for 39 vectors
    index.add(ids[39:45], xb[39:45])  # later adds need no training
    assert len(index) == 45


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "annoy"},
        {"dim": 0},
        {"hnsw_m": 1},
        {"ef_search": 0},
        {"nlist": 0},
        {"nprobe": 2.5},
        {"rebuild_ratio": 0},
        {"rebuild_ratio": 1.5},
        {"auto_threshold": True},
    ],
)
def test_bad_config(kwargs):
    kind = kwargs.pop("kind", "auto")
    with pytest.raises(ConfigError):
        FaissIndex(kind, **kwargs)


def test_errors_are_ragkit_errors(data):
    with pytest.raises(RagkitError):
        FaissIndex().search(data[2], 0)


# ---------------------------------------------------------------------------- benchmark smoke


@pytest.mark.slow
def test_benchmark_quick_run(tmp_path):
    path = Path(__file__).parents[1] / "benchmarks" / "index_search.py"
    spec = importlib.util.spec_from_file_location("index_search_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--quick", "--out", str(tmp_path)])
    rows = {r["method"]: r for r in results["rows"]}
    assert {"numpy", "faiss-flat", "faiss-hnsw"} <= set(rows)
    assert rows["faiss-flat"]["recall"] == 1.0 and rows["numpy"]["recall"] == 1.0
    assert (tmp_path / "index_search.json").exists() and (tmp_path / "index_search.md").exists()
