"""Test collections for retrieval evaluation: one type, :class:`RetrievalDataset`, from three layouts.

- BEIR folders (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``): :func:`load_beir`;
- BEIR/MTEB datasets on the Hugging Face hub, or a local copy of such a repository: :func:`load_hf_beir`;
- classic SMART collections such as CISI (``.I``/``.T``/``.W`` records): :func:`load_smart`;

and :func:`load_dataset` picks the right one. :mod:`ragkit.evaluation` scores pipelines on them.

Example:
    >>> ds = load_dataset("data/cisi")  # doctest: +SKIP
    >>> load_dataset("./no-such-dir")
    Traceback (most recent call last):
    ...
    ragkit.errors.ConfigError: ./no-such-dir: no such directory (give a BEIR folder, a SMART collection such as CISI, or a hub id such as BeIR/scifact)
"""  # noqa: E501

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, model_validator

from ragkit.errors import ConfigError, InputTypeError
from ragkit.types import Document

__all__ = ["RetrievalDataset", "load_beir", "load_dataset", "load_hf_beir", "load_smart"]

logger = logging.getLogger("ragkit")


class RetrievalDataset(BaseModel):
    """A test collection: documents, queries and relevance judgements (qrels).

    Attributes:
        name: a short label for reports ("cisi", "scifact").
        corpus: the documents to index.
        queries: query id → query text.
        qrels: query id → document id → graded relevance (``> 0`` is relevant).

    Example:
        >>> ds = RetrievalDataset(
        ...     name="toy",
        ...     corpus=[Document(id="d1", text="Paris is in France.")],
        ...     queries={"q1": "Where is Paris?"},
        ...     qrels={"q1": {"d1": 1}},
        ... )
        >>> ds
        RetrievalDataset(name='toy', documents=1, queries=1, judgements=1)
    """

    name: str
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    @model_validator(mode="after")
    def _consistent(self) -> RetrievalDataset:
        missing = [q for q in self.qrels if q not in self.queries]
        if missing:
            raise ValueError(f"qrels name {len(missing)} queries that are not in queries, e.g. {missing[:3]}")
        return self

    def __repr__(self) -> str:
        judgements = sum(len(j) for j in self.qrels.values())
        return (
            f"RetrievalDataset(name={self.name!r}, documents={len(self.corpus)}, "
            f"queries={len(self.queries)}, judgements={judgements})"
        )

    __str__ = __repr__


