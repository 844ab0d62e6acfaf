"""Saved pipelines on the local backend: atomic saves under SIGKILL, opening and locking, readers,
read-only filesystems, a full disk, damaged files, format 1 directories and untrusted manifests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import HashEmbedder

from ragkit import Document, Pipeline, RecursiveChunker
from ragkit.errors import (
    ConfigError,
    IndexMismatchError,
    IntegrityError,
    InvalidInputError,
    LockError,
    RagkitError,
    ReadOnlyError,
    StorageError,
)
from ragkit.persistence import FORMAT_VERSION

TESTS = Path(__file__).parent
STAGES = [
    "begin",
    "store-saved",
    "vectors-saved",
    "lexical-saved",
    "manifest-writing",
    "manifest-written",
    "committed",
    "cleaned",
]


def docs_a(n: int = 20) -> list[Document]:
    return [
        Document(id=f"a{i}", text=f"alpha document number {i} word{i} apple", metadata={"i": i})
        for i in range(n)
    ]


def docs_b(n: int = 15) -> list[Document]:
    return [
        Document(id=f"b{i}", text=f"beta text item {i} term{i} banana", metadata={"j": i}) for i in range(n)
    ]


def make(**kwargs) -> Pipeline:
    kwargs.setdefault("chunker", RecursiveChunker(200, 20))
    return Pipeline(HashEmbedder(), **kwargs)


def saved_a(path: Path) -> Path:
    pipe = make()
    pipe.add(docs_a())
    pipe.save(path)
    pipe.close()
    return path


def check_consistent(pipe: Pipeline) -> set[str]:
    """The documents a pipeline holds, after checking that its vectors, texts and BM25 agree.

    A store paired with another save's vectors would give scores that do not match the texts.
    """
    emb = HashEmbedder()
    docs = list(pipe)
    for doc in docs[:6]:
        hits = pipe.search(doc.text, k=3)
        assert hits[0].doc_id == doc.id
        for hit in hits:
            expected = float(emb.embed_queries([doc.text])[0] @ emb.embed_documents([hit.text])[0])
            assert hit.score == pytest.approx(expected, abs=1e-5)
            assert hit.text == pipe.get(hit.doc_id).text[hit.start : hit.end]
        words = doc.text.split()
        if len(words) > 4:  # docs_a / docs_b: word<i> / term<i> is in this document only
            assert pipe.search(words[4], k=1, mode="lexical")[0].doc_id == doc.id
    assert len(pipe.backend.index) == pipe.backend.count_chunks()  # caught up after a search
    return {d.id for d in docs}


_CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from conftest import HashEmbedder
from test_persistence import docs_a, docs_b, make
from ragkit import Pipeline, persistence
path, kind, stage = sys.argv[1:4]
if kind == "own":
    pipe = Pipeline.load(path, embedder=HashEmbedder())
    pipe.add(docs_b(10))
    pipe.delete(["a0"])
else:
    pipe = make()
    pipe.add(docs_b())
def hook(s):
    if s == stage:
        os.kill(os.getpid(), signal.SIGKILL)
persistence.save_hook = hook
pipe.save(path)
print("SAVED")
"""


def run_child(code: str, *args: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(code.format(tests=str(TESTS)))
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120, cwd=TESTS
    )


