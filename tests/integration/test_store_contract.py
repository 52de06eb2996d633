"""One contract, every store: the in-memory fake, SQLite (threaded engine, cached, and through
SQLAlchemy's asyncio layer) and PostgreSQL (a fresh database per test on the local server)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from interpreter.errors import IdempotencyKeyTaken, StoreError
from interpreter.job import (
    CapturedOutput,
    InputFile,
    Job,
    JobRequest,
    JobResult,
    JobStatus,
    OutputChunk,
    new_job_id,
    utcnow,
)
from interpreter.jobfiles import FileRow
from interpreter.store import CachedStore, MemoryStore, SqlStore
from interpreter.store.base import JobStore, fencing_token
from interpreter.store.sql import postgres_engine
from tests.pg import fresh_database


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        "cached-sqlite",
        "async-engine-sqlite",
        "postgres",
        "async-engine-postgres",
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    backend: JobStore
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            backend = SqlStore.postgres(stack.enter_context(fresh_database()), pool_size=2)
        elif request.param == "async-engine-postgres":  # every statement through SQLAlchemy
            engine = postgres_engine(stack.enter_context(fresh_database()), pool_size=2)
            backend = SqlStore.from_async_engine(engine)
        else:
            backend = _local_store(request.param, tmp_path)
        await backend.open()
        yield backend
        await backend.close()


def _local_store(kind: str, tmp_path: Path) -> JobStore:
    backend: JobStore
    if kind == "memory":
        backend = MemoryStore()
    elif kind == "sqlite":
        backend = SqlStore.sqlite(tmp_path / "jobs.db")
    elif kind == "cached-sqlite":
        backend = CachedStore(SqlStore.sqlite(tmp_path / "jobs.db"))
    else:  # SQLAlchemy's asyncio layer, as PostgreSQL: the same operations via run_sync
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
        backend = SqlStore.from_async_engine(engine)
    return backend


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


async def test_an_idempotency_key_makes_one_job(store: JobStore) -> None:
    first = make_job(owner="o1", stdin="in").evolve(idempotency_key="o1:k", request_digest="d1")
    await store.create(first)

    with pytest.raises(IdempotencyKeyTaken):
        await store.create(make_job(owner="o1").evolve(idempotency_key="o1:k"))
    other = await store.create(make_job(owner="o2").evolve(idempotency_key="o2:k"))
    without = [await store.create(make_job()) for _ in range(2)]  # no key: no constraint

    found = await store.find_by_idempotency_key("o1:k")
    assert found is not None and found.id == first.id
    assert found.request_digest == "d1" and found.request.stdin == "in"
    assert await store.find_by_idempotency_key("o3:k") is None
    assert other.seq is not None and all(job.seq is not None for job in without)


async def test_a_released_idempotency_key_makes_a_new_job(store: JobStore) -> None:
    first = await store.create(make_job().evolve(idempotency_key=":k"))

    await store.release_idempotency_key(first.id)
    second = await store.create(make_job().evolve(idempotency_key=":k"))

    found = await store.find_by_idempotency_key(":k")
    assert found is not None and found.id == second.id
    kept = await store.get(first.id)
    assert kept is not None and kept.idempotency_key is None


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
    pending = await store.pending_ids()
    assert [(p.id, p.owner, p.seq) for p in pending] == [(j.id, j.owner, j.seq) for j in jobs]
    await store.transition(jobs[0].id, JobStatus.CANCELLED)
    assert [p.id for p in await store.pending_ids()] == [j.id for j in jobs[1:]]
    listed = await store.list(owner=None, limit=10)
    assert [j.id for j in listed] == [j.id for j in reversed(jobs)]
    mine = await store.list(owner="a", limit=10)
    assert {j.owner for j in mine} == {"a"} and len(mine) == 2
    cancelled = await store.list(owner=None, status=JobStatus.CANCELLED, limit=10)
    assert [j.id for j in cancelled] == [jobs[0].id]
    page1 = await store.list(owner=None, limit=2)
    page2 = await store.list(owner=None, limit=2, before_seq=page1[-1].seq)
    assert [j.id for j in [*page1, *page2]] == [j.id for j in reversed(jobs)][:4]


async def test_pending_ids_come_in_pages_in_submission_order(store: JobStore) -> None:
    jobs = [await store.create(make_job(owner=f"o{i}")) for i in range(7)]
    await store.transition(jobs[2].id, JobStatus.CANCELLED)
    seen: list[tuple[str, str | None]] = []
    after_seq, pages = 0, 0
    while page := await store.pending_ids(after_seq=after_seq, limit=3):
        assert len(page) <= 3
        seen += [(p.id, p.owner) for p in page]
        after_seq, pages = page[-1].seq, pages + 1
    assert seen == [(j.id, j.owner) for j in jobs if j.id != jobs[2].id]
    assert pages == 2


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
    assert [(j.id, j.working_directory) for j in expired] == [(old.id, None)]
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


async def test_transition_with_expect_moves_only_when_every_field_matches(store: JobStore) -> None:
    job = await store.create(make_job())
    claimed = await store.transition(
        job.id, JobStatus.RUNNING, started_at=utcnow(), worker_id="7", worker_host="h", attempts=1
    )
    assert claimed is not None
    assert (claimed.worker_id, claimed.worker_host, claimed.attempts) == ("7", "h", 1)
    # another worker's stale view of who runs it: nothing moves
    assert not await store.compare_and_set(
        job.id, JobStatus.PENDING, expect={"worker_id": "8", "attempts": 1}, worker_id=None
    )
    assert (await store.get(job.id)).status == JobStatus.RUNNING  # type: ignore[union-attr]
    requeued = await store.transition(
        job.id, JobStatus.PENDING, expect={"worker_id": "7", "attempts": 1}, worker_id=None
    )
    assert requeued is not None and requeued.status == JobStatus.PENDING
    assert requeued.worker_id is None and requeued.attempts == 1


async def test_outputs_round_trip_as_bytes_and_go_with_the_job(store: JobStore) -> None:
    job = await store.create(make_job())
    assert await store.get_outputs(job.id) is None
    await store.put_outputs(job.id, CapturedOutput(b"first", b""))
    await store.put_outputs(job.id, CapturedOutput(b"out\x00\xff", b"err\n"))  # NUL, not UTF-8
    assert await store.get_outputs(job.id) == CapturedOutput(b"out\x00\xff", b"err\n")
    await store.delete([job.id])
    assert await store.get_outputs(job.id) is None


async def test_live_output_chunks_are_read_from_an_offset_and_go_with_the_job(
    store: JobStore,
) -> None:
    job = await store.create(make_job())
    other = await store.create(make_job())
    await store.add_chunks(
        job.id, [OutputChunk("stdout", 0, b"ab"), OutputChunk("stderr", 0, b"E")]
    )
    await store.add_chunks(job.id, [OutputChunk("stdout", 2, b"c\x00\xff")])  # NUL, not UTF-8
    await store.add_chunks(other.id, [OutputChunk("stdout", 0, b"other")])

    assert await store.get_chunks(job.id, 0, 0) == [
        OutputChunk("stderr", 0, b"E"),
        OutputChunk("stdout", 0, b"ab"),
        OutputChunk("stdout", 2, b"c\x00\xff"),
    ]
    # from inside a chunk: that chunk too; the stderr one is behind its offset
    assert await store.get_chunks(job.id, 1, 1) == [
        OutputChunk("stdout", 0, b"ab"),
        OutputChunk("stdout", 2, b"c\x00\xff"),
    ]
    assert await store.get_chunks(job.id, 5, 1) == []
    assert await store.get_chunks(job.id, 0, 0, limit=1) == [OutputChunk("stderr", 0, b"E")]

    await store.delete_chunks(job.id)
    assert await store.get_chunks(job.id, 0, 0) == []
    assert await store.get_chunks(other.id, 0, 0) == [OutputChunk("stdout", 0, b"other")]
    await store.delete([other.id])
    assert await store.get_chunks(other.id, 0, 0) == []


async def claim(store: JobStore, job_id: str, worker_id: str, attempts: int) -> Job:
    """pending -> running as a worker's claim sets it."""
    job = await store.transition(
        job_id,
        JobStatus.RUNNING,
        started_at=utcnow(),
        worker_id=worker_id,
        worker_host="h",
        attempts=attempts,
    )
    assert job is not None
    return job


