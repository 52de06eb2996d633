"""The FastAPI application: built from settings, with the store, queue and service it owns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import psutil
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interpreter import __version__, wiring
from interpreter.api import errors
from interpreter.api.auth import RequireApiKey, presented_key
from interpreter.api.bodylimit import BodySizeLimit
from interpreter.api.deps import AppParts
from interpreter.api.openapi import document
from interpreter.api.ratelimit import ExecuteRateLimit, rate_limiter
from interpreter.api.routes import (
    environments,
    files,
    jobs,
    kernels,
    sandbox,
    sessions,
    stream,
    system,
)
from interpreter.config import Settings
from interpreter.datadir import DataDirLock
from interpreter.errors import ConfigurationError, InterpreterError
from interpreter.mcp import mount
from interpreter.metrics import Metrics
from interpreter.queues.base import JobQueue
from interpreter.running.base import Runner
from interpreter.running.runner import JobRunner
from interpreter.service import JobService
from interpreter.sessions.manager import Sessions
from interpreter.store.base import JobStore

logger = logging.getLogger("interpreter.access")


class AccessLog:
    """One structured line and one metrics observation per request (pure ASGI: cheap)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_duration.labels(scope["method"], template, str(status)).observe(
                elapsed
            )
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )


OPEN_ROUTES = ("/health", "/languages", "/metrics")  # answered without a key


def open_paths(app: FastAPI) -> set[str]:
    """The paths a request without a key may reach: OPEN_ROUTES and the API documentation."""
    pages = [app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url]
    return {*OPEN_ROUTES, *(url for url in pages if url)}


def api_keys(settings: Settings) -> tuple[str, ...]:
    """The keys a request must present; empty when authentication is off. Refuses settings
    that would leave the server open although keys are given, or closed to every key."""
    if not settings.authentication:
        if settings.api_keys_given:
            raise ConfigurationError(
                "INTERPRETER_AUTH=false, yet API keys are given (INTERPRETER_API_KEYS or "
                "INTERPRETER_API_KEYS_FILE): the server would accept requests without a key. "
                "Unset INTERPRETER_AUTH (keys turn authentication on) or set it to true; to run "
                "without authentication, unset INTERPRETER_API_KEYS and INTERPRETER_API_KEYS_FILE"
            )
        return ()
    try:
        keys = tuple(settings.all_api_keys())
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read INTERPRETER_API_KEYS_FILE={settings.api_keys_file}: {exc.strerror or exc}"
        ) from None
    if not keys:
        raise ConfigurationError(
            "authentication is on (INTERPRETER_AUTH=true, or INTERPRETER_API_KEYS or "
            "INTERPRETER_API_KEYS_FILE set) but no API key is configured: set INTERPRETER_API_KEYS "
            "(comma-separated) or INTERPRETER_API_KEYS_FILE (one key per line)"
        )
    return keys


def build_parts(
    settings: Settings,
    store: JobStore | None = None,
    runner: Runner | None = None,
    queue: JobQueue | None = None,
) -> AppParts:
    keys = api_keys(settings)
    if settings.enable_cors and "*" in settings.cors_origins:
        logger.warning("CORS allows every origin; credentials are disabled for it")
    wired = wiring.build(settings, store, runner, queue)
    service = JobService(
        settings,
        wired.store,
        wired.queue,
        wired.registry,
        wired.paths,
        outputs_in_store=wired.outputs_in_store,
        packages=wired.packages,
    )
    service.sessions = wired.sessions
    return AppParts(
        settings=settings,
        store=wired.store,
        registry=wired.registry,
        queue=wired.queue,
        runner=wired.runner,
        service=service,
        metrics=wired.metrics,
        api_keys=keys,
        started_monotonic=time.monotonic(),
        sessions=wired.sessions,
    )


