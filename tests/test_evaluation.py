"""Metrics against hand-computed values, the three dataset layouts, and evaluate() through a fake pipeline."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from ragkit.errors import ConfigError, InputTypeError, InvalidInputError
from ragkit.evaluation import (
    EvaluationReport,
    EvaluationRow,
    RetrievalDataset,
    average_precision,
    evaluate,
    evaluate_run,
    load_beir,
    load_dataset,
    load_hf_beir,
    load_smart,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
)
from ragkit.types import Document, Hit, SearchResults

CISI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cisi"

# One query's ranking, with d1 repeated (two chunks of one document), and its graded judgements.
RANKED = ["d1", "d2", "d1", "d3", "d4"]
QRELS = {"d2": 3, "d3": 1, "d5": 2, "d0": 0}  # d0 is judged not relevant


# -- metrics ---------------------------------------------------------------------------------------


def test_ndcg_by_hand():
    # De-duplicated: d1 d2 d3 d4. Gains at ranks 1..3: 0, 3, 1. Ideal gains: 3, 2, 1.
    expected = (3 / math.log2(3) + 1 / math.log2(4)) / (3 / 1 + 2 / math.log2(3) + 1 / math.log2(4))
    assert ndcg_at_k(RANKED, QRELS, 3) == pytest.approx(expected)
    assert ndcg_at_k(RANKED, QRELS, 3) == pytest.approx(0.5024905, abs=1e-6)
    assert ndcg_at_k(RANKED, QRELS, 1) == 0.0
    # k=10: d5 never retrieved; the ideal has all three relevant documents.
    full = (3 / math.log2(3) + 1 / math.log2(4)) / (3 + 2 / math.log2(3) + 1 / math.log2(4))
    assert ndcg_at_k(RANKED, QRELS, 10) == pytest.approx(full)
    assert ndcg_at_k(["d2", "d5", "d3"], QRELS, 3) == pytest.approx(1.0)
    assert ndcg_at_k(RANKED, {"d0": 0}, 3) == 0.0
    assert ndcg_at_k([], QRELS, 3) == 0.0
    assert ndcg_at_k(["d1"], {"d1": -1, "d2": 1}, 1) == 0.0  # negative judgements gain nothing


def test_recall_by_hand():
    assert recall_at_k(RANKED, QRELS, 2) == pytest.approx(1 / 3)  # d1 d2
    assert recall_at_k(RANKED, QRELS, 3) == pytest.approx(2 / 3)  # d1 d2 d3: the repeated d1 takes no slot
    assert recall_at_k(RANKED, QRELS, 10) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, {"d0": 0}, 3) == 0.0


def test_mrr_by_hand():
    assert mrr_at_k(RANKED, QRELS, 10) == 0.5
    assert mrr_at_k(RANKED, QRELS, 1) == 0.0
    assert mrr_at_k(["d1", "d1", "d1", "d3"], QRELS, 2) == 0.5  # d3 is the 2nd distinct document
    assert mrr_at_k([], QRELS, 10) == 0.0


def test_average_precision_by_hand():
    # Relevant at distinct ranks 2 and 3 (precision 1/2 and 2/3); R = 3 relevant documents in all.
    assert average_precision(RANKED, QRELS) == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert average_precision(RANKED, QRELS, k=2) == pytest.approx((1 / 2) / 3)
    assert average_precision(["d2", "d5", "d3"], QRELS) == pytest.approx(1.0)
    assert average_precision(RANKED, {}) == 0.0


def test_evaluate_run_means_over_judged_queries():
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 2}, "q3": {"x": 0}, "q4": {"d": 1}}
    run = {"q1": ["b", "z", "a"], "q2": ["y", "c"], "q3": ["x"]}  # q4 not run: scores 0; q3 has no relevant
    m = evaluate_run(run, qrels, k=3, ks=(1, 3))
    assert set(m) == {"ndcg@1", "ndcg@3", "recall@1", "recall@3", "mrr@3", "map@3"}
    assert m["recall@1"] == pytest.approx((1 / 2 + 0 + 0) / 3)
    assert m["recall@3"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["mrr@3"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert m["map@3"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2 + 0) / 3)
    ndcg3_q1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    ndcg3_q2 = (2 / math.log2(3)) / 2
    assert m["ndcg@3"] == pytest.approx((ndcg3_q1 + ndcg3_q2 + 0) / 3)
    assert m["ndcg@1"] == pytest.approx((1 + 0 + 0) / 3)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: ndcg_at_k(["a"], {"a": 1}, 0), InvalidInputError),
        (lambda: recall_at_k(["a"], {"a": 1}, True), InvalidInputError),
        (lambda: mrr_at_k(["a"], {"a": 1}, 2.0), InvalidInputError),
        (lambda: average_precision(["a"], {"a": 1}, k=-1), InvalidInputError),
        (lambda: evaluate_run({}, {"q": {"a": 1}}, k=3, ks=(5,)), InvalidInputError),
        (lambda: evaluate_run({}, {"q": {"a": 1}}, k=3, ks=()), InvalidInputError),
        (lambda: evaluate_run({}, {"q": {"a": 1}}, k=3, ks="1"), InputTypeError),
        (lambda: evaluate_run({}, {"q": {"a": 0}}, k=3, ks=(1,)), InvalidInputError),
    ],
)
def test_metric_argument_errors(call, error):
    with pytest.raises(error):
        call()


# -- loaders ---------------------------------------------------------------------------------------

SMART_ALL = """.I 1
.T
Library  use
in universities
.A
Smith, J.
Doe, A.
.W
   First line of the abstract