async def requeue(store: JobStore, job: Job) -> None:
    """running -> pending as the lost-worker recovery does it."""
    assert await store.compare_and_set(
        job.id,
        JobStatus.PENDING,
        expect={"worker_id": job.worker_id, "attempts": job.attempts},
        worker_id=None,
        worker_host=None,
        started_at=None,
    )


async def test_a_stale_attempt_writes_nothing_once_the_job_runs_again(store: JobStore) -> None:
    job = await store.create(make_job())
    first = await claim(store, job.id, "w0", 1)
    await requeue(store, first)
    second = await claim(store, job.id, "w1", 2)
    stale, owner = fencing_token(first), fencing_token(second)
    assert not await store.put_outputs(job.id, CapturedOutput(b"stale", b""), expect=stale)
    late = await store.transition(
        job.id, JobStatus.COMPLETED, expect=stale, result=JobResult(exit_code=9)
    )
    assert late is None
    assert await store.put_outputs(job.id, CapturedOutput(b"owner", b""), expect=owner)
    assert not await store.put_outputs(job.id, CapturedOutput(b"stale", b""), expect=stale)
    result = JobResult(exit_code=0)
    done = await store.transition(job.id, JobStatus.COMPLETED, expect=owner, result=result)
    assert done is not None
    got = await store.get(job.id)
    assert got is not None
    assert (got.status, got.attempts, got.worker_id, got.result) == (
        JobStatus.COMPLETED,
        2,
        "w1",
        result,
    )
    assert await store.get_outputs(job.id) == CapturedOutput(b"owner", b"")


