"""Named dependencies for the routes: the application's parts and the caller's identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from interpreter.api.auth import require_owner
from interpreter.config import Settings
from interpreter.languages import LanguageRegistry
from interpreter.metrics import Metrics
from interpreter.queues.base import JobQueue
from interpreter.running.base import Runner
from interpreter.service import JobService
from interpreter.store.base import JobStore

if TYPE_CHECKING:
    from interpreter.sessions.manager import Sessions
    from interpreter.sessions.remote import RemoteSessions


@dataclass
class AppParts:
    settings: Settings
    store: JobStore
    registry: LanguageRegistry
    queue: JobQueue
    runner: Runner | None  # None: this process runs no job (an API-only replica)
    service: JobService
    metrics: Metrics
    api_keys: tuple[str, ...]  # empty: authentication is off
    started_monotonic: float
    sessions: Sessions | RemoteSessions | None = None  # None: this server runs no session


# Dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a worker
# thread, a thread hop per dependency per request.


async def get_parts(request: Request) -> AppParts:
    parts: AppParts = request.app.state.parts
    return parts


async def get_service(request: Request) -> JobService:
    parts: AppParts = request.app.state.parts
    return parts.service


async def authenticate(request: Request) -> str | None:
    """The caller's owner id (hash of its key), or None when authentication is off."""
    parts: AppParts = request.app.state.parts
    if not parts.api_keys:
        return None
    return require_owner(request.headers, parts.api_keys)


PartsDep = Annotated[AppParts, Depends(get_parts)]
ServiceDep = Annotated[JobService, Depends(get_service)]
OwnerDep = Annotated[str | None, Depends(authenticate)]
