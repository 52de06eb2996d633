"""Request and response models: the wire format of ../shared/spec/API.md."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from interpreter.environment import REFUSED_NAMES, REFUSED_PREFIXES, VALID_NAME
from interpreter.job import JobStatus, TerminationReason
from interpreter.limits import MIN_PROCESSES, below_minimum
from interpreter.workspace import MAX_WORKING_DIRECTORY_CHARS

MAX_METADATA_DEPTH = 32
MAX_METADATA_BYTES = 64 * 1024


def _check_text(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{field} contains text that is not valid Unicode (a lone surrogate)"
        ) from None


def _check_json(value: Any, field: str, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"{field} is nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value, field)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, field)
            _check_json(item, field, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, field, depth + 1)


# Request bodies are read strictly: "5" is not a number, 0 is not a boolean, 1.5 is not an
# integer. As in JSON Schema, 5 is a number (a timeout of 5 is 5.0 seconds) and 5.0 an integer.
STRICT = ConfigDict(extra="forbid", strict=True)

# What the server refuses of environment_variables, said in the schema (JSON Schema 2020-12,
# which OpenAPI 3.1 uses): the names a job can be given, and values without NUL bytes.
ENVIRONMENT_SCHEMA: dict[str, Any] = {
    "propertyNames": {
        "pattern": VALID_NAME.pattern,
        "not": {
            "anyOf": [
                {"enum": sorted(REFUSED_NAMES)},
                {"pattern": "^(" + "|".join(sorted(REFUSED_PREFIXES)) + ")"},
            ]
        },
    },
    "additionalProperties": {"type": "string", "pattern": "^[^\\u0000]*$"},
}

# What the server refuses of a working_directory, as the document states it: relative, no '..'
# component, not only dots and slashes (the root itself). The server also takes an absolute path
# inside the workspace root, which the document leaves out: one outside it is refused.
WORKING_DIRECTORY_SCHEMA: dict[str, Any] = {
    "maxLength": MAX_WORKING_DIRECTORY_CHARS,
    "pattern": "^[^/\\u0000][^\\u0000]*$",
    "not": {"anyOf": [{"pattern": "(^|/)\\.\\.(/|$)"}, {"pattern": "^[./]*$"}]},
}

WorkingDirectory = Annotated[str, Field(json_schema_extra=WORKING_DIRECTORY_SCHEMA)]


class LimitsRequest(BaseModel):
    """Per-job limits; each one left out takes the server's default. A value above the
    server's maximum is refused with 422 (``GET /sandbox`` lists defaults and maximums)."""

    model_config = STRICT

    cpu_time_s: float | None = Field(
        None, gt=0, description="CPU time of all the job's processes together, in seconds"
    )
    memory_bytes: int | None = Field(
        None, ge=16 * 2**20, description="Memory (cgroup: RSS, page cache, /tmp), no swap"
    )
    processes: int | None = Field(
        None,
        ge=MIN_PROCESSES,
        description="Tasks (processes and threads) running at once, the sandbox's own 2 "
        f"included: at least {MIN_PROCESSES}; node needs about 9",
    )
    file_size_bytes: int | None = Field(None, ge=2**20, description="Largest file written")
    open_files: int | None = Field(None, ge=16, description="Open file descriptors per process")
    workspace_bytes: int | None = Field(
        None, ge=2**20, description="Disk used in the working directory"
    )

    @field_validator(
        "memory_bytes",
        "processes",
        "file_size_bytes",
        "open_files",
        "workspace_bytes",
        mode="before",
    )
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        """A float that is a whole number (``268435456.0``) is an integer, as in JSON Schema;
        ``1.5``, ``"5"`` and ``true`` stay refused."""
        if type(value) is float and value.is_integer():
            return int(value)
        return value

    @field_validator("processes", mode="before")
    @classmethod
    def _enough_processes(cls, value: Any) -> Any:
        """Below the minimum: say why there is one, before the bare bound would."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value < MIN_PROCESSES:
                raise ValueError(below_minimum("processes", value))
        return value


class InputFileRequest(BaseModel):
    """A file written into the job's working directory before it starts, the job's own to
    read, modify and delete."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="Relative to the working directory (no '..' component, not absolute, no two "
        "files at one path, names of at most 255 bytes); missing parent directories are made",
        examples=["data/in.csv"],
        # stated, not enforced here: the server's own check names the file it refuses
        json_schema_extra={"maxLength": 4095, "pattern": r"^[^/\x00]([^\x00]*[^/\x00])?$"},
    )
    content: str = Field(
        description="The file's bytes, base64 (standard alphabet, padded; whitespace such as "
        "the line breaks of `base64` is ignored)",
        examples=["YSxiCjEsMgo="],
        json_schema_extra={
            "pattern": r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
        },
    )


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(
        **STRICT,
        json_schema_extra={
            "examples": [
                {
                    "code": "print('Hello World!')",
                    "language": "python",
                    "timeout": 30,
                    "capture_files": True,
                    "working_directory": "project-a",
                    "environment_variables": {"GREETING": "hello"},
                    "metadata": {"user": "orchestrator", "task_id": "12345"},
                    "limits": {"memory_bytes": 268435456, "cpu_time_s": 10},
                    "input_files": [{"path": "data/in.csv", "content": "YSxiCjEsMgo="}],
                }
            ]
        },
    )

    code: str = Field(description="Source code to run")
    language: str = Field(
        "python",
        description="python, shell, javascript or an alias (the document lists those available "
        "on this server; GET /languages says more)",
    )
    timeout: float | None = Field(
        None,
        description="Wall-time limit in seconds, above 0 and at most the server's maximum "
        "(INTERPRETER_MAX_TIMEOUT); default INTERPRETER_DEFAULT_TIMEOUT",
    )
    capture_files: bool = Field(True, description="Track files created, modified and deleted")
    working_directory: WorkingDirectory | None = Field(
        None,
        description="Directory inside the workspace root (relative paths are taken from the "
        "root); default: a fresh directory per job",
    )
    environment_variables: dict[str, str] = Field(
        default_factory=dict,
        description="Variables added to the job's environment: names of letters, digits and _ "
        "(not starting with a digit); names that could weaken the sandbox (LD_*, BASH_ENV, ...) "
        "are refused; values without NUL bytes",
        json_schema_extra=ENVIRONMENT_SCHEMA,
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Kept with the job and returned with it (JSON, at most {MAX_METADATA_DEPTH} "
        f"levels deep and {MAX_METADATA_BYTES} bytes)",
    )
    limits: LimitsRequest | None = Field(
        None, description="Resource limits of this job, within the server's maximums"
    )
    stdin: str | None = Field(
        None,
        description="What the code reads on standard input (UTF-8; at most "
        "INTERPRETER_MAX_STDIN_BYTES, 1 MiB by default); without it the code reads end of file",
    )
    input_files: list[InputFileRequest] = Field(
        default_factory=list,
        description="Files written into the working directory before the job starts (larger "
        "ones: a multipart/form-data body, see the docs)",
    )
    packages: list[str] = Field(
        default_factory=list,
        description="Python packages the job imports, as plain requirements (`numpy>=2`, "
        "`pandas==3.1.1`; no URL, option or marker), at most INTERPRETER_MAX_PACKAGES: "
        "resolved to wheels when submitted (422 when they cannot be), installed once per set "
        "and shared read-only; the job's network stays off",
        json_schema_extra={"items": {"type": "string", "maxLength": 200}},
    )

    @model_validator(mode="after")
    def _storable(self) -> ExecuteRequest:
        """Every string must be valid Unicode (a lone surrogate cannot be stored or returned),
        and metadata must stay small and shallow."""
        _check_text(self.code, "code")
        _check_text(self.language, "language")
        _check_text(self.working_directory or "", "working_directory")
        _check_text(self.stdin or "", "stdin")
        for entry in self.packages:
            _check_text(entry, "packages")
        for name, value in self.environment_variables.items():
            _check_text(name, "environment_variables")
            _check_text(value, "environment_variables")
        _check_json(self.metadata, "metadata", depth=0)
        size = len(json.dumps(self.metadata, ensure_ascii=False).encode())
        if size > MAX_METADATA_BYTES:
            raise ValueError(
                f"metadata is {size} bytes of JSON; the maximum is {MAX_METADATA_BYTES}"
            )
        return self


class ExecuteResponse(BaseModel):
    job_id: str = Field(examples=["550e8400-e29b-41d4-a716-446655440000"])
    status: JobStatus = Field(examples=["pending"])
    estimated_start_time: datetime


EXECUTION_TIME = "Wall time from start to end, in whole milliseconds (null until it ran)"
EXECUTION_TIME_PRECISE = "The same wall time, in milliseconds with a fraction"


def whole_ms(value: float | None) -> int | None:
    """``execution_time_ms`` as the API shows it: whole milliseconds, rounded half up."""
    return None if value is None else math.floor(value + 0.5)


class StatusResponse(BaseModel):
    job_id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    execution_time_ms: int | None = Field(description=EXECUTION_TIME)
    execution_time_precise_ms: float | None = Field(description=EXECUTION_TIME_PRECISE)
    error_message: str | None
    metadata: dict[str, Any]


class JobListResponse(BaseModel):
    jobs: list[StatusResponse]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next (older) page; null on the last page"
    )


