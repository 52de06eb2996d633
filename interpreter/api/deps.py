"""Named dependencies for the routes: the application's parts and the caller's identity."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from interpreter.config import Settings
from interpreter.errors import AuthenticationFailed
from interpreter.languages import LanguageRegistry
from interpreter.metrics import Metrics
from interpreter.queue import JobQueue
from interpreter.runner import JobRunner
from interpreter.service import JobService, owner_of
from interpreter.store.base import JobStore


@dataclass
class AppParts:
    settings: Settings
    store: JobStore
    registry: LanguageRegistry
    queue: JobQueue
    runner: JobRunner | None  # None: this process runs no job (an API-only replica)
    service: JobService
    metrics: Metrics
    api_keys: tuple[str, ...]
    started_monotonic: float


# Dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a worker
# thread, a thread hop per dependency per request.


async def get_parts(request: Request) -> AppParts:
    parts: AppParts = request.app.state.parts
    return parts


async def get_service(request: Request) -> JobService:
    parts: AppParts = request.app.state.parts
    return parts.service


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key in X-API-Key or Authorization: Bearer, if any."""
    if key := headers.get("x-api-key"):
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def is_known_key(presented: str, keys: Sequence[str]) -> bool:
    matched = False
    for key in keys:  # compare against every key, in constant time each
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


async def authenticate(request: Request) -> str | None:
    """The caller's owner id (hash of its key), or None when authentication is off."""
    parts: AppParts = request.app.state.parts
    if not parts.settings.enable_authentication:
        return None
    presented = presented_key(request.headers)
    if presented is None:
        raise AuthenticationFailed(
            "Missing API key: send it in the X-API-Key header or as Authorization: Bearer <key>"
        )
    if not is_known_key(presented, parts.api_keys):
        raise AuthenticationFailed("Invalid API key")
    return owner_of(presented)


PartsDep = Annotated[AppParts, Depends(get_parts)]
ServiceDep = Annotated[JobService, Depends(get_service)]
OwnerDep = Annotated[str | None, Depends(authenticate)]
