"""API keys: what a valid key is, and the gate that requires one before a request is read.

A key comes in ``X-API-Key`` or ``Authorization: Bearer <key>``; it is valid when it equals one
of the configured keys (compared in constant time). ``known_owner`` is the one decision; the
route dependency, the gate below and the rate limiter all ask it.

``RequireApiKey`` is pure ASGI and sits outside the body-size limit: a request without a valid
key is answered 401 from its headers alone, before a byte of its body is read, whatever the body
(too large, not JSON, invalid). Only ``open_paths`` (health, languages, metrics and the API
documentation) pass without a key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Mapping, Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from interpreter.api.errors import error_response
from interpreter.errors import AuthenticationFailed

MISSING_KEY = "Missing API key: send it in the X-API-Key header or as Authorization: Bearer <key>"
INVALID_KEY = "Invalid API key"


def owner_of(api_key: str | None) -> str | None:
    """Jobs are owned by a hash of the key that created them; the key itself is never stored."""
    if api_key is None:
        return None
    return hashlib.sha256(api_key.encode()).hexdigest()


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key in X-API-Key or Authorization: Bearer (or token, as Jupyter clients send it)."""
    if key := headers.get("x-api-key"):
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "token") and token.strip():  # token: Jupyter's word
        return token.strip()
    return None


def is_known_key(presented: str, keys: Sequence[str]) -> bool:
    matched = False
    for key in keys:  # compare against every key, in constant time each
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


def known_owner(headers: Mapping[str, str], keys: Sequence[str]) -> str | None:
    """The owner id (hash of the key) of a request that presents a valid key, else None."""
    presented = presented_key(headers)
    if presented is None or not is_known_key(presented, keys):
        return None
    return owner_of(presented)


def require_owner(headers: Mapping[str, str], keys: Sequence[str]) -> str:
    """The owner id of the request's key; ``AuthenticationFailed`` saying what is wrong."""
    owner = known_owner(headers, keys)
    if owner is None:
        raise AuthenticationFailed(MISSING_KEY if presented_key(headers) is None else INVALID_KEY)
    return owner


def route_path(scope: Scope) -> str:
    """The request's path below the application's root path."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def has_body(headers: Mapping[str, str]) -> bool:
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


class RequireApiKey:
    """Pure ASGI: 401 for an HTTP request without a valid key, unless its path is open."""

    def __init__(self, app: ASGIApp, api_keys: Sequence[str], open_paths: Collection[str]) -> None:
        self.app = app
        self.api_keys = tuple(api_keys)
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and route_path(scope) not in self.open_paths:
            headers = Headers(scope=scope)
            try:
                require_owner(headers, self.api_keys)
            except AuthenticationFailed as exc:
                # A body stays unread: that connection cannot carry another request.
                close = has_body(headers)
                response = error_response(exc, headers={"Connection": "close"} if close else None)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
