"""An in-memory store that fulfils the whole contract; unit tests use it and assert on its state."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from interpreter.errors import IdempotencyKeyTaken
from interpreter.job import (
    CapturedOutput,
    InputFile,
    Job,
    JobResult,
    JobStatus,
    OutputChunk,
    sources_of,
    utcnow,
)
from interpreter.jobfiles import FileRow
from interpreter.store.base import CHUNK_PAGE, PAGE_SIZE, ExpiredJob, PendingJob


class MemoryStore:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.outputs: dict[str, CapturedOutput] = {}
        self.files: dict[str, dict[str, FileRow]] = {}
        self.inputs: dict[str, tuple[InputFile, ...]] = {}
        self.chunks: dict[str, list[OutputChunk]] = {}
        self._seq = itertools.count(1)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create(self, job: Job, inputs: Sequence[InputFile] = ()) -> Job:
        if job.idempotency_key is not None and await self.find_by_idempotency_key(
            job.idempotency_key
        ):
            raise IdempotencyKeyTaken()
        job = job.evolve(seq=next(self._seq))
        self.jobs[job.id] = job
        if inputs:
            self.inputs[job.id] = tuple(inputs)
        return job

    async def get_inputs(self, job_id: str) -> Sequence[InputFile]:
        return self.inputs.get(job_id, ())

    async def delete_inputs(self, job_id: str) -> None:
        self.inputs.pop(job_id, None)

    async def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    async def find_by_idempotency_key(self, key: str) -> Job | None:
        return next((j for j in self.jobs.values() if j.idempotency_key == key), None)

    async def release_idempotency_key(self, job_id: str) -> None:
        if (job := self.jobs.get(job_id)) is not None:
            self.jobs[job_id] = job.evolve(idempotency_key=None)

    def _holds(self, job_id: str, expect: Mapping[str, Any] | None) -> Job | None:
        """The job, when it holds every expected field's value."""
        job = self.jobs.get(job_id)
        if job is None or any(getattr(job, k) != v for k, v in (expect or {}).items()):
            return None
        return job

    async def transition(
        self,
        job_id: str,
        to: JobStatus,
        *,
        expect: Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> Job | None:
        job = self._holds(job_id, expect)
        if job is None or job.status not in sources_of(to):
            return None
        job = job.evolve(status=to, **changes)
        self.jobs[job_id] = job
        return job

    async def compare_and_set(
        self,
        job_id: str,
        to: JobStatus,
        *,
        expect: Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> bool:
        return await self.transition(job_id, to, expect=expect, **changes) is not None

    async def put_outputs(
        self,
        job_id: str,
        outputs: CapturedOutput,
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> bool:
        if self._holds(job_id, expect) is None:
            return False
        self.outputs[job_id] = outputs
        return True

    async def get_outputs(self, job_id: str) -> CapturedOutput | None:
        return self.outputs.get(job_id)

    async def put_files(
        self,
        job_id: str,
        rows: Sequence[FileRow],
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> bool:
        if self._holds(job_id, expect) is None:
            return False
        self.files[job_id] = {row.path: row for row in rows}
        return True

    async def list_files(self, job_id: str) -> Sequence[FileRow]:
        rows = self.files.get(job_id, {}).values()
        return [dataclasses.replace(row, content=None) for row in rows]

    async def read_file(self, job_id: str, path: str) -> FileRow | None:
        return self.files.get(job_id, {}).get(path)

    async def add_chunks(self, job_id: str, chunks: Sequence[OutputChunk]) -> None:
        self.chunks.setdefault(job_id, []).extend(chunks)

    async def get_chunks(
        self, job_id: str, stdout_from: int, stderr_from: int, limit: int = CHUNK_PAGE
    ) -> Sequence[OutputChunk]:
        start = {"stdout": stdout_from, "stderr": stderr_from}
        found = [c for c in self.chunks.get(job_id, ()) if c.end > start[c.stream]]
        return sorted(found, key=lambda c: (c.stream, c.start))[:limit]

    async def delete_chunks(self, job_id: str) -> None:
        self.chunks.pop(job_id, None)

    async def attach_result(
        self,
        job_id: str,
        result: JobResult,
        execution_time_ms: float | None,
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> bool:
        job = self._holds(job_id, expect)
        if job is None or not job.is_final or job.result is not None:
            return False
        self.jobs[job_id] = job.evolve(result=result, execution_time_ms=execution_time_ms)
        return True

    async def list(
        self,
        *,
        owner: str | None,
        status: JobStatus | None = None,
        limit: int = 50,
        before_seq: int | None = None,
    ) -> Sequence[Job]:
        jobs = sorted(self.jobs.values(), key=lambda j: j.seq or 0, reverse=True)
        return [
            j
            for j in jobs
            if (owner is None or j.owner == owner)
            and (status is None or j.status == status)
            and (before_seq is None or (j.seq or 0) < before_seq)
        ][:limit]

    def _by_seq(self, after_seq: int) -> Sequence[Job]:
        return sorted(
            (j for j in self.jobs.values() if (j.seq or 0) > after_seq), key=lambda j: j.seq or 0
        )

    async def pending_ids(
        self, *, after_seq: int = 0, limit: int = PAGE_SIZE
    ) -> Sequence[PendingJob]:
        pending = [j for j in self._by_seq(after_seq) if j.status == JobStatus.PENDING]
        return [PendingJob(j.id, j.owner, j.seq or 0) for j in pending[:limit]]

    async def fail_running(self, message: str) -> Sequence[str]:
        ids = [j.id for j in self.jobs.values() if j.status == JobStatus.RUNNING]
        for job_id in ids:
            await self.transition(
                job_id, JobStatus.FAILED, error_message=message, completed_at=utcnow()
            )
        return ids

    async def expired(
        self, finished_before: datetime, *, after_seq: int = 0, limit: int = PAGE_SIZE
    ) -> Sequence[ExpiredJob]:
        expired = [
            j
            for j in self._by_seq(after_seq)
            if j.is_final and j.completed_at is not None and j.completed_at < finished_before
        ]
        return [ExpiredJob(j.id, j.request.working_directory, j.seq or 0) for j in expired[:limit]]

    async def delete(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self.jobs.pop(job_id, None)
            self.outputs.pop(job_id, None)
            self.files.pop(job_id, None)
            self.inputs.pop(job_id, None)
            self.chunks.pop(job_id, None)

    async def count_by_status(self) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        for job in self.jobs.values():
            counts[job.status] += 1
        return counts

    async def ping(self) -> None:
        return None
