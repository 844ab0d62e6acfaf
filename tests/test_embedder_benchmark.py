"""Smoke run of benchmarks/embed_throughput.py: it runs end to end and its outputs agree.

Speed is never asserted here (shared machines); the cosines between ragkit and sentence-transformers
on the same weights are, since a fast embedder that computes something else is worthless.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "embed_throughput.py"


@pytest.mark.slow
def test_benchmark_quick(tmp_path):
    subprocess.run(
        # float32: the exact mode, compared with sentence-transformers to 0.9999 cosine below.
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--threads",
            "1",
            "--dtype",
            "float32",
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    out = json.loads((tmp_path / "embed_throughput.json").read_text())
    assert (tmp_path / "embed_throughput.md").read_text().startswith("# Embedding throughput")
    qwen = out["qwen3"]
    assert qwen["cosine_vs_st"]["min"] >= 0.9999
    assert qwen["tokens"]["max"] > 512  # the long tail is there
    assert (
        qwen["contenders"]["ragkit"]["useful_tokens"]
        == qwen["contenders"]["sentence-transformers"]["useful_tokens"]
    )
    assert qwen["int8_cosine_vs_float32"]["min"] > 0.9
    minilm = out["minilm"]
    assert minilm["cosine_vs_st"]["min"] >= 0.9999
    assert minilm["int8_cosine_vs_float32"]["min"] >= 0.99