second line.
.X
1\t5\t1
.I 2
.T
Title only
.I 3
.W
Abstract only.
"""
SMART_QRY = """.I 1
.W
What about library use?
.I 2
.T
An example article
.A
Someone, X.
.W
   Query text of an
example article.
.B
1970
.I 3
.W
An unjudged query.
"""
SMART_REL = """     1     1\t0\t0.000000
     1     3\t0\t0.000000
     2     2\t0\t0.000000
"""


def write_smart(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "TOY.ALL").write_text(SMART_ALL)
    (root / "TOY.QRY").write_text(SMART_QRY)
    (root / "TOY.REL").write_text(SMART_REL)
    return root


def test_load_smart(tmp_path):
    ds = load_smart(write_smart(tmp_path / "toy"))
    assert ds.name == "toy"
    docs = {d.id: d for d in ds.corpus}
    assert docs["1"].text == "Library use in universities\n\nFirst line of the abstract second line."
    assert docs["1"].metadata == {"title": "Library use in universities", "authors": ["Smith, J.", "Doe, A."]}
    assert docs["2"].text == "Title only" and docs["3"].text == "Abstract only."
    assert ds.queries == {"1": "What about library use?", "2": "Query text of an example article."}
    assert ds.qrels == {"1": {"1": 1, "3": 1}, "2": {"2": 1}}


def test_load_smart_and_beir_with_the_title_kept_out_of_the_text(tmp_path):
    docs = {d.id: d for d in load_dataset(write_smart(tmp_path / "toy"), title_in_text=False).corpus}
    assert docs["1"].text == "First line of the abstract second line."
    assert docs["1"].metadata["title"] == "Library use in universities"
    assert docs["2"].text == "Title only" and docs["3"].text == "Abstract only."
    beir = {d.id: d for d in load_dataset(write_beir(tmp_path / "toy-beir"), title_in_text=False).corpus}
    assert beir["0001"].text == "Paris is the capital of France."
    assert beir["0001"].metadata["title"] == "Paris"
    assert beir["3"].text == "Rome"


def test_load_smart_errors(tmp_path):
    write_smart(tmp_path)
    (tmp_path / "TOY.REL").unlink()
    with pytest.raises(FileNotFoundError, match=r"\.REL"):
        load_smart(tmp_path)
    (tmp_path / "TOY.REL").write_text("1 1 0 0\n9 1 0 0\n")
    with pytest.raises(ConfigError, match="queries"):
        load_smart(tmp_path)  # query 9 is judged but does not exist


@pytest.mark.skipif(not CISI.is_dir(), reason="the CISI collection is not at ../shared/data/cisi")
def test_load_real_cisi():
    ds = load_dataset(CISI)
    assert (ds.name, len(ds.corpus), len(ds.queries)) == ("cisi", 1460, 76)
    assert sum(len(j) for j in ds.qrels.values()) == 3114
    assert ds.corpus[0].text.startswith(
        "18 Editions of the Dewey Decimal Classifications\n\nThe present study"
    )
    assert ds.queries["1"].startswith("What problems and concerns are there in making up descriptive titles?")


def write_beir(root: Path, *, gz: bool = False) -> Path:
    (root / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": "0001", "title": "Paris", "text": "Paris is the capital of France.", "metadata": {"y": 1}},
        {"_id": "0002", "title": "", "text": "Berlin is in Germany."},
        {"_id": 3, "title": "Rome", "text": ""},
    ]
    lines = "".join(json.dumps(r) + "\n" for r in corpus)
    if gz:
        with gzip.open(root / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
            f.write(lines)
    else:
        (root / "corpus.jsonl").write_text(lines)
    queries = [{"_id": "q1", "text": "capital of France"}, {"_id": "q2", "text": "unjudged"}]
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t0001\t2\nq1\t0002\t0\n")
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_load_beir(tmp_path, gz):
    ds = load_beir(write_beir(tmp_path / "toy-beir", gz=gz))
    assert ds.name == "toy-beir"
    docs = {d.id: d for d in ds.corpus}
    assert docs["0001"].text == "Paris\n\nParis is the capital of France."
    assert docs["0001"].metadata == {"y": 1, "title": "Paris"}
    assert docs["0002"].text == "Berlin is in Germany." and docs["3"].text == "Rome"
    assert ds.queries == {"q1": "capital of France"}
    assert ds.qrels == {"q1": {"0001": 2, "0002": 0}}
    with pytest.raises(FileNotFoundError, match="dev"):
        load_beir(tmp_path / "toy-beir", split="dev")


def test_load_beir_malformed(tmp_path):
    root = write_beir(tmp_path / "bad")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t0001\n")
    with pytest.raises(ConfigError, match="test.tsv:2"):
        load_beir(root)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    (root / "queries.jsonl").write_text("{not json\n")
    with pytest.raises(ConfigError, match="queries.jsonl:1"):
        load_beir(root)


def write_hub_repo(root: Path, *, qrels_in_repo: bool) -> Path:
    """A local copy of a hub dataset repository: BeIR layout (qrels in `<name>-qrels`) or MTEB's."""
    root.mkdir(parents=True)
    configs = [("corpus", "corpus", "corpus.jsonl"), ("queries", "queries", "queries.jsonl")]
    if qrels_in_repo:
        configs.append(("default", "test", "qrels/test.jsonl"))
    yaml = "".join(
        f"- config_name: {name}\n  data_files:\n  - split: {split}\n    path: {path}\n"
        for name, split, path in configs
    )
    (root / "README.md").write_text(f"---\nconfigs:\n{yaml}---\n# toy\n")
    rows = [{"_id": "001", "title": "T", "text": "alpha"}, {"_id": "002", "title": "", "text": "beta"}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "07", "text": "find alpha"}) + "\n")
    if qrels_in_repo:
        (root / "qrels").mkdir()
        row = {"query-id": "07", "corpus-id": "001", "score": 1}
        (root / "qrels" / "test.jsonl").write_text(json.dumps(row) + "\n")
    else:
        (root.parent / f"{root.name}-qrels").mkdir()
        # Ids with leading zeros: the tsv type inference would make them ints; they must stay strings.
        (root.parent / f"{root.name}-qrels" / "test.tsv").write_text(
            "query-id\tcorpus-id\tscore\n07\t001\t1\n"
        )
    return root


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.mark.parametrize("qrels_in_repo", [False, True], ids=["beir-layout", "mteb-layout"])
def test_load_hf_beir_from_a_local_repository(tmp_path, hf_cache, qrels_in_repo):
    root = write_hub_repo(tmp_path / "SciToy", qrels_in_repo=qrels_in_repo)
    ds = load_hf_beir(str(root))
    assert ds.name == "scitoy"
    assert [(d.id, d.text) for d in ds.corpus] == [("001", "T\n\nalpha"), ("002", "beta")]
    assert ds.queries == {"07": "find alpha"} and ds.qrels == {"07": {"001": 1}}
    assert load_dataset(root).qrels == ds.qrels  # a directory that is neither BEIR nor SMART


