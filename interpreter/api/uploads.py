"""Input files on the wire: base64 in the JSON body of ``POST /execute``, or file parts of a
``multipart/form-data`` body.

A multipart body holds one ``request`` part (the JSON body, as a plain field or a file) and any
number of ``files`` parts, each with its path in the job's working directory as its filename
(``Content-Disposition: form-data; name="files"; filename="data/in.csv"``). ``ExecuteRoute``
parses it before FastAPI reads the body: the ``request`` part becomes the JSON body, validated
as any other (one operation, one model, the same errors), and the files ride along in the
request's scope (``uploaded_files``). Starlette's parser spools large parts to temporary files;
the body-limit middleware caps the whole at ``INTERPRETER_MAX_UPLOAD_BYTES``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import Message, Receive

from interpreter.api.schemas import InputFileRequest
from interpreter.config import Settings
from interpreter.errors import BodyTooLarge, InvalidInputFile, InvalidRequest
from interpreter.inputs import shown_path
from interpreter.job import InputFile

UPLOADS_KEY = "interpreter.uploaded_files"
REQUEST_PART = "request"
FILES_PART = "files"
MAX_FIELDS = 16  # plain fields of a multipart body: one is used (``request``)

MULTIPART_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [REQUEST_PART],
                    "additionalProperties": False,
                    "properties": {
                        REQUEST_PART: {"$ref": "#/components/schemas/ExecuteRequest"},
                        FILES_PART: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Input files: each part's filename is its path in "
                            "the job's working directory (e.g. data/in.csv)",
                        },
                    },
                },
                "encoding": {REQUEST_PART: {"contentType": "application/json"}},
            }
        }
    }
}


def is_multipart(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "multipart/form-data"


def decode_input_files(files: Sequence[InputFileRequest]) -> tuple[InputFile, ...]:
    """The JSON body's input files, their base64 decoded (whitespace in it is ignored)."""
    decoded = []
    for file in files:
        try:
            content = base64.b64decode("".join(file.content.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInputFile(
                f"input file {shown_path(file.path)}: content is not valid base64"
            ) from None
        decoded.append(InputFile(file.path, content))
    return tuple(decoded)


def uploaded_files(request: Request) -> tuple[InputFile, ...]:
    """The files of a multipart body (none for a JSON one)."""
    files: tuple[InputFile, ...] = request.scope.get(UPLOADS_KEY, ())
    return files


class ExecuteRoute(APIRoute):
    """``POST /execute``: a multipart body is turned into its JSON body and files first."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            if is_multipart(request.headers.get("content-type")):
                request = await _as_json(request, request.app.state.parts.settings)
            return await handle(request)

        return route_handler


async def _as_json(request: Request, settings: Settings) -> Request:
    """The same request with the ``request`` part as its JSON body, its files in its scope."""
    parser = MultiPartParser(
        request.headers,
        request.stream(),
        max_files=settings.max_input_files + 1,  # the request part may come as a file
        max_fields=MAX_FIELDS,
        # a field (the request part, unless it comes as a file) is held in memory: at most the
        # JSON body's own limit; file parts are spooled to disk by the parser
        max_part_size=settings.max_body_bytes,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise InvalidInputFile(
                f"too many input files; the maximum is {settings.max_input_files} per job"
            ) from None
        if exc.message.startswith("Part exceeded maximum size"):
            raise BodyTooLarge(
                f"the 'request' part is larger than the maximum of {settings.max_body_bytes} bytes"
            ) from None
        raise InvalidRequest(f"the multipart body could not be read: {exc.message}") from None
    try:
        body, files = await _parts(form, settings)
    finally:
        await form.close()
    headers = [
        (name, value)
        for name, value in request.scope["headers"]
        if name not in (b"content-type", b"content-length", b"transfer-encoding")
    ]
    headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {**request.scope, "headers": headers, UPLOADS_KEY: files}
    return Request(scope, _body_first(body, request.receive))


async def _parts(form: FormData, settings: Settings) -> tuple[bytes, tuple[InputFile, ...]]:
    body: bytes | None = None
    files: list[InputFile] = []
    for name, value in form.multi_items():
        if name == REQUEST_PART:
            if body is not None:
                raise InvalidRequest("the multipart body holds more than one 'request' part")
            if isinstance(value, UploadFile) and (value.size or 0) > settings.max_body_bytes:
                raise BodyTooLarge(
                    f"the 'request' part is {value.size} bytes; the maximum is "
                    f"{settings.max_body_bytes} bytes"
                )
            body = await value.read() if isinstance(value, UploadFile) else value.encode()
            if len(body) > settings.max_body_bytes:
                raise BodyTooLarge(
                    f"the 'request' part is {len(body)} bytes; the maximum is "
                    f"{settings.max_body_bytes} bytes"
                )
        elif name == FILES_PART:
            if not isinstance(value, UploadFile) or value.filename is None:
                raise InvalidInputFile(
                    "a 'files' part has no filename: it must be the file's path in the "
                    "working directory"
                )
            files.append(InputFile(value.filename, await value.read()))
        else:
            raise InvalidRequest(
                f"unknown multipart part {shown_path(name)}: send one 'request' part (the JSON "
                "body) and 'files' parts (filename: the path in the working directory)"
            )
    if body is None:
        raise InvalidRequest("the multipart body has no 'request' part (the JSON body)")
    return body, tuple(files)


def _body_first(body: bytes, receive: Receive) -> Receive:
    """An ASGI ``receive`` that hands out ``body`` first, then asks the server (whose body was
    read already: it reports the client leaving)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
