"""Job routes: submit, status, results, cancel, list."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from interpreter.api.deps import OwnerDep, ServiceDep
from interpreter.api.schemas import (
    CellError,
    EnvironmentReport,
    ErrorResponse,
    ExecuteRequest,
    ExecuteResponse,
    FullResult,
    JobListResponse,
    OutputBundle,
    ResourceUsage,
    StatusResponse,
    StructuredResult,
    WorkerInfo,
    whole_ms,
)
from interpreter.api.uploads import (
    MULTIPART_OPENAPI,
    ExecuteRoute,
    decode_input_files,
    uploaded_files,
)
from interpreter.errors import InvalidRequest
from interpreter.job import InputFile, Job, JobResult, JobStatus, termination_reason
from interpreter.service import Idempotency, JobService, Submission

router = APIRouter(tags=["jobs"])

MAX_WAIT_S = 60.0
WaitQuery = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_S,
        allow_inf_nan=False,
        description="Long poll: answer as soon as the job is final, or after this many seconds "
        "with its current status (0, the default, answers at once)",
    ),
]

MAX_CURSOR = 2**63 - 1  # sequence numbers are signed 64-bit integers in every store
CursorQuery = Annotated[
    str | None,
    Query(
        description="The next_cursor of a previous page",
        json_schema_extra={"pattern": "^[0-9]{1,19}$"},
    ),
]

Responses = dict[int | str, dict[str, Any]]


def error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# 401 (missing or invalid API key) is declared with the security schemes when keys are required.
STORE_DOWN: Responses = {503: error("The job store is unavailable; retry after Retry-After")}
NOT_FOUND: Responses = {404: error("Job not found (or not yours)"), **STORE_DOWN}
BAD_WAIT: Responses = {422: error(f"wait is not a number of seconds from 0 to {MAX_WAIT_S:g}")}
READ_RESPONSES: Responses = {**NOT_FOUND, **BAD_WAIT}


def _metadata(job: Job, **server: Any) -> dict[str, Any]:
    """The caller's metadata, with the server's keys added where the caller set none of its own
    (a caller's key is never overwritten)."""
    return {
        "language": job.request.language,
        "timeout": job.request.timeout_s,
        **server,
        **job.request.metadata,
    }


def status_view(job: Job) -> StatusResponse:
    return StatusResponse(
        job_id=job.id,
        status=job.status,
        created_at=job.created_at,
        started_at=job.started_at,
        completed_at=job.completed_at,
        execution_time_ms=whole_ms(job.execution_time_ms),
        execution_time_precise_ms=job.execution_time_ms,
        error_message=job.error_message,
        metadata=_metadata(job),
    )


ExecuteWaitQuery = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_S,
        allow_inf_nan=False,
        description="One round trip: when the job ends within this many seconds, answer with its "
        "full result (the GET /jobs/{job_id}/results shape), else with the submission body and its "
        "current status (0, the default, answers at once)",
    ),
]


IDEMPOTENCY_KEY_RULE = "Idempotency-Key must be 1 to 255 printable ASCII characters"
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes a retry safe: the same key from the same API key within 24 hours "
        "answers with the job the first request made (1 to 255 printable ASCII characters)",
        json_schema_extra={"pattern": "^[ -~]{1,255}$"},
    ),
]


def idempotency(
    key: str | None, body: ExecuteRequest, uploaded: tuple[InputFile, ...]
) -> Idempotency | None:
    """The submission's key and its request's digest (the JSON body, keys sorted, and each
    uploaded file's path and sha256), or None."""
    if key is None:
        return None
    if not (0 < len(key) <= 255 and all(" " <= c <= "~" for c in key)):
        raise InvalidRequest(IDEMPOTENCY_KEY_RULE)
    files = [[f.path, hashlib.sha256(f.content).hexdigest()] for f in uploaded]
    request = {"body": body.model_dump(mode="json"), "uploaded": files}
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return Idempotency(key, hashlib.sha256(canonical.encode()).hexdigest())


