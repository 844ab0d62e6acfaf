"""JSON Lines and JSON arrays of records: one Document per record, with its own id, text and metadata.

A record is an object with a ``text`` string and optionally an ``id`` string and a ``metadata``
object; other keys are ignored. A record without an id gets the content id of its text, as
``Document`` gives. Blank lines in JSON Lines are skipped, and a file with no records (empty, or
``[]``) gives no documents. A record's text (not its id) is cleaned like every loader's text (universal
newlines, no control characters but tab and newline, no soft hyphen: a NUL escaped as ``\\u0000``
is dropped, which PostgreSQL could not store). A file that is not valid UTF-8 is read with U+FFFD,
and each of its documents gets ``metadata["decode_errors"]``, the number of bad byte sequences.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragkit.errors import CorruptFileError, InvalidInputError
from ragkit.loaders._common import clean_text, decode
from ragkit.types import Document, check_text

_SHAPE = "a record is an object with a 'text' string, an optional 'id' string and optional 'metadata' object"


def load_records(path: Path, data: bytes, fmt: str, metadata: Mapping[str, Any] | None) -> list[Document]:
    """The documents of a ``.jsonl`` (``fmt="jsonl"``) or ``.json`` (``fmt="json"``) file."""
    text, errors = decode(data, path)
    extra = {"decode_errors": errors} if errors else {}
    extra.update(metadata or {})
    if fmt == "jsonl":
        return [
            _document(path, f"line {n}", _parse(path, line, f"line {n}"), extra)
            for n, line in enumerate(text.split("\n"), 1)
            if line.strip()
        ]
    if not text.strip():
        return []
    records = _parse(path, text, "the file")
    if not isinstance(records, list):
        raise CorruptFileError(
            path, f"a .json file must hold an array of records, not a JSON {type(records).__name__}: {_SHAPE}"
        )
    return [_document(path, f"record {n}", record, extra) for n, record in enumerate(records, 1)]


def _parse(path: Path, text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise CorruptFileError(path, f"{where}: not valid JSON ({e}); {_SHAPE}") from e


def _document(path: Path, where: str, record: Any, extra: dict[str, Any]) -> Document:
    if not isinstance(record, dict):
        raise CorruptFileError(path, f"{where}: a JSON {type(record).__name__}, not an object; {_SHAPE}")
    text, doc_id, meta = record.get("text"), record.get("id"), record.get("metadata")
    if not isinstance(text, str):
        got = "no 'text'" if "text" not in record else f"'text' is a JSON {type(text).__name__}"
        raise CorruptFileError(path, f"{where}: {got}; {_SHAPE}")
    if doc_id is not None and not isinstance(doc_id, str):
        raise CorruptFileError(path, f"{where}: 'id' is a JSON {type(doc_id).__name__}; {_SHAPE}")
    if meta is not None and not isinstance(meta, dict):
        raise CorruptFileError(path, f"{where}: 'metadata' is a JSON {type(meta).__name__}; {_SHAPE}")
    try:
        check_text(text, "'text'")
        if doc_id is not None:
            check_text(doc_id, "'id'")
    except InvalidInputError as e:  # a lone surrogate escaped as \ud800 in the JSON
        raise CorruptFileError(path, f"{where}: {e}") from e
    return Document(id=doc_id, text=clean_text(text), metadata={**(meta or {}), **extra})
