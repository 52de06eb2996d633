"""A read-through cache in front of a store that has no other writer (the embedded mode).

Status polls are most of an orchestrator's traffic; serving them from memory keeps them off the
database and its thread. Every write goes to the store first and reaches the cache only once it
succeeded, so the cache never shows what the store does not hold. With several processes
writing one database (PostgreSQL, scale-out), use the store without this cache.

Never older than the store: a read or write awaits the store, and another write to the same job
may land meanwhile. Each job with an operation in flight counts the writes made to it through
the cache (``_Flight``); an operation that saw another write land during its await does not put
what it holds (a read keeps the entry as it is, a write drops it, to be read afresh), and a read
never replaces an entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from interpreter.job import CapturedOutput, InputFile, Job, JobResult, JobStatus, OutputChunk
from interpreter.jobfiles import FileRow
from interpreter.store.base import CHUNK_PAGE, PAGE_SIZE, ExpiredJob, JobStore, PendingJob


def _cost(job: Job) -> int:
    """Roughly what an entry holds in memory: what the caller sent (code, stdin, environment and
    metadata, each up to its limit) and a fixed part."""
    request = job.request
    sent = len(request.code) + len(request.stdin or "")
    sent += sum(len(name) + len(value) for name, value in request.environment.items())
    if request.metadata:
        sent += len(str(request.metadata))
    return sent + 1024


@dataclass
class _Flight:
    """One job's operations awaiting the store, and the writes made to it meanwhile."""

    operations: int = 0
    writes: int = 0


class CachedStore:
    def __init__(self, inner: JobStore, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.inner = inner
        self.max_bytes = max_bytes
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._bytes = 0
        self._flights: dict[str, _Flight] = {}  # only jobs with an operation in flight

    @contextmanager
    def _flight(self, job_id: str) -> Iterator[_Flight]:
        flight = self._flights.setdefault(job_id, _Flight())
        flight.operations += 1
        try:
            yield flight
        finally:
            flight.operations -= 1
            if flight.operations == 0:
                del self._flights[job_id]

    def _wrote(self, job_id: str) -> None:
        """A write to the job landed (or may have): operations in flight on it are stale."""
        if (flight := self._flights.get(job_id)) is not None:
            flight.writes += 1
        self._drop(job_id)

    def _put(self, job: Job) -> None:
        self._drop(job.id)
        self._jobs[job.id] = job
        self._bytes += _cost(job)
        while self._bytes > self.max_bytes and self._jobs:  # least recently written first
            _, evicted = self._jobs.popitem(last=False)
            self._bytes -= _cost(evicted)

    def _drop(self, job_id: str) -> None:
        if (old := self._jobs.pop(job_id, None)) is not None:
            self._bytes -= _cost(old)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        self._jobs.clear()
        self._bytes = 0
        await self.inner.close()

    async def create(self, job: Job, inputs: Sequence[InputFile] = ()) -> Job:
        created = await self.inner.create(job, inputs)
        self._put(created)
        return created

    async def find_by_idempotency_key(self, key: str) -> Job | None:
        found = await self.inner.find_by_idempotency_key(key)
        return None if found is None else await self.get(found.id)  # the cache's copy if newer

    async def release_idempotency_key(self, job_id: str) -> None:
        with self._flight(job_id):
            try:
                await self.inner.release_idempotency_key(job_id)
            finally:
                self._wrote(job_id)

    async def get_inputs(self, job_id: str) -> Sequence[InputFile]:
        return await self.inner.get_inputs(job_id)  # read once per job: never cached

    async def delete_inputs(self, job_id: str) -> None:
        await self.inner.delete_inputs(job_id)

    async def get(self, job_id: str) -> Job | None:
        if (job := self._jobs.get(job_id)) is not None:
            return job
        with self._flight(job_id) as flight:
            writes = flight.writes
            job = await self.inner.get(job_id)
            if (newer := self._jobs.get(job_id)) is not None:  # put by a write meanwhile
                return newer
            if job is not None and flight.writes == writes:
                self._put(job)
        return job

    async def transition(
        self,
        job_id: str,
        to: JobStatus,
        *,
        expect: Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> Job | None:
        with self._flight(job_id) as flight:
            writes = flight.writes
            cached = self._jobs.get(job_id)
            try:
                if cached is None:
                    job = await self.inner.transition(job_id, to, expect=expect, **changes)
                elif await self.inner.compare_and_set(job_id, to, expect=expect, **changes):
                    job = cached.evolve(status=to, **changes)  # no read-back: ~0.2 ms less
                else:
                    job = None
            except BaseException:
                self._wrote(job_id)  # it may have landed
                raise
            raced = flight.writes != writes
            self._wrote(job_id)  # refused: it moved elsewhere, read it afresh next time
            if job is not None and not raced:  # raced: which write is newer is unknown
                self._put(job)
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
        return await self.inner.put_outputs(job_id, outputs, expect=expect)

    async def get_outputs(self, job_id: str) -> CapturedOutput | None:
        return await self.inner.get_outputs(job_id)

    async def put_files(
        self,
        job_id: str,
        rows: Sequence[FileRow],
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> bool:
        return await self.inner.put_files(job_id, rows, expect=expect)

    async def list_files(self, job_id: str) -> Sequence[FileRow]:
        return await self.inner.list_files(job_id)

    async def read_file(self, job_id: str, path: str) -> FileRow | None:
        return await self.inner.read_file(job_id, path)

    async def add_chunks(self, job_id: str, chunks: Sequence[OutputChunk]) -> None:
        await self.inner.add_chunks(job_id, chunks)

    async def get_chunks(
        self, job_id: str, stdout_from: int, stderr_from: int, limit: int = CHUNK_PAGE
    ) -> Sequence[OutputChunk]:
        return await self.inner.get_chunks(job_id, stdout_from, stderr_from, limit)

    async def delete_chunks(self, job_id: str) -> None:
        await self.inner.delete_chunks(job_id)

    async def attach_result(
        self,
        job_id: str,
        result: JobResult,
        execution_time_ms: float | None,
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> bool:
        try:
            return await self.inner.attach_result(job_id, result, execution_time_ms, expect=expect)
        finally:
            self._wrote(job_id)  # rare: read it back from the store next time

    async def list(
        self,
        *,
        owner: str | None,
        status: JobStatus | None = None,
        limit: int = 50,
        before_seq: int | None = None,
    ) -> Sequence[Job]:
        return await self.inner.list(owner=owner, status=status, limit=limit, before_seq=before_seq)

    async def pending_ids(
        self, *, after_seq: int = 0, limit: int = PAGE_SIZE
    ) -> Sequence[PendingJob]:
        return await self.inner.pending_ids(after_seq=after_seq, limit=limit)

    async def fail_running(self, message: str) -> Sequence[str]:
        ids = await self.inner.fail_running(message)
        for job_id in ids:
            self._wrote(job_id)
        return ids

    async def expired(
        self, finished_before: datetime, *, after_seq: int = 0, limit: int = PAGE_SIZE
    ) -> Sequence[ExpiredJob]:
        return await self.inner.expired(finished_before, after_seq=after_seq, limit=limit)

    async def delete(self, job_ids: Sequence[str]) -> None:
        try:
            await self.inner.delete(job_ids)
        finally:
            for job_id in job_ids:
                self._wrote(job_id)

    async def count_by_status(self) -> dict[JobStatus, int]:
        return await self.inner.count_by_status()

    async def ping(self) -> None:
        await self.inner.ping()
