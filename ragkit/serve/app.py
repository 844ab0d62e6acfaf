"""The FastAPI app of ``ragkit serve``: :func:`create_app`, its routes and their handlers.

Every API route is a :class:`_GatedRoute`: before FastAPI validates the body against the route's
pydantic model (:mod:`ragkit.serve.schemas`), the request passes the service's gate (draining, API key,
readiness) and its body is read under the limits (:meth:`Service.read_json`); whatever goes wrong is
answered by the one mapper, :func:`ragkit.serve.errors.error_response`, in the OpenAI error shape
(an error before the body was read goes out at once, see :func:`ragkit.serve.service.lingering`).
``/openapi.json`` is always served (documenting the 400 error shape, never FastAPI's 422); ``/docs``
only with ``docs=True``. ``/health`` and ``/ready`` answer ``HEAD`` too. A path with a trailing slash
is a 404, never a redirect. A model output that is not finite (NaN, infinity) is a 500 ``model_error``.

Example:
    >>> app = create_app("Qwen/Qwen3-Embedding-0.6B", api_keys=["s3cret"])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit.embedders.base import truncate_dim
from ragkit.errors import ConfigError
from ragkit.serve import schemas
from ragkit.serve.batching import Job, Observer
from ragkit.serve.errors import ApiError, error_response, validation_error
from ragkit.serve.hangups import hangup_of
from ragkit.serve.runners import CLIENT_GONE
from ragkit.serve.service import Service, lingering

__all__ = ["DEFAULTS", "create_app", "service_of"]

logger = logging.getLogger("ragkit")

_THREAD_FLOATS = 1 << 16  # embeddings answers of more numbers than this are encoded in a thread

DEFAULTS: dict[str, Any] = {
    "max_batch_tokens": None,  # by device: ragkit.serve.batching.DEVICE_BATCH_TOKENS
    "max_request_tokens": 300_000,
    "max_queue": 256,
    "batch_wait_ms": 2.0,
    "max_inputs": 2048,
    "max_input_chars": 65536,
    "max_body_bytes": 8 * 1024 * 1024,
}
"""The default limits of ``ragkit serve`` (``max_request_tokens``: OpenAI's cap per embeddings request)."""

_ERRORS = {
    status: {"model": schemas.ErrorResponse, "description": text}
    for status, text in (
        (400, "a bad request"),
        (401, "a missing or wrong API key"),
        (404, "an unknown model, or no index loaded"),
        (413, "a body over max_body_bytes, or a request over max_request_tokens"),
        (415, "a body that is not JSON"),
        (503, "loading, overloaded or shutting down (with retry-after)"),
    )
}


def _positive(value: Any, name: str, *, allow_float: bool = False) -> Any:
    kinds = (int, float) if allow_float else (int,)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < (0 if allow_float else 1):
        raise ConfigError(
            f"{name} must be a {'number >= 0' if allow_float else 'positive int'}, got {value!r}"
        )
    return value


def service_of(app: Any) -> Service | None:
    """The :class:`Service` of an app from :func:`create_app` (``None`` for any other app)."""
    service = getattr(getattr(app, "state", None), "ragkit", None)
    return service if isinstance(service, Service) else None


def _gated_route(service: Service) -> type:
    from fastapi.routing import APIRoute
    from pydantic import BaseModel, ValidationError
    from starlette.responses import Response

    class _GatedRoute(APIRoute):
        """An API route behind the gate; every failure is answered in the OpenAI error shape.

        FastAPI reads the route (its endpoint's signature, its response model) for ``/openapi.json``;
        the requests themselves are answered here, without FastAPI's generic request path (dependency
        solving, then validating the returned model again before encoding it), which cost more per
        small request than everything else the server does on its event loop. The steps are the same:
        the gate, the body read under the limits, the body validated by the route's pydantic model,
        the endpoint called, a returned model encoded as JSON (``response_model_exclude_none`` kept).

        An endpoint with a ``body`` annotation (a pydantic model, see :func:`_typed`) is called as
        ``endpoint(request, body)``, any other as ``endpoint()``; it returns a pydantic model or a
        ready :class:`~starlette.responses.Response`.
        """

        def get_route_handler(self) -> Callable[[Any], Any]:
            endpoint = self.endpoint
            body_model = endpoint.__annotations__.get("body")
            if not (isinstance(body_model, type) and issubclass(body_model, BaseModel)):
                body_model = None
            exclude_none = bool(self.response_model_exclude_none)

            async def run(request: Any) -> Any:
                try:
                    service.check(request)
                    if body_model is not None:
                        raw = await service.read_json(request)
                        try:
                            body = body_model.model_validate(raw)
                        except ValidationError as e:
                            raise validation_error(list(e.errors(include_url=False))) from None
                        result = await endpoint(request, body)
                    else:
                        result = await endpoint()
                    if isinstance(result, Response):
                        response = result
                    else:
                        content = result.model_dump_json(by_alias=True, exclude_none=exclude_none)
                        response = Response(content, media_type="application/json")
                except Exception as e:
                    response = error_response(e, where=f"{request.method} {request.url.path}")
                if response.status_code >= 400:
                    response = lingering(response, request)  # at once, even with the body unread
                return response

            return run

    return _GatedRoute


def _dispatch_route() -> type:
    from starlette.routing import Match, Route

    class _Dispatch(Route):
        """A starlette route that names itself in the scope (``scope["route"]``) when it matches, as
        FastAPI's routes do, so that the metrics label a request by its route template at no cost."""

        def matches(self, scope: Any) -> tuple[Any, Any]:
            match, child = super().matches(scope)
            if match is not Match.NONE:
                child["route"] = self
            return match, child

    return _Dispatch


def _finite(values: np.ndarray, worker: Any) -> None:
    """A 500 ``model_error`` (logged) for a model output with NaN or infinity: the model's fault."""
    if not np.isfinite(values).all():
        logger.error("ragkit serve: the model %r returned NaN or infinite values", worker.name)
        raise ApiError(
            500,
            f"the model {worker.name!r} returned NaN or infinite values (a model fault, not the request's)",
            type="server_error",
            code="model_error",
        )


def _embeddings_json(vectors: np.ndarray, encoding_format: str, name: str, tokens: int) -> bytes:
    """The embeddings answer as JSON bytes, encoded row by row.

    Built as plain JSON rather than through EmbeddingsResponse: validating a million floats in
    pydantic costs more than the model call for small requests (the fuzzer checks the schema). One
    ``json.dumps`` of the whole answer would hold the GIL for seconds when it is big; row by row, the
    event loop gets its turns while a thread encodes.
    """
    if encoding_format == "base64":
        little = np.ascontiguousarray(vectors, dtype="<f4")
        rows = ['"' + base64.b64encode(row.tobytes()).decode("ascii") + '"' for row in little]
    else:
        floats = np.asarray(vectors, dtype=np.float32)
        rows = [json.dumps(row.tolist(), allow_nan=False, separators=(",", ":")) for row in floats]
    data = ",".join(f'{{"object":"embedding","index":{i},"embedding":{row}}}' for i, row in enumerate(rows))
    usage = f'{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}'
    model = json.dumps(name, ensure_ascii=False)
    return f'{{"object":"list","data":[{data}],"model":{model},"usage":{usage}}}'.encode()


def _without_422(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's OpenAPI document less its 422 answers: the server answers a bad request with a 400."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        if name in components and f"#/components/schemas/{name}" not in json.dumps(schema):
            del components[name]
    return schema


def _typed(function: Callable[..., Any], **annotations: Any) -> Callable[..., Any]:
    # The request models are built per app (their limits are the app's), so a handler's body type is
    # set here rather than written in its signature; so is Request, which is imported only with fastapi.
    function.__annotations__.update(annotations)
    return function


def create_app(
    embedder: Any = None,
    reranker: Any = None,
    *,
    index: str | os.PathLike[str] | None = None,
    trust_hosts: bool = False,
    served_model_names: Sequence[str] = (),
    api_keys: Sequence[str] = (),
    device: str = "auto",
    dtype: str = "auto",
    max_batch_tokens: int | None = None,
    max_request_tokens: int | None = DEFAULTS["max_request_tokens"],
    max_queue: int = DEFAULTS["max_queue"],
    batching: bool = True,
    batch_wait_ms: float = DEFAULTS["batch_wait_ms"],
    max_inputs: int = DEFAULTS["max_inputs"],
    max_input_chars: int = DEFAULTS["max_input_chars"],
    max_body_bytes: int = DEFAULTS["max_body_bytes"],
    docs: bool = False,
    observer: Observer | None = None,
) -> Any:
    """Build the FastAPI app of ``ragkit serve``; models load in the background at startup.

    Run it with uvicorn (``ragkit serve`` does, :class:`~ragkit.serve.BackgroundServer` does it in a
    thread). Until the models are loaded ``/ready`` answers 503 and the API endpoints 503 with
    ``retry-after``.

    Args:
        embedder: a name for :func:`ragkit.models.load_embedder` (hub id, local directory, alias), or
            any object of the ``Embedder`` protocol, served as it is.
        reranker: a hub id or local directory of a Qwen3-Reranker, or any object with
            ``score(query, documents)``.
        index: a saved pipeline directory for ``/v1/search``, opened read-only with the served models
            (without ``embedder`` / ``reranker`` the index's own are rebuilt and served).
        trust_hosts: let the index directory name hosts to connect to (see ``Pipeline.load``).
        served_model_names: the names clients use, one per served model, the embedder's first.
            Default: the model's alias or hub id, else the directory name of a local path.
        api_keys: accepted bearer keys (visible ASCII: no spaces, no accents); empty means no
            authentication.
        device: the torch device of models built from a name.
        dtype: the torch dtype of models built from a name.
        max_batch_tokens: tokens gathered into one model call, and the batch budget of models built
            from a name. ``None``: 8192 on CPU, 65536 on CUDA (the models keep their own defaults).
        max_request_tokens: the cost cap: tokens one request may cost (as the model counts them,
            see :mod:`ragkit.serve.runners`); over it a 413. ``None``: no cap.
        max_queue: requests waiting per model; beyond it the server answers 503 with ``retry-after``.
        batching: gather concurrent requests into shared model calls; ``False`` runs one request per
            call (the peer that benchmarks compare against).
        batch_wait_ms: how long the worker waits for more requests when a batch is not full.
        max_inputs: inputs per embeddings request, documents per rerank request, ``k`` and
            ``candidates`` of a search.
        max_input_chars: characters per input, document, query or instruction.
        max_body_bytes: bytes per request body (the declared Content-Length and the actual body).
        docs: serve the interactive API documentation at ``/docs`` (``/openapi.json`` always is).
        observer: the metrics hook (:class:`~ragkit.serve.batching.Observer`) the workers report to.

    Raises:
        ConfigError: no model at all, an option out of range, a key that is not visible ASCII, a
            model object lacking the protocol.
        MissingDependencyError: fastapi (or later uvicorn) is not installed.

    Example:
        >>> app = create_app("Qwen/Qwen3-Embedding-0.6B", api_keys=["s3cret"])  # doctest: +SKIP
        >>> BackgroundServer(app).start().url  # doctest: +SKIP
        'http://127.0.0.1:40123'
    """
    require("fastapi", purpose="ragkit serve")
    from contextlib import asynccontextmanager

    from fastapi import APIRouter, FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    from ragkit import __version__

    if embedder is None and reranker is None and index is None:
        raise ConfigError("nothing to serve: give an embedder, a reranker or an index")
    if embedder is not None and not isinstance(embedder, (str, os.PathLike)):
        missing = [a for a in ("dim", "embed_documents", "embed_queries") if not hasattr(embedder, a)]
        if missing:
            raise ConfigError(f"embedder lacks {', '.join(missing)}: see ragkit.embedders.Embedder")
    if reranker is not None and not isinstance(reranker, (str, os.PathLike)):
        if not callable(getattr(reranker, "score", None)):
            raise ConfigError("reranker lacks a score(query, documents) method")
    for name, value in (("max_batch_tokens", max_batch_tokens), ("max_request_tokens", max_request_tokens)):
        if value is not None:
            _positive(value, name)
    for name, value in (
        ("max_queue", max_queue),
        ("max_inputs", max_inputs),
        ("max_input_chars", max_input_chars),
        ("max_body_bytes", max_body_bytes),
    ):
        _positive(value, name)
    _positive(batch_wait_ms, "batch_wait_ms", allow_float=True)
    if isinstance(served_model_names, str) or isinstance(api_keys, str):
        raise ConfigError("served_model_names and api_keys take a list of strings, not a single string")
    for name in served_model_names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"a served model name must be a non-empty string, got {name!r}")
    for key in api_keys:
        if not isinstance(key, str) or not key.strip():
            raise ConfigError("an API key must be a non-empty string")
        if not all("!" <= c <= "~" for c in key):
            raise ConfigError(
                "an API key must be visible ASCII characters only (letters, digits, punctuation; no "
                "spaces or accents): HTTP clients send header bytes that a non-ASCII key would not match"
            )

    service = Service(
        embedder,
        reranker,
        index=index,
        trust_hosts=bool(trust_hosts),
        served_model_names=served_model_names,
        api_keys=api_keys,
        device=device,
        dtype=dtype,
        max_batch_tokens=max_batch_tokens,
        max_request_tokens=max_request_tokens,
        max_queue=max_queue,
        batching=batching,
        batch_wait_ms=batch_wait_ms,
        max_inputs=max_inputs,
        max_input_chars=max_input_chars,
        max_body_bytes=max_body_bytes,
        observer=observer,
    )
    models = schemas.request_models(max_inputs=max_inputs, max_input_chars=max_input_chars)

    @asynccontextmanager
    async def lifespan(app: Any):
        # Loading runs beside the event loop so that /health answers (and /ready says 503) meanwhile.
        threading.Thread(target=service.load, name="ragkit-load", daemon=True).start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.close)

    app = FastAPI(
        title="ragkit",
        version=__version__,
        description="OpenAI-compatible embeddings, Cohere-compatible rerank, and search of a saved index.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        redirect_slashes=False,  # a redirect would be built from the Host header, before the key check
    )
    app.state.ragkit = service
    gated, _Dispatch = _gated_route(service), _dispatch_route()  # noqa: N806 - classes
    api = APIRouter(route_class=gated, responses=_ERRORS)

    async def embeddings(request: Request, body: Any) -> Any:
        worker = service.model("embedding", body.model)
        instruction, input_type = body.instruction, body.input_type
        if instruction is not None:
            if input_type == "document":
                raise ApiError(
                    400,
                    "'instruction' applies to queries: documents are embedded without one",
                    code="invalid_value",
                    param="instruction",
                )
            if not worker.runner.accepts_instruction:
                raise ApiError(
                    400,
                    f"the model {worker.name!r} takes no instruction (its query template has no slot)",
                    code="invalid_value",
                    param="instruction",
                )
        kind = "query" if input_type == "query" or instruction is not None else "document"
        native = int(worker.model.dim)
        dimensions = body.dimensions
        if dimensions is not None and dimensions > native:
            raise ApiError(
                400,
                f"'dimensions' must be between {schemas.MIN_DIMENSIONS} and {native} for {worker.name!r}, "
                f"got {dimensions}",
                code="invalid_value",
                param="dimensions",
            )
        job = Job(kind, body.texts, instruction=instruction)
        vectors = np.asarray(await worker.run(job, gone=hangup_of(request)))
        _finite(vectors, worker)
        if dimensions is not None and dimensions != vectors.shape[1]:
            vectors = truncate_dim(vectors, dimensions)
        args = (vectors, body.encoding_format, worker.name, job.total_tokens)
        if vectors.size > _THREAD_FLOATS:  # a big answer takes seconds to encode: not on the event loop
            content = await asyncio.to_thread(_embeddings_json, *args)
        else:
            content = _embeddings_json(*args)
        return Response(content, media_type="application/json")

    async def rerank(request: Request, body: Any) -> Any:
        worker = service.model("rerank", body.model)
        documents = body.texts
        job = Job("rerank", documents, query=body.query)
        scores = np.asarray(await worker.run(job, gone=hangup_of(request)), dtype=np.float64)
        _finite(scores, worker)
        order = np.argsort(-scores, kind="stable")[: body.top_n or len(documents)]
        results = [
            schemas.RerankResult(
                index=int(i),
                relevance_score=float(scores[i]),
                document=schemas.RerankDocument(text=documents[i]) if body.return_documents else None,
            )
            for i in order
        ]
        tokens = job.total_tokens
        return schemas.RerankResponse(
            id=f"rerank-{uuid.uuid4().hex}",
            model=worker.name,
            results=results,
            usage=schemas.Usage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def search(request: Request, body: Any) -> Any:
        if service.pipeline is None:
            raise ApiError(
                404, "no index is loaded: start the server with --index DIR", code="index_not_loaded"
            )
        gone = CLIENT_GONE.set(hangup_of(request))  # the pipeline's model calls stop on a hang-up
        try:
            results = await _search(body)
        finally:
            CLIENT_GONE.reset(gone)
        return schemas.SearchResponse(
            model=service.models[0].name, query=body.query, hits=list(results), timings=results.timings
        )

    async def _search(body: Any) -> Any:
        return await service.pipeline.asearch(
            body.query,
            body.k or 10,
            filter=body.filter,
            mode=body.mode,
            candidates=body.candidates,
            instruction=body.instruction,
            diversity=body.diversity,
            fusion=body.fusion,
            alpha=body.alpha,
        )

    async def list_models() -> schemas.ModelList:
        data = []
        for worker in service.models:
            length = getattr(worker.model, "max_length", None)
            data.append(
                schemas.ModelCard(
                    id=worker.name,
                    created=service.created,
                    task=worker.task,
                    dimensions=int(worker.model.dim) if worker.task == "embedding" else None,
                    max_length=length if isinstance(length, int) else None,
                )
            )
        return schemas.ModelList(data=data)

    api.add_api_route(
        "/v1/embeddings",
        _typed(embeddings, request=Request, body=models.embeddings),
        methods=["POST"],
        response_model=schemas.EmbeddingsResponse,
        summary="Embed texts (OpenAI's schema)",
    )
    api.add_api_route(
        "/v1/rerank",
        _typed(rerank, request=Request, body=models.rerank),
        methods=["POST"],
        response_model=schemas.RerankResponse,
        response_model_exclude_none=True,
        summary="Score documents against a query (Cohere's schema)",
    )
    api.add_api_route(
        "/v1/search",
        _typed(search, request=Request, body=models.search),
        methods=["POST"],
        response_model=schemas.SearchResponse,
        summary="Search the loaded index",
    )
    api.add_api_route(
        "/v1/models",
        list_models,
        methods=["GET"],
        response_model=schemas.ModelList,
        response_model_exclude_none=True,
        summary="The served models",
    )
    app.include_router(api)
    # The API routes answer through plain starlette routes placed first: FastAPI's own route matching
    # and dispatch cost several times starlette's per request. The APIRoutes behind them document the
    # API in /openapi.json (and would answer the same way, by the same handlers).
    app.router.routes[:0] = [
        _Dispatch(
            r.path, r.get_route_handler(), methods=sorted(r.methods), name=r.name, include_in_schema=False
        )
        for r in api.routes
        if isinstance(r, gated)
    ]

    @app.get("/health", response_model=schemas.Status, summary="Liveness (no API key)")
    async def health() -> Any:
        return {"status": "ok"}

    async def head_health() -> Any:  # load balancers probe with HEAD: GET's status, no body
        return Response(status_code=200, media_type="application/json")

    async def head_ready() -> Any:
        ok = not service.draining and service.status == "ready"
        return Response(status_code=200 if ok else 503, media_type="application/json")

    app.add_api_route("/health", head_health, methods=["HEAD"], include_in_schema=False)
    app.add_api_route("/ready", head_ready, methods=["HEAD"], include_in_schema=False)

    @app.get(
        "/ready",
        response_model=schemas.Status,
        responses={503: {"model": schemas.Status, "description": "loading, failed or draining"}},
        summary="The models are loaded and the server takes requests (no API key)",
    )
    async def ready() -> Any:
        status = "draining" if service.draining else service.status
        return JSONResponse({"status": status}, status_code=200 if status == "ready" else 503)

    async def http_error(request: Any, exc: Any) -> Any:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        headers = dict(exc.headers or {})
        return ApiError(exc.status_code, str(exc.detail), code=code, headers=headers).response()

    async def unexpected(request: Any, exc: Exception) -> Any:
        return error_response(exc, where=f"{request.method} {request.url.path}")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _without_422(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
    mount = getattr(observer, "mount", None)
    if callable(mount):  # ragkit.serve.metrics.Metrics: GET /metrics and the per-route request counts
        mount(app, api_keys=api_keys)
    return app
