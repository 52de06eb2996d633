"""A read-through cache in front of a store that has no other writer (the embedded mode).

Status polls are most of an orchestrator's traffic; serving them from memory keeps them off the
database and its thread. Every write goes to the store first and reaches the cache only once it
succeeded, so the cache never shows what the store does not hold. With several processes
writing one database (PostgreSQL, scale-out), use the store without this cache.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from interpreter.job import Job, JobResult, JobStatus
from interpreter.store.base import JobStore


def _view(job: Job) -> Job:
    """What the cache keeps: the job without its code (up to 1 MiB; no reader needs it)."""
    return job.evolve(request=dataclasses.replace(job.request, code=""))


class CachedStore:
    def __init__(self, inner: JobStore, max_entries: int = 10_000) -> None:
        self.inner = inner
        self.max_entries = max_entries
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def _put(self, job: Job) -> None:
        self._jobs[job.id] = _view(job)
        self._jobs.move_to_end(job.id)
        while len(self._jobs) > self.max_entries:
            self._jobs.popitem(last=False)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        self._jobs.clear()
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

    async def transition(self, job_id: str, to: JobStatus, **changes: Any) -> Job | None:
        job = await self.inner.transition(job_id, to, **changes)
        if job is not None:
            self._put(job)
        return job

    async def attach_result(
        self, job_id: str, result: JobResult, execution_time_ms: float | None
    ) -> None:
        await self.inner.attach_result(job_id, result, execution_time_ms)
        self._jobs.pop(job_id, None)  # rare: read it back from the store next time

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
            self._jobs.pop(job_id, None)
        return ids

    async def expired(self, finished_before: datetime) -> Sequence[Job]:
        return await self.inner.expired(finished_before)

    async def delete(self, job_ids: Sequence[str]) -> None:
        await self.inner.delete(job_ids)
        for job_id in job_ids:
            self._jobs.pop(job_id, None)

    async def count_by_status(self) -> dict[JobStatus, int]:
        return await self.inner.count_by_status()

    async def ping(self) -> None:
        await self.inner.ping()