class StructuredResult(BaseModel):
    """Exactly the orchestrator format: status, stdout, stderr, files (created, absolute)."""

    status: JobStatus
    stdout: str
    stderr: str
    files: list[str]


class CpuPercent(BaseModel):
    average: float | None


class CpuTime(BaseModel):
    user: float | None
    system: float | None
    total: float | None


class MemoryBytes(BaseModel):
    peak_rss: int | None
    peak_vms: int | None


class ResourceUsage(BaseModel):
    pid: int | None
    cpu_percent: CpuPercent
    cpu_time_s: CpuTime
    memory_bytes: MemoryBytes


class WorkerInfo(BaseModel):
    id: str = Field(description="The worker's id in the queue (PostgreSQL mode)")
    host: str | None = Field(description="The machine its files (paths above) are on")


class EnvironmentReport(BaseModel):
    id: str = Field(description="The package environment (GET /environments lists them)")
    packages: dict[str, str] = Field(description="Every package installed: name to version")
    cached: bool = Field(description="It existed already: nothing was installed for this job")
    resolve_ms: float | None = Field(
        description="Resolving the request when it was submitted (null: the default packages)"
    )
    install_ms: float = Field(description="Installing them before the job started (0 if cached)")


class OutputBundle(BaseModel):
    type: str = Field(description="execute_result (the last expression) or display_data")
    data: dict[str, Any] = Field(
        description="MIME type to value: text/plain, text/html, image/png (base64), "
        "image/svg+xml, application/json (JSON), ..."
    )
    truncated: bool = Field(
        False, description="A value of this bundle was left out: it was over the bundle's cap"
    )