async def execute(
    body: ExecuteRequest,
    service: ServiceDep,
    owner: OwnerDep,
    request: Request,
    response: Response,
    wait: ExecuteWaitQuery = 0,
    idempotency_key: IdempotencyKeyHeader = None,
) -> FullResult | ExecuteResponse:
    """Submit code to run. Answers at once with the job id while the job runs in the background,
    or, with `wait`, with the full result of a job that ended within that many seconds.

    Input files come base64 in `input_files`, or as file parts of a `multipart/form-data` body
    beside its `request` part (this JSON body).

    With an `Idempotency-Key`, a retry of the same request (same key, same owner, within 24
    hours) answers with the job the first one made, never running the code again
    (`Idempotent-Replayed: true`); the key with another request is a 422."""
    uploaded = uploaded_files(request)
    submitted = await service.submit(
        Submission(
            code=body.code,
            language=body.language,
            timeout_s=body.timeout,
            capture_files=body.capture_files,
            working_directory=body.working_directory,
            environment=body.environment_variables,
            metadata=body.metadata,
            limits=body.limits.model_dump(exclude_none=True) if body.limits else None,
            stdin=body.stdin,
            input_files=decode_input_files(body.input_files) + uploaded,
            packages=tuple(body.packages),
        ),
        owner,
        idempotency(idempotency_key, body, uploaded),
    )
    job, estimate = submitted.job, submitted.estimate
    if submitted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    if wait > 0:
        job = await service.wait_final(job.id, owner, wait)
        if job.is_final:
            return await full_view(service, job)
    return ExecuteResponse(job_id=job.id, status=job.status, estimated_start_time=estimate)


router.add_api_route(
    "/execute",
    execute,
    methods=["POST"],
    response_model=FullResult | ExecuteResponse,
    responses={
        400: error("The body could not be read"),
        413: error("Body, code, stdin or upload larger than the configured maximum"),
        422: error(
            "Invalid body, language, timeout, directory, environment, limits, input files, "
            "packages (or packages that cannot be resolved: errors[0].type not_found, "
            "unsatisfiable or no_wheel) or Idempotency-Key (or the key sent again with another "
            "request)"
        ),
        429: error("Rate limit exceeded, or too many of this key's jobs pending (Retry-After)"),
        503: error(
            "Shutting down, too many pending jobs, the job store or the package registry is "
            "unavailable"
        ),
    },
    openapi_extra=MULTIPART_OPENAPI,
    route_class_override=ExecuteRoute,
)


@router.get("/jobs/{job_id}/status", response_model=StatusResponse, responses=READ_RESPONSES)
async def get_job_status(
    job_id: str, service: ServiceDep, owner: OwnerDep, wait: WaitQuery = 0
) -> StatusResponse:
    """The job's status and timings."""
    return status_view(await service.wait_final(job_id, owner, wait))


@router.get("/results/{job_id}", response_model=StructuredResult, responses=READ_RESPONSES)
async def get_result(
    job_id: str, service: ServiceDep, owner: OwnerDep, wait: WaitQuery = 0
) -> StructuredResult:
    """The orchestrator's result: exactly status, stdout, stderr and the files created."""
    job = await service.wait_final(job_id, owner, wait)
    outputs = await service.outputs(job)
    files = list(job.result.files_created) if job.result else []
    return StructuredResult(
        status=job.status, stdout=outputs.stdout, stderr=outputs.stderr, files=files
    )


@router.get("/jobs/{job_id}/results", response_model=FullResult, responses=READ_RESPONSES)
async def get_full_result(
    job_id: str, service: ServiceDep, owner: OwnerDep, wait: WaitQuery = 0
) -> FullResult:
    """Everything known about the job: outputs, files, exit code, resource usage, environment."""
    return await full_view(service, await service.wait_final(job_id, owner, wait))