@pytest.mark.parametrize("kind", ["new", "own", "other"])
def test_save_killed_at_any_stage_leaves_the_old_save_or_the_new_one(tmp_path, kind):
    old = {d.id for d in docs_a()}
    new = {
        "new": {d.id for d in docs_b()},
        "other": {d.id for d in docs_b()},
        "own": (old - {"a0"}) | {d.id for d in docs_b(10)},
    }[kind]
    for stage in STAGES:
        path = tmp_path / stage
        if kind != "new":
            saved_a(path)
        reader = Pipeline.load(path, embedder=HashEmbedder(), read_only=True) if kind == "other" else None
        proc = run_child(_CHILD, str(path), kind, stage)
        assert proc.returncode == -signal.SIGKILL, (stage, proc.stdout, proc.stderr)
        if kind == "new" and not (path / "manifest.json").exists():
            # Nothing was committed: the directory is no pipeline at all, and says so.
            with pytest.raises(IntegrityError, match="no manifest"):
                Pipeline.load(path, embedder=HashEmbedder())
            continue
        pipe = Pipeline.load(path, embedder=HashEmbedder(), read_only=True)
        held = check_consistent(pipe)
        # On its own directory the store is live: the committed adds are there whatever the save did.
        assert held == new if kind == "own" else held in (old, new), (stage, sorted(held))
        if stage in ("committed", "cleaned"):
            assert held == new, stage
        pipe.close()
        if reader is not None:  # a reader opened before the save sees one whole state after reload()
            reader.reload()
            assert check_consistent(reader) in (old, new)
            reader.close()
        # and the next save (by a new writer) works and cleans up what the killed one left
        writer = Pipeline.load(path, embedder=HashEmbedder())
        writer.add(Document(id="after", text="written after the crash zebra"))
        writer.save()
        writer.close()
        names = sorted(p.name for p in path.iterdir())
        assert not [n for n in names if n.endswith(".tmp")], names
        assert len([n for n in names if n.startswith("store")]) == 1, names
        assert len([n for n in names if n.startswith("vectors-") and n.endswith(".faiss")]) == 1, names


def test_save_without_a_kill_runs_the_whole_harness(tmp_path):
    path = saved_a(tmp_path / "idx")
    proc = run_child(_CHILD, str(path), "other", "never")
    assert proc.returncode == 0 and "SAVED" in proc.stdout, proc.stderr
    pipe = Pipeline.load(path, embedder=HashEmbedder())
    assert check_consistent(pipe) == {d.id for d in docs_b()}


# --------------------------------------------------------------------------------------- opening


def test_save_then_load_in_one_process_and_reloading_a_notebook_cell(tmp_path):
    pipe = make()
    pipe.add(docs_a())
    pipe.save(tmp_path / "idx")
    loaded = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder())  # pipe still open: no LockError
    assert check_consistent(loaded) == {d.id for d in docs_a()}
    with pytest.raises(LockError, match="this process"):
        loaded.add("a second writer in this process is refused at its first write")
    assert len(pipe) == 20  # and nothing of the first writer is lost
    pipe.add("the first writer still writes")
    pipe.save()
    pipe.close()
    # Re-running `pipe = Pipeline.load(d)` in a notebook: the old object goes away, the new one writes.
    cell = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder())
    cell.add("written by the first run of the cell")
    cell = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder())  # the previous object is garbage now
    cell.add("written by the second run of the cell")
    cell.save()
    assert len(cell) == 23
    cell.close()


def test_many_processes_load_with_default_arguments_and_search(tmp_path):
    path = saved_a(tmp_path / "idx")
    writer = Pipeline.load(path, embedder=HashEmbedder())
    writer.add("the writer holds the lock now")  # first write: lock taken
    code = """
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import HashEmbedder
    from ragkit import Pipeline
    from ragkit.errors import LockError
    pipe = Pipeline.load(sys.argv[1], embedder=HashEmbedder())
    print("FOUND", pipe.search("alpha document number 7 word7 apple", k=1)[0].doc_id)
    try:
        pipe.add("a second writer")
    except LockError as e:
        print("LOCKED", e)
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code.format(tests=str(TESTS))), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert "FOUND a7" in out, err
        assert f"LOCKED another process (pid {os.getpid()})" in out, out
    writer.close()


_KILLED_DELETE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from conftest import HashEmbedder
from ragkit import Pipeline
pipe = Pipeline.load(sys.argv[1], embedder=HashEmbedder())
store = pipe.backend._store
store.enable_writes()
real = store._writer
class Killing:  # the writer connection, killing the process at the second batch of deletes
    deletes = 0
    def execute(self, sql, *args):
        if sql.startswith("DELETE FROM documents"):
            Killing.deletes += 1
            if Killing.deletes == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        return real.execute(sql, *args)
    def __getattr__(self, name):
        return getattr(real, name)
store._writer = Killing()
pipe.delete(filter={{"$nor": [{{"i": 3}}, {{"i": 5}}]}})
print("DELETED")
"""