async def test_a_stale_attempt_cannot_end_a_job_queued_again(store: JobStore) -> None:
    job = await store.create(make_job())
    first = await claim(store, job.id, "w0", 1)
    await requeue(store, first)
    stale = fencing_token(first)
    assert await store.transition(job.id, JobStatus.FAILED, expect=stale) is None
    assert not await store.compare_and_set(job.id, JobStatus.CANCELLED, expect=stale)
    assert not await store.put_outputs(job.id, CapturedOutput(b"stale", b""), expect=stale)
    got = await store.get(job.id)
    assert got is not None and got.status == JobStatus.PENDING
    assert await store.get_outputs(job.id) is None


async def test_a_stale_attempt_attaches_no_result_to_a_job_cancelled_since(
    store: JobStore,
) -> None:
    job = await store.create(make_job())
    first = await claim(store, job.id, "w0", 1)
    await requeue(store, first)
    second = await claim(store, job.id, "w1", 2)
    assert await store.transition(job.id, JobStatus.CANCELLED) is not None
    stale_result, owner_result = JobResult(exit_code=9), JobResult(exit_code=0)
    assert not await store.attach_result(job.id, stale_result, 1.0, expect=fencing_token(first))
    assert await store.attach_result(job.id, owner_result, 2.0, expect=fencing_token(second))
    got = await store.get(job.id)
    assert got is not None
    assert (got.status, got.result, got.execution_time_ms) == (
        JobStatus.CANCELLED,
        owner_result,
        2.0,
    )


async def test_outputs_of_a_missing_job_are_not_kept(store: JobStore) -> None:
    missing = new_job_id()
    assert not await store.put_outputs(missing, CapturedOutput(b"x", b""))
    assert await store.get_outputs(missing) is None


