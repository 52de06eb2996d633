"""The job: a frozen value, its statuses, and the state machine kept as data."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from interpreter.limits import ResourceLimits


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return not TRANSITIONS[self]


TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    # running -> pending: its worker was lost (scale-out) and the job runs again elsewhere
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.COMPLETED,
            JobStatus.FAILED,
            JobStatus.TIMEOUT,
            JobStatus.CANCELLED,
            JobStatus.PENDING,
        }
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.TIMEOUT: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

FINAL_STATUSES = frozenset(s for s in JobStatus if s.is_final)


class TerminationReason(StrEnum):
    """Why a finished job ended, for machines (``error_message`` says it for people)."""

    EXIT = "exit"  # its main process exited by itself, with any exit code
    TIMEOUT = "timeout"  # wall time
    CPU_LIMIT = "cpu_limit"  # CPU time: RLIMIT_CPU (SIGXCPU, SIGKILL) or the cgroup's accounting
    MEMORY_LIMIT = "memory_limit"  # killed by the cgroup's OOM killer
    WORKSPACE_LIMIT = "workspace_limit"  # disk used in its working directory
    OUTPUT_LIMIT = "output_limit"  # reserved: output over the cap is truncated, never killed
    SIGNAL = "signal"  # killed by a signal that none of the above explains
    CANCELLED = "cancelled"
    SANDBOX_ERROR = "sandbox_error"  # not the code's doing: the sandbox or the server failed
    PACKAGES_ERROR = "packages_error"  # its packages could not be installed: it never started


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """Every status from which ``target`` may be reached."""
    return frozenset(src for src, targets in TRANSITIONS.items() if target in targets)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What the caller asked for, as validated by the API."""

    code: str
    language: str  # canonical name
    timeout_s: float
    capture_files: bool = True
    working_directory: str | None = None  # resolved absolute path, or None for a fresh one
    environment: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    limits: ResourceLimits | None = None  # None: the server's defaults when it runs
    stdin: str | None = None  # what the code reads on standard input (None: end of file)
    # Files the store holds for it (``JobStore.get_inputs``), written before it starts: their
    # number only, so that the request read on every status poll stays small.
    input_file_count: int = 0
    # Python packages asked for (canonical requirements) and what they resolved to when the job
    # was submitted (``name==version`` pins): the worker installs exactly those.
    packages: tuple[str, ...] = ()
    lock: tuple[str, ...] = ()
    resolve_ms: float | None = None
    lock_python: str | None = None  # the interpreter the pins are for ("cpython 3.11 x86_64")
    session_id: str | None = None  # run in this session's kernel (sessions/), not a process


@dataclass(frozen=True, slots=True)
class InputFile:
    """A file the caller sent with the job: its path relative to the working directory (checked,
    ``inputs.check_input_files``) and its content."""

    path: str
    content: bytes


@dataclass(frozen=True, slots=True)
class JobResult:
    """What a finished job produced (outputs live in files beside the database)."""

    exit_code: int | None = None
    signal: int | None = None
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    files_created: tuple[str, ...] = ()
    files_modified: tuple[str, ...] = ()
    files_deleted: tuple[str, ...] = ()
    files_complete: bool = True
    files_note: str | None = None
    resource_usage: dict[str, Any] = field(default_factory=dict)
    environment_snapshot: dict[str, str] = field(default_factory=dict)
    working_directory: str | None = None
    termination_reason: TerminationReason | None = None
    # The package environment it ran with: {id, packages {name: version}, cached, resolve_ms,
    # install_ms}; None without packages
    environment: dict[str, Any] | None = None
    # A session execution's notebook outputs: each {type: execute_result | display_data, data:
    # {mime type: value}, truncated}, and its exception {name, value, traceback}
    outputs: tuple[dict[str, Any], ...] = ()
    outputs_truncated: bool = False
    error: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobResult:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("files_created", "files_modified", "files_deleted", "outputs"):
            if name in values:
                values[name] = tuple(values[name])
        if values.get("termination_reason") is not None:
            values["termination_reason"] = TerminationReason(values["termination_reason"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class CapturedOutput:
    """A finished job's stdout and stderr as stored for every replica (already capped)."""

    stdout: bytes = b""
    stderr: bytes = b""


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """A piece of a running job's output as a worker publishes it (scale-out): ``data`` is the
    bytes of ``stream`` ("stdout" or "stderr") from byte ``start`` of what the job's output
    file holds."""

    stream: str
    start: int
    data: bytes

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    request: JobRequest
    status: JobStatus = JobStatus.PENDING
    owner: str | None = None  # hash of the API key that created it
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    execution_time_ms: float | None = None
    error_message: str | None = None
    result: JobResult | None = None
    seq: int | None = None  # store-assigned submission order
    worker_id: str | None = None  # who runs or ran it (scale-out); None in the embedded mode
    worker_host: str | None = None
    attempts: int = 0  # times a worker started it (more than 1 after a worker was lost)
    queue_id: int | None = None  # its entry in an external queue (procrastinate's job id)
    # The caller's Idempotency-Key, scoped to its owner (``idempotency_scope``), and a digest
    # of the request it came with: the same key again answers with this job.
    idempotency_key: str | None = None
    request_digest: str | None = None

    def evolve(self, **changes: Any) -> Job:
        return dataclasses.replace(self, **changes)

    @property
    def is_final(self) -> bool:
        return self.status.is_final


def idempotency_scope(owner: str | None, key: str) -> str:
    """An Idempotency-Key as stored: one owner's keys never meet another's (owners are hex
    hashes, without a colon)."""
    return f"{owner or ''}:{key}"


def termination_reason(job: Job) -> TerminationReason | None:
    """Why ``job`` ended; None while it is not final.

    A job that ended without a result of its own was cancelled before it started, or failed
    before or without a process to supervise (it could not start, or the server restarted
    while it ran): not the code's doing, so ``sandbox_error``; ``error_message`` says which."""
    if not job.is_final:
        return None
    if job.result is not None and job.result.termination_reason is not None:
        return job.result.termination_reason
    if job.status is JobStatus.CANCELLED:
        return TerminationReason.CANCELLED
    if job.status is JobStatus.TIMEOUT:
        return TerminationReason.TIMEOUT
    if job.status is JobStatus.COMPLETED:
        return TerminationReason.EXIT
    return TerminationReason.SANDBOX_ERROR
