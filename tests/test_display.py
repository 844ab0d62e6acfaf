"""Notebook display: short reprs, the HTML table (escaped), records and pandas, report plots."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import HashEmbedder

from ragkit import Hit, Pipeline, RecursiveChunker, SearchResults
from ragkit.errors import InvalidInputError
from ragkit.evaluation import EvaluationReport, EvaluationRow


def _results():
    pipe = Pipeline(HashEmbedder(), chunker=RecursiveChunker(200, 20))
    pipe.add(
        [
            {"id": f"d{i}", "text": f"solar panel <b>{i}</b> " + "long text " * 30, "metadata": {"n": i}}
            for i in range(14)
        ]
    )
    hits = pipe.search("solar panel", k=12, mode="hybrid")
    pipe.close()
    return hits


def test_repr_is_short_and_readable():
    hits = _results()
    text = repr(hits)
    lines = text.splitlines()
    assert lines[0].startswith("SearchResults('solar panel': 12 hits, ") and lines[0].endswith(" ms)")
    assert len(lines) == 1 + 10 + 1 and lines[-1] == "  ... 2 more"
    assert all(len(line) < 120 for line in lines)
    assert lines[1].split()[:3] == ["1.", f"{hits[0].score:.4f}", hits[0].id]
    one = repr(hits[0])
    assert one.startswith(f"Hit(rank=1, score={hits[0].score:.4f}, dense_score=") and len(one) < 200
    assert "fused_score=" in one and "rerank_score" not in one  # only the stages that ran
    assert repr(SearchResults([], query="q")) == "SearchResults('q': 0 hits)"


def test_html_table_escapes_and_shows_the_stages_that_ran():
    hits = _results()
    page = hits._repr_html_()
    assert page.count("<tr>") == 1 + len(hits)  # header + one row per hit
    assert "<b>0</b>" not in page and "<b>" not in page  # text is escaped, never markup
    assert "&lt;b&gt;" in page and "<th>dense</th>" in page and "<th>fused</th>" in page
    assert "<th>rerank</th>" not in page and "solar panel: 12 hits" in page
    assert "<table>" in hits[0]._repr_html_()


def test_records_and_pandas_hold_every_field():
    hits = _results()
    records = hits.to_records()
    assert [r["id"] for r in records] == [h.id for h in hits]
    assert records[0]["metadata"] == hits[0].metadata and records[0]["fused_score"] == hits[0].fused_score
    frame = hits.to_pandas()
    assert list(frame["doc_id"]) == [h.doc_id for h in hits] and frame.shape == (12, 13)
    assert SearchResults([], query="q").to_pandas().shape == (0, 13)
    assert records[0]["location"] == {} and list(frame["location"]) == [{}] * 12


def _located(location, **extra):
    return Hit(
        id="a#0",
        doc_id="a",
        text="Run make install. " * 5,
        start=0,
        end=90,
        score=0.5,
        rank=1,
        location=location,
        header="Guide: ",
        **extra,
    )


def test_location_labels_read_pages_and_headings():
    from ragkit.display import location_label

    assert location_label({"page": 3}) == "p. 3"
    assert location_label({"pages": [4, 3]}) == "pp. 3-4" and location_label({"pages": [7]}) == "p. 7"
    assert location_label({"heading": "Install > From source"}) == "Install > From source"
    assert location_label({"heading": "Usage", "page": 2}) == "p. 2, Usage"  # the page first
    assert location_label({"sheet": "Q3", "page": 1}) == 'p. 1, sheet="Q3"'  # other keys as key=value
    assert location_label({"page": True}) == "page=true" and location_label({}) == ""
    # The chunker's shape for a chunk across pages: the first page beside the range, one label.
    assert location_label({"page": 2, "pages": [2, 3]}) == "pp. 2-3"
    assert location_label({"page": 2, "pages": [2, 3], "heading": "A > B"}) == "pp. 2-3, A > B"


def test_a_hit_shows_its_location_but_not_its_header():
    hit = _located({"page": 3, "heading": "Install > From source"})
    one = repr(hit)
    assert "location='p. 3, Install > From source'" in one and "Guide" not in one and len(one) < 200
    assert "location=" not in repr(_located({}))
    results = SearchResults([hit, _located({})], query="q")
    lines = repr(results).splitlines()
    assert "  [p. 3, Install > From so…]  Run make" in lines[1] and all(len(line) < 120 for line in lines)
    assert "[" not in lines[2] and lines[2].index("Run make") == lines[1].index("Run make")  # aligned
    page = results._repr_html_()
    assert "<th>location</th>" in page and "p. 3, Install &gt; From source" in page and "Guide" not in page
    assert "<th>location</th>" not in SearchResults([_located({})])._repr_html_()
    assert results.to_records()[0]["location"] == {"page": 3, "heading": "Install > From source"}
    assert "header" not in results.to_records()[0]


def test_pandas_missing_names_the_extra():
    code = (
        "import sys; sys.modules['pandas'] = None\n"
        "from ragkit import SearchResults\n"
        "try:\n    SearchResults([]).to_pandas()\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("MissingDependencyError") and "ragkit[notebook]" in out


REPORT = EvaluationReport(
    dataset="toy",
    documents=3,
    k=10,
    rows=[
        EvaluationRow(
            name="dense", metrics={"ndcg@10": 0.42, "recall@10": 0.15, "mrr@10": 0.6}, queries=4, seconds=2
        ),
        EvaluationRow(
            name="hybrid", metrics={"ndcg@10": 0.45, "recall@10": 0.16, "mrr@10": 0.7}, queries=4, seconds=4
        ),
    ],
)


def test_report_plots():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    ax = REPORT.plot()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ndcg@10", "recall@10"]
    heights = sorted(round(p.get_height(), 2) for p in ax.patches)
    assert heights == [0.15, 0.16, 0.42, 0.45]
    ax = REPORT.plot_tradeoff("ndcg@10")
    assert ax.get_xscale() == "log" and {t.get_text() for t in ax.texts} == {"dense", "hybrid"}
    offsets = sorted(tuple(map(float, c.get_offsets()[0])) for c in ax.collections)
    assert offsets == [(1.0, 0.45), (2.0, 0.42)]  # queries/s: 4 queries in 4 s and in 2 s
    with pytest.raises(InvalidInputError):
        REPORT.plot(["ndcg@5"])


def test_hit_repr_of_a_reranked_hit():
    hit = Hit(id="a#0", doc_id="a", text="x", start=0, end=1, score=0.9, rank=1, rerank_score=0.9)
    assert repr(hit) == "Hit(rank=1, score=0.9000, rerank_score=0.9000, id='a#0', text='x')"
