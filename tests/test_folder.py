"""The folder index: ids by relative path, skipping unchanged files, sync, conflicts, bad files, symlinks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import HashEmbedder
from search_backends import backend_pipeline

from ragkit import Document, Pipeline, RecursiveChunker
from ragkit.errors import InvalidInputError, ReadOnlyError
from ragkit.folder import EmptyFile, FailedFile, FileWarning, FolderReport, SkippedFile, index_folder

pytest.importorskip("pypdfium2")
pytest.importorskip("docx")
loader_files = pytest.importorskip("loader_files")


def _pipe(**kwargs) -> Pipeline:
    return Pipeline(HashEmbedder(), chunker=RecursiveChunker(200, 20), **kwargs)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def binaries(tmp_path_factory) -> dict[str, bytes]:
    """The bytes of one PDF and one Word file, written once per session with the real writers."""
    where = tmp_path_factory.mktemp("writers")
    pdf = loader_files.write_pdf(where / "guide.pdf")
    docx = loader_files.write_docx(where / "guide.docx")
    return {"pdf": pdf.read_bytes(), "docx": docx.read_bytes()}


@pytest.fixture
def every_format(tmp_path, binaries) -> Path:
    """A folder with one file of every supported format (and a subfolder)."""
    root = tmp_path / "docs"
    root.mkdir()
    (root / "guide.pdf").write_bytes(binaries["pdf"])
    (root / "guide.docx").write_bytes(binaries["docx"])
    _write(root / "page.html", loader_files.HTML_PAGE)
    _write(root / "old.htm", "<html><body><main><h1>Old page</h1><p>An htm file.</p></main></body></html>")
    _write(root / "notes.md", "# Notes\n\n## Cats\n\nCats purr when they are content.\n")
    _write(root / "more.markdown", "# More\n\nA markdown file with the long suffix.\n")
    _write(root / "sub" / "howto.rst", "How to\n======\n\nRead the manual first.\n")
    _write(root / "sub" / "plain.txt", "A plain text file about teapots.\n")
    _write(root / "sub" / "shout.TEXT", "UPPER CASE SUFFIX.\n")
    _write(
        root / "faq.jsonl",
        json.dumps({"id": "faq-1", "text": "Refunds take five days.", "metadata": {"lang": "en"}})
        + "\n"
        + json.dumps({"id": "faq-2", "text": "Shipping is free."})
        + "\n",
    )
    _write(root / "list.json", json.dumps([{"id": "rec-1", "text": "A record in a JSON array."}]))
    return root


def test_every_supported_format_is_indexed_with_relative_ids(every_format):
    pipe = _pipe()
    report = index_folder(pipe, every_format)
    assert report.failed == [] and report.skipped == []
    assert (report.added, report.updated, report.unchanged, report.files) == (11, 0, 0, 11)
    ids = {d.id for d in pipe}
    files = {"guide.pdf", "guide.docx", "page.html", "old.htm", "notes.md", "more.markdown"}
    files |= {"sub/howto.rst", "sub/plain.txt", "sub/shout.TEXT"}
    assert ids == files | {"faq-1", "faq-2", "rec-1"}  # records keep their own ids
    doc = pipe.get("sub/plain.txt")
    info = doc.metadata["file"]
    assert info["folder"] == str(every_format.resolve()) and info["path"] == "sub/plain.txt"
    assert info["format"] == "text" and info["size"] == len(b"A plain text file about teapots.\n")
    assert pipe.get("faq-1").metadata["lang"] == "en"  # a record's own metadata is kept
    assert pipe.get("faq-1").metadata["file"]["path"] == "faq.jsonl"
    assert "Pricing" not in pipe.get("page.html").text  # the loader's work arrives intact
    assert report.chunks >= 14 and report.embedded >= 1


def test_another_spelling_of_the_folder_is_the_same_index_and_parses_nothing(every_format, monkeypatch):
    pipe = _pipe()
    index_folder(pipe, every_format)
    count = len(pipe)
    calls = []
    import ragkit.loaders

    original = ragkit.loaders.load_file
    monkeypatch.setattr(ragkit.loaders, "load_file", lambda *a, **k: calls.append(a) or original(*a, **k))
    monkeypatch.chdir(every_format.parent)
    (every_format.parent / "alias").symlink_to(every_format)
    for spelling in (str(every_format.resolve()), "docs", "./docs/", "docs/sub/..", "alias"):
        report = index_folder(pipe, spelling, sync=True)
        assert (report.added, report.updated, report.removed, report.unchanged) == (0, 0, 0, 11), spelling
        assert report.embedded == 0 and len(pipe) == count
    monkeypatch.chdir(every_format)
    assert index_folder(pipe, ".").unchanged == 11
    assert calls == []  # unchanged files are skipped by their hash, without parsing


def test_an_edited_file_is_updated_and_only_its_chunks_are_embedded(tmp_path):
    root = tmp_path / "docs"
    _write(root / "a.md", "Alpha text about apples.")
    _write(root / "b.md", "Beta text about bananas.")
    pipe = _pipe()
    index_folder(pipe, root)
    _write(root / "a.md", "Alpha text about apricots now.")
    report = index_folder(pipe, root)
    assert (report.added, report.updated, report.unchanged) == (0, 1, 1)
    assert report.embedded == 1 and "apricots" in pipe.get("a.md").text
    assert pipe.get("a.md").metadata["file"]["size"] == len("Alpha text about apricots now.")


def test_sync_removes_files_that_are_gone_and_nothing_else(tmp_path):
    root, other = tmp_path / "docs", tmp_path / "other"
    _write(root / "keep.md", "kept")
    _write(root / "gone.md", "going away")
    _write(root / "sub" / "deep.txt", "deep file")
    _write(other / "elsewhere.md", "another folder's file")
    pipe = _pipe()
    index_folder(pipe, root)
    index_folder(pipe, other)
    pipe.add(Document(id="manual", text="added by hand"))
    (root / "gone.md").unlink()
    (root / "sub" / "deep.txt").unlink()
    report = index_folder(pipe, root)
    assert report.removed == 0 and pipe.get("gone.md") is not None  # without sync nothing goes
    report = index_folder(pipe, root, sync=True)
    assert report.removed == 2 and (report.unchanged, report.files) == (1, 1)
    assert {d.id for d in pipe} == {"keep.md", "elsewhere.md", "manual"}
    # An emptied folder loses all of its documents, still not the others'.
    (root / "keep.md").unlink()
    assert index_folder(pipe, root, sync=True).removed == 1
    assert {d.id for d in pipe} == {"elsewhere.md", "manual"}


def test_sync_removes_the_records_a_jsonl_file_lost(tmp_path):
    root = tmp_path / "docs"
    lines = [json.dumps({"id": f"r{i}", "text": f"record number {i}"}) for i in range(3)]
    _write(root / "data.jsonl", "\n".join(lines))
    pipe = _pipe()
    assert index_folder(pipe, root).added == 1 and len(pipe) == 3
    _write(root / "data.jsonl", "\n".join(lines[:1] + lines[2:]))
    report = index_folder(pipe, root)
    assert report.updated == 1 and report.removed == 0 and len(pipe) == 3
    report = index_folder(pipe, root, sync=True)
    assert report.removed == 1 and {d.id for d in pipe} == {"r0", "r2"}
    assert index_folder(pipe, root, sync=True).unchanged == 1  # and now it is in step


def test_the_same_path_from_two_folders_is_refused_not_overwritten(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a / "readme.md", "folder a's readme")
    _write(b / "readme.md", "folder b's readme")
    _write(b / "other.md", "only in b")
    pipe = _pipe()
    index_folder(pipe, a)
    report = index_folder(pipe, b, sync=True)
    assert report.added == 1 and [f.path for f in report.failed] == ["readme.md"]
    failure = report.failed[0]
    assert failure.error == "IdConflict" and str(a.resolve()) in failure.message
    assert pipe.get("readme.md").text == "folder a's readme"
    assert not report.ok
    # Indexing the common parent holds both, under ids that differ.
    report = index_folder(pipe, tmp_path)
    assert {"a/readme.md", "b/readme.md"} <= {d.id for d in pipe}


def test_a_document_added_another_way_is_not_overwritten(tmp_path):
    root = tmp_path / "docs"
    _write(root / "faq.md", "from the file")
    _write(root / "r.jsonl", json.dumps({"id": "faq-1", "text": "from the record"}))
    pipe = _pipe()
    pipe.add([Document(id="faq.md", text="added by hand"), Document(id="faq-1", text="also by hand")])
    report = index_folder(pipe, root, sync=True)
    assert sorted(f.error for f in report.failed) == ["IdConflict", "IdConflict"]
    assert "not indexed from a folder" in report.failed[0].message
    assert pipe.get("faq.md").text == "added by hand" and pipe.get("faq-1").text == "also by hand"


def _records(path: Path, *records: tuple) -> None:
    lines = [json.dumps({"id": r[0], "text": r[1], **(r[2] if len(r) > 2 else {})}) for r in records]
    _write(path, "".join(line + "\n" for line in lines))


def test_record_ids_that_clash_in_one_folder_are_reported_every_run(tmp_path):
    root = tmp_path / "docs"
    _records(root / "a.jsonl", ("x", "first"))
    _records(root / "b.jsonl", ("x", "second"), ("z", "z"))
    _records(root / "c.jsonl", ("y", "own", {"metadata": {"file": "mine"}}))
    _records(root / "d.jsonl", ("w", "one"), ("w", "two"))
    _records(root / "e.jsonl", ("f.md", "a record with a file's id"))
    _write(root / "f.md", "the file itself")
    pipe = _pipe()
    for _ in range(2):  # the second run reads the partly refused files again, to report them again
        report = index_folder(pipe, root)
        messages = {f.path: f.message for f in report.failed}
        assert set(messages) == {"b.jsonl", "c.jsonl", "d.jsonl", "e.jsonl"}
        assert "'x' is held by 'a.jsonl'" in messages["b.jsonl"] or "from a.jsonl" in messages["b.jsonl"]
        assert "folder index's" in messages["c.jsonl"] and "earlier in this file" in messages["d.jsonl"]
        assert "from f.md" in messages["e.jsonl"]  # a file's id is its path: the file keeps it
        assert pipe.get("x").text == "first" and pipe.get("z").text == "z" and pipe.get("y") is None
        assert pipe.get("w").text == "one" and pipe.get("f.md").text == "the file itself"
        assert report.files == 4  # c.jsonl and e.jsonl gave nothing: they count as failed only
    assert (report.added, report.updated, report.unchanged) == (0, 0, 4)


def test_a_record_that_moves_to_another_records_file_follows_it(tmp_path):
    root = tmp_path / "docs"
    _records(root / "b.jsonl", ("x", "in b"), ("y", "stays"))
    pipe = _pipe()
    index_folder(pipe, root)
    _records(root / "a.jsonl", ("x", "moved to a"))  # walked before b, which is read again
    _records(root / "b.jsonl", ("y", "stays"))
    report = index_folder(pipe, root, sync=True)
    assert report.failed == [] and report.removed == 0
    assert pipe.get("x").text == "moved to a" and pipe.get("x").metadata["file"]["path"] == "a.jsonl"
    # Into a file that is not read again (unchanged), a duplicate id is refused.
    _records(root / "c.jsonl", ("y", "a copy"))
    assert [f.path for f in index_folder(pipe, root).failed] == ["c.jsonl"]
    assert pipe.get("y").text == "stays"


def test_empty_files_are_documents_listed_as_empty_every_run(tmp_path, binaries):
    root = tmp_path / "docs"
    _write(root / "empty.md", "")
    _write(root / "none.jsonl", "")  # no records: nothing to add
    _records(root / "blank.jsonl", ("e1", ""))  # a record without chunks
    _write(root / "ok.md", "some text")
    loader_files.write_pdf(root / "scan.pdf", pages=[""], title=None)  # a page without text
    pipe = _pipe()
    empty = [
        EmptyFile("blank.jsonl", "no text in its records"),
        EmptyFile("empty.md", "no text"),
        EmptyFile("none.jsonl", "no records"),
        EmptyFile("scan.pdf", "no text extracted (a scanned PDF? it needs OCR first)"),
    ]
    n = 4
    report = index_folder(pipe, root)
    assert (report.added, report.unchanged, report.chunks) == (n, 0, 1) and report.failed == []
    assert report.empty == empty and report.ok  # listed, and the run did not fail for them
    assert pipe.get("empty.md").text == "" and pipe.get("e1").text == ""
    assert "empty 4 (indexed, no text):" in str(report) and "    empty.md: no text" in str(report)
    assert report.to_dict()["empty"][1] == {"path": "empty.md", "reason": "no text"}
    # Again: nothing is read (none.jsonl has nothing stored, so it is read: it is cheap) and the same
    # files are listed; a records file with no records counts nowhere but in the empty list.
    again = index_folder(pipe, root, sync=True)
    assert again.model_dump(include={"added", "updated", "unchanged", "removed"}) == {
        "added": 0,
        "updated": 0,
        "unchanged": n,
        "removed": 0,
    }
    assert again.empty == empty


def test_an_emptied_records_file_is_updated_not_unchanged(tmp_path):
    root = tmp_path / "docs"
    _records(root / "r.jsonl", ("a", "alpha"), ("b", "beta"))
    pipe = _pipe()
    index_folder(pipe, root)
    _write(root / "r.jsonl", "")
    report = index_folder(pipe, root, sync=True)
    assert (report.updated, report.unchanged, report.removed) == (1, 0, 2) and len(pipe) == 0
    assert report.empty == [EmptyFile("r.jsonl", "no records")]


def test_sync_keeps_the_files_of_a_folder_it_could_not_list(tmp_path, monkeypatch):
    root = tmp_path / "docs"
    _write(root / "a.md", "alpha")
    _write(root / "sub" / "b.md", "beta")
    pipe = _pipe()
    index_folder(pipe, root)
    import ragkit._walk

    real = os.scandir

    def scandir(path):
        if Path(path).name == "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(ragkit._walk.os, "scandir", scandir)
    report = index_folder(pipe, root, sync=True)
    assert report.failed == [
        FailedFile("sub", "PermissionError", "cannot list the folder: Permission denied")
    ]
    assert report.removed == 0 and pipe.get("sub/b.md") is not None


def test_bad_files_are_listed_and_the_run_goes_on(tmp_path, monkeypatch):
    root = tmp_path / "docs"
    _write(root / "good.md", "a good file")
    loader_files.write_truncated_pdf(root / "broken.pdf")
    loader_files.write_pdf(root / "locked.pdf", user_password="secret")
    _write(root / "bad.jsonl", '{"text": 1}\n')
    _write(root / "secret.txt", "no access")
    _write(root / "image.png", "not text")
    os.close(os.open(os.fsencode(root) + b"/latin1-\xe9.txt", os.O_CREAT | os.O_WRONLY))
    import ragkit.folder

    original = ragkit.folder._hash_file

    def refuse(path):  # root reads everything, so permission is denied by hand
        if path.name == "secret.txt":
            raise PermissionError(13, "Permission denied", str(path))
        return original(path)

    monkeypatch.setattr(ragkit.folder, "_hash_file", refuse)
    pipe = _pipe()
    report = index_folder(pipe, root)
    failed = {f.path: f.error for f in report.failed}
    assert failed == {
        "bad.jsonl": "CorruptFileError",
        "broken.pdf": "CorruptFileError",
        "latin1-\\xe9.txt": "InvalidInputError",
        "locked.pdf": "EncryptedFileError",
        "secret.txt": "PermissionError",
    }
    assert [f.message for f in report.failed if f.path == "secret.txt"] == ["Permission denied"]
    assert report.skipped == [SkippedFile("image.png", "unsupported format (.png)")]
    assert report.added == 1 and [d.id for d in pipe] == ["good.md"]
    # A file that fails keeps its old documents under sync (it is not gone).
    _write(root / "bad.jsonl", json.dumps({"id": "ok", "text": "fixed"}))
    index_folder(pipe, root)
    _write(root / "bad.jsonl", "{")
    report = index_folder(pipe, root, sync=True)
    assert report.removed == 0 and pipe.get("ok") is not None


def test_a_missing_loader_package_fails_those_files_and_names_the_extra(tmp_path, monkeypatch):
    import ragkit.loaders
    from ragkit.errors import MissingDependencyError

    root = tmp_path / "docs"
    _write(root / "a.md", "markdown needs nothing")
    loader_files.write_pdf(root / "b.pdf")
    original = ragkit.loaders.load_file

    def no_pdfium(path, **kwargs):
        if Path(path).suffix == ".pdf":
            raise MissingDependencyError("pypdfium2", extra="loaders", purpose="reading PDF files")
        return original(path, **kwargs)

    monkeypatch.setattr(ragkit.loaders, "load_file", no_pdfium)
    pipe = _pipe()
    report = index_folder(pipe, root)
    [failure] = report.failed
    assert failure.path == "b.pdf" and failure.error == "MissingDependencyError"
    assert "pip install 'ragkit[loaders]'" in failure.message
    assert [d.id for d in pipe] == ["a.md"]


def test_hidden_entries_and_an_index_inside_the_folder_are_skipped(tmp_path):
    root = tmp_path / "docs"
    _write(root / "a.md", "visible")
    _write(root / ".git" / "config.txt", "hidden folder")
    _write(root / ".DS_Store.txt", "hidden file")
    pipe = _pipe()
    index_folder(pipe, root)
    pipe.save(root / "idx")
    report = index_folder(pipe, root)  # the pipeline's own directory
    assert report.skipped == [
        SkippedFile(".DS_Store.txt", "hidden"),
        SkippedFile(".git", "hidden"),
        SkippedFile("idx", "a ragkit index directory"),
    ]
    other = _pipe()  # another pipeline: the manifest tells an index directory
    assert SkippedFile("idx", "a ragkit index directory") in index_folder(other, root).skipped
    assert [d.id for d in other] == ["a.md"]
    pipe.close()


def test_symlinks_out_of_the_folder_are_not_followed_unless_asked(tmp_path):
    root, outside = tmp_path / "docs", tmp_path / "outside"
    _write(root / "a.md", "inside")
    _write(outside / "secret.txt", "outside the folder")
    _write(outside / "more" / "deep.md", "outside, deeper")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside)
    (root / "same.md").symlink_to(root / "a.md")
    (root / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    (outside / "back").symlink_to(outside)  # a loop, once followed
    (root / "zlink").symlink_to(outside / "more")  # a second way into a folder walked already
    pipe = _pipe()
    report = index_folder(pipe, root)
    reasons = {s.path: s.reason for s in report.skipped}
    assert set(reasons) == {"link.txt", "linkdir", "same.md", "dangling.md", "zlink"}
    assert "outside the folder" in reasons["link.txt"] and "outside the folder" in reasons["linkdir"]
    assert "inside the folder" in reasons["same.md"] and "broken" in reasons["dangling.md"]
    assert [d.id for d in pipe] == ["a.md"]
    report = index_folder(pipe, root, follow_symlinks=True)
    assert {d.id for d in pipe} == {"a.md", "link.txt", "linkdir/more/deep.md"}
    reasons = {s.path: s.reason for s in report.skipped}
    assert set(reasons) == {"linkdir/back", "same.md", "dangling.md", "zlink", "linkdir/secret.txt"}
    assert "already walked" in reasons["linkdir/back"] and "already walked" in reasons["zlink"]
    # One file outside, two links to it: indexed once, at the first path in walk order.
    assert reasons["linkdir/secret.txt"] == "the same file as link.txt (another link)"
    # Without following, --sync removes what only following had brought in.
    assert index_folder(pipe, root, sync=True).removed == 2


def test_a_hash_in_a_file_name_never_mixes_with_chunk_ids(tmp_path):
    root = tmp_path / "docs"
    long_text = " ".join(f"apple{i} orchard" for i in range(40))  # several 200-character chunks
    _write(root / "a.md", long_text)
    _write(root / "a#1.md", "zebra stripes only here")
    _write(root / "a.md#1.md", "walrus whiskers only here")
    pipe = _pipe()
    index_folder(pipe, root)
    chunks = {d.id: pipe.backend.chunk_vids(d.id) for d in pipe}
    assert len(chunks["a.md"]) >= 2
    ids = [f"{doc}#{n}" for doc, spans in chunks.items() for n, _ in spans]
    assert len(ids) == len(set(ids))
    for query, doc_id in (("zebra stripes", "a#1.md"), ("walrus whiskers", "a.md#1.md"), ("apple3", "a.md")):
        hit = pipe.search(query, k=1, mode="lexical")[0]
        assert hit.doc_id == doc_id and hit.id.rsplit("#", 1)[0] == doc_id
        assert pipe.get(hit.doc_id).text[hit.start : hit.end] == hit.text
        [wide] = pipe.expand([hit], window=1)
        assert wide.text in pipe.get(doc_id).text
    (root / "a.md").unlink()
    index_folder(pipe, root, sync=True)
    assert {d.id for d in pipe} == {"a#1.md", "a.md#1.md"}
    assert pipe.search("zebra stripes", k=1, mode="lexical")[0].doc_id == "a#1.md"


def test_a_single_file_is_a_member_of_its_parent_folder(tmp_path):
    root = tmp_path / "docs"
    _write(root / "a.md", "alpha")
    _write(root / "b.md", "beta")
    pipe = _pipe()
    report = index_folder(pipe, root / "a.md")
    assert report.folder == str(root.resolve()) and [d.id for d in pipe] == ["a.md"]
    assert index_folder(pipe, root).unchanged == 1  # the folder later: the same document
    with pytest.raises(InvalidInputError, match="needs a folder"):
        index_folder(pipe, root / "a.md", sync=True)
    _write(root / "notes.xyz", "?")
    assert index_folder(pipe, root / "notes.xyz").failed[0].error == "UnsupportedFormatError"


def test_caller_mistakes_raise(tmp_path):
    with pytest.raises(InvalidInputError, match="no such file"):
        index_folder(_pipe(), tmp_path / "missing")
    with pytest.raises(InvalidInputError, match="takes a Pipeline"):
        index_folder(object(), tmp_path)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="batch_size"):
            index_folder(_pipe(), tmp_path, batch_size=bad)
    pipe = _pipe()
    pipe.save(tmp_path / "idx")
    pipe.close()
    with pytest.raises(InvalidInputError, match="is a saved ragkit index"):
        index_folder(_pipe(), tmp_path / "idx")
    reader = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), read_only=True)
    with pytest.raises(ReadOnlyError):
        index_folder(reader, tmp_path)
    reader.close()


def test_progress_bar_counts_files(tmp_path, capsys):
    root = tmp_path / "docs"
    for name in ("a.md", "b.md", "c.md"):
        _write(root / name, name)
    pipe = _pipe()
    index_folder(pipe, root, show_progress=True, batch_size=2)
    err = capsys.readouterr().err
    assert "ragkit index" in err and "3/3" in err and "4/3" not in err
    _write(root / "b.md", "b, edited again")  # one file read, two only hashed: still 3 in all
    index_folder(pipe, root, show_progress=True, batch_size=2)
    err = capsys.readouterr().err
    assert "3/3" in err and "4/3" not in err
    index_folder(pipe, root, show_progress=False)
    assert capsys.readouterr().err == ""


def test_report_shape_and_summary():
    report = FolderReport(
        folder="/d",
        added=1,
        skipped=[SkippedFile(f"{i}.png", "unsupported format (.png)") for i in range(7)],
        failed=[FailedFile("x.pdf", "CorruptFileError", "not a PDF")],
    )
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {
        "folder",
        "files",
        "added",
        "updated",
        "unchanged",
        "removed",
        "chunks",
        "embedded",
        "skipped",
        "failed",
        "empty",
        "warnings",
    }
    assert data["failed"] == [{"path": "x.pdf", "error": "CorruptFileError", "message": "not a PDF"}]
    text = str(report)
    assert "unsupported format (.png): 0.png, 1.png, 2.png, 3.png, 4.png, ... (2 more)" in text
    assert "x.pdf: CorruptFileError: not a PDF" in text and not report.ok


def test_search_finds_pdf_and_word_text_with_page_and_heading(every_format):
    pipe = _pipe()
    index_folder(pipe, every_format)
    pdf = pipe.search("cross-encoder reads the question", k=1, mode="lexical", filter={"file.format": "pdf"})
    word = pipe.search("Clone the repository", k=1, mode="lexical", filter={"file.format": "docx"})
    assert pdf[0].doc_id == "guide.pdf" and "cross-encoder" in pdf[0].text
    assert word[0].doc_id == "guide.docx" and "Clone the repository" in word[0].text
    if not pdf[0].location and not word[0].location:
        pytest.skip("chunks do not carry their location yet (the structure-aware chunker)")
    first, last = pdf[0].location.get("pages", [pdf[0].location["page"]] * 2)  # the text is on page 3
    assert pdf[0].location["page"] == first and first <= 3 <= last
    assert "From source" in str(word[0].location)


def test_sync_and_conflicts_on_every_backend(tmp_path, search_backend):
    root, other = tmp_path / "docs", tmp_path / "other"
    _write(root / "a.md", "alpha file")
    _write(root / "r.jsonl", "\n".join(json.dumps({"id": f"r{i}", "text": f"rec {i}"}) for i in range(2)))
    _write(other / "a.md", "another alpha")
    pipe = backend_pipeline(search_backend)
    try:
        assert index_folder(pipe, root).added == 2
        assert index_folder(pipe, other).failed[0].error == "IdConflict"
        assert index_folder(pipe, root).unchanged == 2
        _write(root / "r.jsonl", json.dumps({"id": "r1", "text": "rec 1"}))
        (root / "a.md").unlink()
        report = index_folder(pipe, root, sync=True)
        assert (report.updated, report.removed) == (1, 2) and [d.id for d in pipe] == ["r1"]
    finally:
        pipe.close()


class _PickyEmbedder(HashEmbedder):
    """Refuses any batch holding a text with "poison" in it (as a backend refuses a NUL, or a
    model a text too long), or fails as a server that is down, when ``down`` is set."""

    down = False

    def embed_documents(self, texts):
        from ragkit.errors import InputTooLongError, UnavailableError

        if self.down:
            raise UnavailableError("the embedding server did not answer")
        if any("poison" in t for t in texts):
            raise InputTooLongError("a text is longer than the model's max_length")
        return super().embed_documents(texts)


def test_one_file_the_pipeline_refuses_fails_alone_and_the_batch_goes_in(tmp_path):
    root = tmp_path / "docs"
    _write(root / "a.md", "# A\n\nfine file")
    _records(root / "r.jsonl", ("n1", "poison here"), ("n2", "fine record"))
    _write(root / "z.txt", "another fine file")
    pipe = Pipeline(_PickyEmbedder(), chunker=RecursiveChunker(200, 20))
    report = index_folder(pipe, root, batch_size=10)  # one batch of three files
    assert [(f.path, f.error) for f in report.failed] == [("r.jsonl", "InputTooLongError")]
    assert "max_length" in report.failed[0].message
    assert sorted(d.id for d in pipe) == ["a.md", "z.txt"] and report.added == 2
    # The failed file is read again next time (nothing of it was stored), the others are not.
    again = index_folder(pipe, root, sync=True)
    assert (again.unchanged, again.removed, [f.path for f in again.failed]) == (2, 0, ["r.jsonl"])


def test_an_error_of_the_pipeline_itself_still_stops_the_run(tmp_path):
    from ragkit.errors import UnavailableError

    root = tmp_path / "docs"
    _write(root / "a.md", "alpha")
    _write(root / "b.md", "beta")
    embedder = _PickyEmbedder()
    embedder.down = True
    pipe = Pipeline(embedder, chunker=RecursiveChunker(200, 20))
    with pytest.raises(UnavailableError):
        index_folder(pipe, root)
    assert len(pipe) == 0


def test_unchanged_records_files_cost_one_scan_not_one_per_file(tmp_path, monkeypatch):
    root = tmp_path / "docs"
    for i in range(30):
        _records(root / f"f{i:02}.jsonl", (f"r{i}", f"record {i}"))
    _write(root / "a.md", "a file")
    pipe = _pipe()
    index_folder(pipe, root)
    backend = pipe.backend
    scans = []
    real = backend.iter_documents

    def iter_documents():
        scans.append(1)
        return real()

    def count_matching(flt):
        raise AssertionError("count_matching is one scan per records file")

    monkeypatch.setattr(backend, "iter_documents", iter_documents)
    monkeypatch.setattr(backend, "count_matching", count_matching)
    report = index_folder(pipe, root)
    assert (report.unchanged, report.added, report.updated, report.embedded) == (31, 0, 0, 0)
    assert len(scans) == 1
    # A file with no records file in it needs no scan.
    (root / "only").mkdir()
    _write(root / "only" / "b.md", "b")
    index_folder(pipe, root / "only")
    assert len(scans) == 1


def test_a_file_not_utf8_is_indexed_and_warned_every_run(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "notes.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"))
    (root / "r.jsonl").write_bytes(b'{"id": "x", "text": "na\xefve"}\n')
    _write(root / "ok.md", "clean")
    pipe = _pipe()
    for _ in range(2):  # the second run reads nothing: the count is in the stored metadata
        report = index_folder(pipe, root)
        assert report.failed == [] and report.ok
        assert [(w.path, w.message.split(" read as")[0]) for w in report.warnings] == [
            ("notes.txt", "4 undecodable byte sequence(s)"),
            ("r.jsonl", "1 undecodable byte sequence(s)"),
        ]
        assert "  warnings 2:" in str(report) and "notes.txt: 4 undecodable" in str(report)
        assert report.to_dict()["warnings"][0]["path"] == "notes.txt"
    assert report.unchanged == 3 and isinstance(report.warnings[0], FileWarning)
    assert "\ufffd" in pipe.get("notes.txt").text
