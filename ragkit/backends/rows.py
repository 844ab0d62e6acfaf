"""What both backends store with each document and chunk, beside the text: content hashes, locations.

A document's hash is :func:`document_hash`: of its text and its sections (an unchanged document is
skipped on re-add; one whose structure changed is chunked again), of its text alone when it has no
sections, as before sections existed, so an old index's documents keep their hash. A
chunk's hash is :func:`embed_hash`, the hash of what the embedder saw (:func:`embed_text`: the
contextual header, then the text); it keys the embedding cache (``Backend.vectors_for_hashes``), so
toggling contextual headers never reuses a vector embedded without them. A chunk's ``location`` is
stored as the canonical JSON text of :func:`location_json`.

Example:
    >>> from ragkit.types import Chunk
    >>> chunk = Chunk(id="a#0", doc_id="a", text="Run make.", start=0, end=9, header="Install: ")
    >>> embed_text(chunk)
    'Install: Run make.'
    >>> embed_hash(chunk) == text_hash("Install: Run make.")
    True
"""

from __future__ import annotations

import hashlib
import json

from ragkit.errors import InvalidInputError
from ragkit.filters import check_metadata
from ragkit.types import Chunk, Document

__all__ = ["chunk_from_row", "document_hash", "embed_hash", "embed_text", "location_json", "text_hash"]


def text_hash(text: str) -> str:
    """The content hash of a chunk or document text (sha256, hex).

    Example:
        >>> text_hash("hello")[:12]
        '2cf24dba5fb0'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def document_hash(doc: Document) -> str:
    """The stored state of a document: a hash of its text and its sections (what its chunks, their
    locations and headers depend on), or :func:`text_hash` of its text when it has no sections.

    The two never meet: the sections' part follows a ``0xff`` byte, which no UTF-8 text holds.

    Example:
        >>> from ragkit.types import Section
        >>> plain = Document(id="a", text="Install")
        >>> document_hash(plain) == text_hash("Install")
        True
        >>> titled = plain.model_copy(update={"sections": (Section(start=0, end=7, headings=("Install",)),)})
        >>> document_hash(titled) == text_hash("Install")
        False
    """
    if not doc.sections:
        return text_hash(doc.text)
    spans = [[s.start, s.end, s.page, list(s.headings)] for s in doc.sections]
    structure = json.dumps(spans, separators=(",", ":")).encode("ascii")
    return hashlib.sha256(doc.text.encode("utf-8") + b"\xff" + structure).hexdigest()


def embed_text(chunk: Chunk) -> str:
    """What the embedder sees of a chunk: its contextual header, then its text.

    Example:
        >>> embed_text(Chunk(id="a#0", doc_id="a", text="Run make.", start=0, end=9, header="Install: "))
        'Install: Run make.'
    """
    return chunk.header + chunk.text


def embed_hash(chunk: Chunk) -> str:
    """The embedding-cache key of a chunk: the hash of what is embedded (:func:`embed_text`).

    Both backends store it with each chunk and :meth:`vectors_for_hashes
    <ragkit.backends.Backend.vectors_for_hashes>` looks vectors up by it, so a chunk embedded with a
    header never reuses the vector of the same text embedded without one (or with another). A chunk
    without a header has the hash of its text, as before headers existed.

    Example:
        >>> plain = Chunk(id="a#0", doc_id="a", text="hi", start=0, end=2)
        >>> embed_hash(plain) == text_hash("hi")
        True
        >>> embed_hash(plain.model_copy(update={"header": "Title: "})) == text_hash("hi")
        False
    """
    return text_hash(chunk.header + chunk.text)


def location_json(chunk: Chunk) -> str:
    """A chunk's ``location`` as the canonical JSON text both backends store.

    Raises:
        InvalidInputError: the location is not a JSON object of exact JSON values (the rules of
            :func:`ragkit.filters.check_metadata`); the message names the chunk.

    Example:
        >>> location_json(Chunk(id="a#0", doc_id="a", text="", start=0, end=0, location={"page": 3}))
        '{"page": 3}'
    """
    if isinstance(chunk.location, dict) and not chunk.location:
        return "{}"  # the usual case (unstructured text), on every chunk of every write
    try:
        return check_metadata(chunk.location)
    except InvalidInputError as e:
        raise InvalidInputError(f"the location of chunk {chunk.id!r}: {e}") from e


def chunk_from_row(
    doc_id: str, n: int, text: str, start: int, end: int, metadata: str, location: str, header: str
) -> Chunk:
    """A :class:`~ragkit.types.Chunk` from a stored row: the document's metadata and the chunk's
    location as their JSON texts, as both backends read them.

    Example:
        >>> chunk_from_row("a", 1, "Run make.", 9, 18, '{"lang": "en"}', '{"page": 2}', "").id
        'a#1'
    """
    return Chunk(
        id=f"{doc_id}#{n}",
        doc_id=doc_id,
        text=text,
        start=start,
        end=end,
        metadata=json.loads(metadata),
        location={} if location == "{}" else json.loads(location),
        header=header,
    )