def create_app(
    settings: Settings | None = None,
    store: JobStore | None = None,
    runner: Runner | None = None,
    queue: JobQueue | None = None,
) -> FastAPI:
    """The application. ``store``, ``runner`` and ``queue`` replace the ones the settings call
    for (tests pass a MemoryStore, a fake runner or queue)."""
    settings = settings or Settings()
    limiter = rate_limiter(settings)
    parts = build_parts(settings, store, runner, queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A process that runs jobs owns its data directory (an API-only replica runs none).
        lock = DataDirLock(settings.data_dir) if parts.runner is not None else None
        try:
            if lock is not None:
                lock.acquire()
            parts.service.paths.ensure()
            if lock is not None and parts.service.outputs_in_store:
                parts.service.paths.remove_transient()  # outputs live in the store there
            await parts.store.open()
            await parts.registry.probe_versions()
            await parts.queue.start()
        except InterpreterError as exc:  # say it in one line before uvicorn's traceback
            logger.error("refusing to start: %s", exc.message)
            if lock is not None:
                lock.release()
            raise
        psutil.cpu_percent(interval=None)  # prime the non-blocking sampler used by /health
        retention = asyncio.create_task(parts.service.retention_loop(), name="retention")
        packages = parts.service.packages
        if isinstance(parts.runner, JobRunner):
            parts.runner.warm_up()  # before the default packages' build says it is ready
        if isinstance(parts.sessions, Sessions):  # held here (on workers, they start there)
            parts.sessions.start()
        prebuild = None
        if packages is not None and parts.runner is not None:  # off the start's path
            prebuild = asyncio.create_task(packages.prebuild(), name="default-packages")
        logger.info(
            "server ready",
            extra={"data_dir": str(settings.data_dir), "max_jobs": settings.max_jobs},
        )
        try:
            async with mcp.lifespan() if mcp is not None else contextlib.nullcontext():
                yield
        finally:
            if prebuild is not None:
                prebuild.cancel()
            retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retention
            if isinstance(parts.sessions, Sessions):  # their executions end with their kernels
                await parts.sessions.close()
            await parts.queue.stop(settings.shutdown_grace_s)
            await parts.store.close()
            if lock is not None:
                lock.release()
            logger.info("server stopped")

    app = FastAPI(
        title="Interpreter API",
        version=__version__,
        description="Runs untrusted code as jobs and answers with structured JSON. Every error "
        'is `{"detail": "<one sentence>"}` (a 422 adds `errors`, one per bad field). This '
        "document describes this server as configured: with authentication on, every operation "
        "but the open ones needs an API key and may answer 401.",
        lifespan=lifespan,
        # operation ids a generated client turns into method names: execute, get_job_status, ...
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.parts = parts
    document(app, settings, parts.registry, open_paths(app), bool(parts.api_keys))
    errors.install(app)
    app.include_router(jobs.router)
    app.include_router(files.router)
    app.include_router(stream.router)
    app.include_router(system.router)
    app.include_router(sandbox.router)
    app.include_router(environments.router)
    app.include_router(sessions.router)
    app.include_router(kernels.router)
    # MCP over streamable HTTP; its tool calls are requests of this app, with the caller's key.
    mcp = mount.endpoint(app, presented_key, settings.max_body_bytes)
    if mcp is not None:
        app.router.routes.append(mcp.route)
    # Outermost last: the access log sees every answer, CORS headers reach the others' answers;
    # a rate-limited submission is refused before any of its body is read, chunked or not, and
    # so is a request without a valid key (after the rate limit, which counts guesses too).
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        upload_max_bytes=max(settings.max_upload_bytes, settings.max_body_bytes),
    )
    if parts.api_keys:
        app.add_middleware(RequireApiKey, api_keys=parts.api_keys, open_paths=open_paths(app))
    if limiter is not None:
        app.add_middleware(ExecuteRateLimit, limiter=limiter, api_keys=parts.api_keys)
    if settings.enable_cors:
        origins = settings.cors_origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials="*" not in origins,  # never * with credentials
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(AccessLog, metrics=parts.metrics)
    return app
