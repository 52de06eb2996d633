"""One contract, every store: the in-memory fake, SQLite (threaded engine, cached, and through
SQLAlchemy's asyncio layer, the path PostgreSQL will take)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from interpreter.errors import StoreError
from interpreter.job import Job, JobRequest, JobResult, JobStatus, new_job_id, utcnow
from interpreter.store import CachedStore, MemoryStore, SqlStore
from interpreter.store.base import JobStore


@pytest.fixture(params=["memory", "sqlite", "cached-sqlite", "async-engine-sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    backend: JobStore
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "sqlite":
        backend = SqlStore.sqlite(tmp_path / "jobs.db")
    elif request.param == "cached-sqlite":
        backend = CachedStore(SqlStore.sqlite(tmp_path / "jobs.db"))
    else:  # the path an async driver (PostgreSQL) takes: the same operations via run_sync
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
        backend = SqlStore.from_async_engine(engine)
    await backend.open()
    yield backend
    await backend.close()


def make_job(owner: str | None = None, **request: object) -> Job:
    fields: dict[str, object] = {"code": "print(1)", "language": "python", "timeout_s": 5.0}
    fields.update(request)
    return Job(id=new_job_id(), request=JobRequest(**fields), owner=owner)  # type: ignore[arg-type]


async def test_create_then_get_round_trips_every_request_field(store: JobStore) -> None:
    job = make_job(
        owner="o1",
        environment={"A": "1"},
        metadata={"task": {"nested": [1, 2]}},
        working_directory="/w/x",
        capture_files=False,
    )
    created = await store.create(job)
    assert created.seq is not None
    got = await store.get(job.id)
    assert got is not None
    assert got.request == job.request
    assert got.owner == "o1"
    assert got.status == JobStatus.PENDING
    assert got.created_at == job.created_at
    assert got.created_at.tzinfo is not None


async def test_get_missing_job_returns_none(store: JobStore) -> None:
    assert await store.get(new_job_id()) is None


async def test_transition_is_compare_and_set(store: JobStore) -> None:
    job = await store.create(make_job())
    running = await store.transition(job.id, JobStatus.RUNNING, started_at=utcnow())
    assert running is not None and running.status == JobStatus.RUNNING
    assert running.started_at is not None
    # completed is not reachable from completed; running is not reachable from running
    assert await store.transition(job.id, JobStatus.RUNNING) is None
    done = await store.transition(job.id, JobStatus.COMPLETED, completed_at=utcnow())
    assert done is not None
    assert await store.transition(job.id, JobStatus.FAILED) is None
    assert await store.transition(job.id, JobStatus.CANCELLED) is None
    final = await store.get(job.id)
    assert final is not None and final.status == JobStatus.COMPLETED


async def test_compare_and_set_moves_only_from_an_allowed_status(store: JobStore) -> None:
    job = await store.create(make_job())
    started = utcnow()
    assert await store.compare_and_set(job.id, JobStatus.RUNNING, started_at=started)
    assert not await store.compare_and_set(job.id, JobStatus.RUNNING)
    assert not await store.compare_and_set(new_job_id(), JobStatus.RUNNING)
    result = JobResult(exit_code=3)
    assert await store.compare_and_set(job.id, JobStatus.FAILED, result=result, error_message="x")
    assert not await store.compare_and_set(job.id, JobStatus.CANCELLED)
    got = await store.get(job.id)
    assert got is not None
    assert (got.status, got.started_at, got.result, got.error_message) == (
        JobStatus.FAILED,
        started,
        result,
        "x",
    )


async def test_cancelled_job_is_never_overwritten_by_a_late_writer(store: JobStore) -> None:
    job = await store.create(make_job())
    await store.transition(job.id, JobStatus.RUNNING)
    assert await store.transition(job.id, JobStatus.CANCELLED) is not None
    assert await store.transition(job.id, JobStatus.COMPLETED, error_message="late") is None
    result = JobResult(exit_code=0, files_created=("/a",), resource_usage={"pid": 1})
    await store.attach_result(job.id, result, 12.5)
    got = await store.get(job.id)
    assert got is not None
    assert got.status == JobStatus.CANCELLED
    assert got.error_message is None
    assert got.result == result
    assert got.execution_time_ms == 12.5


async def test_attach_result_never_replaces_an_existing_result(store: JobStore) -> None:
    job = await store.create(make_job())
    await store.transition(job.id, JobStatus.RUNNING)
    first = JobResult(exit_code=1)
    await store.transition(job.id, JobStatus.FAILED, result=first)
    await store.attach_result(job.id, JobResult(exit_code=0), 1.0)
    got = await store.get(job.id)
    assert got is not None and got.result == first


async def test_pending_is_fifo_and_list_is_newest_first_with_filters(store: JobStore) -> None:
    jobs = [await store.create(make_job(owner="a" if i % 2 else "b")) for i in range(5)]
    assert [j.id for j in await store.pending()] == [j.id for j in jobs]
    await store.transition(jobs[0].id, JobStatus.CANCELLED)
    assert [j.id for j in await store.pending()] == [j.id for j in jobs[1:]]
    listed = await store.list(owner=None, limit=10)
    assert [j.id for j in listed] == [j.id for j in reversed(jobs)]
    mine = await store.list(owner="a", limit=10)
    assert {j.owner for j in mine} == {"a"} and len(mine) == 2
    cancelled = await store.list(owner=None, status=JobStatus.CANCELLED, limit=10)
    assert [j.id for j in cancelled] == [jobs[0].id]
    page1 = await store.list(owner=None, limit=2)
    page2 = await store.list(owner=None, limit=2, before_seq=page1[-1].seq)
    assert [j.id for j in page1 + page2] == [j.id for j in reversed(jobs)][:4]


async def test_fail_running_marks_only_running_jobs(store: JobStore) -> None:
    pending = await store.create(make_job())
    running = await store.create(make_job())
    await store.transition(running.id, JobStatus.RUNNING)
    assert list(await store.fail_running("server restarted during execution")) == [running.id]
    got = await store.get(running.id)
    assert got is not None
    assert got.status == JobStatus.FAILED
    assert got.error_message == "server restarted during execution"
    assert got.completed_at is not None
    still = await store.get(pending.id)
    assert still is not None and still.status == JobStatus.PENDING


async def test_expired_and_delete(store: JobStore) -> None:
    old = await store.create(make_job())
    await store.transition(old.id, JobStatus.CANCELLED, completed_at=utcnow() - timedelta(days=2))
    fresh = await store.create(make_job())
    await store.transition(fresh.id, JobStatus.CANCELLED, completed_at=utcnow())
    pending = await store.create(make_job())
    expired = await store.expired(utcnow() - timedelta(days=1))
    assert [j.id for j in expired] == [old.id]
    await store.delete([old.id])
    assert await store.get(old.id) is None
    assert await store.get(fresh.id) is not None
    assert await store.get(pending.id) is not None


async def test_count_by_status_and_ping(store: JobStore) -> None:
    a = await store.create(make_job())
    await store.create(make_job())
    await store.transition(a.id, JobStatus.RUNNING)
    counts = await store.count_by_status()
    assert counts[JobStatus.RUNNING] == 1
    assert counts[JobStatus.PENDING] == 1
    assert counts[JobStatus.COMPLETED] == 0
    await store.ping()


async def test_sqlite_store_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = SqlStore.sqlite(path)
    await first.open()
    job = await first.create(make_job())
    await first.close()
    second = SqlStore.sqlite(path)
    await second.open()
    got = await second.get(job.id)
    await second.close()
    assert got is not None and got.request == job.request


async def test_sqlite_store_uses_wal(tmp_path: Path) -> None:
    store = SqlStore.sqlite(tmp_path / "jobs.db")
    await store.open()
    await store.create(make_job())
    await store.close()
    assert (tmp_path / "jobs.db").exists()
    import sqlite3

    with sqlite3.connect(tmp_path / "jobs.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_cached_store_serves_reads_without_the_database_within_its_budget(
    tmp_path: Path,
) -> None:
    inner = SqlStore.sqlite(tmp_path / "jobs.db")
    store = CachedStore(inner, max_bytes=3 * (1024 + 100))
    await store.open()
    jobs = [await store.create(make_job(code="x" * 100)) for _ in range(4)]
    running = await store.transition(jobs[-1].id, JobStatus.RUNNING)
    assert running is not None
    await inner.close()  # the database is gone: recent jobs still answer from memory
    cached = await store.get(jobs[-1].id)
    assert cached is not None and cached.status == JobStatus.RUNNING
    assert cached.request.code == "x" * 100
    assert await store.get(jobs[1].id) is not None
    with pytest.raises(StoreError):  # the oldest was evicted: it needs the database
        await store.get(jobs[0].id)
    await store.close()
