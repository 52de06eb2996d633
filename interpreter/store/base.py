"""The store contract every backend fulfils (one contract test suite runs against each)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from interpreter.job import CapturedOutput, InputFile, Job, JobResult, JobStatus, OutputChunk
from interpreter.jobfiles import FileRow

PAGE_SIZE = 1_000  # rows a restart or a retention sweep reads at a time
CHUNK_PAGE = 200  # output chunks a stream reads at a time


@dataclass(frozen=True, slots=True)
class PendingJob:
    """What a restart needs of a pending job: its id and owner (the caps), never its code.
    ``seq``: where the next page starts."""

    id: str
    owner: str | None
    seq: int


@dataclass(frozen=True, slots=True)
class ExpiredJob:
    """What retention needs of an expired job: its id, and the working directory it named
    (None: a fresh one of ours, removed with it). ``seq``: where the next page starts."""

    id: str
    working_directory: str | None
    seq: int


def fencing_token(job: Job) -> dict[str, Any]:
    """What an attempt's writes expect of the job (``expect=``): the attempt count and worker
    its claim set. A worker declared lost has its job re-queued (worker cleared) and claimed
    again (count raised, worker replaced), so once the job moved on, every write of the old
    attempt matches no row and is refused."""
    return {"attempts": job.attempts, "worker_id": job.worker_id}


class JobStore(Protocol):
    async def open(self) -> None:
        """Create the schema if needed and get ready to serve."""

    async def close(self) -> None: ...

    async def create(self, job: Job, inputs: Sequence[InputFile] = ()) -> Job:
        """Persist a new pending job, and its input files with it (one transaction: both or
        neither); returns it with its ``seq`` (submission order). ``IdempotencyKeyTaken`` when
        a job with its ``idempotency_key`` exists (none is made)."""

    async def get(self, job_id: str) -> Job | None: ...

    async def find_by_idempotency_key(self, key: str) -> Job | None:
        """The job created with ``key`` (as ``job.idempotency_scope`` makes it), or None."""

    async def release_idempotency_key(self, job_id: str) -> None:
        """Forget the job's idempotency key (it expired): the key may make a new job."""

    async def transition(
        self,
        job_id: str,
        to: JobStatus,
        *,
        expect: Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> Job | None:
        """Compare-and-set: move the job to ``to`` only from a status that the state machine
        allows (``sources_of(to)``), applying ``changes``. Returns the updated job, or None when
        the job is missing or its current status does not allow the move (it stays untouched).
        ``expect``: further fields that must hold their given values (e.g. the worker that
        claimed it), else nothing moves."""

    async def compare_and_set(
        self,
        job_id: str,
        to: JobStatus,
        *,
        expect: Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> bool:
        """``transition`` without reading the job back: True when it moved. For a caller that
        already holds the job (the cache), which evolves its copy itself."""

    async def attach_result(
        self,
        job_id: str,
        result: JobResult,
        execution_time_ms: float | None,
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> bool:
        """Attach a result to a job that already reached a final status without one (a job
        cancelled while running), never changing its status. ``expect``: as for
        ``transition``. True when it landed."""

    async def put_outputs(
        self,
        job_id: str,
        outputs: CapturedOutput,
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> bool:
        """Keep a job's outputs in the store (replaces what it held); deleted with the job.
        Only for a job that exists and, with ``expect``, holds those values in the same
        statement (an attempt's fencing token). True when they landed."""

    async def get_outputs(self, job_id: str) -> CapturedOutput | None:
        """What ``put_outputs`` stored, or None."""

    async def put_files(
        self,
        job_id: str,
        rows: Sequence[FileRow],
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> bool:
        """Keep a finished job's files in the store (replaces what it held), in one
        transaction; deleted with the job. Fenced like ``put_outputs``. True when they landed."""

    async def list_files(self, job_id: str) -> Sequence[FileRow]:
        """What ``put_files`` stored, without the files' content (empty when nothing)."""

    async def read_file(self, job_id: str, path: str) -> FileRow | None:
        """One row ``put_files`` stored, with its content, or None."""

    async def get_inputs(self, job_id: str) -> Sequence[InputFile]:
        """The input files stored with the job, in their order (none once deleted)."""

    async def delete_inputs(self, job_id: str) -> None:
        """Drop the job's input files (once it no longer needs them); ``delete`` drops them
        with the job too."""

    async def add_chunks(self, job_id: str, chunks: Sequence[OutputChunk]) -> None:
        """Keep pieces of a running job's output (scale-out: its worker publishes them), in
        one write. Deleted with ``delete_chunks`` or with the job."""

    async def get_chunks(
        self, job_id: str, stdout_from: int, stderr_from: int, limit: int = CHUNK_PAGE
    ) -> Sequence[OutputChunk]:
        """Up to ``limit`` stored chunks of the job that end past ``stdout_from`` (its stdout)
        or ``stderr_from`` (its stderr), by stream then start (the caller keeps what is
        contiguous from its offsets)."""

    async def delete_chunks(self, job_id: str) -> None:
        """Drop the job's chunks (it is final: its outputs are stored whole)."""

    async def list(
        self,
        *,
        owner: str | None,
        status: JobStatus | None = None,
        limit: int = 50,
        before_seq: int | None = None,
    ) -> Sequence[Job]:
        """Newest first. ``owner=None`` lists every job (authentication off)."""

    async def pending_ids(
        self, *, after_seq: int = 0, limit: int = PAGE_SIZE
    ) -> Sequence[PendingJob]:
        """Up to ``limit`` pending jobs with a ``seq`` above ``after_seq``, oldest first: a
        page; the next one starts after the last one's ``seq``."""

    async def fail_running(self, message: str) -> Sequence[str]:
        """Mark every running job failed with ``message`` (after a restart); returns their ids."""

    async def expired(
        self, finished_before: datetime, *, after_seq: int = 0, limit: int = PAGE_SIZE
    ) -> Sequence[ExpiredJob]:
        """Up to ``limit`` final jobs completed before the cutoff with a ``seq`` above
        ``after_seq``, in ``seq`` order: a page, as ``pending_ids``."""

    async def delete(self, job_ids: Sequence[str]) -> None: ...

    async def count_by_status(self) -> dict[JobStatus, int]: ...

    async def ping(self) -> None:
        """A round trip to the backend; raises StoreError when it fails."""