def test_load_dataset_detects_the_layout(tmp_path):
    assert load_dataset(write_smart(tmp_path / "smart")).qrels["2"] == {"2": 1}
    assert load_dataset(str(write_beir(tmp_path / "beir"))).qrels == {"q1": {"0001": 2, "0002": 0}}
    with pytest.raises(ConfigError, match="directory"):
        load_dataset(tmp_path / "smart" / "TOY.ALL")
    with pytest.raises(InputTypeError):
        load_dataset(None)  # type: ignore[arg-type]


def test_dataset_repr_is_short_and_checks_consistency():
    ds = RetrievalDataset(name="x", corpus=[Document(id="a", text="t")] * 3, queries={"q": "?"}, qrels={})
    assert repr(ds) == "RetrievalDataset(name='x', documents=3, queries=1, judgements=0)"
    with pytest.raises(ValueError, match="not in queries"):
        RetrievalDataset(name="x", corpus=[], queries={}, qrels={"q": {"a": 1}})


# -- evaluate() ------------------------------------------------------------------------------------


class FakePipeline:
    """Just enough of Pipeline for evaluate(): fixed chunk rankings per (mode, query)."""

    def __init__(self, rankings: dict[str, dict[str, list[str]]], *, preloaded: int = 0) -> None:
        self.rankings = rankings
        self.size = preloaded
        self.added: list[Document] = []
        self.calls: list[tuple[int, int, str, int | None]] = []
        self.kwargs: list[dict] = []

    def __len__(self) -> int:
        return self.size

    def add(self, documents):
        self.added = list(documents)
        self.size = len(self.added)

    def search_many(self, queries, *, k, mode, candidates=None, **kwargs):
        self.calls.append((len(queries), k, mode, candidates))
        self.kwargs.append(kwargs)
        out = []
        for q in queries:
            ids = self.rankings[mode].get(q, [])[:k]
            hits = [
                Hit(id=f"{d}#0", doc_id=d, text="", start=0, end=0, score=1.0 / (i + 1), rank=i + 1)
                for i, d in enumerate(ids)
            ]
            out.append(SearchResults(hits, query=q))
        return out