def test_a_delete_by_filter_killed_mid_transaction_deletes_nothing(tmp_path):
    path = tmp_path / "idx"
    pipe = make()
    docs = [
        Document(id=f"a{i}", text=f"alpha document number {i} word{i} apple", metadata={"i": i})
        for i in range(700)
    ]
    pipe.add(docs)
    pipe.save(path)
    pipe.close()
    proc = run_child(_KILLED_DELETE, str(path))
    assert proc.returncode == -signal.SIGKILL, (proc.stdout, proc.stderr)
    assert "DELETED" not in proc.stdout
    again = Pipeline.load(path, embedder=HashEmbedder())
    # all 700 are back, the first 500 deletes rolled back, and the derived indexes agree
    assert {d.id for d in again} == {d.id for d in docs} and again.backend.count_chunks() == 700
    assert again.search("word612", k=1, mode="lexical")[0].doc_id == "a612"
    assert len(again.backend.index) == 700
    assert again.delete(filter={"$nor": [{"i": 3}, {"i": 5}]}) == 698
    assert {d.id for d in again} == {"a3", "a5"} and len(again.backend.index) == 2
    again.close()


def test_read_only_refuses_every_write(tmp_path):
    path = saved_a(tmp_path / "idx")
    reader = Pipeline.load(path, embedder=HashEmbedder(), read_only=True)
    for call in (
        lambda p: p.add("x"),
        lambda p: p.delete("a1"),
        lambda p: p.delete(filter={"i": 1}),
        lambda p: p.backend.delete_matching({"i": 1}),
        lambda p: p.update_metadata("a1", {}),
        lambda p: p.save(),
        lambda p: p.save(tmp_path / "elsewhere"),
        lambda p: p.reindex(HashEmbedder(dim=32)),
    ):
        with pytest.raises(ReadOnlyError):
            call(reader)
    assert check_consistent(reader) == {d.id for d in docs_a()}


def test_reader_reload_sees_saves_and_refuses_another_embedder(tmp_path):
    path = saved_a(tmp_path / "idx")
    reader = Pipeline.load(path, embedder=HashEmbedder(), read_only=True)
    writer = Pipeline.load(path, embedder=HashEmbedder())
    writer.add(Document(id="fresh", text="written by the writer zebra"))
    writer.save()
    reader.reload()
    assert reader.search("written by the writer zebra", k=1)[0].doc_id == "fresh"
    writer.close()
    other = Pipeline(HashEmbedder(dim=32, name="other"), chunker=RecursiveChunker(200, 20))
    other.add(docs_b())
    other.save(path)  # another embedder's pipeline saved over the directory
    other.close()
    with pytest.raises(IndexMismatchError):
        reader.reload()
    assert check_consistent(reader) == {d.id for d in docs_a()} | {"fresh"}  # still the old data


def test_a_writer_whose_directory_was_saved_over_must_load_again(tmp_path):
    path = saved_a(tmp_path / "idx")
    stale = Pipeline.load(path, embedder=HashEmbedder())  # loaded, never wrote: holds no lock
    other = make()
    other.add(docs_b())
    other.save(path)
    other.close()
    with pytest.raises(IntegrityError, match="saved over"):
        stale.add("would go to a store no manifest names")
    stale.close()