def load_beir(path: str | Path, *, split: str = "test", title_in_text: bool = True) -> RetrievalDataset:
    """Load a BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/{split}.tsv``.

    Document text is the title and the text separated by a blank line (the text alone when the title
    is empty, or with ``title_in_text=False``); the title and any ``metadata`` object are kept in
    ``Document.metadata``. Only queries that have judgements in ``split`` are kept. ``.jsonl.gz``
    files are read too.

    Raises:
        FileNotFoundError: a file is missing.
        ConfigError: a line or a row is malformed.

    Example:
        >>> ds = load_beir("datasets/scifact", split="test")  # doctest: +SKIP
    """
    root = Path(path)
    corpus_file = _first_existing(root, ["corpus.jsonl", "corpus.jsonl.gz"])
    queries_file = _first_existing(root, ["queries.jsonl", "queries.jsonl.gz"])
    qrels_file = root / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        raise FileNotFoundError(f"no qrels for split {split!r}: {qrels_file} does not exist")

    corpus = [_beir_document(row, title_in_text) for row in _read_jsonl(corpus_file)]
    all_queries = {str(row["_id"]): str(row["text"]) for row in _read_jsonl(queries_file)}
    qrels: dict[str, dict[str, int]] = {}
    with open(qrels_file, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if len(header) < 3:
            raise ConfigError(f"{qrels_file}: expected a header 'query-id<TAB>corpus-id<TAB>score'")
        for n, line in enumerate(f, start=2):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            try:
                qrels.setdefault(parts[0], {})[parts[1]] = int(float(parts[2]))
            except (IndexError, ValueError) as e:
                raise ConfigError(f"{qrels_file}:{n}: malformed qrels row {line!r}") from e
    return _assemble(root.name or "beir", corpus, all_queries, qrels)


def load_hf_beir(
    name_or_path: str,
    *,
    split: str = "test",
    qrels: str | None = None,
    revision: str | None = None,
    title_in_text: bool = True,
) -> RetrievalDataset:
    """Load a BEIR-format dataset with 🤗 ``datasets``: from the hub, or a local copy of such a repository.

    The layout is the one of ``BeIR/<name>`` and ``mteb/<name>``: configs ``corpus`` and ``queries``
    in ``name_or_path``, and qrels (``query-id``, ``corpus-id``, ``score``) in the dataset ``qrels``,
    which defaults to ``f"{name_or_path}-qrels"`` (BeIR) and falls back to the ``default`` config of
    ``name_or_path`` itself (MTEB). Ids are read as strings, so ``"001"`` stays ``"001"``.

    Args:
        name_or_path: a hub id such as ``"BeIR/scifact"``, or a local directory with the same files.
        split: the qrels split ("test", "dev", "train").
        qrels: the dataset that holds the qrels, when it is not at the default place.
        revision: a hub revision (branch, tag or commit) for reproducible runs.
        title_in_text: glue each title to its text, as :func:`load_beir` does; ``False`` keeps the
            title in ``metadata["title"]`` only.

    Raises:
        MissingDependencyError: ``datasets`` is not installed (``pip install 'ragkit[eval]'``).

    Example:
        >>> ds = load_hf_beir("BeIR/scifact")  # doctest: +SKIP
        >>> ds = load_hf_beir("mteb/scifact")  # doctest: +SKIP
    """
    from ragkit._deps import require

    hf = require("datasets", purpose="loading datasets from the Hugging Face hub")

    def only_split(config: str) -> Any:
        with _hub_errors(name_or_path):
            loaded = hf.load_dataset(name_or_path, config, revision=revision)
        if len(loaded) != 1:
            raise ConfigError(f"{name_or_path} config {config!r} has splits {list(loaded)}, expected one")
        return next(iter(loaded.values()))

    corpus = [_beir_document(row, title_in_text) for row in only_split("corpus")]
    all_queries = {_row_id(row): str(row["text"]) for row in only_split("queries")}

    features = hf.Features(
        {
            "query-id": hf.Value("string"),
            "corpus-id": hf.Value("string"),
            "score": hf.Value("float64"),
        }
    )
    qrels_source = qrels or f"{name_or_path.rstrip('/')}-qrels"
    try:
        with _hub_errors(qrels_source):
            rows = hf.load_dataset(qrels_source, split=split, features=features, revision=revision)
    except ConfigError as e:
        if qrels is not None:
            raise
        logger.info("no %s (%s); reading qrels from %s's 'default' config", qrels_source, e, name_or_path)
        with _hub_errors(name_or_path):
            rows = hf.load_dataset(name_or_path, "default", split=split, features=features, revision=revision)
    judged: dict[str, dict[str, int]] = {}
    for row in rows:
        judged.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    name = name_or_path.rstrip("/").rsplit("/", 1)[-1].lower()
    return _assemble(name, corpus, all_queries, judged)


# A hub dataset id: "name" or "owner/name" (what is not a local path and not this is refused early).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


@contextlib.contextmanager
def _hub_errors(name: str) -> Iterator[None]:
    """``datasets``' failures (unknown repo, no network, a bad id) as one clear :class:`ConfigError`."""
    try:
        yield
    except (OSError, ValueError, ConnectionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot load {name!r} from the Hugging Face hub: {first}") from e


def load_smart(directory: str | Path, *, title_in_text: bool = True) -> RetrievalDataset:
    """Load a classic SMART collection such as CISI: ``*.ALL``, ``*.QRY`` and ``*.REL`` files.

    Records start with ``.I <id>``; fields are ``.T`` (title), ``.A`` (authors, one per line), ``.W``
    (abstract or query text), ``.X``/``.B`` (references, ignored). Document text is the title and the
    abstract separated by a blank line, with the hard line wraps of the abstract joined; the title
    and authors go to ``Document.metadata``. With ``title_in_text=False`` the text is the abstract
    alone (the title when there is no abstract) and the title is only in ``metadata["title"]``: how
    to measure contextual headers (``RecursiveChunker(contextual_headers=True)``). A query's text is
    its ``.W`` field (some CISI queries also carry the bibliographic fields of an example article;
    those are left out). The ``.REL`` file lists relevant pairs, ``query_id doc_id ...``: each listed
    pair has relevance 1 (CISI's remaining columns are always 0). Only queries with judgements are
    kept.

    Raises:
        FileNotFoundError: the directory lacks one of the three files.

    Example:
        >>> ds = load_smart("data/cisi")  # doctest: +SKIP
        >>> ds                                        # doctest: +SKIP
        RetrievalDataset(name='cisi', documents=1460, queries=76, judgements=3114)
    """
    root = Path(directory)
    docs_file, queries_file, rel_file = (_smart_file(root, s) for s in (".ALL", ".QRY", ".REL"))
    corpus = []
    for doc_id, fields in _parse_smart(docs_file):
        title = _join_lines(fields.get("T", []))
        abstract = _join_lines(fields.get("W", []))
        if title_in_text:
            text = f"{title}\n\n{abstract}" if title and abstract else title or abstract
        else:
            text = abstract or title
        authors = [a.strip() for a in fields.get("A", []) if a.strip()]
        corpus.append(Document(id=doc_id, text=text, metadata={"title": title, "authors": authors}))
    all_queries = {
        qid: _join_lines(fields.get("W") or fields.get("T", [])) for qid, fields in _parse_smart(queries_file)
    }
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(_read_text(rel_file).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise ConfigError(f"{rel_file}:{n}: expected 'query_id doc_id ...', got {line!r}")
        qrels.setdefault(parts[0], {})[parts[1]] = 1
    return _assemble(root.resolve().name.lower(), corpus, all_queries, qrels)


def load_dataset(path: str | Path, *, split: str = "test", title_in_text: bool = True) -> RetrievalDataset:
    """Load a test collection, detecting its layout.

    A directory with ``corpus.jsonl`` and ``qrels/{split}.tsv`` is a BEIR folder (:func:`load_beir`);
    one with ``*.ALL``, ``*.QRY`` and ``*.REL`` files is a SMART collection (:func:`load_smart`); any
    other directory (a local copy of a hub repository), and anything that is not a local path (a hub
    id such as ``"BeIR/scifact"``), goes to :func:`load_hf_beir`. ``title_in_text`` goes to each.

    Example:
        >>> ds = load_dataset("data/cisi")  # doctest: +SKIP
        >>> ds = load_dataset("BeIR/scifact")         # doctest: +SKIP
    """
    if not isinstance(path, (str, Path)):
        raise InputTypeError(f"path must be a str or Path, got {type(path).__name__}")
    root = Path(path)
    if root.is_dir():
        names = {p.name for p in root.iterdir()}
        if names & {"corpus.jsonl", "corpus.jsonl.gz"} and (root / "qrels" / f"{split}.tsv").is_file():
            return load_beir(root, split=split, title_in_text=title_in_text)
        suffixes = {Path(n).suffix.upper() for n in names}
        if {".ALL", ".QRY", ".REL"} <= suffixes:
            return load_smart(root, title_in_text=title_in_text)
    elif root.exists():
        raise ConfigError(f"{root} is a file; pass the directory that holds the collection")
    elif not _HUB_ID.fullmatch(str(path)):
        raise ConfigError(
            f"{path}: no such directory (give a BEIR folder, a SMART collection such as CISI, or a hub "
            "id such as BeIR/scifact)"
        )
    return load_hf_beir(str(path), split=split, title_in_text=title_in_text)


# -- helpers ---------------------------------------------------------------------------------------


def _assemble(
    name: str, corpus: list[Document], queries: Mapping[str, str], qrels: dict[str, dict[str, int]]
) -> RetrievalDataset:
    unknown = [q for q in qrels if q not in queries]
    if unknown:
        raise ConfigError(
            f"qrels judge {len(unknown)} queries that the queries file lacks, e.g. {unknown[:3]}"
        )
    kept = {q: queries[q] for q in qrels}
    logger.info(
        "%s: %d documents, %d of %d queries have judgements", name, len(corpus), len(kept), len(queries)
    )
    return RetrievalDataset(name=name, corpus=corpus, queries=kept, qrels=qrels)


def _row_id(row: Mapping[str, Any]) -> str:
    value = row.get("_id", row.get("id"))
    if value is None:
        raise ConfigError(f"a row has neither '_id' nor 'id': {dict(row)!r:.200}")
    return str(value)


def _beir_document(row: Mapping[str, Any], title_in_text: bool = True) -> Document:
    title = str(row.get("title") or "").strip()
    body = str(row.get("text") or "")
    metadata = dict(row.get("metadata") or {}) if isinstance(row.get("metadata"), Mapping) else {}
    if title:
        metadata["title"] = title
    if title_in_text:
        text = f"{title}\n\n{body}" if title and body else title or body
    else:
        text = body or title
    return Document(id=_row_id(row), text=text, metadata=metadata)


def _first_existing(root: Path, names: list[str]) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"none of {names} in {root}")


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{n}: not a JSON line: {e}") from e


def _read_text(path: Path) -> str:
    # Old collections predate UTF-8; Latin-1 reads any byte.
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _smart_file(root: Path, suffix: str) -> Path:
    found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.upper() == suffix)
    if len(found) != 1:
        raise FileNotFoundError(f"expected one *{suffix} file in {root}, found {[p.name for p in found]}")
    return found[0]


_SMART_FIELD = re.compile(r"^\.([A-Z])(?:\s+(.*))?$")


def _parse_smart(path: Path) -> list[tuple[str, dict[str, list[str]]]]:
    records: list[tuple[str, dict[str, list[str]]]] = []
    field: list[str] | None = None
    for line in _read_text(path).splitlines():
        m = _SMART_FIELD.match(line.rstrip())
        if m:
            tag, rest = m.group(1), (m.group(2) or "").strip()
            if tag == "I":
                if not rest:
                    raise ConfigError(f"{path}: a '.I' line without an id")
                records.append((rest, {}))
                field = None
                continue
            if not records:
                raise ConfigError(f"{path}: field .{tag} before the first '.I' record")
            field = records[-1][1].setdefault(tag, [])
            if rest:
                field.append(rest)
        elif field is not None:
            field.append(line)
    return records


def _join_lines(lines: list[str]) -> str:
    return " ".join(" ".join(lines).split())