class CellError(BaseModel):
    name: str = Field(examples=["ZeroDivisionError"])
    value: str = Field(examples=["division by zero"])
    traceback: str = Field(description="Plain text, without terminal colour codes")


class FullResult(BaseModel):
    job_id: str
    status: JobStatus
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    files_created: list[str]
    files_modified: list[str]
    files_deleted: list[str]
    files_complete: bool = Field(description="False when file tracking hit its bound")
    files_note: str | None
    execution_time_ms: int | None = Field(description=EXECUTION_TIME)
    execution_time_precise_ms: float | None = Field(description=EXECUTION_TIME_PRECISE)
    exit_code: int | None
    signal: int | None
    resource_usage: ResourceUsage | None
    environment_snapshot: dict[str, str]
    working_directory: str | None
    error_message: str | None
    termination_reason: TerminationReason | None = Field(
        description="Why it ended: exit, timeout, cpu_limit, memory_limit, workspace_limit, "
        "output_limit, signal, cancelled, sandbox_error or packages_error; null until it is final"
    )
    environment: EnvironmentReport | None = Field(
        None,
        description="The Python packages it ran with (its own or the server's default ones); "
        "preparing them is not part of execution_time_ms",
    )
    limits: dict[str, float] | None = Field(
        description="The resource limits it ran (or will run) with"
    )
    metadata: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    worker: WorkerInfo | None = Field(
        None, description="Who ran it (PostgreSQL mode): file paths refer to its machine"
    )
    attempts: int = Field(0, description="Times a worker started it (2+: a worker was lost)")
    session_id: str | None = Field(None, description="The session it ran in, if any")
    results: list[OutputBundle] | None = Field(
        None,
        description="A session execution's display outputs in order: the last expression's "
        "value (execute_result) and each display (display_data: plots, tables), as MIME bundles; "
        "null for a job outside a session",
    )
    results_truncated: bool = Field(
        False, description="Display outputs were left out: their total passed the output cap"
    )
    error: CellError | None = Field(
        None, description="The exception a session execution raised, if it raised one"
    )