@pytest.fixture
def ro_mount(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    dst.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(src), str(dst)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"a read-only bind mount needs mount(8) and CAP_SYS_ADMIN, not permitted here: {e}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(dst)], check=True, capture_output=True)
        yield src, dst
    finally:
        subprocess.run(["umount", "-l", str(dst)], check=False, capture_output=True)


def test_read_only_works_on_a_read_only_filesystem(ro_mount):
    src, dst = ro_mount
    saved_a(src / "idx")
    with pytest.raises(OSError):
        (dst / "probe").write_text("x")  # the mount really is read-only
    reader = Pipeline.load(dst / "idx", embedder=HashEmbedder(), read_only=True)
    assert check_consistent(reader) == {d.id for d in docs_a()}
    reader.close()
    # A writer that keeps committing after its save leaves a live WAL: readers still open it.
    writer = Pipeline.load(src / "idx", embedder=HashEmbedder())
    writer.add(Document(id="late", text="committed after the save zebra"))
    reader = Pipeline.load(dst / "idx", embedder=HashEmbedder(), read_only=True)
    assert {d.id for d in docs_a()} <= {d.id for d in reader}
    assert reader.search("alpha document number 3 word3 apple", k=1)[0].doc_id == "a3"
    reader.close()
    writer.close()
    # A default (writable) load on the read-only mount searches too, and a write says why it fails.
    pipe = Pipeline.load(dst / "idx", embedder=HashEmbedder())
    assert pipe.search("alpha document number 3 word3 apple", k=1)[0].doc_id == "a3"
    with pytest.raises(RagkitError):
        pipe.add("cannot be written here")
    pipe.close()


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"a small tmpfs needs mount(8) and CAP_SYS_ADMIN, not permitted here: {e}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def test_a_full_disk_raises_a_ragkit_error_and_the_directory_stays_loadable(small_disk):
    path = saved_a(small_disk / "idx")
    big = [Document(id=f"big{i}", text=f"filler text {i} " * 40) for i in range(600)]
    # A save over it from elsewhere runs out of space: StorageError, the old save intact, no debris.
    other = make()
    other.add(big)
    with pytest.raises(StorageError, match="full"):
        other.save(path)
    other.close()
    assert not [
        p.name for p in path.iterdir() if "tmp" in p.name or p.name.count("-") > 1 and "big" in p.name
    ]
    assert check_consistent(Pipeline.load(path, embedder=HashEmbedder(), read_only=True)) == {
        d.id for d in docs_a()
    }
    # Its own writer fills the disk while adding and saving: a ragkit error, and a loadable directory.
    writer = Pipeline.load(path, embedder=HashEmbedder())
    with pytest.raises(StorageError):
        for start in range(0, len(big), 100):
            writer.add(big[start : start + 100])
            writer.save()
    writer.close()
    pipe = Pipeline.load(path, embedder=HashEmbedder(), read_only=True)
    assert {d.id for d in docs_a()} <= check_consistent(pipe)


# ------------------------------------------------------------------------------------ validation


class ZeroEmbedder(HashEmbedder):
    """Returns a zero vector for texts holding "void" (as a broken remote server might)."""

    def _embed(self, texts):
        out = super()._embed(texts)
        out[["void" in t for t in texts]] = 0.0
        return out


def test_a_zero_vector_is_refused_before_anything_is_written(tmp_path):
    pipe = Pipeline(ZeroEmbedder(), chunker=RecursiveChunker(200, 20))
    pipe.add(docs_a(5))
    pipe.add(Document(id="m", text="metadata will change", metadata={"v": 1}))
    with pytest.raises(InvalidInputError, match="zero") as err:
        pipe.add([Document(id="m", text="metadata will change", metadata={"v": 2}), "a void text"])
    assert "#0" in str(err.value)  # names the item
    assert pipe.get("m").metadata == {"v": 1} and len(pipe) == 6  # nothing of the batch, metadata included
    with pytest.raises(InvalidInputError, match="zero"):
        pipe.search("void query")
    assert not pipe._query_cache  # the failed query vector was not cached
    assert check_consistent(pipe) == {d.id for d in docs_a(5)} | {"m"}  # still usable
    pipe.save(tmp_path / "idx")
    pipe.close()
    assert len(Pipeline.load(tmp_path / "idx", embedder=ZeroEmbedder(), read_only=True)) == 6


@pytest.mark.parametrize(
    "bad",
    [
        lambda v: v[:, :-1],  # wrong dimension
        lambda v: v.astype(np.complex64),
        lambda v: np.where(v > 0, np.inf, v),
        lambda v: v.astype(str),
        lambda v: v[:-1],  # one vector short
    ],
)
def test_every_kind_of_bad_vector_is_an_invalid_input_error(bad):
    class Bad(HashEmbedder):
        def embed_documents(self, texts):
            return bad(super().embed_documents(texts))

    pipe = Pipeline(Bad(), chunker=RecursiveChunker(200, 20))
    with pytest.raises(InvalidInputError):
        pipe.add(docs_a(3))
    assert len(pipe) == 0 and pipe.backend.count_chunks() == 0


def test_empty_text_is_valid_and_needs_no_vector(tmp_path):
    pipe = Pipeline(ZeroEmbedder(), chunker=RecursiveChunker(200, 20))
    pipe.add(Document(id="empty", text=""))
    assert len(pipe) == 1 and pipe.backend.count_chunks() == 0


@pytest.mark.parametrize(
    "item",
    [
        {"id": "x", "text": "t", "metadata": {"big": 2**64}},
        {"id": "x", "text": "t", "metadata": {"s": "\ud800"}},
        {"id": "x", "text": "t", "metadata": {"when": object()}},
        {"id": "x", "text": "t", "metadata": {"nan": float("nan")}},
        {"id": "x", "text": "lone \udfff surrogate"},
        {"id": "\ud800", "text": "t"},
    ],
)
def test_bad_documents_are_ragkit_errors_and_write_nothing(item):
    pipe = make()
    pipe.add(docs_a(3))
    with pytest.raises(InvalidInputError):
        pipe.add([Document(id="ok", text="a good document"), item])
    assert len(pipe) == 3


def test_awkward_searches_are_ragkit_errors_or_work():
    pipe = make()
    pipe.add(docs_a())
    many = list(range(100_000)) + [7]
    assert {h.doc_id for h in pipe.search("alpha", k=50, filter={"i": {"$in": many}})} == {
        d.id for d in docs_a()
    }
    assert len(pipe.search("alpha", k=10**9)) == 20  # costs what the collection costs
    assert len(pipe.search("alpha", k=10**9, mode="hybrid", candidates=10**9)) == 20
    for bad in ({"i": 2**64}, {"i": "\ud800"}, {"\ud800": 1}):
        with pytest.raises(InvalidInputError):
            pipe.search("alpha", filter=bad)
    with pytest.raises(InvalidInputError):
        pipe.search("lone \ud800")


# ------------------------------------------------------------------------------- damaged files


def manifest_of(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_a_corrupt_derived_file_is_rebuilt_with_a_warning(tmp_path, caplog):
    path = saved_a(tmp_path / "idx")
    m = manifest_of(path)
    for name in (m["backend"]["vectors"], f"{m['backend']['lexical']}/ids.npy"):
        data = bytearray((path / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (path / name).write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="ragkit"):
        pipe = Pipeline.load(path, embedder=HashEmbedder(), read_only=True)
    assert caplog.text.count("fails its checksum") == 2
    assert check_consistent(pipe) == {d.id for d in docs_a()}


def test_a_missing_derived_file_is_rebuilt(tmp_path, caplog):
    path = saved_a(tmp_path / "idx")
    m = manifest_of(path)
    for name in m["files"]:
        (path / name).unlink()
    with caplog.at_level("WARNING", logger="ragkit"):
        pipe = Pipeline.load(path, embedder=HashEmbedder())
    assert "missing" in caplog.text
    assert check_consistent(pipe) == {d.id for d in docs_a()}


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.pop("counts"),
        lambda m: m.pop("backend"),
        lambda m: m.pop("generation"),
        lambda m: m.update(counts={"documents": "many", "chunks": 1}),
        lambda m: m.update(generation=-1),
        lambda m: m["backend"].update(store="../../etc/passwd"),
        lambda m: m["backend"].update(kind="elsewhere"),
        lambda m: m["backend"].update(index={"kind": "quantum"}),
        lambda m: m.update(format_version=99),
        lambda m: m.update(files={"x": {"sha256": "nope", "size": 1}}),
        lambda m: m["counts"].update(chunks=m["counts"]["chunks"] + 1),
        lambda m: m.update(generation=m["generation"] + 5),
    ],
)
def test_an_edited_manifest_fails_loudly_as_an_integrity_error(tmp_path, edit):
    path = saved_a(tmp_path / "idx")
    m = manifest_of(path)
    edit(m)
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IntegrityError):
        Pipeline.load(path, embedder=HashEmbedder())


