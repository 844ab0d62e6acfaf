"""The errors ``ragkit serve`` answers, all in the OpenAI shape ``{"error": {"message", "type", "code"}}``.

:func:`error_response` is the one mapper from an exception to an HTTP answer. The table:

=====================================================  ======  ==========================================
exception                                              status  ``code``
=====================================================  ======  ==========================================
:class:`ApiError` (raised by the handlers)             its own its own: 401 ``invalid_api_key``, 404
                                                               ``model_not_found``, 413 ``request_too_large``
                                                               (``max_body_bytes``) and ``request_too_costly``
                                                               (``max_request_tokens``), 415 ..., 500
                                                               ``model_error`` (NaN or infinity from a model)
request validation (pydantic, a bad JSON body)         400     ``invalid_value`` / ``invalid_json`` ...
:class:`~ragkit.errors.InputTooLongError`              400     ``input_too_long`` (as ``max_input_chars``)
:class:`~ragkit.errors.InvalidInputError`,             400     ``invalid_value``
:class:`~ragkit.errors.InputTypeError`,
:class:`~ragkit.errors.ConfigError` (and any other
``RagkitError`` that is a ``ValueError``/``TypeError``)
:class:`~ragkit.errors.ReadOnlyError`                  403     ``read_only``
:class:`~ragkit.errors.LockError`                      409     ``locked``
:class:`~ragkit.errors.UnavailableError`               503     ``unavailable`` (with ``retry-after``)
:class:`Overloaded` (a full queue, shutting down)      503     ``overloaded`` (with ``retry-after``)
:class:`ClientGone` (the client hung up)               400     ``client_disconnected``
:class:`~ragkit.errors.RemoteError` (a served remote   502     ``upstream_error``
model failed upstream)
an HTTP 4xx from FastAPI / starlette                   its own ``invalid_request``
anything else                                          500     ``internal_error`` (details only in the log)
=====================================================  ======  ==========================================

OpenAI answers a malformed request with 400 (never 422), so ``ragkit serve`` does too.

Example:
    >>> error_response(ApiError(404, "no such model", code="model_not_found")).status_code  # doctest: +SKIP
    404
"""

from __future__ import annotations

import logging
from typing import Any

from ragkit.errors import (
    InputTooLongError,
    LockError,
    RagkitError,
    ReadOnlyError,
    RemoteError,
    UnavailableError,
)

__all__ = [
    "ApiError",
    "ClientGone",
    "LOADING_RETRY_AFTER_S",
    "Overloaded",
    "RETRY_AFTER_S",
    "error_response",
    "internal_error",
    "missing",
    "too_large",
    "unavailable",
    "validation_error",
]

logger = logging.getLogger("ragkit")

RETRY_AFTER_S = 1
"""``retry-after`` seconds of an overloaded or draining server."""
LOADING_RETRY_AFTER_S = 5
"""``retry-after`` seconds while the models load."""


class ApiError(Exception):
    """An error answered to the client in the OpenAI shape; never carries internals.

    Example:
        >>> raise ApiError(400, "'k' must be >= 1", code="invalid_value", param="k")  # doctest: +SKIP
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def response(self) -> Any:
        """The JSON response of this error."""
        from starlette.responses import JSONResponse

        body = {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class Overloaded(Exception):
    """A model's queue is full, or the server is shutting down."""


class ClientGone(Exception):
    """The client disconnected (before its body was complete, or while its request was being served)."""


def unavailable(message: str, code: str, retry_after: int = RETRY_AFTER_S) -> ApiError:
    """A 503 with ``retry-after``."""
    return ApiError(503, message, type="server_error", code=code, headers={"retry-after": str(retry_after)})


def internal_error() -> ApiError:
    """The 500 answer: the details are in the server log only."""
    return ApiError(
        500,
        "internal server error (the details are in the server log)",
        type="server_error",
        code="internal_error",
    )


def too_large(what: str, limit: int) -> ApiError:
    """A 413 for a body over ``max_body_bytes``."""
    return ApiError(
        413,
        f"{what}; at most {limit} bytes are accepted (max_body_bytes)",
        code="request_too_large",
    )


def missing(name: str) -> ApiError:
    """A 400 for a required field that is absent."""
    return ApiError(400, f"'{name}' is required", code="missing_required_parameter", param=name)


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none"}
_VALUE_ERRORS = {"too_short", "too_long", "string_too_long", "string_too_short"}


