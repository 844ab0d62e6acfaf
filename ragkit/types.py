"""The values that flow through a pipeline: documents in, chunks inside, hits out.

Example:
    >>> doc = Document(text="Paris is the capital of France.")
    >>> doc.id  # a plain text gets a content id, so adding it twice is a no-op
    '557be7eca214f188'
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ragkit.errors import InputTypeError, InvalidInputError

__all__ = [
    "AddResult",
    "Chunk",
    "Document",
    "Hit",
    "SearchResults",
    "Section",
    "content_id",
    "to_document",
]


def content_id(text: str) -> str:
    """The id ragkit gives a document that has none: the first 16 hex digits of ``sha256(text)``.

    Example:
        >>> content_id("hello")
        '2cf24dba5fb0a30e'
    """
    # surrogatepass: a Document may hold any str; Pipeline.add refuses lone surrogates (check_text).
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def check_text(value: Any, what: str = "text", *, utf8: bool = True) -> str:
    """Return ``value`` if it is a ``str`` that UTF-8 can encode; raise a ragkit error otherwise.

    A wrong type is an :class:`InputTypeError`; a lone surrogate (``"\\ud800"``, which no UTF-8
    store, tokenizer or HTTP body can carry) is an :class:`InvalidInputError`.

    Example:
        >>> check_text("ok")
        'ok'
    """
    if not isinstance(value, str):
        raise InputTypeError(f"{what} must be a str, got {type(value).__name__}")
    if not utf8:
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"{what} holds a lone surrogate at position {e.start} ({value[e.start]!r}), which is not "
            "text: decode the source with errors='replace' or strip it"
        ) from None
    return value


class Section(BaseModel):
    """A span of a document's text with a place in its structure: a PDF page, the body under a heading.

    Loaders (:mod:`ragkit.loaders`) fill ``Document.sections``; the chunker prefers to cut at section
    starts and gives each chunk its :attr:`Chunk.location` from the sections it overlaps.

    Args:
        start: offset of the first character in ``Document.text``.
        end: offset one past the last character (``start <= end <= len(text)``).
        page: the 1-based page number, for paged formats (PDF).
        headings: the heading path that the span sits under, outermost first
            (``("Install", "From source")``).

    Example:
        >>> Section(start=0, end=12, headings=("Install", "From source")).headings
        ('Install', 'From source')
    """

    model_config = ConfigDict(frozen=True)

    start: int
    end: int
    page: int | None = None
    headings: tuple[str, ...] = ()


class Document(BaseModel):
    """A document to index: its text, an id and free-form JSON metadata.

    Args:
        id: a stable identifier. Left out, it is :func:`content_id` of the text.
        text: the full text; the empty string is valid (the document then has no chunks).
        metadata: JSON-serialisable values that filters can select on.

    Example:
        >>> Document(id="faq-1", text="Refunds take 5 days.", metadata={"lang": "en"}).metadata
        {'lang': 'en'}
    """

    model_config = ConfigDict(frozen=True)

    id: str = ""
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    sections: tuple[Section, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        # Raised here rather than left to pydantic so that a wrong type is a TypeError (ragkit.errors).
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        # The type only: pydantic would turn a ValueError into its own ValidationError, so lone
        # surrogates are refused where documents enter a pipeline (to_document), not here.
        check_text(data.get("text"), "Document.text", utf8=False)
        doc_id = data.get("id")
        if doc_id is None or doc_id == "":
            data["id"] = content_id(data["text"])
        elif not isinstance(doc_id, str):
            raise InputTypeError(f"Document.id must be a str, got {type(doc_id).__name__}")
        metadata = data.get("metadata")
        if metadata is None:
            data["metadata"] = {}
        elif not isinstance(metadata, Mapping):
            raise InputTypeError(f"Document.metadata must be a dict, got {type(metadata).__name__}")
        return data


def check_sections(doc: Document) -> Document:
    """Return ``doc`` if its sections lie inside its text, in order and without overlapping.

    Each section must satisfy ``0 <= start <= end <= len(text)``, start where the one before it ended
    or later, and have a page number of at least 1 when it has one. Empty sections are allowed.

    Raises:
        InvalidInputError: naming the first section that breaks a rule.

    Example:
        >>> doc = Document(text="Intro. Usage.", sections=[Section(start=0, end=6), Section(start=7, end=13)])
        >>> len(check_sections(doc).sections)
        2
        >>> check_sections(Document(text="short", sections=[Section(start=0, end=9)]))
        Traceback (most recent call last):
        ...
        ragkit.errors.InvalidInputError: Document.sections[0] spans 0..9, outside the text (0..5)
    """
    previous_end = 0
    for n, section in enumerate(doc.sections):
        where = f"Document.sections[{n}]"
        if not 0 <= section.start <= section.end <= len(doc.text):
            raise InvalidInputError(
                f"{where} spans {section.start}..{section.end}, outside the text (0..{len(doc.text)})"
                if section.start <= section.end
                else f"{where} ends ({section.end}) before it starts ({section.start})"
            )
        if section.start < previous_end:
            raise InvalidInputError(
                f"{where} starts at {section.start}, before the section before it ends ({previous_end}): "
                "sections must be in text order and must not overlap"
            )
        if section.page is not None and section.page < 1:
            raise InvalidInputError(f"{where} has page {section.page}; pages are numbered from 1")
        previous_end = section.end
    return doc


def to_document(item: Any) -> Document:
    """Normalise what users pass to ``Pipeline.add``: a ``str``, a ``dict`` or a :class:`Document`.

    The text and id must be UTF-8 encodable (:func:`check_text`) and the sections must fit the text
    (:func:`check_sections`).

    Example:
        >>> to_document({"id": "a", "text": "hi"}).id
        'a'
        >>> to_document({"text": "hi", "sections": [{"start": 1, "end": 0}]})
        Traceback (most recent call last):
        ...
        ragkit.errors.InvalidInputError: Document.sections[0] ends (0) before it starts (1)
    """
    if isinstance(item, Document):
        check_text(item.text, "Document.text")
        check_text(item.id, "Document.id")
        return check_sections(item)
    if isinstance(item, str):
        return Document(text=check_text(item, "Document.text"))
    if isinstance(item, Mapping):
        check_text(item.get("text"), "Document.text")
        if isinstance(item.get("id"), str):
            check_text(item["id"], "Document.id")
        return check_sections(Document(**item))
    raise InputTypeError(f"expected a str, dict or Document, got {type(item).__name__}")


class Chunk(BaseModel):
    """A piece of a document, the unit that is embedded and retrieved.

    ``text == document.text[start:end]`` holds exactly. The id is ``f"{doc_id}#{n}"``.

    ``location`` says where in the document the chunk came from, from the document's
    :attr:`~Document.sections` (:func:`ragkit.structure.chunk_location`); each key is there only
    when it applies, and a document without sections gives ``{}``:

    - ``"page"``: the 1-based page where the chunk starts (PDF);
    - ``"pages"``: ``[first, last]``, only when the chunk runs over a page break;
    - ``"heading"``: the heading path of the section the chunk lies in, ``"Install > From source"``
      (the chunker never lets a chunk cross into a section under another heading).

    ``header`` is the contextual header embedded in front of the text (``""`` unless the chunker
    adds one: ``RecursiveChunker(contextual_headers=True)`` gives ``"<title>\\n<heading path>\\n\\n"``):
    the embedder sees ``header + text``; the stored text, its offsets and lexical search (BM25) are
    the text alone.

    Example:
        >>> Chunk(id="m#0", doc_id="m", text="Run make.", start=0, end=9,
        ...       location={"page": 2, "heading": "Install > From source"}).location["heading"]
        'Install > From source'
    """

    model_config = ConfigDict(frozen=True)

    id: str
    doc_id: str
    text: str
    start: int
    end: int
    metadata: dict[str, Any] = Field(default_factory=dict)
    location: dict[str, Any] = Field(default_factory=dict)
    header: str = ""


class Hit(Chunk):
    """A retrieved chunk with its scores.

    ``score`` is the score of the last stage that ran (cosine for dense, BM25 for lexical, the fused
    score for hybrid, P(yes) when reranked); each stage's own score is set when that stage scored the
    hit and ``None`` otherwise: ``fused_score`` is hybrid search's RRF or convex score
    (:mod:`ragkit.fusion`). With ``diversity``, hits come in MMR order and keep these scores. ``rank``
    starts at 1.
    """

    model_config = ConfigDict(frozen=False)

    score: float
    rank: int = 0
    dense_score: float | None = None
    lexical_score: float | None = None
    fused_score: float | None = None
    rerank_score: float | None = None

    @model_validator(mode="after")
    def _finite(self) -> Hit:
        if not math.isfinite(self.score):
            raise ValueError(f"Hit.score must be finite, got {self.score}")
        return self

    def __repr__(self) -> str:
        from ragkit.display import hit_repr

        return hit_repr(self)

    def _repr_html_(self) -> str:
        from ragkit.display import hits_html

        return hits_html([self])


class SearchResults(list[Hit]):
    """The hits of one query, best first, with the query and the seconds each stage took.

    Prints as a short table (one line per hit), renders as an HTML table in Jupyter, and converts
    with :meth:`to_records` / :meth:`to_pandas`.

    Example:
        >>> res = SearchResults([], query="q", timings={"embed": 0.01})
        >>> res.query, res.timings["embed"], len(res)
        ('q', 0.01, 0)
    """

    def __init__(
        self, hits: Iterable[Hit] = (), *, query: str = "", timings: Mapping[str, float] | None = None
    ) -> None:
        super().__init__(hits)
        self.query = query
        self.timings: dict[str, float] = dict(timings or {})

    def __repr__(self) -> str:
        from ragkit.display import results_repr

        return results_repr(self)

    def _repr_html_(self) -> str:
        from ragkit.display import hits_html

        return hits_html(self, query=self.query, timings=self.timings)

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per hit (rank, ids, every stage's score, offsets, text, metadata, location).

        Example:
            >>> SearchResults([], query="q").to_records()
            []
        """
        from ragkit.display import hit_records

        return hit_records(self)

    def to_pandas(self) -> Any:
        """The hits as a ``pandas.DataFrame``, one row per hit (:meth:`to_records`).

        Raises:
            MissingDependencyError: pandas is not installed (``pip install 'ragkit[notebook]'``).

        Example:
            >>> hits.to_pandas()[["rank", "doc_id", "score"]]  # doctest: +SKIP
        """
        from ragkit._deps import require
        from ragkit.display import RECORD_KEYS

        pandas = require("pandas", purpose="SearchResults.to_pandas()")
        return pandas.DataFrame(self.to_records(), columns=list(RECORD_KEYS))


class AddResult(BaseModel):
    """What one ``add`` call did.

    Attributes:
        added: new documents. updated: documents whose text changed (re-chunked).
        metadata_updated: documents whose metadata alone changed. unchanged: no-ops.
        chunks: chunks written. embedded: chunk texts actually sent to the embedder (the rest
        reused stored vectors of identical text).
    """

    added: int = 0
    updated: int = 0
    metadata_updated: int = 0
    unchanged: int = 0
    chunks: int = 0
    embedded: int = 0

    def merge(self, other: AddResult) -> None:
        for name in type(self).model_fields:
            setattr(self, name, getattr(self, name) + getattr(other, name))
