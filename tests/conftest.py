"""Shared fixtures: tiny Qwen3 models built once per session, and a deterministic test embedder."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Tests never reach a model hub; a fixture that forgot a local path fails at once instead of waiting.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RAGKIT_NETWORK_TESTS") != "1":
        skip = pytest.mark.skip(
            reason="network test: set RAGKIT_NETWORK_TESTS=1 (needs the model hub / keys)"
        )
        for item in items:
            if "network" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def qwen3_embedding_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen3-Embedding whose tokenizer appends <|endoftext|> (as the hub one does)."""
    from tiny_qwen import build_qwen3

    return build_qwen3(
        tmp_path_factory.mktemp("Qwen3-Embedding-Tiny"), kind="embedding", eos_postprocessor=True
    )


@pytest.fixture(scope="session")
def qwen3_embedding_noeos_dir(tmp_path_factory) -> Path:
    """The same kind of model with a tokenizer that does not append <|endoftext|> (converted ones)."""
    from tiny_qwen import build_qwen3

    return build_qwen3(
        tmp_path_factory.mktemp("Qwen3-Embedding-Tiny-NoEOS"),
        kind="embedding",
        eos_postprocessor=False,
        seed=1,
    )


@pytest.fixture(scope="session")
def qwen3_reranker_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen3ForCausalLM with the Qwen chat tokens and single-token "yes"/"no"."""
    from tiny_qwen import build_qwen3

    return build_qwen3(
        tmp_path_factory.mktemp("Qwen3-Reranker-Tiny"), kind="reranker", eos_postprocessor=False, seed=2
    )


class HashEmbedder:
    """A deterministic embedder for pipeline tests: bag of hashed words, L2-normalised.

    Texts that share words get similar vectors, so retrieval tests can reason about results.
    ``calls`` counts texts embedded, to check that unchanged chunks are not re-embedded.
    """

    def __init__(self, dim: int = 64, name: str = "hash-embedder") -> None:
        self._dim = dim
        self.name = name
        self.calls = 0

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> dict:
        return {"model": self.name, "dim": self._dim, "pooling": "hash", "normalize": True}

    def spec(self) -> dict:
        return {"class": "tests.HashEmbedder", "dim": self._dim}

    def _embed(self, texts):
        self.calls += len(texts)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, t in enumerate(texts):
            words = t.lower().split() or [""]
            for w in words:
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                out[i, h % self._dim] += 1.0
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def embed_documents(self, texts):
        return self._embed(list(texts))

    def embed_queries(self, texts, instruction=None):
        return self._embed(list(texts))


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture(params=["local", pytest.param("pg", marks=pytest.mark.pg)])
def search_backend(request):
    """``"local"``, or ``("pg", dsn, table)`` with a fresh table dropped afterwards: feature tests
    that take it run on both backends (see search_backends.py)."""
    if request.param == "local":
        yield "local"
        return
    from pg_server import drop_tables, fresh_table, server_dsn

    dsn, table = server_dsn(), fresh_table()
    yield ("pg", dsn, table)
    drop_tables(dsn, table)
