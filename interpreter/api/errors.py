"""The one table from our error tree to HTTP status codes, and the handlers that apply it."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from interpreter.errors import (
    AuthenticationFailed,
    BodyTooLarge,
    CodeTooLarge,
    EnvironmentInUse,
    EnvironmentNotFound,
    InterpreterError,
    InvalidRequest,
    JobAlreadyFinished,
    JobFileNotFound,
    JobNotFinished,
    JobNotFound,
    PackagesUnresolvable,
    RangeNotSatisfiable,
    RateLimited,
    ServiceUnavailable,
    SessionNotFound,
    SessionsUnsupported,
    SessionUnavailable,
    StoreError,
)

logger = logging.getLogger(__name__)

STATUS_CODES: list[tuple[type[InterpreterError], int]] = [
    (CodeTooLarge, 413),
    (BodyTooLarge, 413),
    (InvalidRequest, 422),
    (AuthenticationFailed, 401),
    (RateLimited, 429),
    (JobNotFound, 404),
    (JobFileNotFound, 404),
    (JobAlreadyFinished, 409),
    (JobNotFinished, 409),
    (EnvironmentNotFound, 404),
    (EnvironmentInUse, 409),
    (SessionNotFound, 404),
    (SessionUnavailable, 409),
    (SessionsUnsupported, 501),
    (RangeNotSatisfiable, 416),
    (ServiceUnavailable, 503),
    (StoreError, 503),  # the database is down or locked: retry, nothing was accepted
]
STORE_RETRY_AFTER_S = 1.0
# What a client reads of the server's own failures: their words (a driver's, the sandbox's) may
# name host paths, hosts or internals, so they go to the log only.
INTERNAL_ERROR = "Internal server error"
STORE_UNAVAILABLE = "The job store is unavailable; retry later"


def safe_text(value: object) -> str:
    """Text that can always be encoded in a JSON response (lone surrogates escaped)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def status_code_for(exc: InterpreterError) -> int:
    for kind, code in STATUS_CODES:
        if isinstance(exc, kind):
            return code
    return 500


def client_detail(exc: InterpreterError) -> str:
    """The detail a client reads: the message, except for the server's own failures."""
    if isinstance(exc, StoreError):
        return STORE_UNAVAILABLE
    if status_code_for(exc) == 500:  # an error of ours with no status of its own
        return INTERNAL_ERROR
    return exc.message


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def error_response(exc: InterpreterError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The response for an error of our tree (also used by the middlewares, before routing)."""
    code = status_code_for(exc)
    headers = dict(headers or {})
    if code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimited | ServiceUnavailable) and exc.retry_after_s is not None:
        headers["Retry-After"] = retry_after(exc.retry_after_s)
    if isinstance(exc, RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{exc.size}"
    if isinstance(exc, StoreError):
        headers["Retry-After"] = retry_after(STORE_RETRY_AFTER_S)
    detail = safe_text(client_detail(exc))
    body: dict[str, object] = {"detail": detail}
    if isinstance(exc, PackagesUnresolvable):  # which kind of failure, for machines
        body["errors"] = [{"loc": ["body", "packages"], "msg": detail, "type": exc.kind}]
    return JSONResponse(body, status_code=code, headers=headers)


async def _interpreter_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InterpreterError)
    if status_code_for(exc) in (500, 503):  # not 501: a feature this server does not offer
        logger.error("request failed: %s", exc.message, extra={"path": request.url.path})
    return error_response(exc)


PLACES = {"body": "body field", "query": "query parameter", "path": "path parameter"}
VALUE_ERROR_PREFIX = "Value error, "


def field_errors(exc: RequestValidationError) -> list[dict[str, object]]:
    """Each reason as ``{loc, msg, type}``, without the submitted input (code, environment
    values) that pydantic's own errors carry."""
    return [
        {
            "loc": [p if isinstance(p, int) else safe_text(p) for p in err.get("loc", ())],
            "msg": safe_text(err.get("msg", "")).removeprefix(VALUE_ERROR_PREFIX),
            "type": safe_text(err.get("type", "")),
        }
        for err in exc.errors()
    ]


def validation_sentence(errors: list[dict[str, object]]) -> str:
    """One sentence: the first bad field and what was wrong with it, and how many more."""
    if not errors:
        return "Invalid request"
    first = errors[0]
    loc = first["loc"]
    assert isinstance(loc, list)
    where, path = (str(loc[0]), ".".join(str(p) for p in loc[1:])) if loc else ("request", "")
    if first["type"] == "json_invalid":  # its loc ends with a character position
        path = ""
    place = f"{PLACES.get(where, where)} '{path}'" if path else f"request {where}"
    sentence = f"Invalid {place}: {first['msg']}"
    if len(errors) > 1:
        more = len(errors) - 1
        sentence += f" (and {more} more error{'s' if more > 1 else ''}, listed in errors)"
    return sentence


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422: ``detail`` the first reason in a sentence, ``errors`` every reason."""
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc)
    return JSONResponse({"detail": validation_sentence(errors), "errors": errors}, status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", extra={"path": request.url.path})
    return JSONResponse({"detail": INTERNAL_ERROR}, status_code=500)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else safe_text(exc.detail)
    return JSONResponse(
        {"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(InterpreterError, _interpreter_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
