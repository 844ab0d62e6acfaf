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


def _beir(tmp_path):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    docs = [("d1", "cats purr softly"), ("d2", "dogs bark loudly"), ("d3", "birds sing at dawn")]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in docs))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "purring cats"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return root


def test_eval_prints_json_and_reuses_a_saved_index(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ragkit.cli._embedder", lambda name, dim: HashEmbedder())
    root = _beir(tmp_path)
    assert (
        main(["eval", str(root), "--embedder", "hash", "--modes", "dense,lexical", "-k", "2", "--json"]) == 0
    )
    fresh = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in fresh["rows"]] == ["dense", "lexical"]
    # An index of that corpus, saved once, is evaluated without re-embedding it.
    pipe = Pipeline(HashEmbedder(), chunker=RecursiveChunker(200, 20))
    from ragkit.evaluation import load_dataset

    pipe.add(load_dataset(root).corpus)
    pipe.save(tmp_path / "idx")
    pipe.close()
    embedded = []
    original = HashEmbedder.embed_documents
    monkeypatch.setattr(
        HashEmbedder, "embed_documents", lambda self, t: embedded.extend(t) or original(self, t)
    )
    args = ["eval", str(root), "--index", str(tmp_path / "idx"), "--embedder", "hash", "--modes", "dense"]
    assert main([*args, "-k", "2", "--json"]) == 0
    reused = json.loads(capsys.readouterr().out)
    assert embedded == [] and reused["rows"][0]["metrics"] == fresh["rows"][0]["metrics"]
    # An index of another corpus is one clear error.
    other = _saved_index(tmp_path / "other")
    assert main(["eval", str(root), "--index", str(other), "--embedder", "hash"]) == 2
    assert "does not hold" in capsys.readouterr().err


def test_caller_mistakes_end_in_one_line(tmp_path, capsys):
    for argv in (
        ["eval", str(tmp_path / "typo")],
        ["eval", "./typo"],
        ["search", str(tmp_path / "no-index"), "q"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"ragkit {argv[0]}: error:") and "\n" not in err and "Traceback" not in err


def test_global_flags_after_the_subcommand_and_help_on_every_option(tmp_path, capsys, monkeypatch):
    from ragkit.cli import _parser

    path = _saved_index(tmp_path)
    monkeypatch.setattr("ragkit.cli._embedder", lambda name, dim: HashEmbedder())
    assert main(["search", str(path), "cats", "--embedder", "hash", "-v"]) == 0
    assert main(["-v", "search", str(path), "cats", "--embedder", "hash"]) == 0
    capsys.readouterr()
    parser = _parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        for action in sub._actions:
            if action.dest != "help" and name != "serve":  # serve parses its own options
                assert action.help, (name, action.dest)


def test_index_json_and_a_normal_run_prints_no_third_party_logs(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Paris is the capital of France.", encoding="utf-8")
    (docs / "b.txt").write_text("Berlin is the capital of Germany.", encoding="utf-8")
    idx = tmp_path / "idx"
    run = [sys.executable, "-m", "ragkit"]
    out = subprocess.run(
        [*run, "index", str(docs), "--out", str(idx), "--embedder", "minilm", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["documents"] == 2 and out.stderr == ""
    for mode in ("dense", "lexical", "hybrid"):
        out = subprocess.run(
            [*run, "search", str(idx), "capital of France", "--mode", mode],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "a.md" in out.stdout and out.stderr == "", (mode, out.stderr)
