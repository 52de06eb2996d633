"""How a job ends: its process's outcome read as the job's final status, termination reason and
error message (``ending``), and the ``Finish`` the runner hands to the job's lifecycle. Pure
functions of their arguments, tested as a table (tests/unit/test_ending.py)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interpreter.job import Job, JobResult, JobStatus, TerminationReason
from interpreter.limits import ResourceLimits, describe_bytes
from interpreter.process.spec import ProcessOutcome
from interpreter.sandbox.base import Sandbox


@dataclass(frozen=True, slots=True)
class Finish:
    """How a run ended: the status to move to and what to store with it."""

    status: JobStatus
    result: JobResult | None
    error_message: str | None
    execution_time_ms: float | None


# Lines that follow the error itself: stack frames ("    at f (file:1:2)") and node's banner.
_NOT_THE_ERROR = re.compile(r"^\s+at\s|^Node\.js v\d")


def last_line(path: Path, max_bytes: int = 4096) -> str | None:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - max_bytes))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [
        line.strip()
        for line in tail.splitlines()
        if line.strip() and not _NOT_THE_ERROR.match(line)
    ]
    return lines[-1][:500] if lines else None


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def usage_of(outcome: ProcessOutcome) -> dict[str, Any]:
    usage = outcome.usage
    total_s = usage.cpu_total_s
    if total_s is None:
        total_s = usage.cpu_user_s + usage.cpu_system_s
    return {
        "pid": usage.pid,
        "cpu_percent": {"average": round(usage.cpu_percent_avg, 2)},
        "cpu_time_s": {
            "user": round(usage.cpu_user_s, 6),
            "system": round(usage.cpu_system_s, 6),
            "total": round(total_s, 6),
        },
        "memory_bytes": {"peak_rss": usage.peak_rss_bytes, "peak_vms": usage.peak_vms_bytes},
    }


@dataclass(frozen=True, slots=True)
class Ending:
    """How a process's outcome reads as a job's end."""

    status: JobStatus
    reason: TerminationReason
    error: str | None
    exit_code: int | None
    signal: int | None


def read_ending(
    job: Job, outcome: ProcessOutcome, limits: ResourceLimits, sandbox: Sandbox, stderr: Path
) -> Ending:
    """The job's status, termination reason and error message from its process's outcome."""
    code, sig = sandbox.decode_exit(outcome.exit_code, outcome.signal)

    def end(status: JobStatus, reason: TerminationReason, error: str | None) -> Ending:
        return Ending(status, reason, error, code, sig)

    memory = f"memory limit exceeded ({describe_bytes(limits.memory_bytes)})"
    cpu = f"CPU time limit exceeded ({limits.cpu_time_s:g} s)"
    match outcome.termination:
        case "timeout":
            return end(
                JobStatus.TIMEOUT,
                TerminationReason.TIMEOUT,
                f"timed out after {job.request.timeout_s:g} s",
            )
        case "cancelled":
            return end(JobStatus.CANCELLED, TerminationReason.CANCELLED, "cancelled")
        case "cpu_limit":
            return end(JobStatus.FAILED, TerminationReason.CPU_LIMIT, cpu)
        case "workspace_limit":
            workspace = describe_bytes(limits.workspace_bytes)
            return end(
                JobStatus.FAILED,
                TerminationReason.WORKSPACE_LIMIT,
                f"workspace disk limit exceeded ({workspace})",
            )
    if failure := sandbox.setup_failure(code, stderr):
        return end(JobStatus.FAILED, TerminationReason.SANDBOX_ERROR, f"sandbox failed: {failure}")
    confined = outcome.confined
    if confined is not None and code != 0:
        if confined.oom_kills:
            return end(JobStatus.FAILED, TerminationReason.MEMORY_LIMIT, memory)
        if sig == signal.SIGXCPU or (
            sig == signal.SIGKILL and confined.cpu_total_s >= limits.cpu_time_s
        ):
            return end(JobStatus.FAILED, TerminationReason.CPU_LIMIT, cpu)
    if sig is not None:
        return end(
            JobStatus.FAILED,
            TerminationReason.SIGNAL,
            f"killed by signal {sig} ({signal_name(sig)})",
        )
    if code != 0:
        last = last_line(stderr)
        if confined is not None and job.request.language == "python" and last == "MemoryError":
            # RLIMIT_AS refused one allocation too large for the limit: say it as the cgroup would
            return end(JobStatus.FAILED, TerminationReason.MEMORY_LIMIT, memory)
        return end(JobStatus.FAILED, TerminationReason.EXIT, last or f"exited with code {code}")
    return end(JobStatus.COMPLETED, TerminationReason.EXIT, None)


CANCELLED_BEFORE_START = Finish(
    JobStatus.CANCELLED,
    JobResult(termination_reason=TerminationReason.CANCELLED),
    "cancelled",
    None,
)


def not_started(job: Job, cancel: asyncio.Event) -> Finish:
    if cancel.is_set():
        return CANCELLED_BEFORE_START
    return Finish(
        JobStatus.TIMEOUT,
        JobResult(termination_reason=TerminationReason.TIMEOUT),
        f"timed out after {job.request.timeout_s:g} s waiting for its working directory, "
        "where another job ran all that time",
        None,
    )
