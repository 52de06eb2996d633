"""Run one process to completion and describe what it did.

The executor knows nothing about jobs, stores or HTTP: it takes a ``ProcessSpec`` (argv, working
directory, environment, limits, where to write output) and returns a ``ProcessOutcome``.
The sandbox wraps ``argv`` and may hand over a ``Confinement`` (a cgroup and rlimits): the process
then starts behind a gate, a tiny shell that writes itself into the cgroup and waits on its stdin
until the executor has applied the rlimits, so nothing of the job runs (or forks) outside it;
signals, kills, CPU time and peak memory then come from the cgroup, which holds every process of
the job, daemons included.
The runner turns outcomes into job results; ``supervisor`` holds the process while it runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from interpreter import filetrack
from interpreter.filetrack import ScanLimits
from interpreter.orphans import OrphanMarks
from interpreter.output import StreamCapture
from interpreter.sandbox.base import CgroupUsage, Confinement, WorkspaceMeter, over_limit
from interpreter.supervisor import Child, Termination

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


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    timeout_s: float
    stdout_path: Path
    stderr_path: Path
    output_limit_bytes: int = 10 * 1024 * 1024
    kill_grace_s: float = 1.0
    track_files: bool = True
    cwd_is_fresh: bool = False  # the directory was just created empty: skip the "before" scan
    scan_limits: ScanLimits = field(default_factory=ScanLimits)
    confinement: Confinement | None = None  # the sandbox's cgroup: holds the whole tree
    workspace: WorkspaceMeter | None = None  # the kernel-capped filesystem cwd is (sandbox)
    pass_fds: tuple[int, ...] = ()  # kept open for the process (the caller closes its own)
    cwd_fd: int | None = None  # cwd as the job sees it, opened by the caller: what tracking walks
    spawn_cwd: Path | None = None  # where the process starts, if not in cwd (the sandbox: /)
    # Nothing takes this job down with us (no sandbox): the watcher of ``orphans.GUARD`` will
    orphan_marks: OrphanMarks | None = None


@dataclass(frozen=True, slots=True)
class CapturedStream:
    """One output stream as kept on disk at ``path`` (head + marker + tail when truncated)."""

    path: Path
    total_bytes: int  # everything the process wrote
    truncated: bool


@dataclass(frozen=True, slots=True)
class FileChanges:
    created: tuple[str, ...] = ()  # sorted absolute paths
    modified: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    complete: bool = True  # False when a scan hit its entry or time bound
    note: str | None = None  # why it is incomplete


@dataclass(frozen=True, slots=True)
class ResourceUsage:
    pid: int
    cpu_user_s: float
    cpu_system_s: float
    cpu_percent_avg: float  # (user + system) / wall * 100
    peak_rss_bytes: int  # the cgroup's peak, or the largest process of the tree (see _Child)
    peak_vms_bytes: int | None  # sampled while running; None if it ended before a sample or
    # when confined (the cgroup keeps no such figure)
    cpu_total_s: float | None = None  # the cgroup's exact total (user + system are by ticks)


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    termination: Termination
    exit_code: int | None  # None when killed by a signal
    signal: int | None  # the signal that ended it, if any
    stdout: CapturedStream
    stderr: CapturedStream
    files: FileChanges
    usage: ResourceUsage
    started_at: datetime  # aware UTC
    finished_at: datetime
    duration_ms: float
    confined: CgroupUsage | None = None  # what the whole cgroup used, when confined


async def run_process(spec: ProcessSpec, cancel: asyncio.Event | None = None) -> ProcessOutcome:
    """Run ``spec`` to completion, timeout or cancellation (set ``cancel``)."""
    before = filetrack.EMPTY
    if spec.track_files and not spec.cwd_is_fresh:
        before = await filetrack.scan_async(spec.cwd, spec.scan_limits, root_fd=spec.cwd_fd)
    child = Child.spawn(spec, asyncio.get_running_loop())
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
