"""Package environments on this server's disk: list them, build one ahead of the jobs that
will use it, remove one no job uses. They are shared by every caller (content-addressed: they
hold only public packages, never a job's data)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status

from interpreter.api.deps import ServiceDep
from interpreter.api.routes.jobs import error
from interpreter.api.schemas import EnvironmentBuilt, EnvironmentInfo, EnvironmentRequest
from interpreter.errors import EnvironmentFailed, PackagesUnresolvable, ServiceUnavailable
from interpreter.packages import EnvironmentInfo as Info
from interpreter.packages import Environments, Packages
from interpreter.service import JobService

router = APIRouter(tags=["environments"])


def _here(service: JobService) -> tuple[Packages, Environments]:
    packages = service.packages
    if packages is None or packages.environments is None:
        raise ServiceUnavailable(
            "package environments live where jobs run: this server runs none (an API-only "
            "replica), or has no Python interpreter"
        )
    return packages, packages.environments


def _view(info: Info) -> EnvironmentInfo:
    return EnvironmentInfo(
        id=info.id,
        requirements=list(info.requirements),
        packages=info.packages,
        size_bytes=info.size_bytes,
        created_at=info.created_at,
        last_used_at=info.last_used_at,
        in_use=info.in_use,
    )


@router.get("/environments", response_model=list[EnvironmentInfo])
async def list_environments(service: ServiceDep) -> list[EnvironmentInfo]:
    """The package environments here, the most recently used first."""
    _, environments = _here(service)
    return [_view(info) for info in await asyncio.to_thread(environments.all)]


@router.post(
    "/environments",
    response_model=EnvironmentBuilt,
    status_code=status.HTTP_201_CREATED,
    responses={
        400: error("The body could not be read"),
        422: error(
            "A requirement refused, or packages that cannot be resolved or installed "
            "(errors[0].type: not_found, unsatisfiable, no_wheel or install_failed)"
        ),
        503: error("The package registry is unavailable, or this server runs no jobs"),
    },
)
async def build_environment(body: EnvironmentRequest, service: ServiceDep) -> EnvironmentBuilt:
    """Resolve and install packages now, so that the first job that asks for them starts at
    once (`cached: true` when the environment existed)."""
    packages, environments = _here(service)
    resolution = await packages.resolver.resolve(body.packages)
    try:
        lease = await environments.acquire(resolution.requirements, resolution.pins)
    except EnvironmentFailed as exc:
        raise PackagesUnresolvable(exc.message, kind="install_failed") from None
    try:
        info = await asyncio.to_thread(environments.get, lease.id)
    finally:
        lease.release()
    return EnvironmentBuilt(
        **_view(info).model_dump(exclude={"in_use"}),
        in_use=False,
        cached=lease.cached,
        resolve_ms=resolution.resolve_ms,
        install_ms=lease.install_ms,
    )


@router.delete(
    "/environments/{environment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        404: error("No environment with that id here"),
        409: error("A running job uses it"),
        503: error("This server runs no jobs"),
    },
)
async def delete_environment(environment_id: str, service: ServiceDep) -> Response:
    """Remove an environment no job uses (a later job that needs it builds it again)."""
    _, environments = _here(service)
    await environments.remove(environment_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