def test_a_damaged_store_fails_loudly(tmp_path):
    path = saved_a(tmp_path / "idx")
    store = path / manifest_of(path)["backend"]["store"]
    store.write_bytes(store.read_bytes()[:1000])
    with pytest.raises(IntegrityError):
        Pipeline.load(path, embedder=HashEmbedder())
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(IntegrityError):
        Pipeline.load(path, embedder=HashEmbedder())


# ---------------------------------------------------------------------------------- format 1


def test_a_format_1_directory_loads_and_the_next_save_writes_the_current_format(tmp_path):
    path = tmp_path / "v1"
    shutil.copytree(TESTS / "data" / "index-format-1", path)
    pipe = Pipeline.load(path, embedder=HashEmbedder())  # its embedder entry names tests' class: passed
    assert len(pipe) == 12
    assert pipe.search("version one document 5 about topic2 alpha", k=1)[0].doc_id == "d5"
    assert pipe.search("topic1", k=10, mode="lexical", filter={"group": 1})[0].metadata["group"] == 1
    assert pipe.chunker.spec() == {"chunk_size": 200, "overlap": 20, "unit": "characters"}
    pipe.add(Document(id="new", text="added under format two zebra"))
    pipe.save()
    pipe.close()
    m = manifest_of(path)
    assert m["format_version"] == FORMAT_VERSION and m["counts"] == {"documents": 13, "chunks": 13}
    again = Pipeline.load(path, embedder=HashEmbedder(), read_only=True)
    assert again.search("added under format two zebra", k=1)[0].doc_id == "new"
    assert len(again) == 13


