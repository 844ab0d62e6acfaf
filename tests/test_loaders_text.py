"""ragkit.loaders on the text formats: Markdown (its headings against markdown-it), reStructuredText,
plain text in any encoding, JSON and JSON Lines records."""

from __future__ import annotations

import codecs
import json
import logging

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from loader_files import load_one

from ragkit.errors import CorruptFileError
from ragkit.loaders import load_file
from ragkit.types import content_id

# --- Markdown, reST, plain text ----------------------------------------------------------------------

MARKDOWN = """---
title: front matter
layout: post
---
Intro paragraph before any heading.

# Guide

Some text with a # that is not a heading.

```python
# a comment, not a heading
```

Install
=======

  ## Indented ATX ##

    # indented code, not a heading

- list item
---

Setext two
----------

#no-space is not a heading
"""


def test_markdown_sections_and_title(tmp_path):
    path = tmp_path / "guide.md"
    path.write_text(MARKDOWN, encoding="utf-8")
    doc = load_one(path)
    assert doc.text == MARKDOWN  # kept as written
    assert doc.metadata == {"format": "markdown", "title": "Guide"}
    assert [s.headings for s in doc.sections] == [
        ("Guide",),
        ("Install",),
        ("Install", "Indented ATX"),
        ("Install", "Setext two"),
    ]
    texts = [doc.text[s.start : s.end] for s in doc.sections]
    assert texts[0].startswith("# Guide\n") and texts[0].endswith("```")
    assert texts[1] == "Install\n======="
    assert texts[2].startswith("  ## Indented ATX ##") and texts[2].endswith("- list item\n---")
    assert texts[3] == "Setext two\n----------\n\n#no-space is not a heading"


def test_markdown_headings_agree_with_markdown_it(tmp_path):
    # An independent CommonMark parser on the same source: same heading lines, levels and titles.
    markdown_it = pytest.importorskip("markdown_it")
    from ragkit.loaders._markup import markdown_headings

    source = MARKDOWN.split("---\n", 2)[2]  # markdown-it has no front matter without a plugin
    tokens = markdown_it.MarkdownIt("commonmark").parse(source)
    reference = [
        (tok.map[0], int(tok.tag[1]), tokens[i + 1].content)
        for i, tok in enumerate(tokens)
        if tok.type == "heading_open"
    ]
    ours = [(source[:offset].count("\n"), level, title) for offset, level, title in markdown_headings(source)]
    assert ours == reference


MARKDOWN_LINES = [
    "# Title", "## Sub ##", "### three", "   ## indented", "####### seven", "#nospace", "para text",
    "more text", "  two space", "", "", "===", "===  ", "---", " ---", "-", "***", "```", "~~~", "    code",
    "\tcode", "- item", "* star", "1. item", "2. two", "  - nested", "> quote", "<div>", "</div>",
    "<!-- c -->", "<span>x</span>", "<!--", "-->", "<script>", "</script>", "<pre>", "  # two", ">",
    "> ***", "> ```",
]  # fmt: skip


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(MARKDOWN_LINES), min_size=1, max_size=14))
def test_markdown_headings_agree_with_markdown_it_on_random_documents(lines):
    markdown_it = pytest.importorskip("markdown_it")
    from ragkit.loaders._markup import markdown_headings

    source = "\n".join(lines) + "\n"
    assume(not source.startswith("---"))  # front matter, which markdown-it reads as a rule
    tokens = markdown_it.MarkdownIt("commonmark").parse(source)
    reference = [
        (tok.map[0], int(tok.tag[1]), " ".join(tokens[i + 1].content.split()))
        for i, tok in enumerate(tokens)
        if tok.type == "heading_open"
    ]
    ours = [(source[:offset].count("\n"), level, title) for offset, level, title in markdown_headings(source)]
    assert ours == reference