class EnvironmentRequest(BaseModel):
    model_config = ConfigDict(**STRICT)

    packages: list[str] = Field(
        min_length=1,
        description="Python packages as plain requirements, as in POST /execute",
        json_schema_extra={"items": {"type": "string", "maxLength": 200}},
    )

    @model_validator(mode="after")
    def _storable(self) -> EnvironmentRequest:
        for entry in self.packages:
            _check_text(entry, "packages")
        return self


class EnvironmentInfo(BaseModel):
    id: str
    requirements: list[str] = Field(description="What was asked for (canonical form)")
    packages: dict[str, str] = Field(description="Every package installed: name to version")
    size_bytes: int = Field(description="What its files hold (shared with the cache on disk)")
    created_at: datetime
    last_used_at: datetime
    in_use: bool = Field(description="A running job holds it: it cannot be removed now")


class EnvironmentBuilt(EnvironmentInfo):
    cached: bool = Field(description="It existed already: nothing was installed")
    resolve_ms: float
    install_ms: float


class LanguageInfo(BaseModel):
    name: str
    aliases: list[str]
    version: str | None
    available: bool
    executable: str | None
    # why an interpreter that exists cannot run jobs here (its trial run at start failed)
    problem: str | None = None


class SystemResources(BaseModel):
    cpu_percent: float
    memory_percent: float
    disk_usage_percent: float


class ServiceChecks(BaseModel):
    job_manager: str
    enhanced_terminal: str
    async_interpreter: str


class QueueReport(BaseModel):
    """Beyond the spec: where jobs wait and who runs them."""

    backend: str = Field(examples=["in-process"], description="in-process or procrastinate")
    database: str = Field(examples=["sqlite"], description="sqlite or postgresql")
    depth: int = Field(description="Jobs waiting to start")
    running: int = Field(description="Jobs running (on every worker, with PostgreSQL)")
    workers_alive: int | None = Field(
        None, description="Workers whose heartbeat is recent (PostgreSQL; null when embedded)"
    )


class HealthResponse(BaseModel):
    status: str = Field(examples=["healthy"], description="healthy, degraded or unhealthy")
    timestamp: datetime
    uptime_seconds: int
    version: str
    active_jobs: int
    total_jobs_processed: int
    system_resources: SystemResources
    service_checks: ServiceChecks
    queue: QueueReport


class FieldError(BaseModel):
    """One reason a request was invalid (the input itself is never echoed)."""

    loc: list[str | int] = Field(
        description="Where: body, query, path or header, then the field's path",
        examples=[["body", "limits", "memory_bytes"]],
    )
    msg: str = Field(examples=["Input should be a valid integer"])
    type: str = Field(examples=["int_type"])


class ErrorResponse(BaseModel):
    """Every error: one sentence; a request that failed validation also lists each reason."""

    detail: str = Field(examples=["Job not found: 550e8400-e29b-41d4-a716-446655440000"])
    errors: list[FieldError] | None = Field(
        None, description="422 for an invalid request only: every field that was wrong"
    )


class JobFile(BaseModel):
    """A regular file of a finished job's working directory."""

    path: str = Field(
        examples=["out/result.csv"], description="Relative to the working directory, '/'-separated"
    )
    size: int = Field(description="Bytes")
    created_at: datetime = Field(
        description="Its status-change time (ctime: Linux keeps no creation time one can read "
        "portably): for a file written once, when it was written"
    )
    modified_at: datetime
    sha256: str | None = Field(
        description="Hex SHA-256 of its content; null when a listing's hashing budget ran out"
    )


class SkippedEntry(BaseModel):
    """An entry of the directory that is neither listed as a file nor served."""

    path: str
    type: str = Field(
        examples=["symlink"],
        description="symlink, fifo, socket, device, directory, file (a regular file not "
        "captured, or one that could not be opened) or unknown",
    )
    reason: str = Field(examples=["a symbolic link: never followed"])


