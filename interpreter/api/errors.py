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
    InterpreterError,
    InvalidRequest,
    JobAlreadyFinished,
    JobFileNotFound,
    JobNotFinished,
    JobNotFound,
    RangeNotSatisfiable,
    RateLimited,
    ServiceUnavailable,
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
    if status_code_for(exc) >= 500 and not isinstance(exc, ServiceUnavailable):
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
    return JSONResponse({"detail": detail}, status_code=code, headers=headers)


async def _interpreter_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InterpreterError)
    if status_code_for(exc) >= 500:
        logger.error("request failed: %s", exc.message, extra={"path": request.url.path})
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 shape, without echoing the submitted input (code, environment values)."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [p if isinstance(p, int) else safe_text(p) for p in err.get("loc", ())],
            "msg": safe_text(err.get("msg", "")),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", extra={"path": request.url.path})
    return JSONResponse({"detail": INTERNAL_ERROR}, status_code=500)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(InterpreterError, _interpreter_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