@pytest.mark.parametrize(
    "source",
    [
        "> # Quoted heading\nInstall\n-------\n\nbody\n",
        "> ***\nInstall\n=======\n",
        ">\nInstall\n-------\n",
        "> ```\nInstall\n-------\n",
        "> quote\nlazy line\n-------\n",
    ],
)
def test_markdown_setext_heading_after_a_quote_that_ends_its_paragraph(source):
    markdown_it = pytest.importorskip("markdown_it")
    from ragkit.loaders._markup import markdown_headings

    tokens = markdown_it.MarkdownIt("commonmark").parse(source)
    reference = [  # headings outside the quote: ragkit does not read headings on a quote's lines
        (tok.map[0], int(tok.tag[1]), tokens[i + 1].content)
        for i, tok in enumerate(tokens)
        if tok.type == "heading_open" and tok.level == 0
    ]
    ours = [(source[:offset].count("\n"), level, title) for offset, level, title in markdown_headings(source)]
    assert ours == reference


def test_markdown_title_is_absent_without_a_level_one_heading(tmp_path):
    path = tmp_path / "notes.markdown"
    path.write_text("## Only level two\n\nbody\n")
    doc = load_one(path)
    assert "title" not in doc.metadata
    assert [s.headings for s in doc.sections] == [("Only level two",)]


RST = """==========
User Guide
==========

Intro text.

Install
-------

Run this::

    Not a title
    -----------

----

From source
~~~~~~~~~~~

Build it.

Usage
-----

Use it.
"""


def test_rst_section_titles(tmp_path):
    path = tmp_path / "guide.rst"
    path.write_text(RST)
    doc = load_one(path)
    assert doc.metadata == {"format": "rst", "title": "User Guide"}
    assert [s.headings for s in doc.sections] == [
        ("User Guide",),
        ("User Guide", "Install"),
        ("User Guide", "Install", "From source"),
        ("User Guide", "Usage"),
    ]
    texts = [doc.text[s.start : s.end] for s in doc.sections]
    assert texts[0] == "==========\nUser Guide\n==========\n\nIntro text."
    assert texts[1].endswith("Not a title\n    -----------\n\n----")
    assert texts[3] == "Usage\n-----\n\nUse it."


def test_plain_text_encodings_and_cleaning(tmp_path, caplog):
    cases = {
        "bom.txt": codecs.BOM_UTF8 + "caf\u00e9".encode(),
        "utf16.txt": codecs.BOM_UTF16_LE + "caf\u00e9 \u2603".encode("utf-16-le"),
        "utf16be.text": codecs.BOM_UTF16_BE + "caf\u00e9".encode("utf-16-be"),
        "controls.txt": b"a\x00b\r\nc\rd\x0ce\tf\x1bg",
    }
    expected = {"bom.txt": "caf\u00e9", "utf16.txt": "caf\u00e9 \u2603", "utf16be.text": "caf\u00e9",
                "controls.txt": "ab\nc\nd\ne\tfg"}  # fmt: skip
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        doc = load_one(tmp_path / name)
        assert doc.text == expected[name], name
        assert doc.metadata == {"format": "text"} and doc.sections == ()
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e".encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="ragkit.loaders"):
        doc = load_one(bad)
    assert doc.text == "caf\ufffd cr\ufffdme br\ufffdl\ufffde"
    assert doc.metadata == {"format": "text", "decode_errors": 4}  # the caller can see and list it
    warnings = [r for r in caplog.records if r.name == "ragkit.loaders"]
    assert len(warnings) == 1 and "latin1.txt" in warnings[0].getMessage()


def test_decode_errors_are_counted_in_every_text_format(tmp_path):
    latin = "caf\u00e9 cr\u00e8me".encode("latin-1")
    (tmp_path / "a.md").write_bytes(b"# T\n\n" + latin)
    (tmp_path / "a.html").write_bytes(b"<p>" + latin + b"</p>")
    (tmp_path / "a.jsonl").write_bytes(b'{"text": "' + latin + b'"}\n{"text": "x"}\n')
    (tmp_path / "ok.html").write_bytes(b"<meta charset='latin-1'><p>" + latin + b"</p>")
    assert load_one(tmp_path / "a.md").metadata == {"format": "markdown", "title": "T", "decode_errors": 2}
    assert load_one(tmp_path / "a.html").metadata == {"format": "html", "decode_errors": 2}
    assert [d.metadata for d in load_file(tmp_path / "a.jsonl")] == [{"decode_errors": 2}] * 2
    assert load_one(tmp_path / "ok.html").metadata == {"format": "html"}


