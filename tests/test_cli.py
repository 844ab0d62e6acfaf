from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import HashEmbedder

from ragkit import Pipeline, RecursiveChunker
from ragkit.cli import main
from ragkit.types import content_id


def _index(tmp_path, *args):
    return main(["index", *args, "--out", str(tmp_path / "idx"), "--embedder", "hash", "-q"])


def test_index_a_folder_prints_what_it_skipped_and_failed(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ragkit.cli._embedder", lambda name, dim: HashEmbedder())
    docs = tmp_path / "docs"
    (docs / ".git").mkdir(parents=True)
    (docs / "a.md").write_text("# Title\n\nSome text.", encoding="utf-8")
    (docs / "b.jsonl").write_text(
        json.dumps({"id": "x", "text": "from jsonl", "metadata": {"k": 1}})
        + "\n\n"
        + json.dumps({"text": "no id"}),
        encoding="utf-8",
    )
    (docs / "bad.jsonl").write_text('{"text": 1}\n', encoding="utf-8")
    (docs / "logo.png").write_bytes(b"\x89PNG")
    assert _index(tmp_path, str(docs)) == 1  # indexed, but one file failed
    out = capsys.readouterr().out
    assert "2 files (2 added, 0 updated, 0 unchanged)" in out
    assert "hidden: .git" in out and "unsupported format (.png): logo.png" in out
    assert "bad.jsonl: CorruptFileError: line 1" in out and "3 documents" in out
    pipe = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), read_only=True)
    assert {d.id for d in pipe} == {"a.md", "x", content_id("no id")}  # records keep (or get) their ids
    assert pipe.get("x").metadata["k"] == 1
    pipe.close()
    (docs / "bad.jsonl").unlink()
    assert _index(tmp_path, str(docs)) == 0


def test_index_json_shape_respelling_and_sync(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ragkit.cli._embedder", lambda name, dim: HashEmbedder())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("alpha", encoding="utf-8")
    (docs / "b.txt").write_text("beta", encoding="utf-8")
    (docs / "c.xyz").write_text("?", encoding="utf-8")
    assert _index(tmp_path, str(docs), "--json") == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {"index", "documents", "chunks", "totals", "folders"}
    assert payload["documents"] == 2 and payload["totals"]["added"] == 2 and payload["totals"]["skipped"] == 1
    [folder] = payload["folders"]
    assert folder["folder"] == str(docs.resolve()) and folder["failed"] == []
    assert folder["skipped"] == [{"path": "c.xyz", "reason": "unsupported format (.xyz)"}]
    # The same folder spelled from inside it: nothing changes.
    monkeypatch.chdir(docs)
    assert _index(tmp_path, ".", "--json", "--sync") == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert (totals["unchanged"], totals["added"], totals["removed"], totals["embedded"]) == (2, 0, 0, 0)
    (docs / "b.txt").unlink()
    assert _index(tmp_path, "./", "--json") == 0
    assert json.loads(capsys.readouterr().out)["documents"] == 2  # without --sync nothing goes
    assert _index(tmp_path, "./", "--json", "--sync") == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["totals"]["removed"] == 1 and payload["documents"] == 1


def test_index_a_single_file_and_a_missing_path(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ragkit.cli._embedder", lambda name, dim: HashEmbedder())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("alpha", encoding="utf-8")
    assert _index(tmp_path, str(tmp_path / "docs" / "a.md"), "--sync") == 0  # --sync: folders only
    capsys.readouterr()
    pipe = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), read_only=True)
    assert [d.id for d in pipe] == ["a.md"]  # a file named on its own: id = its name
    pipe.close()
    assert _index(tmp_path, str(tmp_path / "docs"), str(tmp_path / "nope")) == 2
    assert "nope: no such file or folder" in capsys.readouterr().err


def test_index_checks_every_path_before_writing_and_indexes_a_folder_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ragkit.cli._embedder", lambda name, dim: HashEmbedder())
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    (d1 / "a.md").write_text("alpha one", encoding="utf-8")
    (d2 / "b.md").write_text("beta two", encoding="utf-8")
    (d2 / "bad.jsonl").write_text("{", encoding="utf-8")
    assert _index(tmp_path, str(d1)) == 0
    other = ["index", str(d1), "--out", str(tmp_path / "other"), "--embedder", "hash", "-q"]
    assert main(other) == 0
    capsys.readouterr()
    # A saved index as the second path: refused before d2 is written into idx.
    assert _index(tmp_path, str(d2), str(tmp_path / "other")) == 2
    assert "is a saved ragkit index" in capsys.readouterr().err
    pipe = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), read_only=True)
    assert [d.id for d in pipe] == ["a.md"]
    pipe.close()
    # The same folder twice (two spellings): indexed and reported once, its failure counted once.
    assert _index(tmp_path, str(d2), str(d2) + "/", "--json") == 1
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["folders"]) == 1 and payload["totals"]["failed"] == 1


