"""Retrieval quality of the int8 CPU path against float32 on real weights, in one run.

The same model (the packaged all-MiniLM-L6-v2 by default), the same chunks and the same queries, embedded
once in float32 and once with ``quantize="int8"``; dense retrieval scored with ragkit.evaluation.

Usage:
    python benchmarks/int8_quality.py ../shared/data/cisi [--model DIR] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--model", default="minilm", help="'minilm' (packaged) or a model directory")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)

    from ragkit import Pipeline
    from ragkit.backends import LocalBackend
    from ragkit.demo import offline_model_dir
    from ragkit.embedders import TransformersEmbedder
    from ragkit.evaluation import evaluate, load_dataset

    model = str(offline_model_dir()) if args.model == "minilm" else args.model
    dataset = load_dataset(args.dataset)
    rows = {}
    for label, quantize in (("float32", None), ("int8", "int8")):
        emb = TransformersEmbedder(model, pooling="auto", quantize=quantize, on_truncate="ignore")
        pipe = Pipeline(emb, backend=LocalBackend(lexical=False), query_cache_size=0)
        started = time.perf_counter()
        report = evaluate(pipe, dataset, modes=["dense"], show_progress=False)
        rows[label] = {**report.row("dense").metrics, "seconds": time.perf_counter() - started}
        pipe.close()
    f32, i8 = rows["float32"]["ndcg@10"], rows["int8"]["ndcg@10"]
    result = {
        "dataset": args.dataset,
        "model": model,
        "rows": rows,
        "ndcg@10_relative_change": (i8 - f32) / f32,
    }
    lines = [
        f"# int8 vs float32 retrieval quality ({Path(args.dataset).name}, {Path(model).name})",
        "",
        "| path | nDCG@10 | Recall@10 | MRR@10 | index + search s |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, row in rows.items():
        metrics = " | ".join(f"{row[m]:.4f}" for m in ("ndcg@10", "recall@10", "mrr@10"))
        lines.append(f"| {label} | {metrics} | {row['seconds']:.1f} |")
    lines += ["", f"int8 nDCG@10 relative to float32: {100 * result['ndcg@10_relative_change']:+.2f}%"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "int8_quality.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (out / "int8_quality.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))  # a benchmark script reports on stdout
    return result


if __name__ == "__main__":
    main()
