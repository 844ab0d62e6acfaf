"""`ragkit demo` offline: it says it falls back, then prints readable hits for each question."""

from __future__ import annotations

import io

import pytest

from ragkit.demo import CORPUS, QUESTIONS, hub_available, run_demo


def test_hub_probe_honours_hf_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok, reason = hub_available("Qwen/Qwen3-Embedding-0.6B")
    assert not ok and "HF_HUB_OFFLINE" in reason


@pytest.mark.slow
def test_demo_runs_offline_and_reads_well(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = io.StringIO()
    assert run_demo(out=out) == 0
    text = out.getvalue()
    assert "is not available (HF_HUB_OFFLINE is set): using the offline all-MiniLM-L6-v2" in text
    assert "embedder: all-MiniLM-L6-v2 (the offline copy), reranker: none" in text
    assert f"indexed {len(CORPUS)} documents" in text
    assert "== dense retrieval ==" in text and "== hybrid retrieval ==" in text
    for question in QUESTIONS:
        assert text.count(f"Q: {question}") == 2  # dense and hybrid; no reranker offline
    # The crash-safety question finds the persistence section first with the real MiniLM weights.
    block = text.split("Q: What happens if the process crashes while saving?")[1]
    assert block.splitlines()[1].strip().startswith("1. [persistence]")