def test_index_out_must_be_an_index_or_new(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ragkit.cli._embedder", lambda name, dim: HashEmbedder())
    docs, site = tmp_path / "docs", tmp_path / "site"
    docs.mkdir()
    site.mkdir()
    (docs / "a.md").write_text("alpha", encoding="utf-8")
    (site / "manifest.json").write_text('{"name": "my web app"}', encoding="utf-8")
    base = ["index", str(docs), "--embedder", "hash", "-q", "--out"]
    assert main([*base, str(site)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json that is not a ragkit index's" in err and "format_version" not in err
    assert main([*base, str(docs)]) == 2  # the folder itself would become an index
    assert "is the folder being indexed" in capsys.readouterr().err
    assert sorted(p.name for p in docs.iterdir()) == ["a.md"]


def test_index_lists_empty_and_undecodable_files_and_exits_0(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ragkit.cli._embedder", lambda name, dim: HashEmbedder())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "empty.md").write_text("", encoding="utf-8")
    (docs / "notes.txt").write_bytes("caf\xe9".encode("latin-1"))
    (docs / "ok.txt").write_text("some text", encoding="utf-8")
    assert _index(tmp_path, str(docs)) == 0
    out = capsys.readouterr().out
    assert "empty 1 (indexed, no text):\n    empty.md: no text" in out
    assert "warnings 1:\n    notes.txt: 1 undecodable byte sequence(s) read as U+FFFD" in out
    assert _index(tmp_path, str(docs), "--json") == 0
    payload = json.loads(capsys.readouterr().out)
    totals = payload["totals"]
    assert (totals["empty"], totals["warnings"], totals["failed"]) == (1, 1, 0)
    assert payload["folders"][0]["empty"] == [{"path": "empty.md", "reason": "no text"}]
    assert payload["folders"][0]["warnings"][0]["path"] == "notes.txt"


def test_index_every_format_then_search_finds_the_pdf_page_and_word_heading(tmp_path, capsys, monkeypatch):
    loader_files = pytest.importorskip("loader_files")
    pytest.importorskip("pypdfium2")
    pytest.importorskip("docx")
    monkeypatch.setattr("ragkit.cli._embedder", lambda name, dim: HashEmbedder())
    docs = tmp_path / "docs"
    (docs / "web").mkdir(parents=True)
    loader_files.write_pdf(docs / "guide.pdf")
    loader_files.write_docx(docs / "guide.docx")
    (docs / "web" / "page.html").write_text(loader_files.HTML_PAGE, encoding="utf-8")
    (docs / "notes.md").write_text("# Notes\n\nMarkdown text.", encoding="utf-8")
    (docs / "readme.rst").write_text("Readme\n======\n\nreST text.", encoding="utf-8")
    (docs / "plain.TXT").write_text("Plain text.", encoding="utf-8")
    (docs / "faq.jsonl").write_text(json.dumps({"id": "faq-1", "text": "A record."}), encoding="utf-8")
    (docs / "list.json").write_text(json.dumps([{"id": "rec-1", "text": "Another."}]), encoding="utf-8")
    assert _index(tmp_path, str(docs), "--json") == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["totals"]["added"] == 8 and payload["folders"][0]["failed"] == []
    search = ["search", str(tmp_path / "idx"), "--json", "--embedder", "hash", "--mode", "lexical", "-k", "1"]
    assert main([*search[:2], "cross-encoder affirmative fifty", *search[2:]]) == 0
    [hit] = json.loads(capsys.readouterr().out)["hits"]
    assert hit["doc_id"] == "guide.pdf" and "cross-encoder" in hit["text"]
    assert main([*search[:2], "Clone the repository", *search[2:]]) == 0
    [word] = json.loads(capsys.readouterr().out)["hits"]
    assert word["doc_id"] == "guide.docx" and "Clone the repository" in word["text"]
    first, last = hit["location"].get("pages", [hit["location"]["page"]] * 2)
    assert first <= 3 <= last
    assert word["location"]["heading"].endswith("Install > From source")
    # The table a person reads names the page and the heading too.
    assert main([search[0], search[1], "Clone the repository", *search[3:]]) == 0
    table = capsys.readouterr().out
    assert "guide.docx" in table and "(Ragkit Guide > Install > From source)" in table


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