async def test_input_files_round_trip_in_order_and_go_with_the_job(store: JobStore) -> None:
    inputs = (
        InputFile("z/last.csv", b"a,b\n"),
        InputFile("a.bin", bytes(range(256)) * 1024),
        InputFile("empty", b""),
    )
    job = await store.create(make_job(input_file_count=3), inputs)
    plain = await store.create(make_job())
    assert job.seq is not None and plain.seq is not None and plain.seq > job.seq

    got = await store.get(job.id)
    assert got is not None and got.request.input_file_count == 3
    assert list(await store.get_inputs(job.id)) == list(inputs)
    assert list(await store.get_inputs(plain.id)) == []

    await store.delete_inputs(job.id)  # once the job no longer needs them
    assert list(await store.get_inputs(job.id)) == []
    assert await store.get(job.id) is not None  # the job stays

    other = await store.create(make_job(input_file_count=1), (InputFile("x", b"1"),))
    await store.delete([other.id])  # retention: the files go with the job
    assert list(await store.get_inputs(other.id)) == []


async def test_queue_id_is_kept(store: JobStore) -> None:
    job = await store.create(make_job().evolve(queue_id=12345))
    assert (await store.get(job.id)).queue_id == 12345  # type: ignore[union-attr]


async def test_sqlite_database_of_an_older_version_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the jobs table as the first version made it
        db.execute(
            "CREATE TABLE jobs (seq INTEGER PRIMARY KEY, id VARCHAR(36) NOT NULL UNIQUE, "
            "owner VARCHAR(64), status VARCHAR(16) NOT NULL, language VARCHAR(64) NOT NULL, "
            "request JSON NOT NULL, created_at DATETIME NOT NULL, started_at DATETIME, "
            "completed_at DATETIME, execution_time_ms FLOAT, error_message TEXT, result JSON)"
        )
        db.execute(
            "INSERT INTO jobs (id, status, language, request, created_at) VALUES "
            "('0b7f0f38-6a0b-4c5e-9a39-5a0f4a7c2f10', 'completed', 'python', "
            '\'{"code": "print(1)", "timeout_s": 5.0, "capture_files": true}\', '
            "'2026-01-01 00:00:00')"
        )
    store = SqlStore.sqlite(path)
    await store.open()
    try:
        old = await store.get("0b7f0f38-6a0b-4c5e-9a39-5a0f4a7c2f10")
        assert old is not None and old.status == JobStatus.COMPLETED and old.attempts == 0
        new = await store.create(make_job())
        assert (await store.get(new.id)) is not None
    finally:
        await store.close()


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


async def test_sqlite_wal_is_checkpointed_off_the_writer(tmp_path: Path) -> None:
    """The writer never checkpoints (no fsync on the event loop); the reader thread does, every
    CHECKPOINT_EVERY writes: the rows reach the database file while the server runs."""
    import asyncio

    from interpreter.store.engines import CHECKPOINT_EVERY

    path = tmp_path / "jobs.db"
    store = SqlStore.sqlite(path)
    await store.open()
    try:
        start = path.stat().st_size
        for _ in range(CHECKPOINT_EVERY - 2):  # opening wrote once (the schema)
            await store.create(make_job())
        assert path.stat().st_size == start  # everything still in the WAL
        await store.create(make_job())
        await store.create(make_job())
        for _ in range(100):  # the checkpoint runs on the reader thread
            if path.stat().st_size > start:
                break
            await asyncio.sleep(0.02)
        assert path.stat().st_size > start
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "async-engine-sqlite"])
async def test_a_store_error_never_carries_the_code_or_environment(
    tmp_path: Path, kind: str
) -> None:
    store = _local_store(kind, tmp_path)
    await store.open()
    try:
        job = await store.create(
            make_job(code="print('my-secret-code')", environment={"TOKEN": "hunter2"})
        )
        with pytest.raises(StoreError) as raised:
            await store.create(job)  # the same row again: the driver refuses it
        assert "IntegrityError" in raised.value.message
        assert "hunter2" not in raised.value.message
        assert "my-secret-code" not in raised.value.message
    finally:
        await store.close()


