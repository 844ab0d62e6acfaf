from __future__ import annotations

import json
import subprocess
import sys

from conftest import HashEmbedder

from ragkit import Pipeline, RecursiveChunker
from ragkit.cli import _read_documents, main


def test_read_documents_from_text_and_jsonl(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\nSome text.", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"id": "x", "text": "from jsonl", "metadata": {"k": 1}})
        + "\n\n"
        + json.dumps({"text": "no id"}),
        encoding="utf-8",
    )
    docs = {d.id: d for d in _read_documents([str(tmp_path)])}
    assert docs["x"].metadata == {"k": 1}
    assert docs[str(tmp_path / "a.md")].text.startswith("# Title")
    assert len(docs) == 3


def test_bad_jsonl_line_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"text": 1}\n', encoding="utf-8")
    assert (
        main(["index", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "idx"), "--embedder", "minilm"])
        == 2
    )
    assert "bad.jsonl:1" in capsys.readouterr().err


def _saved_index(tmp_path):
    pipe = Pipeline(HashEmbedder(), chunker=RecursiveChunker(200, 20))
    pipe.add(
        [
            {"id": "a", "text": "cats purr softly", "metadata": {"lang": "en"}},
            {"id": "b", "text": "dogs bark loudly", "metadata": {"lang": "de"}},
        ]
    )
    pipe.save(tmp_path / "idx")
    pipe.close()
    return tmp_path / "idx"


def test_search_prints_a_table_and_json(tmp_path, capsys, monkeypatch):
    path = _saved_index(tmp_path)
    # The test embedder is not a ragkit class, so the CLI cannot rebuild it from the manifest:
    monkeypatch.setattr("ragkit.cli._embedder", lambda name, dim: HashEmbedder())
    assert main(["search", str(path), "cats purr", "-k", "1", "--embedder", "hash"]) == 0
    out = capsys.readouterr().out
    assert "1." in out and "[a]" not in out and "a  [0:16]" in out
    assert (
        main(["search", str(path), "dogs", "--json", "--embedder", "hash", "--filter", '{"lang": "de"}']) == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert [h["doc_id"] for h in payload["hits"]] == ["b"]


def test_python_dash_m_ragkit_shows_help():
    out = subprocess.run(
        [sys.executable, "-m", "ragkit", "--help"], capture_output=True, text=True, check=True
    )
    assert "index" in out.stdout and "search" in out.stdout and "demo" in out.stdout


def test_search_refuses_a_host_the_manifest_names_unless_trusted(tmp_path, capsys, monkeypatch):
    from ragkit.embedders import OpenAIEmbedder

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    path = _saved_index(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    emb = OpenAIEmbedder(
        "text-embedding-3-small", provider="openai", base_url="http://127.0.0.1:9/v1", dim=64
    )
    from ragkit.components import component_entry

    manifest["embedder"] = component_entry(emb)
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert main(["search", str(path), "cats"]) == 2
    err = capsys.readouterr().err
    assert "trust_hosts" in err and "sk-test" not in err
    # With --trust-hosts the embedder is built (and fails only when it tries the closed port).
    assert main(["search", str(path), "cats", "--trust-hosts"]) == 2
    assert "trust_hosts" not in capsys.readouterr().err


def test_search_passes_diversity_and_fusion(tmp_path, capsys, monkeypatch):
    path = _saved_index(tmp_path)
    monkeypatch.setattr("ragkit.cli._embedder", lambda name, dim: HashEmbedder())
    seen = {}
    original = Pipeline.search

    def spy(self, query, **kwargs):
        seen.update(kwargs)
        return original(self, query, **kwargs)

    monkeypatch.setattr(Pipeline, "search", spy)
    args = ["search", str(path), "cats", "--json", "--embedder", "hash", "--mode", "hybrid"]
    assert main([*args, "--diversity", "0.4", "--fusion", "convex", "--alpha", "0.7"]) == 0
    assert (seen["diversity"], seen["fusion"], seen["alpha"]) == (0.4, "convex", 0.7)
    assert json.loads(capsys.readouterr().out)["hits"][0]["fused_score"] is not None
    assert main([*args, "--diversity", "3"]) == 2  # a bad value is one clear line, not a traceback
    assert "diversity" in capsys.readouterr().err
