"""A read-through cache in front of a store that has no other writer (the embedded mode).

Status polls are most of an orchestrator's traffic; serving them from memory keeps them off the
database and its thread. Every write goes to the store first and reaches the cache only once it
succeeded, so the cache never shows what the store does not hold. With several processes
writing one database (PostgreSQL, scale-out), use the store without this cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from interpreter.job import CapturedOutput, Job, JobResult, JobStatus
from interpreter.store.base import JobStore


def _cost(job: Job) -> int:
    """Roughly what an entry holds in memory: its code dominates (up to the code size limit)."""
    return len(job.request.code) + 1024


class CachedStore:
    def __init__(self, inner: JobStore, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.inner = inner
        self.max_bytes = max_bytes
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._bytes = 0

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

    async def create(self, job: Job) -> Job:
        created = await self.inner.create(job)
        self._put(created)
        return created

    async def get(self, job_id: str) -> Job | None:
        if (job := self._jobs.get(job_id)) is not None:
            return job
        job = await self.inner.get(job_id)
        if job is not None:
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
        cached = self._jobs.get(job_id)
        if cached is None:
            job = await self.inner.transition(job_id, to, expect=expect, **changes)
        elif await self.inner.compare_and_set(job_id, to, expect=expect, **changes):
            job = cached.evolve(status=to, **changes)  # no read-back: ~0.2 ms less a transition
        else:
            self._drop(job_id)  # it moved elsewhere: read it afresh next time
            job = None
        if job is not None:
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

    async def put_outputs(self, job_id: str, outputs: CapturedOutput) -> None:
        await self.inner.put_outputs(job_id, outputs)

    async def get_outputs(self, job_id: str) -> CapturedOutput | None:
        return await self.inner.get_outputs(job_id)

    async def attach_result(
        self, job_id: str, result: JobResult, execution_time_ms: float | None
    ) -> None:
        await self.inner.attach_result(job_id, result, execution_time_ms)
        self._drop(job_id)  # rare: read it back from the store next time

    async def list(
        self,
        *,
        owner: str | None,
        status: JobStatus | None = None,
        limit: int = 50,
        before_seq: int | None = None,
    ) -> Sequence[Job]:
        return await self.inner.list(owner=owner, status=status, limit=limit, before_seq=before_seq)

    async def pending(self) -> Sequence[Job]:
        return await self.inner.pending()

    async def fail_running(self, message: str) -> Sequence[str]:
        ids = await self.inner.fail_running(message)
        for job_id in ids:
            self._drop(job_id)
        return ids

    async def expired(self, finished_before: datetime) -> Sequence[Job]:
        return await self.inner.expired(finished_before)

    async def delete(self, job_ids: Sequence[str]) -> None:
        await self.inner.delete(job_ids)
        for job_id in job_ids:
            self._drop(job_id)

    async def count_by_status(self) -> dict[JobStatus, int]:
        return await self.inner.count_by_status()

    async def ping(self) -> None:
        await self.inner.ping()