class JobFilesResponse(BaseModel):
    """What a finished job's working directory holds."""

    job_id: str
    source: str = Field(
        examples=["directory"],
        description="directory (read on this server's disk), store (the copy the worker that "
        "ran it captured, within INTERPRETER_MAX_CAPTURED_BYTES) or none (the job never ran)",
    )
    files: list[JobFile] = Field(description="Regular files, by path")
    skipped: list[SkippedEntry] = Field(description="Entries not listed as files, and why")
    complete: bool = Field(description="False when the listing stopped at its bound")
    note: str | None = Field(description="Why the listing is incomplete")


class SessionRequest(BaseModel):
    model_config = ConfigDict(
        **STRICT,
        json_schema_extra={
            "examples": [
                {
                    "language": "python",
                    "packages": ["pandas", "matplotlib"],
                    "idle_timeout_s": 600,
                    "limits": {"memory_bytes": 1073741824},
                }
            ]
        },
    )

    language: str = Field(
        "python",
        description="python (an IPython kernel) or shell (a bash whose directory and exported "
        "variables carry over)",
    )
    packages: list[str] = Field(
        default_factory=list,
        description="Python packages the kernel can import, as for POST /execute (ipykernel is "
        "added; with INTERPRETER_DEFAULT_PACKAGES, those too)",
        json_schema_extra={"items": {"type": "string", "maxLength": 200}},
    )
    limits: LimitsRequest | None = Field(
        None,
        description="Limits of the whole session (all its executions together), within the "
        "server's maximums; CPU time defaults to the maximum",
    )
    idle_timeout_s: float | None = Field(
        None,
        gt=0,
        description="Ended after this long without an execution (default "
        "INTERPRETER_SESSION_IDLE_TIMEOUT; at most INTERPRETER_SESSION_MAX_IDLE_TIMEOUT)",
    )
    max_lifetime_s: float | None = Field(
        None,
        gt=0,
        description="Ended this long after it began (default INTERPRETER_SESSION_LIFETIME; at "
        "most INTERPRETER_SESSION_MAX_LIFETIME)",
    )
    environment_variables: dict[str, str] = Field(
        default_factory=dict,
        description="Variables of the kernel's environment (the rules of POST /execute)",
        json_schema_extra=ENVIRONMENT_SCHEMA,
    )

    @model_validator(mode="after")
    def _storable(self) -> SessionRequest:
        _check_text(self.language, "language")
        for entry in self.packages:
            _check_text(entry, "packages")
        for name, value in self.environment_variables.items():
            _check_text(name, "environment_variables")
            _check_text(value, "environment_variables")
        return self


class SessionEnvironment(BaseModel):
    id: str = Field(description="The package environment (GET /environments lists them)")
    packages: dict[str, str] = Field(description="Every package installed: name to version")


class SessionView(BaseModel):
    session_id: str
    status: str = Field(description="starting, idle, busy or dead (see error)")
    language: str
    created_at: datetime
    last_activity_at: datetime
    expires_at: datetime = Field(description="When its lifetime ends")
    idle_timeout_s: float
    max_lifetime_s: float
    executions: int = Field(description="Executions run in it so far")
    working_directory: str = Field(description="Its directory, as its code sees it")
    environment: SessionEnvironment | None
    limits: dict[str, float]
    error: str | None = Field(description="Why it is dead (a restart makes a fresh kernel)")


class SessionList(BaseModel):
    sessions: list[SessionView]


class SessionEnded(BaseModel):
    session_id: str
    status: str = Field(examples=["terminated"])


class SessionExecuteRequest(BaseModel):
    model_config = STRICT

    code: str = Field(description="Python code, run as a notebook cell in the session's kernel")
    timeout: float | None = Field(
        None,
        description="Wall-time limit in seconds, waiting for the session's earlier executions "
        "included (default INTERPRETER_DEFAULT_TIMEOUT): the cell is interrupted, then, if it "
        "does not stop within 3 s, the kernel is restarted",
    )

    @model_validator(mode="after")
    def _storable(self) -> SessionExecuteRequest:
        _check_text(self.code, "code")
        return self
