"""Rerank throughput: ragkit's Qwen3Reranker against the model-card code and sentence-transformers.

One query and ``--n-docs`` candidate passages of skewed lengths (log-normal, most short, a few long) are
scored by three implementations of the same Qwen3-Reranker on the same random weights, in one run:

* ``ragkit``: ``Qwen3Reranker.score`` (yes/no direction only, token-budget batches, shared prefix cache);
  ``ragkit_plain`` is the same without prefix sharing, to show what each part brings;
* ``model_card``: the Qwen3-Reranker model-card code: batches of 16 in input order, left padding, the full
  vocabulary logits of every position, log-softmax over ("no", "yes");
* ``sentence_transformers``: ``CrossEncoder`` (v6 loads a local ``Qwen3ForCausalLM`` as a yes/no
  ``LogitScore`` cross-encoder with sigmoid activation, which is P(yes)). It applies no Qwen3 prompt to a
  local directory, so it gets the formatted prompt as a text pair (prefix, body + suffix); a pair is
  tokenised as the concatenation of its two parts, which is exactly the model card's token sequence.

The model is a random ``Qwen3ForCausalLM`` of the real Qwen3-Reranker-0.6B width (hidden 1024, 16 heads,
8 KV heads, head_dim 128, intermediate 3072, vocabulary 151,936, tied embeddings) with ``--layers`` layers
(the real model has 28). The LM-head rows of "yes" and "no" are set so that P(yes) spreads over (0, 1): a
saturated score would hide numerical differences.

Timings are medians over ``--repeats`` rounds after a warm-up; each round runs every implementation once,
in a rotating order, so that load from other processes on a shared machine hits all of them alike. Both
wall-clock and process CPU time are recorded: on a shared CPU the CPU-time ratio is the steadier one.

Accuracy is the largest |score - model-card score| over all documents. In bfloat16 that reference is itself
coarse (its log-softmax and exp run in bf16, so its scores carry 8 bits, and 28 random layers amplify bf16
rounding), so for a dtype other than float32 every implementation is also compared with the model-card
code run in float32 on the same weights: the column that says which implementation is closer to the truth.

Usage:
    python benchmarks/rerank_throughput.py                      # CPU, float32, 4 layers, 100 documents
    python benchmarks/rerank_throughput.py --device cuda --dtype bfloat16 --layers 28
    python benchmarks/rerank_throughput.py --quick              # a smoke run (12 short documents, 1 round)

Writes ``rerank_throughput.json`` and ``rerank_throughput.md`` to ``--out-dir`` (benchmarks/results).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

QUERY = "how do rerankers improve the answers of retrieval augmented generation pipelines"
REAL_WIDTH = dict(
    vocab_size=151_936,
    hidden_size=1024,
    intermediate_size=3072,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40_960,
    tie_word_embeddings=True,
)
WORDS = (
    "the of and to in is that for it as with was on be by this are from or an which have has not but can "
    "retrieval search query document passage ranking model language vector index embedding chunk answer "
    "capital France Paris Berlin Germany quick brown fox lazy dog rerankers score pairs relevance context "
    "generation system user question evidence source table figure result method data training evaluation"
).split()


def build_model(path: Path, layers: int) -> Path:
    """A random real-width Qwen3ForCausalLM, with "yes"/"no" LM-head rows that give spread-out scores."""
    import torch
    from tiny_qwen import build_qwen3
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build_qwen3(
        path, kind="reranker", eos_postprocessor=False, seed=0, num_hidden_layers=layers, **REAL_WIDTH
    )
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        # The final hidden state has norm ~ sqrt(hidden): a difference of std 2/sqrt(hidden) gives
        # log-odds of std ~2, so that scores cover (0, 1) rather than sitting at 0 or 1.
        head[yes] = head[no] + torch.randn(head.shape[1], generator=gen) * (2.0 / head.shape[1] ** 0.5)
    model.save_pretrained(str(path))
    return path


def make_documents(tokenizer, n: int, *, median: int, max_tokens: int, seed: int = 0) -> list[str]:
    """``n`` passages whose token counts are log-normal (median ``median``), clipped to [8, max_tokens]."""
    rng = np.random.default_rng(seed)
    targets = np.clip(rng.lognormal(np.log(median), 0.75, size=n), 8, max_tokens).astype(int)
    docs = []
    for target in targets:
        words = " ".join(rng.choice(WORDS, size=int(target) * 2))
        ids = tokenizer(words, add_special_tokens=False)["input_ids"][: int(target)]
        docs.append(tokenizer.decode(ids).strip())
    return docs


class ModelCard:
    """The Qwen3-Reranker model-card code: batches in input order, full logits, log-softmax over yes/no."""

    def __init__(self, path: Path, device, dtype, batch_size: int = 16) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ragkit.rerankers.qwen3 import PROMPT_PREFIX, PROMPT_SUFFIX

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.max_length = 8192
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.prefix_tokens = self.tokenizer.encode(PROMPT_PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(PROMPT_SUFFIX, add_special_tokens=False)

    def process_inputs(self, pairs):
        inputs = self.tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        inputs = self.tokenizer.pad(inputs, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in inputs.items()}

    def compute_logits(self, inputs):
        import torch

        with torch.no_grad():
            batch_scores = self.model(**inputs).logits[:, -1, :]
            true_vector = batch_scores[:, self.token_true_id]
            false_vector = batch_scores[:, self.token_false_id]
            batch_scores = torch.stack([false_vector, true_vector], dim=1)
            batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
            return batch_scores[:, 1].exp().tolist()

    def score(self, query: str, docs: list[str]) -> np.ndarray:
        from ragkit.rerankers.qwen3 import DEFAULT_INSTRUCTION, format_body

        pairs = [format_body(DEFAULT_INSTRUCTION, query, d) for d in docs]
        out: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            out.extend(self.compute_logits(self.process_inputs(pairs[start : start + self.batch_size])))
        return np.array(out)


class SentenceTransformersCE:
    """sentence-transformers ``CrossEncoder`` on the local directory, given the formatted Qwen3 prompts."""

    def __init__(self, path: Path, device, dtype, batch_size: int = 32) -> None:
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(str(path), device=str(device), model_kwargs={"dtype": dtype})
        self.batch_size = batch_size

    def score(self, query: str, docs: list[str]) -> np.ndarray:
        from ragkit.rerankers.qwen3 import DEFAULT_INSTRUCTION, PROMPT_PREFIX, PROMPT_SUFFIX, format_body

        pairs = [(PROMPT_PREFIX, format_body(DEFAULT_INSTRUCTION, query, d) + PROMPT_SUFFIX) for d in docs]
        scores = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return np.asarray(scores, dtype=np.float64)


def timed(fn, device) -> tuple[float, float, np.ndarray]:
    """Wall seconds, CPU seconds of this process, and the result of ``fn()``."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, np.asarray(out, dtype=np.float64)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--dtype", default="auto", help="auto (bf16 on CUDA, float32 on CPU), float32, bfloat16"
    )
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (the real 0.6B model has 28)")
    parser.add_argument("--n-docs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3, 1 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 12 short documents, one round")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.layers < 1:
        parser.error("--layers must be >= 1")

    import torch
    import transformers

    from ragkit._torch import resolve_device, resolve_dtype
    from ragkit.rerankers import Qwen3Reranker

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    n_docs = 12 if args.quick else args.n_docs
    repeats = args.repeats or (1 if args.quick else 3)
    median, max_tokens = (24, 64) if args.quick else (96, 384)

    with tempfile.TemporaryDirectory(prefix="ragkit-rerank-bench-") as tmp:
        path = build_model(Path(tmp) / "Qwen3-Reranker-Bench", args.layers)
        impls = {
            "ragkit": Qwen3Reranker(str(path), device=device, dtype=dtype),
            "ragkit_plain": Qwen3Reranker(str(path), device=device, dtype=dtype, share_prefix=False),
            "model_card": ModelCard(path, device, dtype),
            "sentence_transformers": SentenceTransformersCE(path, device, dtype),
        }
        tokenizer = impls["model_card"].tokenizer
        docs = make_documents(tokenizer, n_docs, median=median, max_tokens=max_tokens)
        doc_tokens = [len(ids) for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]]
        prompts = impls["ragkit"]._prompt_ids(QUERY, docs)
        shared = impls["ragkit"]._shared_length(prompts)

        # Warm-up, then timed rounds over all documents in a rotating order. On CUDA the warm-up takes every
        # document: kernels for the larger batch shapes load lazily on first use, which cost the first
        # implementation of the first round seconds in an earlier H100 run. On CPU a few suffice.
        for impl in impls.values():
            impl.score(QUERY, docs if device.type == "cuda" else docs[:4])
        wall: dict[str, list[float]] = {name: [] for name in impls}
        cpu: dict[str, list[float]] = {name: [] for name in impls}
        scores: dict[str, np.ndarray] = {}
        names = list(impls)
        for r in range(repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                w, c, out = timed(lambda impl=impls[name]: impl.score(QUERY, docs), device)
                wall[name].append(w)
                cpu[name].append(c)
                scores.setdefault(name, out)
                if np.abs(out - scores[name]).max() > 1e-6:
                    raise AssertionError(f"{name} gave different scores for the same input in two rounds")
            print(
                f"round {r + 1}/{repeats}: "
                + ", ".join(f"{n} {wall[n][-1]:.1f}s (cpu {cpu[n][-1]:.1f}s)" for n in names),
                flush=True,
            )

        reference = scores["model_card"]
        diff = {name: float(np.abs(s - reference).max()) for name, s in scores.items()}
        diff_fp32 = None
        if dtype != torch.float32:
            del impls
            gc.collect()
            fp32 = ModelCard(path, device, torch.float32).score(QUERY, docs)
            diff_fp32 = {name: float(np.abs(s - fp32).max()) for name, s in scores.items()}

    throughput = {name: n_docs / statistics.median(t) for name, t in wall.items()}
    result = {
        "benchmark": "rerank_throughput",
        "config": {
            "device": str(device),
            "device_name": (
                torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
            ),
            "torch_threads": torch.get_num_threads(),
            "dtype": str(dtype).removeprefix("torch."),
            "layers": args.layers,
            "width": REAL_WIDTH,
            "n_docs": n_docs,
            "repeats": repeats,
            "quick": args.quick,
            "query": QUERY,
            "model_card_batch_size": 16,
            "sentence_transformers_batch_size": 32,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": __import__("sentence_transformers").__version__,
        },
        "documents": {
            "doc_tokens_min": int(min(doc_tokens)),
            "doc_tokens_median": float(np.median(doc_tokens)),
            "doc_tokens_mean": float(np.mean(doc_tokens)),
            "doc_tokens_max": int(max(doc_tokens)),
            "prompt_tokens_mean": float(np.mean([len(p) for p in prompts])),
            "shared_prefix_tokens": int(shared),
        },
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        # pairs per wall-clock second (median round): the figure that matters on a machine of one's own.
        "throughput": throughput,
        # ragkit's speed-up; on a shared CPU the CPU-time ratio is the steadier one (waits do not count).
        "ratios": {
            f"ragkit_vs_{name}": throughput["ragkit"] / throughput[name] for name in names if name != "ragkit"
        },
        "cpu_time_ratios": {
            f"ragkit_vs_{name}": statistics.median(cpu[name]) / statistics.median(cpu["ragkit"])
            for name in names
            if name != "ragkit"
        },
        "max_abs_diff_vs_reference": diff,
        "max_abs_diff_vs_float32_reference": diff_fp32,
        "reference_scores": {
            "min": float(reference.min()),
            "median": float(np.median(reference)),
            "max": float(reference.max()),
        },
    }
    write(result, args.out_dir)
    return result


def write(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "rerank_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    cfg, docs = result["config"], result["documents"]
    fp32 = result["max_abs_diff_vs_float32_reference"]
    lines = [
        "# Rerank throughput: Qwen3-Reranker (0.6B width, random weights)",
        "",
        f"{cfg['n_docs']} documents x 1 query on {cfg['device']} ({cfg['device_name']}, "
        f"{cfg['torch_threads']} threads), {cfg['dtype']}, {cfg['layers']} layers.",
        f"Document tokens: min {docs['doc_tokens_min']}, median {docs['doc_tokens_median']:.0f}, "
        f"max {docs['doc_tokens_max']}; prompt tokens: mean {docs['prompt_tokens_mean']:.0f}, "
        f"shared prefix {docs['shared_prefix_tokens']}.",
        f"Median of {cfg['repeats']} interleaved rounds. torch {cfg['torch']}, "
        f"transformers {cfg['transformers']}, sentence-transformers {cfg['sentence_transformers']}.",
        "",
        "| implementation | pairs/s | ragkit speed-up (wall) | ragkit speed-up (CPU time) "
        "| max abs diff vs model card |" + (" max abs diff vs float32 model card |" if fp32 else ""),
        "|---|---:|---:|---:|---:|" + ("---:|" if fp32 else ""),
    ]
    for name, tput in result["throughput"].items():
        key = f"ragkit_vs_{name}"
        speed = result["ratios"].get(key, 1.0)
        cpu_speed = result["cpu_time_ratios"].get(key, 1.0)
        delta = result["max_abs_diff_vs_reference"][name]
        row = f"| {name} | {tput:.2f} | {speed:.2f}x | {cpu_speed:.2f}x | {delta:.1e} |"
        if fp32:
            row += f" {fp32[name]:.1e} |"
        lines.append(row)
    ref = result["reference_scores"]
    command = ["--device", cfg["device"], "--dtype", cfg["dtype"], "--layers", str(cfg["layers"])]
    command += (
        ["--quick"] if cfg["quick"] else ["--n-docs", str(cfg["n_docs"]), "--repeats", str(cfg["repeats"])]
    )
    lines += [
        "",
        f"Reference scores span {ref['min']:.3f} .. {ref['max']:.3f} (median {ref['median']:.3f}).",
        "",
        f"Command: `python benchmarks/rerank_throughput.py {' '.join(command)}`",
        "",
    ]
    (out_dir / "rerank_throughput.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
