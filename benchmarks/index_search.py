"""FaissIndex (flat, HNSW, IVF) against numpy brute force, the peer, on clustered unit vectors.

Compressed rows (``hnsw-int8``, ``hnsw-pq``, ``ivf-pq``) take the path LocalBackend takes: the
compressed FaissIndex proposes ``k * rescore`` candidates and :func:`ragkit.index.rescore.search_rescored`
ranks them by exact cosine, reading the float32 vectors from a numpy array (where the backend reads
its SQLite store); ``--rescore`` overrides the index's default depth.

Measures, for each method: build time, bytes per stored vector, queries/s batched and one query at a
time, and recall@k against the exact top-k (numpy's, computed in the same run). The table reports
speed as a ratio to numpy measured in the same process on the same data, which is the only figure
that transfers between machines.

Run:
    .venv/bin/python benchmarks/index_search.py              # 100k x 1024, a few minutes
    .venv/bin/python benchmarks/index_search.py --quick      # a smoke run, seconds
    .venv/bin/python benchmarks/index_search.py --n 50000 --dim 384 --methods numpy flat hnsw

Writes ``index_search.json`` and ``index_search.md`` to ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragkit.index import FaissIndex  # noqa: E402
from ragkit.index.faiss_build import code_bytes  # noqa: E402
from ragkit.index.flat_scoring import blas_info, flat_scorer  # noqa: E402
from ragkit.index.rescore import search_rescored  # noqa: E402

COMPRESSED = {"hnsw-int8": ("hnsw", "int8"), "hnsw-pq": ("hnsw", "pq"), "ivf-pq": ("ivf", "pq")}
METHODS = ("numpy", "flat", "hnsw", "ivf", *COMPRESSED)


def mixture(n: int, d: int, centres: int, rng: np.random.Generator, spread: float = 1.0) -> np.ndarray:
    """Unit vectors from a Gaussian mixture (uniform random vectors in high dimension are all nearly
    orthogonal, which makes every index look either perfect or useless)."""
    means = rng.standard_normal((centres, d), dtype=np.float32)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 10_000):  # in blocks, to keep the float64 temporaries small
        m = min(10_000, n - start)
        block = means[rng.integers(0, centres, m)] + spread * rng.standard_normal((m, d), dtype=np.float32)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def numpy_topk(xb: np.ndarray, q: np.ndarray, k: int, batch: int = 256) -> np.ndarray:
    """Exact top-k ids by inner product, blocked over queries."""
    out = np.empty((len(q), k), dtype=np.int64)
    for start in range(0, len(q), batch):
        s = q[start : start + batch] @ xb.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1)
        out[start : start + batch] = np.take_along_axis(top, order, axis=1)
    return out


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(
        np.mean([len(set(a) & set(b)) / k for a, b in zip(got.tolist(), truth.tolist(), strict=True)])
    )


def timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run_numpy(xb: np.ndarray, q: np.ndarray, q1: np.ndarray, k: int) -> dict[str, Any]:
    got, batched = timed(lambda: numpy_topk(xb, q, k))

    def one_by_one() -> None:
        for row in q1:
            s = xb @ row
            top = np.argpartition(-s, k - 1)[:k]
            top[np.argsort(-s[top])]

    _, single = timed(one_by_one)
    return {
        "got": got,
        "build_s": 0.0,
        "bytes_per_vector": xb.shape[1] * 4,
        "code_bytes": xb.shape[1] * 4,
        "qps_batched": len(q) / batched,
        "qps_single": len(q1) / single,
    }


def run_faiss(
    method: str, xb: np.ndarray, q: np.ndarray, q1: np.ndarray, k: int, rescore: int | None = None
) -> dict[str, Any]:
    kind, compression = COMPRESSED.get(method, (method, None))
    index = FaissIndex(kind, compression=compression, rescore=rescore)
    ids = np.arange(len(xb), dtype=np.int64)
    _, build = timed(lambda: index.add(ids, xb))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.faiss"
        index.save(path)
        size = path.stat().st_size

    def search(queries: np.ndarray) -> np.ndarray:
        if not index.compressed:
            return index.search(queries, k)[1]
        hits = search_rescored(index, queries, k, depth=index.rescore, vectors_of=lambda i: xb[i])
        return np.stack([np.pad(h[1], (0, k - len(h[1])), constant_values=-1) for h in hits])

    got, batched = timed(lambda: search(q))

    def one_by_one() -> None:
        for row in q1:
            search(row[None, :])

    _, single = timed(one_by_one)
    spec = index.spec()
    params = {"flat": [], "hnsw": ["hnsw_m", "ef_construction", "ef_search"], "ivf": ["nlist", "nprobe"]}[
        kind
    ]
    settings = {p: spec[p] for p in params}
    if compression:
        settings.update(compression=compression, rescore=index.rescore, compressed=index.compressed)
    if kind == "ivf":
        settings["nlist"] = index._ivf_nlist  # the value trained, when nlist=None chose it
    return {
        "got": got,
        "build_s": build,
        "bytes_per_vector": size / len(xb),
        "code_bytes": code_bytes(compression, xb.shape[1], spec["pq_m"]),
        "qps_batched": len(q) / batched,
        "qps_single": len(q1) / single,
        "params": settings,
    }


def markdown(results: dict[str, Any]) -> str:
    a = results["args"]
    lines = [
        f"# Index search: {a['n']:,} x {a['dim']} clustered unit vectors, k={a['k']}",
        "",
        f"{a['queries']} batched queries, {a['single']} one at a time; {results['machine']['cpus']} CPUs "
        f"(load average {results['machine']['load_before']} before, {results['machine']['load_after']} "
        f"after: a shared machine). Ratios are against numpy brute force in the same run.",
        "",
        f"| method | build s | bytes/vec | code bytes | batched q/s | x numpy | single q/s | x numpy "
        f"| recall@{a['k']} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['method']} | {r['build_s']:.1f} | {r['bytes_per_vector']:.0f} | {r['code_bytes']} "
            f"| {r['qps_batched']:,.0f} "
            f"| {r['batched_vs_numpy']:.2f} | {r['qps_single']:,.0f} | {r['single_vs_numpy']:.2f} "
            f"| {r['recall']:.3f} |"
        )
    params = [f"{r['method']}: {r['params']}" for r in results["rows"] if r.get("params")]
    m = results["machine"]
    blas = "; ".join(f"{b['internal_api']} {b['version']} ({b['architecture']})" for b in m.get("blas", []))
    lines += [
        "",
        "Parameters (FaissIndex defaults): " + "; ".join(params),
        "",
        f"CPU: {m.get('cpu_model')} (flags: {', '.join(m.get('cpu_flags', []))}). Libraries: {blas}. "
        f"Exact flat search scored with: {m.get('flat_scorer')} (measured at start-up).",
        "",
    ]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="database vectors")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--centres", type=int, default=None, help="mixture components (default n // 1000)")
    p.add_argument("--queries", type=int, default=1000, help="queries searched as one batch")
    p.add_argument("--single", type=int, default=200, help="queries searched one at a time")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--rescore", type=int, default=None, help="candidates per hit of compressed rows")
    p.add_argument("--quick", action="store_true", help="a smoke run: 5,000 x 64, few queries")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.dim, args.queries, args.single = 12_000, 64, 100, 20  # pq trains on 9,984
    if "numpy" not in args.methods:
        args.methods.insert(0, "numpy")  # the peer and the ground truth
    return args


def cpu_model_and_flags() -> dict[str, Any]:
    """The CPU model and the SIMD/matrix flags that decide kernels (from /proc/cpuinfo on Linux)."""
    wanted = (
        "avx2",
        "avx512f",
        "avx512_bf16",
        "avx512_vnni",
        "amx_bf16",
        "amx_int8",
        "amx_tile",
        "neon",
        "sve",
    )
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu_model": platform.processor() or platform.machine(), "cpu_flags": []}
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), ""
    )
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags |= set(line.split(":", 1)[1].split())
    return {"cpu_model": model, "cpu_flags": sorted(f for f in wanted if f in flags)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    rng = np.random.default_rng(args.seed)
    centres = args.centres or max(10, args.n // 1000)
    x = mixture(args.n + args.queries, args.dim, centres, rng)
    xb, q = x[: args.n], x[args.n :]
    q1 = q[: args.single]
    load_before = round(os.getloadavg()[0], 2)
    rows = []
    truth = None
    for method in args.methods:
        print(f"{method} ...", file=sys.stderr, flush=True)
        if method == "numpy":
            r = run_numpy(xb, q, q1, args.k)
        else:
            r = run_faiss(method, xb, q, q1, args.k, args.rescore)
        got = r.pop("got")
        truth = got if method == "numpy" else truth
        r = {"method": method if method == "numpy" else f"faiss-{method}", **r}
        r["recall"] = recall(got, truth)
        rows.append(r)
    peer = rows[0]
    for r in rows:
        r["batched_vs_numpy"] = r["qps_batched"] / peer["qps_batched"]
        r["single_vs_numpy"] = r["qps_single"] / peer["qps_single"]
    import faiss

    results = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "faiss": faiss.__version__,
            "load_before": load_before,
            "load_after": round(os.getloadavg()[0], 2),
            **cpu_model_and_flags(),
            "blas": blas_info(),
            "flat_scorer": flat_scorer(faiss, args.dim),
        },
        "rows": rows,
    }
    table = markdown(results)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "index_search.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "index_search.md").write_text(table)
    return results


if __name__ == "__main__":
    main()