async def full_view(service: JobService, job: Job) -> FullResult:
    outputs = await service.outputs(job)
    result = job.result or JobResult()  # a job that has not run yet: empty fields
    return FullResult(
        job_id=job.id,
        status=job.status,
        stdout=outputs.stdout,
        stderr=outputs.stderr,
        stdout_truncated=result.stdout_truncated,
        stderr_truncated=result.stderr_truncated,
        files_created=list(result.files_created),
        files_modified=list(result.files_modified),
        files_deleted=list(result.files_deleted),
        files_complete=result.files_complete,
        files_note=result.files_note,
        execution_time_ms=whole_ms(job.execution_time_ms),
        execution_time_precise_ms=job.execution_time_ms,
        exit_code=result.exit_code,
        signal=result.signal,
        resource_usage=ResourceUsage.model_validate(result.resource_usage)
        if result.resource_usage
        else None,
        environment_snapshot=result.environment_snapshot,
        working_directory=result.working_directory,
        error_message=job.error_message,
        termination_reason=termination_reason(job),
        environment=EnvironmentReport.model_validate(result.environment)
        if result.environment
        else None,
        limits=job.request.limits.to_dict() if job.request.limits else None,
        metadata=_metadata(
            job,
            files_created_count=len(result.files_created),
            stdout_length=len(outputs.stdout),
            stderr_length=len(outputs.stderr),
        ),
        created_at=job.created_at,
        started_at=job.started_at,
        completed_at=job.completed_at,
        worker=WorkerInfo(id=job.worker_id, host=job.worker_host) if job.worker_id else None,
        attempts=job.attempts,
        session_id=job.request.session_id,
        results=[OutputBundle.model_validate(o) for o in result.outputs]
        if job.request.session_id
        else None,
        results_truncated=result.outputs_truncated,
        error=CellError.model_validate(result.error) if result.error else None,
    )


CANCEL_RESPONSES: Responses = {**NOT_FOUND, 409: error("The job has already finished")}


@router.post("/jobs/{job_id}/cancel", response_model=StatusResponse, responses=CANCEL_RESPONSES)
async def cancel_job(job_id: str, service: ServiceDep, owner: OwnerDep) -> StatusResponse:
    """Cancel a pending job (it never starts) or a running one (its process tree is killed).

    Answers with the job's final record: for a running job, once it is stopped and what it ran
    (output, files, times) is recorded. 409 when it already finished, or when its process had
    exited by itself before the cancel could stop it (it ends as it ran)."""
    return status_view(await service.cancel(job_id, owner))


@router.delete("/jobs/{job_id}", response_model=StatusResponse, responses=CANCEL_RESPONSES)
async def delete_job(job_id: str, service: ServiceDep, owner: OwnerDep) -> StatusResponse:
    """Same as POST /jobs/{job_id}/cancel."""
    return status_view(await service.cancel(job_id, owner))


CURSOR_RULE = (
    f"cursor must be the next_cursor of a previous page: a whole number from 0 to {MAX_CURSOR}"
)


def parse_cursor(cursor: str | None) -> int | None:
    """The sequence number a page starts below; ``InvalidRequest`` unless it could be one."""
    if cursor is None:
        return None
    digits = cursor.isascii() and cursor.isdigit()
    if not digits or len(cursor) > len(str(MAX_CURSOR)) or int(cursor) > MAX_CURSOR:
        raise InvalidRequest(CURSOR_RULE)
    return int(cursor)


@router.get(
    "/jobs",
    response_model=JobListResponse,
    responses={422: error("Invalid status, limit or cursor"), **STORE_DOWN},
)
async def list_jobs(
    service: ServiceDep,
    owner: OwnerDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: CursorQuery = None,
) -> JobListResponse:
    """Jobs newest first, `limit` a page; follow `next_cursor` for older ones."""
    jobs = await service.list(owner, status, limit, parse_cursor(cursor))
    next_cursor = str(jobs[-1].seq) if len(jobs) == limit and jobs[-1].seq is not None else None
    return JobListResponse(jobs=[status_view(j) for j in jobs], next_cursor=next_cursor)
