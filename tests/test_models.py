"""The one model loader (ragkit.models), shared by the CLI, the demo and the server."""

from __future__ import annotations

import json

import pytest

from ragkit import demo, models
from ragkit.errors import ConfigError


def test_model_type_reads_a_local_config(tmp_path, qwen3_embedding_dir):
    assert models.model_type(qwen3_embedding_dir) == "qwen3"
    other = tmp_path / "bert-like"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert models.model_type(other) == "bert"
    (other / "config.json").write_text("{not json")
    assert models.model_type(other) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert models.model_type(empty) is None  # a directory without config.json: unknown, not guessed


def test_one_loader_for_the_demo_the_cli_and_the_server():
    import ragkit.cli
    import ragkit.serve.service

    assert demo.load_embedder is models.load_embedder and demo.load_reranker is models.load_reranker
    assert ragkit.serve.service.load_embedder is models.load_embedder
    import inspect

    assert "from ragkit.models import load_embedder" in inspect.getsource(ragkit.cli._embedder)


def test_loader_choices(qwen3_embedding_dir, qwen3_reranker_dir):
    pytest.importorskip("transformers")
    from ragkit.embedders import Qwen3Embedder
    from ragkit.rerankers import Qwen3Reranker

    assert models.load_reranker("none") is None and models.load_reranker(None) is None
    with pytest.raises(ConfigError, match="dim applies"):
        models.load_embedder("minilm", dim=8)
    emb = models.load_embedder(qwen3_embedding_dir, dim=32, device="cpu", quiet=True)
    assert type(emb) is Qwen3Embedder and emb.dim == 32
    rr = models.load_reranker(qwen3_reranker_dir, device="cpu", quiet=True)
    assert type(rr) is Qwen3Reranker  # (a non-Qwen3 reranker: tests/test_server_lifecycle.py)
