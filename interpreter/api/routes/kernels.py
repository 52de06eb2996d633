"""The Jupyter Kernel Gateway's subset that its clients use, over sessions: a kernel is a
session (the same caps, limits, reaping and API keys), its messages carried by a websocket.

Executions sent over the websocket are not jobs: they have no job id, and the session's own
executions (POST /sessions/{id}/execute) wait while a websocket client is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response, WebSocket
from pydantic import BaseModel, ConfigDict, Field

from interpreter.api.auth import known_owner
from interpreter.api.deps import AppParts, OwnerDep, ServiceDep, get_parts
from interpreter.api.errors import error_response
from interpreter.api.routes.jobs import Responses, error
from interpreter.api.routes.sessions import get_sessions, start_session
from interpreter.api.schemas import ENVIRONMENT_SCHEMA, SessionRequest
from interpreter.errors import (
    AuthenticationFailed,
    InterpreterError,
    InvalidRequest,
    SessionsUnsupported,
)
from interpreter.sessions.manager import Session, Sessions
from interpreter.sessions.relay import Relay

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["kernel gateway"])


async def local_sessions(parts: Annotated[AppParts, Depends(get_parts)]) -> Sessions:
    """The sessions this process holds: a websocket reaches a kernel only where it runs."""
    sessions = await get_sessions(parts)
    if not isinstance(sessions, Sessions):
        raise SessionsUnsupported(
            "the Kernel Gateway routes need the embedded mode (sessions on this process); "
            "with PostgreSQL use /sessions"
        )
    return sessions


SessionsDep = Annotated[Sessions, Depends(local_sessions)]

KERNEL_NAMES = ("python3", "python")
NOT_FOUND: Responses = {404: error("Kernel not found (or not yours, or it ended)")}


class KernelRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(None, description="python3 (the only kernel)")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="The kernel's environment variables (the rules of POST /execute)",
        json_schema_extra=ENVIRONMENT_SCHEMA,
    )


class KernelModel(BaseModel):
    id: str
    name: str
    last_activity: str
    execution_state: str = Field(description="starting, idle, busy or dead")
    connections: int


def model(session: Session) -> KernelModel:
    return KernelModel(
        id=session.id,
        name="python3",
        last_activity=session.last_activity_at.isoformat().replace("+00:00", "Z"),
        execution_state=session.status,
        connections=session.attached,
    )


@router.get("/kernelspecs")
async def list_kernelspecs() -> dict[str, Any]:
    """The one kernel this server starts."""
    spec = {
        "argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (sandboxed)",
        "language": "python",
        "metadata": {},
        "env": {},
    }
    return {"default": "python3", "kernelspecs": {"python3": {"name": "python3", "spec": spec}}}


@router.post(
    "/kernels",
    response_model=KernelModel,
    status_code=201,
    responses={
        400: error("The body could not be read"),
        422: error("Invalid body, kernel name or environment"),
        429: error("This API key holds INTERPRETER_MAX_SESSIONS_PER_KEY sessions already"),
        501: error("This server runs no sessions"),
        503: error("The server holds INTERPRETER_MAX_SESSIONS sessions"),
    },
)
async def start_kernel(
    sessions: SessionsDep, service: ServiceDep, owner: OwnerDep, body: KernelRequest | None = None
) -> KernelModel:
    """Start a kernel: a session with the server's defaults."""
    body = body or KernelRequest()
    if body.name is not None and body.name not in KERNEL_NAMES:
        raise InvalidRequest(f"no kernel named {body.name}; this server starts python3")
    request = SessionRequest(language="python", environment_variables=body.env)
    session = await start_session(request, sessions, service, owner)
    assert isinstance(session, Session)  # held here (local_sessions)
    return model(session)


@router.get("/kernels", response_model=list[KernelModel])
async def list_kernels(sessions: SessionsDep, owner: OwnerDep) -> list[KernelModel]:
    """The caller's kernels (its sessions)."""
    return [model(s) for s in sessions.owned(owner)]


@router.get("/kernels/{kernel_id}", response_model=KernelModel, responses=NOT_FOUND)
async def get_kernel(kernel_id: str, sessions: SessionsDep, owner: OwnerDep) -> KernelModel:
    return model(sessions.get(kernel_id, owner))


@router.delete("/kernels/{kernel_id}", status_code=204, responses=NOT_FOUND)
async def shutdown_kernel(kernel_id: str, sessions: SessionsDep, owner: OwnerDep) -> Response:
    """End the kernel (its session)."""
    await sessions.delete(kernel_id, owner)
    return Response(status_code=204)


@router.post("/kernels/{kernel_id}/interrupt", status_code=204, responses=NOT_FOUND)
async def interrupt_kernel(kernel_id: str, sessions: SessionsDep, owner: OwnerDep) -> Response:
    await sessions.interrupt(kernel_id, owner)
    return Response(status_code=204)


@router.post("/kernels/{kernel_id}/restart", response_model=KernelModel, responses=NOT_FOUND)
async def restart_kernel(kernel_id: str, sessions: SessionsDep, owner: OwnerDep) -> KernelModel:
    return model(await sessions.restart(kernel_id, owner))


@router.websocket("/kernels/{kernel_id}/channels")
async def kernel_channels(websocket: WebSocket, kernel_id: str) -> None:
    """Jupyter messages to and from the kernel, one JSON text frame each. The API key comes as
    for every route, or as the `token` query parameter (as browsers' websockets send it)."""
    parts: AppParts = websocket.app.state.parts
    owner = None
    if parts.api_keys:
        headers = dict(websocket.headers)
        if token := websocket.query_params.get("token"):
            headers.setdefault("authorization", f"token {token}")
        owner = known_owner(headers, parts.api_keys)
        if owner is None:
            await _refuse(websocket, AuthenticationFailed("missing or invalid API key"))
            return
    try:
        sessions = await local_sessions(parts)
        session = sessions.get(kernel_id, owner)
    except InterpreterError as exc:
        await _refuse(websocket, exc)
        return
    await websocket.accept()
    try:
        async with sessions.attached(session) as kernel:
            await _pump(websocket, Relay(kernel), session)
    except InterpreterError as exc:  # its kernel is dead
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=1011, reason=exc.message[:120])


async def _refuse(websocket: WebSocket, exc: InterpreterError) -> None:
    """Refuse the handshake with the HTTP answer a route would give (401, 404, 501 and its
    JSON ``detail``), as Kernel Gateway does; a server without the denial response extension
    can only close it (clients see 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(exc))
    else:
        await websocket.close(code=1008, reason=exc.message[:120])


async def _pump(websocket: WebSocket, relay: Relay, session: Session) -> None:
    async def to_client() -> None:
        async for frame in relay.frames():
            await websocket.send_text(frame)
            session.touch()

    sending = asyncio.create_task(to_client())
    receiving = asyncio.create_task(_from_client(websocket, relay, session))
    try:
        done, _ = await asyncio.wait({sending, receiving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sending, receiving):
            task.cancel()
        for task in (sending, receiving):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if receiving not in done:  # the kernel ended
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=1011, reason="the kernel ended")


async def _from_client(websocket: WebSocket, relay: Relay, session: Session) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        frame = message.get("text") or message.get("bytes") or ""
        try:
            relay.send(frame)
        except InvalidRequest as exc:
            logger.info("a client's kernel message refused: %s", exc.message)
        session.touch()
