"""Is bfloat16 safe for the Qwen3-Reranker on CPU? Score differences bf16 vs float32 on the same weights.

There are no trained reranker weights offline, so the evidence is a random ``Qwen3ForCausalLM`` of the real
Qwen3-Reranker-0.6B width (hidden 1024, intermediate 3072, 16 heads, 8 KV heads, head_dim 128, vocabulary
151,936; built as ``rerank_throughput.py`` builds it, with "yes"/"no" LM-head rows that spread P(yes) over
(0, 1)) and ``--layers`` decoder layers (the real model has 28). Several queries, each against documents of
skewed lengths (log-normal token counts) plus an empty one, are scored by ``Qwen3Reranker`` in float32 (the
exact mode, equal to the model card to 1e-4) and in bfloat16.

Recorded: max and mean |P(yes) difference|, max |log-odds difference|, the spread of the float32 scores (a
saturated score would hide differences), per-query top-5 agreement and Spearman rank correlation, and
docs/s of each dtype. The bar of issue 12 is max |difference| <= 1e-2.

Usage:
    python benchmarks/reranker_bf16_check.py --layers 4
    python benchmarks/reranker_bf16_check.py --layers 28 --queries 3 --docs 20

Writes ``reranker_bf16_check_<layers>l.json`` and ``.md`` to ``--out-dir`` (benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from rerank_throughput import build_model, make_documents  # noqa: E402

QUERIES = [
    "how do rerankers improve the answers of retrieval augmented generation pipelines",
    "capital of France",
    "",
    "which evaluation data is used for training a language model ranking method",
    "quick brown fox",
]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--queries", type=int, default=len(QUERIES))
    p.add_argument("--docs", type=int, default=24, help="documents per query (plus one empty)")
    p.add_argument("--median", type=int, default=80, help="median document length in tokens")
    p.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoTokenizer

    from ragkit.rerankers import Qwen3Reranker
    from ragkit.runtime import cpu_flags

    with tempfile.TemporaryDirectory() as tmp:
        path = build_model(Path(tmp) / "Qwen3-Reranker-RealWidth", args.layers)
        tok = AutoTokenizer.from_pretrained(str(path))
        docs = make_documents(tok, args.docs, median=args.median, max_tokens=400) + [""]
        scores: dict[str, list[np.ndarray]] = {}
        seconds: dict[str, float] = {}
        for dtype in ("float32", "bfloat16"):
            rr = Qwen3Reranker(str(path), device="cpu", dtype=dtype)
            rr.score(QUERIES[0], docs[:2])  # warm-up
            start = time.perf_counter()
            scores[dtype] = [rr.score(q, docs) for q in QUERIES[: args.queries]]
            seconds[dtype] = time.perf_counter() - start
            runtime = str(getattr(rr, "runtime", rr.dtype))
            del rr
    f32, b16 = np.concatenate(scores["float32"]), np.concatenate(scores["bfloat16"])
    clip = np.clip(np.stack([f32, b16]).astype(np.float64), 1e-7, 1 - 1e-7)
    logits = np.log(clip / (1 - clip))
    top5 = [
        len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) / 5
        for a, b in zip(scores["float32"], scores["bfloat16"], strict=True)
    ]
    rho = [_spearman(a, b) for a, b in zip(scores["float32"], scores["bfloat16"], strict=True)]
    n = len(f32)
    result = {
        "command": "python benchmarks/reranker_bf16_check.py " + " ".join(argv or sys.argv[1:]),
        "cpu": platform.processor() or platform.machine(),
        "bf16_flags": sorted(cpu_flags() & {"amx_bf16", "avx512_bf16", "amx_int8", "avx512_vnni"}),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "layers": args.layers,
        "pairs": n,
        "bf16_runtime": runtime,
        "max_abs_diff": float(np.abs(f32 - b16).max()),
        "mean_abs_diff": float(np.abs(f32 - b16).mean()),
        "max_abs_logit_diff": float(np.abs(logits[0] - logits[1]).max()),
        "float32_score_std": float(f32.std()),
        "float32_score_range": [float(f32.min()), float(f32.max())],
        "top5_agreement_min": float(min(top5)),
        "spearman_min": float(min(rho)),
        "docs_per_s": {k: n / v for k, v in seconds.items()},
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"reranker_bf16_check_{args.layers}l"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Qwen3-Reranker bfloat16 vs float32 ({args.layers} layers, real 0.6B width, random weights)",
        "",
        f"`{result['command']}`; torch {result['torch']}, {result['threads']} threads, CPU flags "
        f"{', '.join(result['bf16_flags']) or 'none of amx/avx512_bf16'}. {n} query/document pairs.",
        "",
        "| max abs diff | mean abs diff | max log-odds diff | fp32 score std | top-5 agreement (min) | "
        "Spearman (min) | docs/s fp32 | docs/s bf16 |",
        "|---|---|---|---|---|---|---|---|",
        f"| {result['max_abs_diff']:.4f} | {result['mean_abs_diff']:.4f} | "
        f"{result['max_abs_logit_diff']:.3f} | {result['float32_score_std']:.3f} | "
        f"{result['top5_agreement_min']:.2f} | {result['spearman_min']:.4f} | "
        f"{result['docs_per_s']['float32']:.1f} | {result['docs_per_s']['bfloat16']:.1f} |",
        "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
