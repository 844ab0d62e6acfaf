"""Contextual headers on CISI: does embedding each chunk with its document's title in front help?

Three ways to index the same collection, with the same embedder and chunker settings:

- ``(a) glued``: the title glued to the abstract by a blank line, as ``load_smart`` does by default;
  no header. A document longer than one chunk has its title in the first chunk only (often as a
  chunk of its own: the blank line after it is the strongest boundary that fits).
- ``(b) body``: the abstract alone (``load_smart(title_in_text=False)``), the title only in
  ``metadata["title"]``; no header. What a user gets who loads bodies and keeps titles as metadata.
- ``(c) header``: the abstract alone, chunked by ``RecursiveChunker(contextual_headers=True)``: every
  chunk is embedded as ``"<title>\\n\\n" + text``; the stored text (and so BM25) is the abstract's.

Each is scored with ``ragkit.evaluation.evaluate``: nDCG@10 (with Recall@10, MRR@10) for dense and
hybrid, and lexical (BM25 never sees the header, so (b) and (c) differ there only where the header's
share of the budget moved a chunk boundary), on every judged query and on the two fixed random halves
of ``benchmarks/quality.py --sweep`` (seed 0). The verdict: headers become the chunker's default only
if (c) beats both (a) and (b) in dense and hybrid nDCG@10, on the whole set and on each half.

Vectors are computed once per distinct embedded text and shared between the three indexes (a chunk of
(a) and one of (c) often embed the same string); the embedder is deterministic, so this changes no
figure, only the time.

Writes ``contextual_headers.json`` and ``contextual_headers.md`` to ``--out``.

Usage:
    nice .venv/bin/python benchmarks/contextual_headers.py ../shared/data/cisi --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from quality import environment, model_path, split_queries  # noqa: E402

from ragkit.evaluation import RetrievalDataset, evaluate, load_dataset  # noqa: E402

K = 10
KS = (1, 3, 10)
MODES = ("lexical", "dense", "hybrid")
VARIANTS = (
    ("(a) glued", True, False),
    ("(b) body", False, False),
    ("(c) header", False, True),
)


class SharedVectors:
    """An embedder that embeds each distinct document text once across every index of this run."""

    def __init__(self, embedder: Any) -> None:
        self.inner = embedder
        self.memo: dict[str, np.ndarray] = {}
        self.embedded = 0

    def __getattr__(self, name: str) -> Any:  # dim, fingerprint, count_tokens, max_length, ...
        return getattr(self.inner, name)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if new:
            self.memo.update(zip(new, self.inner.embed_documents(new), strict=True))
            self.embedded += len(new)
        return np.stack([self.memo[t] for t in texts])

    def embed_queries(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        return self.inner.embed_queries(texts, instruction)


def run_variant(
    dataset: RetrievalDataset, embedder: SharedVectors, headers: bool, halves: tuple[Any, Any]
) -> dict[str, Any]:
    from ragkit import Pipeline, RecursiveChunker

    chunker = RecursiveChunker.for_embedder(embedder, contextual_headers=headers)
    pipe = Pipeline(embedder, chunker=chunker, query_cache_size=4096)
    before = embedder.embedded
    report = evaluate(pipe, dataset, modes=MODES, k=K, ks=KS)
    result: dict[str, Any] = {
        "chunker": chunker.spec(),
        "chunks": pipe.backend.count_chunks(),
        "texts_embedded": embedder.embedded - before,
        "index_seconds": report.index_seconds,
        "all": {row.name: row.metrics for row in report.rows},
    }
    for label, half in zip(("tune", "held_out"), halves, strict=True):
        rows = evaluate(pipe, half, modes=MODES, k=K, ks=KS).rows
        result[label] = {row.name: row.metrics[f"ndcg@{K}"] for row in rows}
    pipe.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", nargs="?", default=str(REPO / ".." / "shared" / "data" / "cisi"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument(
        "--model", default="minilm", help="'minilm' (packaged all-MiniLM-L6-v2) or a directory"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="embedder precision: 'auto', 'float32', 'bfloat16'")
    parser.add_argument("--seed", type=int, default=0, help="the random halves of the judged queries")
    parser.add_argument("--name", default="contextual_headers", help="output file stem")
    args = parser.parse_args(argv)

    from ragkit.embedders import TransformersEmbedder

    t = time.perf_counter()
    inner = TransformersEmbedder(model_path(args.model), pooling="auto", device=args.device, dtype=args.dtype)
    embedder = SharedVectors(inner)
    load_seconds = time.perf_counter() - t
    results: dict[str, Any] = {}
    for name, title_in_text, headers in VARIANTS:
        dataset = load_dataset(args.dataset, title_in_text=title_in_text)
        halves = split_queries(dataset, args.seed)
        print(f"{name}: {dataset!r}", file=sys.stderr)
        results[name] = run_variant(dataset, embedder, headers, halves)
        print(f"{name}: {json.dumps(results[name]['all'])}", file=sys.stderr)

    a, b, c = (results[name] for name, _, _ in VARIANTS)
    ndcg = f"ndcg@{K}"
    wins = {
        mode: {
            part: all(
                _score(c, part, mode, ndcg) > _score(other, part, mode, ndcg) for other in (a, b)
            )
            for part in ("all", "tune", "held_out")
        }
        for mode in ("dense", "hybrid")
    }
    default = all(all(parts.values()) for parts in wins.values())
    payload = {
        "command": " ".join(
            ["benchmarks/contextual_headers.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "model": args.model,
        "embedder": {
            "pooling": inner.pooling,
            "dim": inner.dim,
            "max_length": inner.max_length,
            "dtype": str(inner.dtype),
            "runtime": repr(getattr(inner, "runtime", None)),
            "load_seconds": load_seconds,
        },
        "seed": args.seed,
        "variants": results,
        "c_beats_a_and_b": wins,
        "headers_by_default": default,
        "environment": {**environment(), "cpu": _cpu()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{args.name}.md").write_text(_markdown(payload))
    print(_markdown(payload))
    return 0


def _score(result: dict[str, Any], part: str, mode: str, ndcg: str) -> float:
    return result["all"][mode][ndcg] if part == "all" else result[part][mode]


def _cpu() -> dict[str, Any]:
    """The CPU's model name and the flags that decide kernels and precision."""
    info: dict[str, Any] = {"model": None, "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and info["model"] is None:
            info["model"] = value.strip()
        if key.strip() == "flags" and not info["flags"]:
            wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
            info["flags"] = [f for f in value.split() if f in wanted]
    return info


def _markdown(payload: dict[str, Any]) -> str:
    variants = payload["variants"]
    a, b = variants["(a) glued"], variants["(b) body"]
    lines = [
        "# Contextual headers on CISI",
        "",
        f"Command: `{payload['command']}` (model: {payload['model']}, {payload['embedder']['dtype']}, "
        f"max_length {payload['embedder']['max_length']}; CPU: {payload['environment']['cpu']['model']}).",
        "",
        "| variant | chunks | mode | nDCG@10 | vs (a) | vs (b) | Recall@10 | MRR@10 | tune | held out |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in variants.items():
        for mode in MODES:
            m = result["all"][mode]
            value = m[f"ndcg@{K}"]
            lines.append(
                f"| {name} | {result['chunks']} | {mode} | {value:.4f} | "
                f"{value / a['all'][mode][f'ndcg@{K}']:.3f}x | {value - b['all'][mode][f'ndcg@{K}']:+.4f} | "
                f"{m[f'recall@{K}']:.4f} | {m[f'mrr@{K}']:.4f} | {result['tune'][mode]:.4f} | "
                f"{result['held_out'][mode]:.4f} |"
            )
    wins = payload["c_beats_a_and_b"]
    lines += [
        "",
        "vs (a): ratio of nDCG@10 to (a)'s; vs (b): difference from (b)'s. tune / held out: nDCG@10 on",
        f"the two fixed random halves of the judged queries (seed {payload['seed']}), as in",
        "`quality.py --sweep`.",
        "",
        "(c) beats (a) and (b): "
        + "; ".join(
            f"{mode}: " + ", ".join(f"{part} {'yes' if won else 'no'}" for part, won in parts.items())
            for mode, parts in wins.items()
        )
        + f". Contextual headers by default: **{'yes' if payload['headers_by_default'] else 'no'}**.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