# --- JSON and JSON Lines -----------------------------------------------------------------------------


def test_jsonl_records_keep_their_ids_and_metadata(tmp_path):
    path = tmp_path / "faq.jsonl"
    lines = [
        {"id": "q1", "text": "Refunds take 5 days.", "metadata": {"lang": "en", "source": "old"}},
        {"text": "No id here.", "extra": "ignored"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in lines[:1]) + "\n\n  \n" + json.dumps(lines[1]) + "\n")
    docs = load_file(path, doc_id="ignored", metadata={"source": "faq.jsonl"})
    assert [d.id for d in docs] == ["q1", content_id("No id here.")]
    assert docs[0].metadata == {"lang": "en", "source": "faq.jsonl"}  # the caller's value wins
    assert docs[1].metadata == {"source": "faq.jsonl"}
    assert docs[1].text == "No id here."


def test_record_text_is_cleaned_like_every_loader_text(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "n1", "text": "nul \u0000 here\r\nnext\u00ad line\x1b"}) + "\n")
    [doc] = load_file(path)
    assert doc.text == "nul  here\nnext line" and doc.id == "n1"
    (tmp_path / "r.json").write_text(json.dumps([{"text": "a\u0000b"}]))
    [doc] = load_file(tmp_path / "r.json")
    assert doc.text == "ab" and doc.id == content_id("ab")


def test_jsonl_lines_end_only_at_newlines(tmp_path):
    # U+2028 and U+0085 are line breaks to str.splitlines, but JSON allows them raw inside strings.
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "one\u2028two\x85three"}, ensure_ascii=False) + "\n")
    [doc] = load_file(path)
    assert doc.text == "one\u2028two\x85three"


def test_json_array_of_records(tmp_path):
    path = tmp_path / "docs.json"
    path.write_text(json.dumps([{"id": "a", "text": "alpha"}, {"text": "beta", "metadata": {"n": 2}}]))
    docs = load_file(path)
    assert [(d.id, d.text, d.metadata) for d in docs] == [
        ("a", "alpha", {}),
        (content_id("beta"), "beta", {"n": 2}),
    ]
    (tmp_path / "none.json").write_text("[]")
    assert load_file(tmp_path / "none.json") == []


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("bad.jsonl", '{"text": "ok"}\n{"text": "broken"\n', "line 2"),
        ("notext.jsonl", '{"text": "ok"}\n\n{"body": "wrong key"}\n', "line 3"),
        ("number.jsonl", '{"text": 5}\n', "line 1"),
        ("array-line.jsonl", '["text"]\n', "line 1"),
        ("intid.jsonl", '{"id": 7, "text": "x"}\n', "line 1"),
        ("badmeta.jsonl", '{"text": "x", "metadata": [1]}\n', "line 1"),
        ("object.json", '{"text": "a single object"}', "array of records"),
        ("bad.json", "[{", "not valid JSON"),
        ("strings.json", '["a", "b"]', "record 1"),
        ("notext.json", '[{"text": "a"}, {"id": "b"}]', "record 2"),
    ],
)
def test_bad_records_name_the_keys_and_the_place(tmp_path, name, content, where):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CorruptFileError) as info:
        load_file(path)
    message = str(info.value)
    assert where in message and str(path) in message
    assert all(f"'{key}'" in message for key in ("text", "id", "metadata"))


def test_record_with_a_lone_surrogate_is_refused_at_load(tmp_path):
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "bad \\ud800"}\n')
    with pytest.raises(CorruptFileError, match="line 2: 'text' holds a lone surrogate"):
        load_file(path)