def _field_path(loc: tuple[Any, ...]) -> str:
    """``("documents", 0, "Document", "text")`` -> ``"documents[0].text"`` (union tags dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier() and part[:1].islower() and part not in _TYPE_NAMES:
            out += f".{part}" if out else part
    return out


def validation_error(errors: list[dict[str, Any]]) -> ApiError:
    """The 400 for pydantic's errors on a request body: the most specific one, in words, with its field.

    Of a union's alternatives (``input`` is a string or a list) the error that reaches deepest into
    the value wins, and a broken constraint (an empty or overlong list, a long string) beats a type
    mismatch. The ``max_inputs`` and ``max_input_chars`` constraints are named in the message.
    """
    found = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        path = _field_path(loc[1:] if loc[:1] == ("body",) else loc)
        depth = path.count(".") + path.count("[") + bool(path)
        found.append(((depth, error.get("type") in _VALUE_ERRORS), path, error))
    if not found:
        return ApiError(400, "the request body is invalid", code="invalid_value")
    _, path, best = max(found, key=lambda f: f[0])  # max() keeps the first of equals
    param = path or None
    kind, ctx, given = best.get("type", ""), best.get("ctx") or {}, best.get("input")
    field = f"'{param}'" if param else "the request body"
    if kind == "missing":
        if param is None:
            return ApiError(400, "the request body is empty: send a JSON object", code="invalid_json")
        return ApiError(400, f"{field} is required", code="missing_required_parameter", param=param)
    if kind == "too_short" and ctx.get("actual_length") == 0:
        return ApiError(400, f"{field} must not be empty", code="empty_input", param=param)
    if kind == "too_long" and "max_length" in ctx:
        message = (
            f"{field} has {ctx.get('actual_length')} items; at most {ctx['max_length']} per request are "
            "accepted (max_inputs)"
        )
        return ApiError(400, message, code="too_many_inputs", param=param)
    if kind == "string_too_long":
        size = len(given) if isinstance(given, str) else "too many"
        message = f"{field} has {size} characters; at most {ctx.get('max_length')} per input are accepted"
        return ApiError(400, message + " (max_input_chars)", code="input_too_long", param=param)
    message = str(best.get("msg", "is invalid")).lower()
    if kind.endswith("_type"):
        token_ids = path.startswith("input") and isinstance(given, (int, list)) and given is not True
        hint = ": token arrays are not supported, send text" if token_ids else ""
        return ApiError(400, f"{field}: {message}{hint}", code="invalid_type", param=param)
    shown = repr(given) if isinstance(given, (str, int, float)) else "another value"
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return ApiError(400, f"{field}: {message}, got {shown}", code="invalid_value", param=param)


def error_response(exc: BaseException, *, where: str = "") -> Any:
    """The answer to ``exc``: the one mapper of the server (see the module's table).

    Args:
        exc: what a handler raised.
        where: ``"METHOD /path"``, for the log line of unexpected errors.
    """
    return _api_error(exc, where).response()


def _api_error(exc: BaseException, where: str) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Overloaded):
        return unavailable(f"the server is overloaded, retry later ({exc})", "overloaded")
    if isinstance(exc, ClientGone):  # nobody is left to read the answer
        return ApiError(400, "the client disconnected", code="client_disconnected")
    if isinstance(exc, InputTooLongError):
        return ApiError(400, str(exc), code="input_too_long")
    if isinstance(exc, ReadOnlyError):
        return ApiError(403, str(exc), type="permission_error", code="read_only")
    if isinstance(exc, LockError):
        return ApiError(409, str(exc), code="locked")
    if isinstance(exc, UnavailableError):
        logger.warning("ragkit serve: %s: unavailable: %s", where, exc)
        return unavailable("a model or storage the request needs is unavailable, retry later", "unavailable")
    if isinstance(exc, RemoteError):  # a served remote model failed upstream
        logger.warning("ragkit serve: upstream error: %s", exc)
        return ApiError(502, "an upstream model server failed", type="server_error", code="upstream_error")
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500 and hasattr(exc, "detail"):  # starlette's
        return ApiError(status, str(exc.detail), code="invalid_request")
    if isinstance(exc, RagkitError) and isinstance(exc, (TypeError, ValueError)):
        return ApiError(400, str(exc), code="invalid_value")  # InputTypeError, InvalidInputError, ConfigError
    logger.error("ragkit serve: %s failed", where or "a request", exc_info=exc)
    return internal_error()
