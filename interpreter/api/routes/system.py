"""Health, languages and metrics."""

from __future__ import annotations

import asyncio
import logging
import time

import psutil
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from interpreter import __version__
from interpreter.api.deps import AppParts, PartsDep
from interpreter.api.schemas import (
    HealthResponse,
    LanguageInfo,
    QueueReport,
    ServiceChecks,
    SystemResources,
)
from interpreter.job import utcnow
from interpreter.metrics import CONTENT_TYPE_LATEST
from interpreter.queues.base import QueueState

router = APIRouter(tags=["system"])
logger = logging.getLogger(__name__)

STORE_TIMEOUT_S = 2.0


async def _store_check(parts: AppParts) -> tuple[str, str | None, int]:
    try:
        counts = await asyncio.wait_for(parts.store.count_by_status(), STORE_TIMEOUT_S)
    except Exception as exc:  # any failure of the round trip makes the store unhealthy
        return "unhealthy", f"job store round trip failed: {exc.__class__.__name__}", 0
    processed = sum(n for status, n in counts.items() if status.is_final)
    return "healthy", None, processed


async def _queue_state(parts: AppParts) -> QueueState:
    """The queue's state within ``STORE_TIMEOUT_S``: a database that accepts connections and
    never answers must not hold /health (or /metrics) with it. Whatever fails, the client
    reads a state; why goes to the log only (a driver's words name hosts and ports)."""
    try:
        return await asyncio.wait_for(parts.queue.state(), STORE_TIMEOUT_S)
    except Exception as exc:  # the queue's own answer covers its known failures
        backend = "procrastinate" if parts.settings.database_kind == "postgresql" else "in-process"
        return QueueState(
            backend, "unhealthy", f"queue unreachable: {exc.__class__.__name__}", 0, 0
        )


def _languages_check(parts: AppParts) -> tuple[str, str | None]:
    languages = parts.registry.languages.values()
    broken = parts.registry.problems()
    missing = [lang.name for lang in languages if not lang.available and lang.name not in broken]
    if not missing and not broken:
        return "healthy", None
    why = "; ".join(
        ([f"interpreter not found for: {', '.join(sorted(missing))}"] if missing else [])
        + [f"{name} cannot run: {problem}" for name, problem in sorted(broken.items())]
    )
    if len(missing) == len(parts.registry.languages):
        return "unhealthy", "no language interpreter found"
    if len(missing) + len(broken) == len(parts.registry.languages):
        return "unhealthy", f"no language can run: {why}"
    return "degraded", why


def _disk_percent(parts: AppParts) -> float:
    try:
        return psutil.disk_usage(str(parts.settings.data_dir)).percent
    except OSError:
        return 0.0


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "A vital check failed"}},
)
async def get_health(parts: PartsDep) -> Response:
    """Real checks of the queue, the interpreters and the job store."""
    store_state, store_why, processed = await _store_check(parts)
    queue = await _queue_state(parts)
    dispatcher_state, dispatcher_why = queue.state, queue.why
    languages_state, languages_why = _languages_check(parts)
    states = [dispatcher_state, languages_state, store_state]
    overall = (
        "unhealthy" if "unhealthy" in states else "degraded" if "degraded" in states else "healthy"
    )
    for name, why in (
        ("job_manager", dispatcher_why),
        ("enhanced_terminal", languages_why),
        ("async_interpreter", store_why),
    ):
        if why:
            logger.warning("health check %s: %s", name, why, extra={"check": name})
    body = HealthResponse(
        status=overall,
        timestamp=utcnow(),
        uptime_seconds=int(time.monotonic() - parts.started_monotonic),
        version=__version__,
        active_jobs=queue.running,
        total_jobs_processed=processed,
        system_resources=SystemResources(
            cpu_percent=psutil.cpu_percent(interval=None),  # since the last call: never blocks
            memory_percent=psutil.virtual_memory().percent,
            disk_usage_percent=_disk_percent(parts),
        ),
        service_checks=ServiceChecks(
            job_manager=dispatcher_state,
            enhanced_terminal=languages_state,
            async_interpreter=store_state,
        ),
        queue=QueueReport(
            backend=queue.backend,
            database=parts.settings.database_kind,
            depth=queue.depth,
            running=queue.running,
            workers_alive=queue.workers_alive,
        ),
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=503 if overall == "unhealthy" else 200
    )


@router.get("/languages", response_model=list[LanguageInfo])
async def list_languages(parts: PartsDep) -> list[LanguageInfo]:
    """Every language this server knows, and whether its interpreter is available here."""
    return [
        LanguageInfo(
            name=lang.name,
            aliases=list(lang.aliases),
            version=parts.registry.versions.get(lang.name),
            available=lang.available,
            executable=lang.executable,
            problem=lang.problem,
        )
        for lang in parts.registry.languages.values()
    ]


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def get_metrics(parts: PartsDep) -> Response:
    """Prometheus metrics: request durations, jobs by final status, queue depth, job durations."""
    queue = await _queue_state(parts)
    parts.metrics.queue_depth.set(queue.depth)
    parts.metrics.running_jobs.set(queue.running)
    return Response(parts.metrics.render(), media_type=CONTENT_TYPE_LATEST)
