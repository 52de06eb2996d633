"""What confines jobs on this server, and the limits a request may ask for."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from interpreter.api.deps import OwnerDep, PartsDep
from interpreter.sandbox import LIMITS, ResourceLimits

router = APIRouter(tags=["system"])


class LimitRange(BaseModel):
    default: float
    maximum: float


class SandboxInfo(BaseModel):
    mode: str = Field(description="bwrap, or none (no isolation: trusted local use only)")
    isolated: bool
    limits_enforced: bool = Field(
        description="False with mode none: only wall time and output size are limited"
    )
    details: dict[str, Any] = Field(description="What the sandbox is made of, or the warning")
    limits: dict[str, LimitRange] = Field(
        description="Each limit a request may set in `limits`: the default and the maximum"
    )
    tmp_bytes: int = Field(description="Size of a job's private /tmp")


def cgroup_version(described: object) -> str:
    """Only the version of "cgroup v2, jobs under /sys/fs/cgroup/...": no host path."""
    found = re.match(r"cgroup v[12]\b", str(described))
    return found.group(0) if found else "unknown"


@router.get("/sandbox", response_model=SandboxInfo)
async def describe_sandbox(parts: PartsDep, _owner: OwnerDep) -> SandboxInfo:
    """How jobs are confined here, and the default and maximum of each per-job limit."""
    settings = parts.settings
    if parts.runner is not None:
        described = parts.runner.sandbox.describe()
        if "cgroup" in described:
            described["cgroup"] = cgroup_version(described["cgroup"])
    else:  # an API-only replica: the workers confine jobs, as configured for them
        described = {
            "mode": settings.sandbox,
            "isolated": settings.sandbox != "none",
            "limits_enforced": settings.sandbox != "none",
            "runs_jobs": False,
        }
    defaults = ResourceLimits.defaults(settings)
    return SandboxInfo(
        mode=described.pop("mode"),
        isolated=described.pop("isolated"),
        limits_enforced=described.pop("limits_enforced"),
        details=described,
        limits={
            name: LimitRange(
                default=getattr(defaults, name), maximum=getattr(settings, spec.maximum)
            )
            for name, spec in LIMITS.items()
        },
        tmp_bytes=defaults.tmp_bytes,
    )
