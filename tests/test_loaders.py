"""ragkit.loaders on files made by real writers: text reproduced, boilerplate gone, structure exact."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import loader_files as lf
import pytest
from loader_files import load_one

from ragkit.errors import (
    CorruptFileError,
    EncryptedFileError,
    InputTypeError,
    LoaderError,
    MissingDependencyError,
    RagkitError,
    UnsupportedFormatError,
)
from ragkit.loaders import SUPPORTED_SUFFIXES, format_of, is_supported, load_file

pytest.importorskip("pypdfium2")
pytest.importorskip("docx")
pytest.importorskip("lxml")


def words(text):
    return text.split()


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("loader-files")
    for writer in ("fpdf2", "reportlab"):
        lf.write_pdf(d / f"{writer}.pdf", writer=writer)
        lf.write_pdf(d / f"{writer}-unicode.pdf", writer=writer, unicode_font=True)
        lf.write_pdf(d / f"{writer}-locked.pdf", writer=writer, user_password="secret")
        lf.write_pdf(d / f"{writer}-owner-only.pdf", writer=writer, owner_password="owner")
    lf.write_pdf(d / "untitled.pdf", title=None)
    ligatures = ["The \ufb01nal \ufb02ow of e\ufb03cient o\ufb00ers."]  # fi, fl, ffi, ff as code points
    lf.write_pdf(d / "ligatures.pdf", ligatures, unicode_font=True)
    lf.write_pdf(d / "blank-page.pdf", ["First page.", "", "Third page."])
    lf.write_truncated_pdf(d / "truncated.pdf")
    lf.write_docx(d / "guide.docx")
    lf.write_docx(d / "titled.docx", core_title="Core Title")
    (d / "page.html").write_text(lf.HTML_PAGE, encoding="utf-8")
    return d


# --- PDF ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fpdf2", "reportlab", "fpdf2-unicode", "reportlab-unicode"])
def test_pdf_text_pages_and_title(files, name):
    doc = load_one(files / f"{name}.pdf")
    assert doc.id == str(files / f"{name}.pdf")
    assert doc.metadata == {"format": "pdf", "pages": 3, "title": lf.PDF_TITLE}
    assert [s.page for s in doc.sections] == [1, 2, 3]
    for section, page in zip(doc.sections, lf.PAGES, strict=True):
        assert words(doc.text[section.start : section.end]) == words(page)
        assert section.headings == ()
    # Pages are joined by one blank line, and nothing else sits between them.
    gaps = [doc.text[a.end : b.start] for a, b in zip(doc.sections, doc.sections[1:], strict=False)]
    assert gaps == ["\n\n", "\n\n"]
    assert doc.sections[0].start == 0 and doc.sections[-1].end == len(doc.text)


def test_pdfs_read_from_several_threads_agree(files):
    from concurrent.futures import ThreadPoolExecutor

    names = ["fpdf2.pdf", "reportlab.pdf", "fpdf2-unicode.pdf", "reportlab-unicode.pdf"] * 4
    expected = {name: load_one(files / name).text for name in set(names)}
    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda name: load_one(files / name).text, names))
    assert texts == [expected[name] for name in names]


def test_pdf_without_title_and_with_a_blank_page(files):
    assert "title" not in load_one(files / "untitled.pdf").metadata
    doc = load_one(files / "blank-page.pdf")
    assert doc.metadata["pages"] == 3
    assert [doc.text[s.start : s.end] for s in doc.sections] == ["First page.", "", "Third page."]


def test_pdf_title_is_one_line(tmp_path):
    lf.write_pdf(tmp_path / "t.pdf", ["Body."], title="  My  Title\n  Second\tline ")
    assert load_one(tmp_path / "t.pdf").metadata["title"] == "My Title Second line"


def test_pdf_ligature_code_points_are_spelled_out(files):
    doc = load_one(files / "ligatures.pdf")
    assert words(doc.text) == words("The final flow of efficient offers.")


@pytest.mark.parametrize("writer", ["fpdf2", "reportlab"])
def test_pdf_with_a_user_password_is_an_encrypted_file_error(files, writer):
    path = files / f"{writer}-locked.pdf"
    with pytest.raises(EncryptedFileError) as info:
        load_file(path)
    assert info.value.path == str(path)
    assert "password" in info.value.reason


@pytest.mark.parametrize("writer", ["fpdf2", "reportlab"])
def test_pdf_with_only_an_owner_password_opens(files, writer):
    doc = load_one(files / f"{writer}-owner-only.pdf")
    assert words(doc.text[doc.sections[1].start : doc.sections[1].end]) == words(lf.PAGES[1])


def test_pdf_errors_are_told_apart_with_older_pypdfium2(files, monkeypatch):
    # pypdfium2 4 raises PdfiumError without err_code: PDFium's last error tells the reason then.
    import pypdfium2

    real = pypdfium2.PdfDocument

    def old_style(data, *args, **kwargs):
        try:
            return real(data, *args, **kwargs)
        except pypdfium2.PdfiumError as e:
            raise pypdfium2.PdfiumError(str(e)) from None  # the same message, err_code None

    monkeypatch.setattr(pypdfium2, "PdfDocument", old_style)
    with pytest.raises(EncryptedFileError):
        load_file(files / "fpdf2-locked.pdf")
    with pytest.raises(CorruptFileError):
        load_file(files / "truncated.pdf")


def test_truncated_or_fake_pdf_is_a_corrupt_file_error(files, tmp_path):
    with pytest.raises(CorruptFileError, match="truncated"):
        load_file(files / "truncated.pdf")
    fake = tmp_path / "fake.pdf"
    fake.write_text("this is not a PDF at all")
    with pytest.raises(CorruptFileError):
        load_file(fake)


# --- HTML --------------------------------------------------------------------------------------------


def test_html_main_content_without_boilerplate(files):
    doc = load_one(files / "page.html")
    blocks = [b.removeprefix("- ") for b in doc.text.replace("\n\n", "\n").split("\n")]
    assert blocks == lf.HTML_ARTICLE
    lowered = doc.text.lower()
    for word in lf.HTML_BOILERPLATE:
        assert word.lower() not in lowered, word
    assert "<" not in doc.text and "{" not in doc.text  # no markup, no CSS, no script


def test_html_title_entities_and_whitespace(files):
    doc = load_one(files / "page.html")
    assert doc.metadata == {"format": "html", "title": lf.HTML_TITLE}
    assert "pip & a virtual environment \u2014 it" in doc.text  # &amp; and &mdash; decoded
    assert "2 GiB" in doc.text  # &nbsp; is a space
    assert "documents into a searchable" in doc.text  # the source's line break inside <p> is a space
    assert "\n- Python 3.10 or newer\n- 2 GiB of memory\n" in doc.text  # list items one per line


def test_html_headings_are_sections(files):
    doc = load_one(files / "page.html")
    top = "Getting started with ragkit"
    assert [s.headings for s in doc.sections] == [(top,), (top, "Install"), (top, "Search")]
    texts = [doc.text[s.start : s.end] for s in doc.sections]
    assert texts[0] == f"{top}\n\nragkit turns a folder of documents into a searchable index."
    assert texts[1].startswith("Install\n\nInstall it with pip") and texts[1].endswith("2 GiB of memory")
    assert texts[2] == "Search\n\nAsk a question and read the best passages first."


def test_html_page_without_main_drops_page_furniture(tmp_path):
    page = tmp_path / "plain.htm"
    page.write_text(
        "<html><head><title> Old &amp; plain </title></head><body>"
        "<div class='header'><header><a href='/'>Home</a> <a href='/shop'>Shop</a></header></div>"
        "<div role='navigation'>Docs Blog</div>"
        "<div class='content'><h1>Intro</h1><p>First<br>second line.</p>"
        "<h3>Deep</h3><ol><li>one</li><li>two</li></ol><pre>  code\n    indented</pre>"
        "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>"
        "<!-- a comment -->tail text<div hidden>secret</div><p style='display: none'>ghost</p></div>"
        "<div id='cookie-notice'>We value your privacy</div><div class='share-buttons'>Tweet</div>"
        "<footer>Imprint</footer></body></html>",
        encoding="utf-8",
    )
    doc = load_one(page)
    assert doc.metadata["title"] == "Old & plain"
    assert doc.text == (
        "Intro\n\nFirst\nsecond line.\n\nDeep\n\n1. one\n2. two\n\n  code\n    indented\n\n"
        "a\tb\n1\t2\n\ntail text"
    )
    assert [s.headings for s in doc.sections] == [("Intro",), ("Intro", "Deep")]


def test_html_headings_and_cells_are_one_line(tmp_path):
    page = tmp_path / "cells.html"
    page.write_text(
        "<h1>Hello<br>World <b>b</b>old</h1>"
        "<table><tr><td><p>a</p><p>b</p></td><td>c</td></tr><tr><td>d</td><td><p>e</p></td></tr></table>"
        "<ul><li><p>item</p></li><li></li><li>two</li></ul><p>after</p>"
    )
    doc = load_one(page)
    assert doc.text == "Hello World bold\n\na b\tc\nd\te\n\n- item\n- two\n\nafter"
    assert doc.metadata["title"] == "Hello World bold"


def test_html_layout_table_is_read_as_blocks(tmp_path):
    page = tmp_path / "old.html"
    page.write_text(
        "<html><head><title>Old site</title></head><body><table width='100%'><tr>"
        "<td width='150'><a href='/'>Home</a></td>"
        "<td><h1>Installation</h1><p>First paragraph.</p><h2>Linux</h2><p>Use apt.</p>"
        "<pre>apt install x\napt upgrade</pre>"
        "<table><tr><th>OS</th><th>Command</th></tr><tr><td>Debian</td><td>apt</td></tr></table>"
        "</td></tr></table></body></html>"
    )
    doc = load_one(page)
    assert doc.text == (
        "Home\n\nInstallation\n\nFirst paragraph.\n\nLinux\n\nUse apt.\n\napt install x\napt upgrade"
        "\n\nOS\tCommand\nDebian\tapt"
    )
    assert [s.headings for s in doc.sections] == [("Installation",), ("Installation", "Linux")]
    # One column of paragraphs is a layout too; a table nested in a cell makes its table a layout.
    page.write_text("<table><tr><td><p>one</p><p>two</p></td></tr><tr><td><p>three</p></td></tr></table>")
    assert load_one(page).text == "one\n\ntwo\n\nthree"
    page.write_text(
        "<table><tr><td>x</td><td><table><tr><td>n1</td><td>n2</td></tr></table></td></tr></table>"
    )
    assert load_one(page).text == "x\n\nn1\tn2"


def test_html_class_names_are_hints_that_never_drop_the_content(tmp_path):
    page = tmp_path / "layout.html"
    page.write_text(
        "<html><head><title>Real title</title></head><body>"
        "<svg><title>Search icon</title></svg>"
        "<div class='page-with-sidebar has-sidebar'><div class='content-with-sidebar'><p>Body one.</p></div>"
        "<div class='sidebar'><p>Side links</p></div></div>"
        "<div class='related-wrapper'><h1>The page's own title</h1><p>Body two.</p></div></body></html>"
    )
    doc = load_one(page)
    assert doc.metadata["title"] == "Real title"
    assert doc.text == "Body one.\n\nThe page's own title\n\nBody two."


def test_html_title_falls_back_to_the_first_h1_and_charset_is_honoured(tmp_path):
    page = tmp_path / "latin.html"
    html = '<html><head><meta charset="iso-8859-1"></head><body><h1>Caf\u00e9 menu</h1><p>cr\u00e8me</p>'
    page.write_bytes(html.encode("latin-1"))
    doc = load_one(page)
    assert doc.metadata["title"] == "Caf\u00e9 menu"
    assert doc.text == "Caf\u00e9 menu\n\ncr\u00e8me"


def test_html_deep_nesting_and_huge_text_are_read_or_refused_never_lost(tmp_path):
    page = tmp_path / "deep.html"
    for depth in (200, 1500):  # over the recursion limit, and over libxml2's default depth of 256
        page.write_text(
            "<html><body>" + "<div>" * depth + "<p>deep text</p>" + "</div>" * depth + "<p>end</p>"
        )
        assert load_one(page).text == "deep text\n\nend"
    page.write_text("<html><body>" + "<div>" * 3000 + "<p>too deep</p>")
    with pytest.raises(CorruptFileError, match="parser gave up"):
        load_file(page)
    page.write_text("<p>" + "word " * 2_500_000 + "</p>")  # one 12.5 MB text node
    assert len(load_one(page).text.split()) == 2_500_000


def test_html_with_only_a_comment_is_empty(tmp_path):
    page = tmp_path / "comment.html"
    page.write_text("<!-- nothing here -->")
    assert load_one(page).text == ""


def test_html_names_drop_only_whole_furniture_names(tmp_path):
    page = tmp_path / "docs.html"
    page.write_text(
        "<html><head><title>Docs</title></head><body><main><h1 id='guide'>Guide</h1>"
        "<h2 id='related-work'>Related work</h2><p>Prior systems did X.</p>"
        "<section id='chocolate-chip-cookies'><h2>Chocolate chip cookies</h2><p>Mix flour.</p></section>"
        "<section id='informed-consent'><h2>Informed consent</h2><p>All signed.</p></section>"
        "<div id='cookies'><h2>Cookies</h2><p>We set one cookie.</p></div>"
        "<div class='menu'><h3>Starters</h3><p>Soup of the day, 5 EUR.</p></div>"
        "<div class='related-posts'><a href='/a'>Another post</a></div>"
        "<div class='social-share-buttons'>Share on X</div><div id='cookie-banner'>We use cookies</div>"
        "</main></body></html>"
    )
    doc = load_one(page)
    assert doc.text == (
        "Guide\n\nRelated work\n\nPrior systems did X.\n\nChocolate chip cookies\n\nMix flour.\n\n"
        "Informed consent\n\nAll signed.\n\nCookies\n\nWe set one cookie.\n\nStarters\n\n"
        "Soup of the day, 5 EUR."
    )
    assert len(doc.sections) == 6
    # A Genesis theme's wrapper is no sidebar; the sidebar in it, and nav/navbar/menu of links, are.
    page.write_text(
        "<html><body><div id='nav'><a>Home</a> <a>Pricing</a></div><div class='navbar'><a>Login</a></div>"
        "<div class='menu'><a>Blog</a></div><div class='site-container'><div class='content-sidebar-wrap'>"
        "<div class='content'><h2>Quarterly results</h2><p>Revenue grew 12 percent.</p></div>"
        "<div class='sidebar'><p>Ads here</p></div></div></div></body></html>"
    )
    assert load_one(page).text == "Quarterly results\n\nRevenue grew 12 percent."


def test_html_form_and_button_text_is_kept_but_not_form_controls(tmp_path):
    page = tmp_path / "kb.aspx.html"
    page.write_text(
        "<html><head><title>Expense policy</title></head><body><form method='post' id='aspnetForm'>"
        "<div id='s4-workspace'><h1>Expense policy</h1><p>Receipts are required over 25 EUR.</p>"
        "<label for='q'>Search</label><input id='q' value='typed'><select><option>Choice</option></select>"
        "<textarea>Draft</textarea></div></form></body></html>"
    )
    assert load_one(page).text == "Expense policy\n\nReceipts are required over 25 EUR."
    page.write_text(
        "<main><div class='accordion'>"
        "<h2 class='accordion-header'><button type='button'>How long do refunds take?</button></h2>"
        "<div class='collapse' hidden='until-found'><div class='accordion-body'>5 business days.</div></div>"
        "</div></main>"
    )
    doc = load_one(page)
    assert doc.text == "How long do refunds take?\n\n5 business days."
    assert [s.headings for s in doc.sections] == [("How long do refunds take?",)]


@pytest.mark.parametrize(
    "wrapper",
    ["<aside>{}</aside>", "<template>{}</template>", "<footer>{}</footer>", "<div hidden>{}</div>"],
)
@pytest.mark.parametrize("tag", ["article", "main"])
def test_html_content_root_is_chosen_after_dropping_furniture(tmp_path, wrapper, tag):
    page = tmp_path / "story.html"
    teaser = f"<{tag}><h3>Related teaser</h3><p>Teaser text.</p></{tag}>"
    page.write_text(
        "<html><head><title>Story</title></head><body>"
        f"<div class='content'><h1>Big story</h1><p>The main story text.</p></div>{wrapper.format(teaser)}"
        "</body></html>"
    )
    assert load_one(page).text == "Big story\n\nThe main story text."


def test_html_several_articles_give_their_common_container(tmp_path):
    page = tmp_path / "blog.html"
    page.write_text(
        "<body><div class='intro'>Site intro</div><div id='posts'>"
        "<article><h2>First</h2><p>one</p></article><article><h2>Second</h2><p>two</p></article>"
        "</div></body>"
    )
    assert load_one(page).text == "First\n\none\n\nSecond\n\ntwo"
    page.write_text(  # comments as articles inside the post's article: the post is the content
        "<body><div class='intro'>Site intro</div><article><h1>Post</h1><p>text</p>"
        "<article><p>First comment</p></article><article><p>Second comment</p></article></article></body>"
    )
    assert load_one(page).text == "Post\n\ntext\n\nFirst comment\n\nSecond comment"


def test_html_only_the_page_header_is_dropped(tmp_path):
    page = tmp_path / "blog.html"
    page.write_text(
        "<html><head><title>Blog</title></head><body>"
        "<header class='site'><a href='/'>Home</a></header>"
        "<div class='post'><header><h1>Post title</h1><p>By Ann, 2024</p></header><p>Post body.</p></div>"
        "<section><header><h2>Install</h2></header><p>pip install x</p></section>"
        "</body></html>"
    )
    doc = load_one(page)
    assert doc.text == "Post title\n\nBy Ann, 2024\n\nPost body.\n\nInstall\n\npip install x"
    assert [s.headings for s in doc.sections] == [("Post title",), ("Post title", "Install")]
    page.write_text(  # a WordPress masthead in a wrapper, with the site name as h1
        "<body><div id='page'><header id='masthead' class='site-header'><h1 class='site-title'>My Blog</h1>"
        "</header><div id='content'><h2>Post</h2><p>Body.</p></div></div></body>"
    )
    assert load_one(page).text == "Post\n\nBody."


def test_html_meta_charset_utf16_means_utf8(tmp_path):
    page = tmp_path / "p.html"
    html = (
        "<html><head><meta charset='utf-16'><title>Hello</title></head><body><p>caf\u00e9</p></body></html>"
    )
    page.write_bytes(html.encode())
    doc = load_one(page)
    assert doc.text == "caf\u00e9" and doc.metadata == {"format": "html", "title": "Hello"}


def test_html_pre_line_breaks_ordered_list_start_and_soft_hyphens(tmp_path):
    page = tmp_path / "misc.html"
    page.write_text(
        "<pre>line1<br>line2</pre><ol start='5'><li>five</li><li>six</li><li value='9'>nine</li></ol>"
        "<p>hyphen\u00adation</p>"
    )
    assert load_one(page).text == "line1\nline2\n\n5. five\n6. six\n9. nine\n\nhyphenation"


# --- Word --------------------------------------------------------------------------------------------


def test_docx_paragraphs_headings_and_table(files):
    doc = load_one(files / "guide.docx")
    assert doc.metadata == {"format": "docx", "title": lf.DOCX_TITLE}
    expected = []
    for style, content in lf.DOCX_BODY:
        expected.append("\n".join("\t".join(row) for row in content) if style == "table" else content)
    assert doc.text == "\n\n".join(expected)
    title = lf.DOCX_TITLE
    assert [s.headings for s in doc.sections] == [
        (title,),
        (title, "Install"),
        (title, "Install", "From source"),
        (title, "Usage"),
    ]
    from_source = doc.sections[2]
    assert doc.text[from_source.start : from_source.end] == (
        "From source\n\nClone the repository and run the setup script.\n\n"
        "Extra\tProvides\nloaders\tPDF, HTML and Word\npg\tPostgreSQL"
    )


def test_docx_core_title_wins_over_the_title_paragraph(files):
    assert load_one(files / "titled.docx").metadata["title"] == "Core Title"


def test_docx_merged_cell_once_and_line_breaks_in_cells(tmp_path):
    import docx

    document = docx.Document()
    table = document.add_table(rows=2, cols=3)
    merged = table.cell(0, 0).merge(table.cell(0, 1))
    merged.text = "wide"
    table.cell(0, 2).text = "c"
    table.cell(1, 0).text = "x"
    table.cell(1, 1).add_paragraph("two")  # the cell now holds "" and "two": two paragraphs
    table.cell(1, 1).paragraphs[0].text = "one"
    table.cell(1, 2).text = "z"
    document.save(str(tmp_path / "t.docx"))
    assert load_one(tmp_path / "t.docx").text == "wide\tc\nx\tone two\tz"


def test_docx_nested_table_is_cell_text_and_a_vertical_merge_is_read_once(tmp_path):
    import docx

    document = docx.Document()
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).merge(table.cell(1, 0)).text = "Region A"
    table.cell(0, 1).text = "Q1 100"
    inner = table.cell(1, 1).add_table(rows=1, cols=2)  # after the cell's empty first paragraph
    inner.cell(0, 0).text = "INNER-1"
    inner.cell(0, 1).text = "INNER-2"
    document.save(str(tmp_path / "t.docx"))
    assert load_one(tmp_path / "t.docx").text == "Region A\tQ1 100\n\tINNER-1 INNER-2"


def test_docx_damaged_or_legacy_is_a_clear_error(files, tmp_path):
    truncated = tmp_path / "cut.docx"
    truncated.write_bytes((files / "guide.docx").read_bytes()[:500])
    with pytest.raises(CorruptFileError):
        load_file(truncated)
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512
    legacy = tmp_path / "renamed.docx"
    legacy.write_bytes(ole + b"WordDocument")
    with pytest.raises(CorruptFileError, match=r"\.doc\b"):
        load_file(legacy)
    encrypted = tmp_path / "locked.docx"
    encrypted.write_bytes(ole + "EncryptedPackage".encode("utf-16-le"))
    with pytest.raises(EncryptedFileError):
        load_file(encrypted)


def test_legacy_doc_is_unsupported_with_a_way_out(tmp_path):
    path = tmp_path / "old.DOC"
    path.write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(UnsupportedFormatError, match="save it as .docx"):
        load_file(path)


# --- Every format -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", sorted(SUPPORTED_SUFFIXES))
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    docs = load_file(path)
    if format_of(path) in ("json", "jsonl"):
        assert docs == []  # no records
        return
    [doc] = docs
    assert doc.text == "" and doc.sections == ()
    assert doc.metadata == {"format": format_of(path)}


def test_suffixes_formats_and_unsupported(tmp_path):
    assert all(s == s.lower() and s.startswith(".") for s in SUPPORTED_SUFFIXES)
    expected = ".pdf .html .htm .docx .md .markdown .txt .text .rst .jsonl .json".split()
    assert frozenset(expected) == SUPPORTED_SUFFIXES
    assert is_supported("A.TXT") and is_supported(Path("x/report.PDF")) and is_supported("page.Htm")
    assert not is_supported("archive.tar.gz") and not is_supported("Makefile") and not is_supported(".md")
    assert format_of("README.MD") == "markdown" and format_of("data.xlsx") is None
    for name in ("sheet.xlsx", "Makefile"):
        (tmp_path / name).write_text("x")
        with pytest.raises(UnsupportedFormatError, match="supported: .docx"):
            load_file(tmp_path / name)


def test_caller_id_and_metadata(files):
    doc = load_one(str(files / "page.html"), doc_id="docs/page.html", metadata={"title": "Mine", "n": 1})
    assert doc.id == "docs/page.html"
    assert doc.metadata == {"format": "html", "title": "Mine", "n": 1}
    with pytest.raises(InputTypeError):
        load_file(files / "page.html", doc_id=3)
    with pytest.raises(InputTypeError):
        load_file(files / "page.html", metadata=["not", "a", "mapping"])


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_file(tmp_path / "absent.md")


@pytest.mark.parametrize(
    ("module", "name"), [("pypdfium2", "fpdf2.pdf"), ("lxml.html", "page.html"), ("docx", "guide.docx")]
)
def test_missing_extra_names_it(files, monkeypatch, module, name):
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'ragkit\[loaders\]'") as info:
        load_file(files / name)
    assert info.value.extra == "loaders"


def test_loader_errors_are_typed_and_survive_a_copy():
    err = CorruptFileError("a/b.pdf", "truncated")
    assert isinstance(err, LoaderError) and isinstance(err, RagkitError)
    assert (err.path, err.reason, str(err)) == ("a/b.pdf", "truncated", "a/b.pdf: truncated")
    clone = copy.deepcopy(err)  # what sending it from a worker process does
    assert type(clone) is CorruptFileError and (clone.path, clone.reason) == (err.path, err.reason)
    for cls in (UnsupportedFormatError, EncryptedFileError, CorruptFileError):
        assert issubclass(cls, LoaderError)


@pytest.mark.slow
def test_benchmark_quick(tmp_path):
    # The benchmark runs end to end, and ragkit's rows hold what the library choice rests on.
    pytest.importorskip("pypdf")
    pytest.importorskip("pdfminer")
    pytest.importorskip("trafilatura")
    pytest.importorskip("readability")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "loaders.py"
    subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    result = json.loads((tmp_path / "loaders.json").read_text())
    assert (tmp_path / "loaders.md").read_text().startswith("# Loaders")
    for name, row in result["pdf"]["generated"].items():
        assert row["ragkit"]["similarity"] == 1.0, name
    for name, row in result["html"].items():
        assert row["ragkit"]["recall"] == 1.0 and row["ragkit"]["boilerplate_leaked"] == [], name
    for row in result["docx"].values():
        assert row["ragkit"]["similarity"] == 1.0