# ------------------------------------------------------------------------------ untrusted input


def test_a_manifest_cannot_make_load_run_code(tmp_path, monkeypatch):
    import ragkit.cli

    ran = []
    monkeypatch.setattr(ragkit.cli, "main", lambda *a, **k: ran.append(a))
    path = saved_a(tmp_path / "idx")
    m = manifest_of(path)
    m["chunker"] = {"class": "ragkit.cli.main", "spec": {"argv": ["demo"]}}
    m["reranker"] = {"class": "os.system", "spec": {"command": "touch /tmp/pwned"}}
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError):
        Pipeline.load(path, embedder=HashEmbedder(), read_only=True)
    pipe = Pipeline.load(path, embedder=HashEmbedder(), reranker=False, read_only=True)
    assert not ran and isinstance(pipe.chunker, RecursiveChunker)


def test_a_manifest_cannot_send_an_environment_key_to_its_own_host(tmp_path, monkeypatch):
    from fake_api import FakeAPI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    with FakeAPI() as api:
        path = saved_a(tmp_path / "idx")
        m = manifest_of(path)
        m["embedder"] = {
            "class": "ragkit.embedders.remote.OpenAIEmbedder",
            "spec": {
                "model": "text-embedding-3-small",
                "provider": "openai",
                "base_url": api.url + "/v1",
                "dim": 64,
            },
        }
        (path / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(ConfigError, match="trust_hosts"):
            Pipeline.load(path, read_only=True)
        assert not api.requests


def test_no_credential_reaches_the_manifest(tmp_path):
    from ragkit.embedders import OpenAIEmbedder

    emb = OpenAIEmbedder(
        "text-embedding-3-small",
        api_key="sk-very-secret",
        base_url="http://user:hunter2@127.0.0.1:9/v1?api-key=querysecret",
        dim=64,
    )
    pipe = Pipeline(emb, chunker=RecursiveChunker(200, 20))
    pipe.save(tmp_path / "idx")
    text = "".join(p.read_text(errors="replace") for p in (tmp_path / "idx").rglob("*.json"))
    text += repr(pipe) + repr(emb) + json.dumps(emb.spec())
    for secret in ("sk-very-secret", "hunter2", "querysecret"):
        assert secret not in text
    pipe.close()


# ------------------------------------------------------------------- concurrency (review findings)


def test_an_add_during_a_save_to_a_new_directory_is_not_lost(tmp_path):
    import threading

    from ragkit import persistence

    pipe = make()
    pipe.add(docs_a())
    late = threading.Thread(target=lambda: pipe.add(Document(id="late", text="added while saving zebra")))

    def hook(stage):
        if stage == "vectors-saved" and not late.is_alive() and late.ident is None:
            late.start()  # blocks on the backend's write lock until the save has moved the store

    persistence.save_hook = hook
    try:
        pipe.save(tmp_path / "idx")
    finally:
        persistence.save_hook = None
    late.join(timeout=60)
    assert pipe.get("late") is not None
    assert check_consistent(pipe) == {d.id for d in docs_a()} | {"late"}
    pipe.save()
    pipe.close()
    assert Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), read_only=True).get("late") is not None


