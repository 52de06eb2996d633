"""A cap on request bodies (``INTERPRETER_MAX_BODY_BYTES``): 413 without reading past the cap.

A ``multipart/form-data`` body of ``POST /execute`` (input files uploaded with the job) has a cap
of its own, ``INTERPRETER_MAX_UPLOAD_BYTES``: every other body, JSON ones included, the first.

Pure ASGI. A declared Content-Length over the cap is refused before a byte of the body is read
(a client that waits for ``100 Continue`` never sends it). A chunked body is read here, counted as
it arrives, and refused as soon as it passes the cap; a body within the cap is handed on as one
message, so memory stays bounded by the cap. The server enforces the Content-Length framing, so a
body that declares its length within the cap (and is not chunked) is passed through untouched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interpreter.api.auth import route_path
from interpreter.api.errors import error_response
from interpreter.errors import BodyTooLarge

UPLOAD_PATH = "/execute"


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, upload_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_max_bytes = max_bytes if upload_max_bytes is None else upload_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked, multipart = _framing(scope)
        cap = self.max_bytes
        if multipart and scope["method"] == "POST" and route_path(scope) == UPLOAD_PATH:
            cap = self.upload_max_bytes
        if length is not None and length > cap:
            await self._refuse(scope, receive, send, cap, length)
            return
        if not chunked:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if len(body) > cap:
                await self._refuse(scope, receive, send, cap, None)
                return
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, cap: int, declared: int | None
    ) -> None:
        exc = BodyTooLarge(
            f"request body is larger than the maximum of {cap} bytes"
            if declared is None
            else f"request body is {declared} bytes; the maximum is {cap} bytes"
        )
        # The rest of the body stays unread: the connection cannot be reused.
        await error_response(exc, headers={"Connection": "close"})(scope, receive, send)


def _framing(scope: Scope) -> tuple[int | None, bool, bool]:
    """The declared Content-Length (None if absent or unreadable), whether it is chunked, and
    whether it is ``multipart/form-data``."""
    length: int | None = None
    chunked = multipart = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"content-type":
            multipart = value.split(b";", 1)[0].strip().lower() == b"multipart/form-data"
    return length, chunked, multipart


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that first hands out ``messages``, then asks the server."""

    async def replayed() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replayed
