"""How a process's outcome reads as a job's end: status, termination reason, error message,
exit code and signal, for every way a job can end. No process runs: outcomes are built here."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from interpreter.job import Job, JobRequest, JobStatus, TerminationReason
from interpreter.limits import ResourceLimits
from interpreter.process.spec import (
    CapturedStream,
    FileChanges,
    ProcessOutcome,
    ResourceUsage,
    Termination,
)
from interpreter.running.ending import read_ending
from interpreter.sandbox.base import NoSandbox
from interpreter.sandbox.cgroupfs import CgroupUsage

MiB = 2**20
LIMITS = ResourceLimits(
    cpu_time_s=2.0,
    memory_bytes=256 * MiB,
    processes=64,
    file_size_bytes=64 * MiB,
    open_files=256,
    workspace_bytes=100 * MiB,
    tmp_bytes=64 * MiB,
)


def outcome(
    termination: Termination = "exit",
    exit_code: int | None = 0,
    sig: int | None = None,
    confined: CgroupUsage | None = None,
) -> ProcessOutcome:
    stream = CapturedStream(Path("/nonexistent"), 0, False)
    now = datetime.now(UTC)
    return ProcessOutcome(
        termination=termination,
        exit_code=exit_code,
        signal=sig,
        stdout=stream,
        stderr=stream,
        files=FileChanges(),
        usage=ResourceUsage(1, 0.1, 0.0, 10.0, MiB, None),
        started_at=now,
        finished_at=now,
        duration_ms=10.0,
        confined=confined,
    )


def cgroup(cpu_total_s: float = 0.1, oom_kills: int = 0) -> CgroupUsage:
    return CgroupUsage(cpu_total_s, 0.0, cpu_total_s, MiB, oom_kills)


def job(language: str = "python", timeout_s: float = 5.0) -> Job:
    return Job(id="j", request=JobRequest(code="x", language=language, timeout_s=timeout_s))


@pytest.mark.parametrize(
    ("given", "status", "reason", "error"),
    [
        (outcome(), JobStatus.COMPLETED, TerminationReason.EXIT, None),
        (outcome(exit_code=3), JobStatus.FAILED, TerminationReason.EXIT, "exited with code 3"),
        (
            outcome(exit_code=None, sig=signal.SIGSEGV),
            JobStatus.FAILED,
            TerminationReason.SIGNAL,
            "killed by signal 11 (SIGSEGV)",
        ),
        (
            outcome("timeout", None, signal.SIGTERM),
            JobStatus.TIMEOUT,
            TerminationReason.TIMEOUT,
            "timed out after 5 s",
        ),
        (
            outcome("cancelled", None, signal.SIGTERM),
            JobStatus.CANCELLED,
            TerminationReason.CANCELLED,
            "cancelled",
        ),
        (
            outcome("cpu_limit", None, signal.SIGKILL),
            JobStatus.FAILED,
            TerminationReason.CPU_LIMIT,
            "CPU time limit exceeded (2 s)",
        ),
        (
            outcome("workspace_limit", 1),
            JobStatus.FAILED,
            TerminationReason.WORKSPACE_LIMIT,
            "workspace disk limit exceeded (100 MiB)",
        ),
        (
            outcome(exit_code=None, sig=signal.SIGKILL, confined=cgroup(oom_kills=1)),
            JobStatus.FAILED,
            TerminationReason.MEMORY_LIMIT,
            "memory limit exceeded (256 MiB)",
        ),
        (
            outcome(exit_code=None, sig=signal.SIGXCPU, confined=cgroup()),
            JobStatus.FAILED,
            TerminationReason.CPU_LIMIT,
            "CPU time limit exceeded (2 s)",
        ),
        (
            outcome(exit_code=None, sig=signal.SIGKILL, confined=cgroup(cpu_total_s=2.5)),
            JobStatus.FAILED,
            TerminationReason.CPU_LIMIT,
            "CPU time limit exceeded (2 s)",
        ),
        (
            outcome(exit_code=None, sig=signal.SIGKILL, confined=cgroup(cpu_total_s=0.5)),
            JobStatus.FAILED,
            TerminationReason.SIGNAL,
            "killed by signal 9 (SIGKILL)",
        ),
        (outcome(confined=cgroup(oom_kills=1)), JobStatus.COMPLETED, TerminationReason.EXIT, None),
    ],
    ids=[
        "exit-0",
        "exit-3",
        "signal",
        "timeout",
        "cancel",
        "cpu-limit",
        "workspace-limit",
        "oom-kill",
        "sigxcpu",
        "sigkill-after-cpu-limit",
        "sigkill-within-cpu",
        "oom-elsewhere-but-exit-0",
    ],
)
def test_an_outcome_reads_as_this_end(
    given: ProcessOutcome,
    status: JobStatus,
    reason: TerminationReason,
    error: str | None,
    tmp_path: Path,
) -> None:
    stderr = tmp_path / "stderr"
    stderr.write_text("")
    end = read_ending(job(), given, LIMITS, NoSandbox(), stderr)
    assert (end.status, end.reason, end.error) == (status, reason, error)
    assert (end.exit_code, end.signal) == (given.exit_code, given.signal)


def test_a_failing_exit_says_the_last_line_of_stderr_without_stack_frames(tmp_path: Path) -> None:
    stderr = tmp_path / "stderr"
    stderr.write_text(
        "/app/x.js:1\nError: boom\n    at Object.<anonymous> (/app/x.js:1:7)\nNode.js v20.1.0\n"
    )
    end = read_ending(job("javascript"), outcome(exit_code=1), LIMITS, NoSandbox(), stderr)
    assert end.error == "Error: boom"


def test_python_memory_error_when_confined_is_the_memory_limit(tmp_path: Path) -> None:
    stderr = tmp_path / "stderr"
    stderr.write_text("Traceback (most recent call last):\nMemoryError\n")
    confined = outcome(exit_code=1, confined=cgroup())
    end = read_ending(job(), confined, LIMITS, NoSandbox(), stderr)
    assert end.reason == TerminationReason.MEMORY_LIMIT
    unconfined = read_ending(job(), outcome(exit_code=1), LIMITS, NoSandbox(), stderr)
    assert (unconfined.reason, unconfined.error) == (TerminationReason.EXIT, "MemoryError")
