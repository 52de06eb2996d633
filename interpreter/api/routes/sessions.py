"""Session routes: a sandboxed Python kernel per session, its executions each a job."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from interpreter.api.deps import AppParts, OwnerDep, ServiceDep, get_parts
from interpreter.api.routes.jobs import (
    ExecuteWaitQuery,
    Responses,
    error,
    full_view,
)
from interpreter.api.schemas import (
    ExecuteResponse,
    FullResult,
    SessionEnded,
    SessionExecuteRequest,
    SessionList,
    SessionRequest,
    SessionView,
)
from interpreter.errors import InvalidRequest, SessionsUnsupported
from interpreter.service import JobService, Submission
from interpreter.sessions.manager import KERNEL_MODULES, Session, Sessions, snapshot
from interpreter.sessions.manager import SessionRequest as NewSession
from interpreter.sessions.remote import RemoteSessions

router = APIRouter(tags=["sessions"])


AnySessions = Sessions | RemoteSessions


async def get_sessions(parts: Annotated[AppParts, Depends(get_parts)]) -> AnySessions:
    if parts.sessions is None:
        raise SessionsUnsupported("this server runs no sessions (INTERPRETER_SESSIONS=false)")
    return parts.sessions


SessionsDep = Annotated[AnySessions, Depends(get_sessions)]

NOT_FOUND: Responses = {
    404: error("Session not found (or not yours, or it ended)"),
    501: error("This server runs no sessions"),
}


def view(session: Session | dict[str, Any]) -> SessionView:
    return SessionView.model_validate(session if isinstance(session, dict) else snapshot(session))


def _bounded(value: float | None, default: float, maximum: float, name: str, env: str) -> float:
    chosen = default if value is None else value
    if chosen > maximum:
        raise InvalidRequest(f"{name} must be at most {maximum:g} seconds ({env}); got {chosen:g}")
    return chosen


@router.post(
    "/sessions",
    response_model=SessionView,
    status_code=201,
    responses={
        400: error("The body could not be read"),
        422: error(
            "Invalid body, language, limits, environment or packages, or the kernel exited "
            "at start with the request's packages or environment variables"
        ),
        429: error("This API key holds INTERPRETER_MAX_SESSIONS_PER_KEY sessions already"),
        501: error("This server runs no sessions"),
        503: error(
            "The server holds INTERPRETER_MAX_SESSIONS sessions, the registry is down, or the "
            "kernel could not start"
        ),
    },
)
async def create_session(
    body: SessionRequest, sessions: SessionsDep, service: ServiceDep, owner: OwnerDep
) -> SessionView:
    """Start a session: a Python kernel in the sandbox, in a directory of its own, that keeps
    its variables, imports and files between executions. Answers once the kernel is ready
    (installing its packages first, the first time a set is asked for)."""
    return view(await start_session(body, sessions, service, owner))


async def start_session(
    body: SessionRequest, sessions: AnySessions, service: JobService, owner: str | None
) -> Session | dict[str, Any]:
    """A new session as ``body`` asks, once validated as a job's request would be."""
    settings = service.settings
    request, _ = service.validate(
        Submission(
            code="",
            language=body.language,
            environment=body.environment_variables,
            limits=body.limits.model_dump(exclude_none=True) if body.limits else None,
        ),
        owner,
    )
    if request.language not in KERNEL_MODULES:
        raise InvalidRequest(
            f"sessions run python or shell; got {request.language} (run it as a job instead)"
        )
    if request.language != "python" and body.packages:
        raise InvalidRequest("packages are installed for python sessions only")
    limits = request.limits
    assert limits is not None
    if body.limits is None or body.limits.cpu_time_s is None:  # the whole session's CPU time
        limits = dataclasses.replace(limits, cpu_time_s=settings.max_cpu_time_limit_s)
    return await sessions.create(
        owner,
        NewSession(
            language=request.language,
            packages=tuple(body.packages),
            limits=limits,
            environment=request.environment,
            idle_timeout_s=_bounded(
                body.idle_timeout_s,
                settings.session_idle_timeout_s,
                settings.session_max_idle_timeout_s,
                "idle_timeout_s",
                "INTERPRETER_SESSION_MAX_IDLE_TIMEOUT",
            ),
            max_lifetime_s=_bounded(
                body.max_lifetime_s,
                settings.session_lifetime_s,
                settings.session_max_lifetime_s,
                "max_lifetime_s",
                "INTERPRETER_SESSION_MAX_LIFETIME",
            ),
        ),
    )


@router.get("/sessions", response_model=SessionList, responses={501: NOT_FOUND[501]})
async def list_sessions(sessions: SessionsDep, owner: OwnerDep) -> SessionList:
    """The caller's sessions."""
    return SessionList(sessions=[view(s) for s in await sessions.mine(owner)])


@router.get("/sessions/{session_id}", response_model=SessionView, responses=NOT_FOUND)
async def get_session(session_id: str, sessions: SessionsDep, owner: OwnerDep) -> SessionView:
    """The session's status."""
    return view(await sessions.show(session_id, owner))


@router.post(
    "/sessions/{session_id}/execute",
    response_model=FullResult | ExecuteResponse,
    responses={
        **NOT_FOUND,
        400: error("The body could not be read"),
        409: error("The kernel is dead, too many executions wait, or a websocket is attached"),
        422: error("Invalid body or timeout"),
    },
)
async def execute_in_session(
    session_id: str,
    body: SessionExecuteRequest,
    sessions: SessionsDep,
    service: ServiceDep,
    owner: OwnerDep,
    wait: ExecuteWaitQuery = 60,
) -> Any:
    """Run code in the session's kernel, as a notebook cell: what earlier executions defined is
    there. Each execution is a job (its `job_id` works with every /jobs route: status, stream,
    cancel); with `wait` (60 s by default) the answer is its full result, with the cell's
    display outputs (`results`) and exception (`error`)."""
    language = await sessions.admit(session_id, owner)
    submitted = await service.submit(
        Submission(
            code=body.code,
            language=language,
            timeout_s=body.timeout,
            capture_files=False,
            session_id=session_id,
        ),
        owner,
    )
    job = submitted.job
    if wait > 0:
        job = await service.wait_final(job.id, owner, wait)
        if job.is_final:
            return await full_view(service, job)
    estimate = submitted.estimate
    return ExecuteResponse(job_id=job.id, status=job.status, estimated_start_time=estimate)


@router.post("/sessions/{session_id}/interrupt", response_model=SessionView, responses=NOT_FOUND)
async def interrupt_session(session_id: str, sessions: SessionsDep, owner: OwnerDep) -> SessionView:
    """Interrupt what the kernel runs (a KeyboardInterrupt in the cell); its state stays."""
    return view(await sessions.interrupt(session_id, owner))


@router.post("/sessions/{session_id}/restart", response_model=SessionView, responses=NOT_FOUND)
async def restart_session(session_id: str, sessions: SessionsDep, owner: OwnerDep) -> SessionView:
    """A fresh kernel in the same directory: variables and imports are gone, files stay."""
    return view(await sessions.restart(session_id, owner))


@router.delete("/sessions/{session_id}", response_model=SessionEnded, responses=NOT_FOUND)
async def delete_session(session_id: str, sessions: SessionsDep, owner: OwnerDep) -> SessionEnded:
    """End the session: its kernel is killed and its directory removed."""
    await sessions.delete(session_id, owner)
    return SessionEnded(session_id=session_id, status="terminated")