def test_searches_survive_reloads_first_writes_and_moves_in_other_threads(tmp_path):
    # In a child process: a crash (closing a connection another thread is using) would kill pytest.
    code = """
    import sys, threading
    sys.path.insert(0, {tests!r})
    from conftest import HashEmbedder
    from test_persistence import docs_a, make
    from ragkit import Document, Pipeline
    root = sys.argv[1]
    seed = make(); seed.add(docs_a()); seed.save(root + "/idx"); seed.close()
    pipe = Pipeline.load(root + "/idx", embedder=HashEmbedder())
    stop, errors = threading.Event(), []
    def search():
        while not stop.is_set():
            try:
                assert len(pipe.search("alpha document apple", k=5)) == 5
            except Exception as e:
                errors.append(repr(e))
    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads: t.start()
    for i in range(15):
        pipe.reload()
    pipe.add(Document(id="w", text="first write takes the lock"))
    for i in range(4):
        pipe.save(root + f"/moved{{i}}")
        pipe.add(Document(id=f"m{{i}}", text=f"written after move {{i}}"))
    stop.set()
    for t in threads: t.join()
    print("ERRORS", errors[:3], "LEN", len(pipe))
    """
    proc = run_child(code, str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ERRORS [] LEN 25" in proc.stdout, proc.stdout


def test_two_threads_saving_at_once_leave_a_complete_directory(tmp_path, caplog):
    import threading

    pipe = make()
    pipe.add(docs_a())
    pipe.save(tmp_path / "idx")
    errors = []

    def save(i):
        try:
            pipe.add(Document(id=f"s{i}", text=f"saved by thread {i}"))
            pipe.save()
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    pipe.close()
    with caplog.at_level("WARNING", logger="ragkit"):
        loaded = Pipeline.load(tmp_path / "idx", embedder=HashEmbedder(), read_only=True)
    assert "missing" not in caplog.text and "checksum" not in caplog.text
    assert {f"s{i}" for i in range(4)} <= {d.id for d in loaded}


def test_a_reindex_committed_after_the_last_save_loads_with_the_new_embedder(tmp_path):
    path = saved_a(tmp_path / "idx")
    pipe = Pipeline.load(path, embedder=HashEmbedder())
    new = HashEmbedder(dim=32, name="other")  # another size too: the loaded index must follow
    pipe.reindex(new)
    assert pipe.search("alpha document number 3 word3 apple", k=1)[0].doc_id == "a3"
    pipe.close()  # no save: the store is ahead of the manifest
    with pytest.raises(IndexMismatchError):
        Pipeline.load(path, embedder=HashEmbedder())
    again = Pipeline.load(path, embedder=HashEmbedder(dim=32, name="other"))
    assert again.search("alpha document number 3 word3 apple", k=1)[0].doc_id == "a3"
    again.close()


def test_a_reader_thread_started_after_a_save_over_is_told_to_reload(tmp_path):
    import threading

    path = saved_a(tmp_path / "idx")
    reader = Pipeline.load(path, embedder=HashEmbedder(), read_only=True)
    other = make()
    other.add(docs_b())
    other.save(path)
    other.close()
    outcome = []

    def search():
        try:
            outcome.append(reader.search("beta text item 2 term2 banana", k=1)[0].doc_id)
        except IntegrityError as e:
            outcome.append(str(e))

    t = threading.Thread(target=search)
    t.start()
    t.join()
    assert "reload" in outcome[0]  # never an empty store created where the old one was
    reader.reload()
    t = threading.Thread(target=search)
    t.start()
    t.join()
    assert outcome[1] == "b2"


def test_user_files_beside_an_index_are_never_removed(tmp_path):
    path = tmp_path / "idx"
    path.mkdir()
    mine = ["vectors-notes.md", "store.sqlite", ".env.tmp", "notes.txt", "lexical-analysis/nb.ipynb"]
    for name in mine:
        (path / name).parent.mkdir(exist_ok=True)
        (path / name).write_text("the user's")
    pipe = make()
    pipe.add(docs_a())
    pipe.save(path)
    pipe.add(Document(id="x", text="second save"))
    pipe.save()
    pipe.close()
    assert all((path / name).read_text() == "the user's" for name in mine)


def test_a_relative_path_survives_a_change_of_directory(tmp_path, monkeypatch):
    import threading

    monkeypatch.chdir(tmp_path)
    pipe = make()
    pipe.add(docs_a())
    pipe.save("idx")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    pipe.add(Document(id="x", text="after a chdir zebra"))
    found = []
    t = threading.Thread(target=lambda: found.append(pipe.search("after a chdir zebra", k=1)[0].doc_id))
    t.start()
    t.join()
    assert found == ["x"] and pipe.save() == tmp_path / "idx"
    pipe.close()


def test_manifest_file_names_cannot_leave_the_directory(tmp_path):
    path = saved_a(tmp_path / "idx")
    m = manifest_of(path)
    lexical = m["backend"]["lexical"]
    for key in (f"{lexical}/../../../../etc/hostname", "/etc/hostname", f"{lexical}/../manifest.json"):
        edited = {**m, "files": {**m["files"], key: {"sha256": "0" * 64, "size": 0}}}
        (path / "manifest.json").write_text(json.dumps(edited))
        with pytest.raises(IntegrityError, match="not a file name"):
            Pipeline.load(path, embedder=HashEmbedder())
    # A device or FIFO where a derived file should be is never read (a load would hang on it).
    victim = path / m["backend"]["vectors"]
    m["files"][m["backend"]["vectors"]]["size"] = 0  # as an empty FIFO's size: only its type tells
    (path / "manifest.json").write_text(json.dumps(m))
    victim.unlink()
    os.mkfifo(victim)
    pipe = Pipeline.load(path, embedder=HashEmbedder(), read_only=True)
    assert check_consistent(pipe) == {d.id for d in docs_a()}


def test_an_upsert_refuses_vectors_that_are_not_real_numbers():
    from ragkit.backends.base import Upsert
    from ragkit.types import Chunk

    chunk = Chunk(id="a#0", doc_id="a", text="hi", start=0, end=2)
    for bad in (np.ones((1, 4), np.complex64), np.array([["x", "y"]])):
        with pytest.raises(InvalidInputError, match="real numbers"):
            Upsert(Document(id="a", text="hi"), (chunk,), bad)


def test_a_document_may_hold_a_lone_surrogate_but_add_refuses_it():
    doc = Document(text="lone \ud800")  # constructing it is no error (its id is still defined)
    with pytest.raises(InvalidInputError, match="surrogate"):
        make().add(doc)


def test_readers_loading_while_a_writer_saves_never_get_a_false_error(tmp_path):
    # A reader in another process loads again and again while this process saves over and over
    # (each save replaces the derived files and removes the previous ones).
    path = saved_a(tmp_path / "idx")
    code = """
    import sys, time
    sys.path.insert(0, {tests!r})
    from conftest import HashEmbedder
    from ragkit import Pipeline
    loads, deadline = 0, time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        p = Pipeline.load(sys.argv[1], embedder=HashEmbedder(), read_only=True)
        assert p.search("alpha document number 3 word3 apple", k=1)[0].doc_id == "a3"
        p.close()
        loads += 1
    print("LOADS", loads)
    """
    reader = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code.format(tests=str(TESTS))), str(path), "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=TESTS,
    )
    writer = Pipeline.load(path, embedder=HashEmbedder())
    i = 0
    while reader.poll() is None:
        writer.add(Document(id=f"w{i}", text=f"saved while readers load {i}"))
        writer.save()
        i += 1
    out, err = reader.communicate()
    writer.close()
    assert reader.returncode == 0, err[-2000:]
    assert int(out.split()[-1]) > 0 and i > 3, (out, i)
