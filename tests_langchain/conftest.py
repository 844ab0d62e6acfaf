"""Shared pieces of the standard suites: tiny random Qwen3 models (built once per run, as the main
suite's fixtures build them, by tests/tiny_qwen.py) and a deterministic word-hash embedder."""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# Nothing here reaches a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@functools.cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ragkit-langchain-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def tiny_qwen3_embedder():
    """A Qwen3Embedder over a tiny random Qwen3-Embedding (64 wide, 2 layers)."""
    from tiny_qwen import build_qwen3

    from ragkit.embedders import Qwen3Embedder

    path = build_qwen3(_workdir() / "Qwen3-Embedding-Tiny", kind="embedding", eos_postprocessor=True)
    return Qwen3Embedder(path, device="cpu", max_length=128)


@functools.cache
def tiny_qwen3_reranker():
    """A Qwen3Reranker over a tiny random Qwen3ForCausalLM."""
    from tiny_qwen import build_qwen3

    from ragkit.rerankers import Qwen3Reranker

    path = build_qwen3(_workdir() / "Qwen3-Reranker-Tiny", kind="reranker", eos_postprocessor=False, seed=2)
    return Qwen3Reranker(str(path), device="cpu")


class WordHashEmbedder:
    """Bag of hashed words, L2-normalised: texts that share words get similar vectors."""

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim
        self.fingerprint = {"model": "word-hash", "dim": dim}

    def embed_documents(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split() or [""]:
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed_queries(self, texts, instruction=None):
        return self.embed_documents(texts)