async def test_sqlite_write_errors_are_store_errors(tmp_path: Path) -> None:
    store = SqlStore.sqlite(tmp_path / "jobs.db")
    await store.open()
    try:
        job = await store.create(make_job())
        with pytest.raises(StoreError, match="IntegrityError"):
            await store.create(make_job().evolve(id=job.id))  # the same id again
        assert (await store.get(job.id)) is not None  # and the store goes on serving
        await store.create(make_job())
    finally:
        await store.close()


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


@pytest.mark.parametrize(
    "sent",
    [{"stdin": "x" * 1000}, {"environment": {"A": "x" * 1000}}, {"metadata": {"m": "x" * 1000}}],
)
async def test_cached_store_counts_what_the_caller_sent_in_its_budget(
    tmp_path: Path, sent: dict[str, object]
) -> None:
    inner = SqlStore.sqlite(tmp_path / "jobs.db")
    store = CachedStore(inner, max_bytes=3 * (1024 + 1000))
    await store.open()
    jobs = [await store.create(make_job(code="", **sent)) for _ in range(4)]
    await inner.close()
    assert await store.get(jobs[-1].id) is not None
    with pytest.raises(StoreError):  # four jobs of ~2 KiB do not fit in three
        await store.get(jobs[0].id)
    await store.close()


async def test_expired_comes_in_pages_with_the_named_working_directory(store: JobStore) -> None:
    long_ago = utcnow() - timedelta(days=2)
    jobs = []
    for i in range(5):
        named = {"working_directory": f"/w/{i}"} if i % 2 else {}
        job = await store.create(make_job(code="x" * 10_000, **named))
        await store.transition(job.id, JobStatus.CANCELLED, completed_at=long_ago)
        jobs.append(job)
    seen: list[tuple[str, str | None]] = []
    after_seq = 0
    while page := await store.expired(utcnow() - timedelta(days=1), after_seq=after_seq, limit=2):
        assert len(page) <= 2
        seen += [(e.id, e.working_directory) for e in page]
        after_seq = page[-1].seq
    assert seen == [(j.id, j.request.working_directory) for j in jobs]
    assert [d for _, d in seen] == [None, "/w/1", None, "/w/3", None]


def file_rows() -> list[FileRow]:
    now = utcnow()
    return [
        FileRow("a.bin", "file", 3, "ab" * 32, now, now, content=b"\x00\xff\n"),
        FileRow("dir", "directory"),
        FileRow("dir/big", "file", 10**10, reason="over the cap"),
        FileRow("link", "symlink", reason="a symbolic link: never followed"),
        FileRow("", "note", reason="the listing stopped after 5 entries"),
    ]


async def test_files_round_trip_fenced_and_go_with_the_job(store: JobStore) -> None:
    job = await store.create(make_job())
    first = await claim(store, job.id, "w0", 1)
    assert await store.list_files(job.id) == []
    assert await store.put_files(job.id, [FileRow("old", "directory")], expect=fencing_token(first))
    await requeue(store, first)
    second = await claim(store, job.id, "w1", 2)
    assert not await store.put_files(job.id, file_rows(), expect=fencing_token(first))
    assert [r.path for r in await store.list_files(job.id)] == ["old"]  # the stale write: none

    rows = file_rows()
    assert await store.put_files(job.id, rows, expect=fencing_token(second))

    listed = {row.path: row for row in await store.list_files(job.id)}
    assert set(listed) == {"a.bin", "dir", "dir/big", "link", ""}  # replaced, not added to
    assert all(row.content is None for row in listed.values())
    assert listed["dir/big"].size == 10**10 and listed["dir/big"].reason == "over the cap"
    read = await store.read_file(job.id, "a.bin")
    assert read is not None and read.content == b"\x00\xff\n" and read.sha256 == "ab" * 32
    assert (read.created_at, read.modified_at) == (rows[0].created_at, rows[0].modified_at)
    assert await store.read_file(job.id, "missing") is None
    assert not await store.put_files(new_job_id(), file_rows())  # no such job
    await store.delete([job.id])
    assert await store.list_files(job.id) == []
    assert await store.read_file(job.id, "a.bin") is None
