"""The request and response models of ``ragkit serve`` (pydantic), with the OpenAI / Cohere wire names.

Responses are fixed models. Requests carry the server's limits as field constraints (so they show in
``/openapi.json``), which is why :func:`request_models` builds them for given limits: ``max_inputs``
(inputs per embeddings request, documents per rerank request, ``k`` and ``candidates`` of a search),
``max_input_chars`` (characters per input, document, query or instruction) and ``dimensions`` of at
least :data:`MIN_DIMENSIONS`. Validation is strict: JSON types are not coerced (``"32"`` is not an
integer, ``1.0`` is not an integer, ``true`` is not a number); a float field takes an integer.
Unknown fields are ignored, as OpenAI's clients send some (``user``).

Example:
    >>> models = request_models(max_inputs=64, max_input_chars=4000)
    >>> models.embeddings.model_validate({"input": "hello"}).texts
    ['hello']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from ragkit.fusion import FUSIONS
from ragkit.retrieval import MODES
from ragkit.types import Hit

__all__ = [
    "EmbeddingItem",
    "EmbeddingsResponse",
    "ErrorDetail",
    "ErrorResponse",
    "MIN_DIMENSIONS",
    "ModelCard",
    "ModelList",
    "RequestModels",
    "RerankDocument",
    "RerankResponse",
    "RerankResult",
    "SearchResponse",
    "Status",
    "Usage",
    "request_models",
]

MIN_DIMENSIONS = 32
"""The smallest ``dimensions`` accepted (Qwen3-Embedding's Matryoshka range starts at 32)."""
_MAX_NAME_CHARS = 512


def _number(value: Any) -> Any:
    # A float field takes a JSON integer (but never a boolean, which is an int in Python).
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


Number = Annotated[float, BeforeValidator(_number)]
# The bounds come before the validator: after it, pydantic would render them as "ge"/"le" in the JSON
# schema (not JSON Schema keywords) instead of "minimum"/"maximum".
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False), BeforeValidator(_number)]
ModelName = Annotated[StrictStr, Field(min_length=1, max_length=_MAX_NAME_CHARS)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


# ------------------------------------------------------------------------------------------ responses


class Usage(BaseModel):
    """Tokens the request cost (OpenAI's ``usage``)."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingItem(BaseModel):
    """One embedding: floats, or base64 of little-endian float32."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsResponse(BaseModel):
    """The answer of ``POST /v1/embeddings`` (OpenAI's schema)."""

    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class RerankDocument(_Strict):
    """A rerank document given (or returned) as an object."""

    text: StrictStr


class RerankResult(BaseModel):
    """One scored document; ``document`` only with ``return_documents``."""

    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    """The answer of ``POST /v1/rerank`` (the Cohere / Jina / vLLM schema), best first."""

    id: str
    model: str
    results: list[RerankResult]
    usage: Usage


class SearchResponse(BaseModel):
    """The answer of ``POST /v1/search``: the hits (with their ``location`` and ``header``) and timings."""

    object: Literal["search.results"] = "search.results"
    model: str
    query: str
    hits: list[Hit]
    timings: dict[str, float]


class ModelCard(BaseModel):
    """A served model in ``GET /v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ragkit"
    task: Literal["embedding", "rerank"]
    dimensions: int | None = None
    max_length: int | None = None


class ModelList(BaseModel):
    """The answer of ``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class Status(BaseModel):
    """The answer of ``/health`` and ``/ready``."""

    status: Literal["ok", "ready", "loading", "failed", "draining"]


class ErrorDetail(BaseModel):
    """What went wrong: ``type`` as OpenAI's, ``code`` a stable word, ``param`` the field if one."""

    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    """Every error answer: ``{"error": {"message", "type", "code", "param"}}``."""

    error: ErrorDetail


# ------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class RequestModels:
    """The request models for one set of limits (see :func:`request_models`)."""

    embeddings: type[BaseModel]
    rerank: type[BaseModel]
    search: type[BaseModel]


def request_models(*, max_inputs: int, max_input_chars: int) -> RequestModels:
    """The request models of ``/v1/embeddings``, ``/v1/rerank`` and ``/v1/search`` under these limits.

    Example:
        >>> models = request_models(max_inputs=2, max_input_chars=10)
        >>> models.rerank.model_validate({"query": "q", "documents": ["a", {"text": "b"}]}).texts
        ['a', 'b']
    """
    Text = Annotated[StrictStr, Field(max_length=max_input_chars)]
    Count = Annotated[StrictInt, Field(ge=1, le=max_inputs)]

    class Document(RerankDocument):
        text: Text  # type: ignore[valid-type]

    class EmbeddingsRequest(_Strict):
        """``POST /v1/embeddings``: OpenAI's fields, plus ``input_type`` and ``instruction`` for queries."""

        model: ModelName | None = None
        input: Text | Annotated[list[Text], Field(min_length=1, max_length=max_inputs)] = Field(  # type: ignore[valid-type]
            description="a text, or a list of texts (token arrays are not supported)"
        )
        encoding_format: Literal["float", "base64"] = "float"
        dimensions: Annotated[StrictInt, Field(ge=MIN_DIMENSIONS)] | None = Field(
            None, description="Matryoshka: the first n components, re-normalised (at most the model's dim)"
        )
        input_type: Literal["query", "document"] | None = None
        instruction: Text | None = Field(  # type: ignore[valid-type]
            None, description="the task of a query embedding; implies input_type='query'"
        )
        user: StrictStr | None = None

        @property
        def texts(self) -> list[str]:
            return [self.input] if isinstance(self.input, str) else list(self.input)

    class RerankRequest(_Strict):
        """``POST /v1/rerank``: the Cohere / Jina / vLLM fields."""

        model: ModelName | None = None
        query: Text  # type: ignore[valid-type]
        documents: Annotated[list[Text | Document], Field(min_length=1, max_length=max_inputs)]  # type: ignore[valid-type]
        top_n: Annotated[StrictInt, Field(ge=1)] | None = None
        return_documents: StrictBool = False

        @property
        def texts(self) -> list[str]:
            return [d if isinstance(d, str) else d.text for d in self.documents]

    class SearchRequest(_Strict):
        """``POST /v1/search``: the loaded pipeline's ``search`` options."""

        query: Text  # type: ignore[valid-type]
        k: Count | None = None  # type: ignore[valid-type]
        filter: dict[str, Any] | None = Field(None, description="a metadata filter (ragkit.filters)")
        mode: Literal[MODES] = "dense"  # type: ignore[valid-type]
        candidates: Count | None = None  # type: ignore[valid-type]
        instruction: Text | None = None  # type: ignore[valid-type]
        diversity: Fraction | None = None
        fusion: Literal[FUSIONS] | None = None  # type: ignore[valid-type]
        alpha: Fraction | None = None

    return RequestModels(EmbeddingsRequest, RerankRequest, SearchRequest)