DATASET = RetrievalDataset(
    name="toy",
    corpus=[Document(id=d, text=f"text {d}") for d in ["a", "b", "c", "d", "q3"]],
    queries={"q1": "first", "q2": "second", "q3": "third", "q4": "no relevant"},
    qrels={"q1": {"a": 1, "b": 1}, "q2": {"c": 2}, "q3": {"d": 1}, "q4": {"a": 0}},
)
RANKINGS = {
    "dense": {"first": ["b", "b", "z", "a"], "second": ["c"], "third": ["q3", "d"], "no relevant": ["a"]},
    "lexical": {"first": ["z"], "second": ["y", "c"], "third": ["d"], "no relevant": ["a"]},
}


def test_evaluate_scores_deduplicated_document_rankings():
    pipe = FakePipeline(RANKINGS)
    report = evaluate(
        pipe, DATASET, modes=("dense", "lexical"), k=2, ks=(1, 2), batch_size=2, ignore_identical_ids=True
    )
    assert [d.id for d in pipe.added] == ["a", "b", "c", "d", "q3"]  # the empty pipeline got the corpus
    assert report.index_seconds is not None and report.index_seconds >= 0
    # Per mode, one untimed warm-up query, then 3 judged queries in batches of 2; 3 * k chunk hits
    # each; candidates passed through as None.
    assert pipe.calls == [
        (1, 6, "dense", None),
        (2, 6, "dense", None),
        (1, 6, "dense", None),
        (1, 6, "lexical", None),
        (2, 6, "lexical", None),
        (1, 6, "lexical", None),
    ]
    # dense, de-duplicated and cut at k=2: q1 -> b z, q2 -> c, q3 -> d (q3's own id is dropped, as asked).
    expected_dense = evaluate_run({"q1": ["b", "z"], "q2": ["c"], "q3": ["d"]}, DATASET.qrels, k=2, ks=(1, 2))
    assert report.row("dense").metrics == pytest.approx(expected_dense)
    assert report.row("dense").metrics["mrr@2"] == pytest.approx((1 + 1 + 1) / 3)
    assert report.row("dense").metrics["recall@2"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert report.row("lexical").metrics["mrr@2"] == pytest.approx((0 + 1 / 2 + 1) / 3)
    assert report.row("dense").queries == 3 and report.row("dense").seconds >= 0
    assert (report.dataset, report.documents, report.k) == ("toy", 5, 2)


def test_evaluate_keeps_a_filled_pipeline_and_self_hits_by_default():
    pipe = FakePipeline(RANKINGS, preloaded=5)
    report = evaluate(pipe, DATASET, k=2, ks=(2,), candidates=40)
    assert pipe.added == [] and report.index_seconds is None
    assert {c[3] for c in pipe.calls} == {40}
    assert report.row("dense").metrics["mrr@2"] == pytest.approx((1 + 1 + 1 / 2) / 3)  # q3 hit first


def test_evaluate_passes_search_kwargs_to_every_search():
    pipe = FakePipeline(RANKINGS, preloaded=5)
    evaluate(pipe, DATASET, modes=("dense", "lexical"), k=2, ks=(2,), search_kwargs={"diversity": 0.3})
    assert len(pipe.kwargs) == len(pipe.calls) > 2 and all(kw == {"diversity": 0.3} for kw in pipe.kwargs)
    evaluate(pipe, DATASET, k=2, ks=(2,))
    assert pipe.kwargs[-1] == {}


def test_evaluate_argument_errors():
    pipe = FakePipeline(RANKINGS, preloaded=5)
    with pytest.raises(InputTypeError):
        evaluate(pipe, {"corpus": []})  # type: ignore[arg-type]
    with pytest.raises(InputTypeError):
        evaluate(pipe, DATASET, modes="dense")
    with pytest.raises(InvalidInputError):
        evaluate(pipe, DATASET, modes=())
    with pytest.raises(InvalidInputError):
        evaluate(pipe, DATASET, k=3, ks=(1, 10))
    with pytest.raises(InvalidInputError):
        evaluate(pipe, DATASET, batch_size=0)
    assert pipe.calls == []


def test_report_renderings():
    report = EvaluationReport(
        dataset="toy",
        documents=5,
        k=10,
        rows=[
            EvaluationRow(name="dense", metrics={"ndcg@10": 0.41234, "mrr@10": 0.5}, queries=3, seconds=1.5),
            EvaluationRow(name="bm25s <peer>", metrics={"ndcg@10": 0.3}, queries=3, seconds=0.5),
        ],
    )
    assert str(report).splitlines() == [
        "toy: 3 queries, 5 documents",
        "system        ndcg@10  mrr@10  queries/s",
        "------------  -------  ------  ---------",
        "dense          0.4123  0.5000        2.0",
        "bm25s <peer>   0.3000       -        6.0",
    ]
    md = report.to_markdown().splitlines()
    assert md[2:] == [
        "| system | ndcg@10 | mrr@10 | queries/s |",
        "|---|---:|---:|---:|",
        "| dense | 0.4123 | 0.5000 | 2.0 |",
        "| bm25s <peer> | 0.3000 | - | 6.0 |",
    ]
    page = report._repr_html_()
    assert "<td>bm25s &lt;peer&gt;</td>" in page and page.count("<tr>") == 3
    assert EvaluationReport.model_validate_json(report.to_json()) == report
    assert report.to_dict()["rows"][0]["metrics"] == {"ndcg@10": 0.41234, "mrr@10": 0.5}
    with pytest.raises(KeyError, match="dense"):
        report.row("hybrid")


def test_evaluate_a_real_pipeline_counts_documents_not_chunks():
    from conftest import HashEmbedder

    from ragkit.chunking import RecursiveChunker
    from ragkit.pipeline import Pipeline

    # "long" is cut into six chunks that all outrank "short" for "lighthouse", in every mode.
    long_text = " ".join(["lighthouse lighthouse lighthouse beacon."] * 6)
    corpus = [
        Document(id="long", text=long_text),
        Document(id="short", text="a lighthouse stands on the cape near the old harbour town"),
        Document(id="bread", text="sourdough bread needs flour water salt"),
        Document(id="chess", text="the knight moves in an L shape on the chessboard"),
    ]
    dataset = RetrievalDataset(
        name="toy",
        corpus=corpus,
        queries={"q1": "lighthouse", "q2": "sourdough bread flour", "q3": "knight chessboard"},
        qrels={"q1": {"long": 1, "short": 1}, "q2": {"bread": 1}, "q3": {"chess": 1}},
    )
    with Pipeline(HashEmbedder(dim=256), chunker=RecursiveChunker(60, 0)) as pipe:
        report = evaluate(pipe, dataset, modes=("lexical", "dense", "hybrid"), k=3, ks=(2, 3))
        assert len(pipe) == 4 and pipe.backend.count_chunks() > 5
        assert report.index_seconds is not None
    for mode in ("lexical", "dense", "hybrid"):
        metrics = report.row(mode).metrics
        # 9 chunk hits were asked for; without de-duplication q1's top 2 would be two chunks of "long".
        assert metrics["recall@2"] == pytest.approx(1.0), mode
        assert metrics["mrr@3"] == pytest.approx(1.0), mode
