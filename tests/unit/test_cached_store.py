"""The status cache never holds an older state than the store, whatever the order in which a
read that missed and a write through the cache end."""

from __future__ import annotations

import asyncio

from interpreter.job import Job, JobRequest, JobStatus, new_job_id, utcnow
from interpreter.store import CachedStore, MemoryStore


class SlowReads(MemoryStore):
    """Reads the row at once, then answers only once ``release`` is set: a miss in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def get(self, job_id: str) -> Job | None:
        job = await super().get(job_id)
        self.reading.set()
        await self.release.wait()
        return job


def make_job() -> Job:
    request = JobRequest(code="print(1)", language="python", timeout_s=5.0)
    return Job(id=new_job_id(), request=request)


async def start_miss(cache: CachedStore, inner: SlowReads, job_id: str) -> asyncio.Task[Job | None]:
    read = asyncio.create_task(cache.get(job_id))
    await inner.reading.wait()
    return read


async def test_a_miss_that_read_before_a_transition_never_puts_the_old_state_back() -> None:
    inner = SlowReads()
    cache = CachedStore(inner)
    job = await inner.create(make_job())  # not through the cache: its first read misses
    read = await start_miss(cache, inner, job.id)
    running = await cache.transition(job.id, JobStatus.RUNNING, started_at=utcnow())
    assert running is not None
    inner.release.set()
    await read
    got = await cache.get(job.id)
    assert got is not None and got.status == JobStatus.RUNNING and got.started_at is not None
    assert cache._jobs[job.id].status == JobStatus.RUNNING
    done = await cache.transition(job.id, JobStatus.COMPLETED, completed_at=utcnow())
    assert done is not None and done.started_at is not None  # built on the newer copy


async def test_a_miss_never_replaces_an_entry_a_write_put_meanwhile() -> None:
    inner = SlowReads()
    cache = CachedStore(inner)
    job = await cache.create(make_job())
    cache._drop(job.id)  # evicted: the next read misses
    read = await start_miss(cache, inner, job.id)
    assert await cache.transition(job.id, JobStatus.RUNNING, started_at=utcnow()) is not None
    assert await cache.transition(job.id, JobStatus.COMPLETED, completed_at=utcnow())
    inner.release.set()
    answered = await read
    assert answered is not None and answered.status == JobStatus.COMPLETED
    got = await cache.get(job.id)
    assert got is not None and got.status == JobStatus.COMPLETED
    assert got.started_at is not None


async def test_a_miss_after_a_delete_in_flight_caches_nothing() -> None:
    inner = SlowReads()
    cache = CachedStore(inner)
    job = await inner.create(make_job())
    read = await start_miss(cache, inner, job.id)
    await cache.delete([job.id])
    inner.release.set()
    await read
    assert job.id not in cache._jobs
    assert await inner.get(job.id) is None
