"""Run one process to completion and describe what it did.

It knows nothing about jobs, stores or HTTP: it takes a ``ProcessSpec`` (argv, working
directory, environment, limits, where to write output) and returns a ``ProcessOutcome``.
The sandbox wraps ``argv`` and may hand over a ``Confinement`` (a cgroup and rlimits): the process
then starts behind a gate, a tiny shell that writes itself into the cgroup and waits on its stdin
until this side has applied the rlimits, so nothing of the job runs (or forks) outside it;
signals, kills, CPU time and peak memory then come from the cgroup, which holds every process of
the job, daemons included.
The runner turns outcomes into job results; ``child`` holds the process while it runs; the
values that go in and come out are in ``spec``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from datetime import UTC, datetime

from interpreter.process import filetrack
from interpreter.process.child import Child
from interpreter.process.filetrack import ScanLimits
from interpreter.process.output import StreamCapture
from interpreter.process.spec import (
    CapturedStream,
    FileChanges,
    ProcessOutcome,
    ProcessSpec,
    ResourceUsage,
    Termination,
)
from interpreter.sandbox.base import CgroupUsage, over_limit

logger = logging.getLogger(__name__)

_DRAIN_AFTER_EXIT_S = 0.5

__all__ = [
    "CapturedStream",
    "FileChanges",
    "ProcessOutcome",
    "ProcessSpec",
    "ResourceUsage",
    "ScanLimits",
    "Termination",
    "run_process",
]


async def run_process(spec: ProcessSpec, cancel: asyncio.Event | None = None) -> ProcessOutcome:
    """Run ``spec`` to completion, timeout or cancellation (set ``cancel``)."""
    before = filetrack.EMPTY
    if spec.track_files and not spec.cwd_is_fresh:
        before = await filetrack.scan_async(spec.cwd, spec.scan_limits, root_fd=spec.cwd_fd)
    child = await Child.start(spec, asyncio.get_running_loop())
    try:
        termination = await child.supervise(spec.timeout_s, spec.kill_grace_s, cancel)
        if termination == "exit" and spec.workspace is not None and over_limit(spec.workspace):
            termination = "workspace_limit"  # it filled its filesystem, then exited (ENOSPC)
        status, rusage = await child.reap()
        await child.drain(_DRAIN_AFTER_EXIT_S)
    except BaseException:
        child.abandon()
        raise
    after = filetrack.EMPTY
    if spec.track_files:
        after = await filetrack.scan_async(spec.cwd, spec.scan_limits, root_fd=spec.cwd_fd)
    changes = filetrack.diff(before, after)
    code = os.waitstatus_to_exitcode(status)
    exit_mono = child.exit_mono if child.exit_mono is not None else time.monotonic()
    wall_s = exit_mono - child.started_mono
    confined = child.final_usage()
    usage = _usage(child, rusage, wall_s, confined)
    outcome = ProcessOutcome(
        termination=termination,
        exit_code=code if code >= 0 else None,
        signal=-code if code < 0 else None,
        stdout=_captured(child.stdout),
        stderr=_captured(child.stderr),
        files=FileChanges(
            created=changes.created,
            modified=changes.modified,
            deleted=changes.deleted,
            complete=changes.complete,
            note=changes.note,
        ),
        usage=usage,
        started_at=child.started_at,
        finished_at=child.finished_at or datetime.now(UTC),
        duration_ms=wall_s * 1000,
        confined=confined,
    )
    logger.debug(
        "process %d ended: %s exit_code=%s signal=%s duration_ms=%.1f",
        child.pid,
        termination,
        outcome.exit_code,
        outcome.signal,
        outcome.duration_ms,
    )
    return outcome


def _usage(
    child: Child, rusage: resource.struct_rusage, wall_s: float, confined: CgroupUsage | None
) -> ResourceUsage:
    if confined is not None:
        # The kernel's total is exact; its user/system split is sampled by ticks (0 for a job
        # shorter than one): split the exact total in the sampled proportion.
        split_s = confined.cpu_user_s + confined.cpu_system_s
        total_s = confined.cpu_total_s or split_s
        user_s = total_s * confined.cpu_user_s / split_s if split_s else total_s
        return ResourceUsage(
            pid=child.pid,
            cpu_user_s=user_s,
            cpu_system_s=total_s - user_s,
            cpu_percent_avg=total_s / wall_s * 100 if wall_s > 0 else 0.0,
            peak_rss_bytes=confined.peak_memory_bytes or 0,
            peak_vms_bytes=None,
            cpu_total_s=total_s,
        )
    cpu_s = rusage.ru_utime + rusage.ru_stime
    return ResourceUsage(
        pid=child.pid,
        cpu_user_s=rusage.ru_utime,
        cpu_system_s=rusage.ru_stime,
        cpu_percent_avg=cpu_s / wall_s * 100 if wall_s > 0 else 0.0,
        peak_rss_bytes=child.peak_rss_bytes(rusage.ru_maxrss * 1024),
        peak_vms_bytes=child.peak_vms_bytes,
    )


def _captured(capture: StreamCapture) -> CapturedStream:
    return CapturedStream(capture.path, capture.total_bytes, capture.truncated)
