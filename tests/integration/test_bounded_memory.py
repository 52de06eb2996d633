"""A restart and a retention sweep read ids, a page at a time, never the jobs' code: their peak
memory stays far below the code the store holds (SQLite, a real file)."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import cast

import pytest

from interpreter.config import Settings
from interpreter.job import Job, JobRequest, JobStatus, new_job_id, utcnow
from interpreter.languages import LanguageRegistry
from interpreter.queues.base import JobQueue
from interpreter.queues.local import LocalQueue
from interpreter.running.runner import JobRunner
from interpreter.service import JobService
from interpreter.store import SqlStore
from interpreter.workspace import JobPaths

JOBS = 2_000
CODE_BYTES = 256 * 1024
CODE_TOTAL = JOBS * CODE_BYTES  # 500 MiB


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore.sqlite(tmp_path / "jobs.sqlite3")
    await store.open()
    yield store
    await store.close()


async def fill(store: SqlStore, owners: int = 7) -> list[Job]:
    """``JOBS`` pending jobs of ``CODE_BYTES`` of code each."""
    code = "#" * (CODE_BYTES - 1) + "\n"
    jobs = []
    for i in range(JOBS):
        request = JobRequest(code=code, language="python", timeout_s=5.0)
        jobs.append(await store.create(Job(new_job_id(), request, owner=f"owner-{i % owners}")))
    return jobs


async def peak_bytes(operation: Callable[[], Awaitable[object]]) -> int:
    """The most memory the operation held at once, over what was held before it."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        await operation()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


@pytest.mark.timeout(300)
async def test_restart_recovery_does_not_read_pending_jobs_code(store: SqlStore) -> None:
    jobs = await fill(store)
    # No workers: only the recovery runs (nothing was running, so the runner is never asked).
    dispatcher = LocalQueue(store, cast(JobRunner, None), max_jobs=0)

    peak = await peak_bytes(dispatcher.start)

    assert peak < CODE_TOTAL / 10, f"restart peaked at {peak / 2**20:.0f} MiB"
    assert dispatcher.queue_depth == JOBS
    assert dispatcher.pending.count("owner-0") == len(jobs[::7])
    assert [dispatcher._queue.get_nowait() for _ in range(JOBS)] == [j.id for j in jobs]


@pytest.mark.timeout(300)
async def test_retention_sweep_does_not_read_expired_jobs_code(
    store: SqlStore, tmp_path: Path
) -> None:
    jobs = await fill(store)
    long_ago = utcnow() - timedelta(days=2)
    for job in jobs:
        await store.transition(job.id, JobStatus.CANCELLED, completed_at=long_ago)
    kept = await store.create(Job(new_job_id(), JobRequest("print(1)", "python", 5.0)))
    settings = Settings(data_dir=tmp_path / "data", job_ttl_s=3600.0)
    paths = JobPaths(settings.data_dir, settings.workspaces)
    paths.ensure()
    for job in jobs[:3]:
        (paths.workspace_root / job.id).mkdir()
        paths.stdout(job.id).write_text("out")
    service = JobService(settings, store, cast(JobQueue, None), cast(LanguageRegistry, None), paths)

    peak = await peak_bytes(service.cleanup_expired)

    assert peak < CODE_TOTAL / 10, f"retention sweep peaked at {peak / 2**20:.0f} MiB"
    assert await store.count_by_status() == {**dict.fromkeys(JobStatus, 0), JobStatus.PENDING: 1}
    assert await store.get(kept.id) is not None
    assert not any((paths.workspace_root / job.id).exists() for job in jobs[:3])
    assert not any(paths.stdout(job.id).exists() for job in jobs[:3])
    paths.close()
