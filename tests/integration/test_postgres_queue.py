"""The PostgreSQL queue and an in-process worker against a real (fresh) database, without HTTP:
submission is one transaction, a redelivered final job never runs again, outputs live in the
store."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from interpreter import wiring
from interpreter.config import Settings
from interpreter.errors import StoreError
from interpreter.job import Job, JobRequest, JobStatus, new_job_id, utcnow
from interpreter.queues.procrastinate.app import queue_entry
from interpreter.queues.procrastinate.queue import PostgresQueue
from interpreter.queues.procrastinate.worker import LOST_MESSAGE, Attempt
from interpreter.store.base import JobStore, fencing_token
from tests.pg import fresh_database


@pytest.fixture
async def queue(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[PostgresQueue, JobStore]]:
    """A worker that is declared lost after 1 s of silence (the redelivery tests need it), or,
    with ``@pytest.mark.steady``, after 30 s: a test of the plain path must not meet a loss
    that a loaded machine's late heartbeat fakes."""
    lost_after_s = 30.0 if request.node.get_closest_marker("steady") else 1.0
    with fresh_database() as url:
        settings = Settings(
            database_url=url,
            data_dir=tmp_path,
            sandbox="none",
            worker_heartbeat_s=0.2,
            worker_lost_after_s=lost_after_s,
            max_jobs=2,
        )
        parts = wiring.build(settings)
        parts.paths.ensure()
        store, queue = parts.store, parts.queue
        assert isinstance(queue, PostgresQueue)
        await store.open()
        await queue.start()
        try:
            yield queue, store
        finally:
            await queue.stop(5)
            await store.close()


def new_job(code: str = "print('hi')") -> Job:
    return Job(id=new_job_id(), request=JobRequest(code=code, language="python", timeout_s=10))


async def final(store: JobStore, job_id: str, deadline_s: float = 15) -> Job:
    for _ in range(int(deadline_s / 0.02)):
        job = await store.get(job_id)
        if job is not None and job.is_final:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} not final: {await store.get(job_id)}")


async def queue_rows(queue: PostgresQueue) -> int:
    async with queue.engine.connect() as conn:
        count = await conn.execute(sa.text("SELECT count(*) FROM procrastinate_jobs"))
        return int(count.scalar_one())


@pytest.mark.steady
async def test_a_job_runs_and_its_outputs_are_in_the_store(queue) -> None:
    queue, store = queue
    code = "import sys; print('out'); print('err', file=sys.stderr)"
    job, _ = await queue.submit(new_job(code))
    assert job.queue_id is not None and job.seq is not None

    done = await final(store, job.id)

    assert done.status == JobStatus.COMPLETED and done.attempts == 1
    assert done.worker_id is not None and done.worker_host
    outputs = await store.get_outputs(job.id)
    assert outputs is not None and (outputs.stdout, outputs.stderr) == (b"out\n", b"err\n")
    # the worker's local copies are gone: the store holds them for every replica
    assert not list((queue.settings.data_dir / "outputs").glob(f"{job.id}*"))
    # finished queue entries are deleted
    for _ in range(100):
        if await queue_rows(queue) == 0:
            break
        await asyncio.sleep(0.1)
    assert await queue_rows(queue) == 0


async def test_a_job_longer_than_half_the_loss_window_leaves_no_queue_entry(queue) -> None:
    """An attempt that ran longer than half the lost-worker window checks, once it is done,
    whether it still owned its job; its own final status must not make it stale, or its
    queue entry is left behind for an owner that does not exist."""
    queue, store = queue
    assert queue.settings.worker_lost_after_s == 1.0
    job, _ = await queue.submit(new_job("import time; time.sleep(0.8)"))

    done = await final(store, job.id)

    assert done.status == JobStatus.COMPLETED
    for _ in range(100):
        if await queue_rows(queue) == 0:
            break
        await asyncio.sleep(0.1)
    assert await queue_rows(queue) == 0


@pytest.mark.steady
async def test_only_an_attempt_that_lost_its_job_is_stopped_as_stale(queue) -> None:
    """The worker's check of its own attempts, as it runs every heartbeat: an attempt whose job
    it has just recorded (final, its own fencing token) goes on; one whose job the API cancelled
    in the store is stopped and still owns its queue entry; one whose job was re-queued, failed
    as lost or deleted is stopped and leaves its entry to the new owner."""
    queue, store = queue
    node = queue.worker
    assert node is not None
    cases = {
        "recorded": lambda job: None,
        "cancelled by the API": lambda job: store.transition(
            job.id, JobStatus.CANCELLED, expect=fencing_token(job)
        ),
        "re-queued": lambda job: store.transition(
            job.id, JobStatus.PENDING, worker_id=None, worker_host=None, started_at=None
        ),
        "failed as lost": lambda job: store.transition(
            job.id, JobStatus.FAILED, expect=fencing_token(job), error_message=LOST_MESSAGE
        ),
        "deleted": lambda job: store.delete([job.id]),
    }
    stopped = {}
    for case, change in cases.items():
        job, _ = await queue.submit(new_job())
        done = await final(store, job.id)
        async with queue.engine.begin() as conn:  # as it was while it ran: running, its token
            await conn.execute(
                sa.text("UPDATE jobs SET status = 'running' WHERE id = :id"), {"id": done.id}
            )
        if (changed := change(done)) is not None:
            await changed
        attempt = Attempt(done, 10_000 + len(stopped), asyncio.Event(), [])
        if case == "recorded":  # and now it records its end, as Execution does
            assert await store.transition(done.id, JobStatus.COMPLETED, expect=fencing_token(done))
        await node._check_attempts([attempt])
        stale = attempt.entry_id in node._worker.stale_entries  # its entry left to the new owner
        stopped[case] = (attempt.cancel.is_set(), stale)
    assert stopped == {
        "recorded": (False, False),
        "cancelled by the API": (True, False),
        "re-queued": (True, True),
        "failed as lost": (True, True),
        "deleted": (True, True),
    }


async def test_no_job_without_its_queue_entry_and_no_entry_without_its_job(queue) -> None:
    queue, store = queue
    job, _ = await queue.submit(new_job("import time; time.sleep(2)"))
    rows = await queue_rows(queue)

    secret = new_job("print('my-secret-code')").evolve(id=job.id)
    with pytest.raises(StoreError) as raised:  # the job row fails (same id) after the deferral
        await queue.submit(secret)
    assert "UniqueViolation" in raised.value.message
    assert "my-secret-code" not in raised.value.message  # no statement parameters in errors

    assert await queue_rows(queue) == rows  # the second entry was rolled back with it


async def test_a_redelivered_final_job_never_runs_again(queue) -> None:
    queue, store = queue
    job, _ = await queue.submit(new_job("print('once')"))
    first = await final(store, job.id)

    await queue.app.job_manager.defer_job_async(queue_entry(job.id))  # a second delivery
    give_up = time.monotonic() + 20  # a loaded machine: the worker's fetch may take seconds
    while await queue_rows(queue) != 0 and time.monotonic() < give_up:
        await asyncio.sleep(0.02)

    async with queue.engine.connect() as conn:  # what is left, should it not be taken
        left = await conn.execute(sa.text("SELECT id, status, attempts FROM procrastinate_jobs"))
        entries = [tuple(row) for row in left]
    assert entries == []  # taken and acknowledged
    again = await store.get(job.id)
    assert again == first  # same attempts, same times: it did not run twice


async def test_a_pending_job_whose_queue_entry_is_gone_is_queued_again(queue) -> None:
    queue, store = queue
    # a job row whose queue entry was taken and lost (a worker that could not claim it while
    # the database was unreachable): the row alone, older than the lost-worker window (1 s)
    job = new_job("print('found')").evolve(created_at=utcnow() - timedelta(seconds=5))
    await store.create(job)

    done = await final(store, job.id)  # the workers' periodic check finds and queues it

    assert done.status == JobStatus.COMPLETED and done.queue_id is not None
    outputs = await store.get_outputs(job.id)
    assert outputs is not None and outputs.stdout == b"found\n"


async def test_a_fresh_pending_job_is_not_taken_for_an_orphan(queue) -> None:
    queue, store = queue
    await store.create(new_job())  # no entry, but younger than the window: left alone for now
    assert queue.worker is not None
    assert await queue.worker.requeue_orphans() == 0


async def test_the_worker_removes_workspaces_of_jobs_retention_deleted(queue) -> None:
    queue, store = queue
    assert queue.worker is not None
    root = queue.settings.workspaces
    job, _ = await queue.submit(new_job())
    done = await final(store, job.id)
    long_ago = utcnow().timestamp() - queue.settings.job_ttl_s - 60
    deleted = root / new_job_id()  # its job was deleted by retention long ago
    young = root / new_job_id()  # unknown, but too recent to be a deleted job's
    for directory in (deleted, young):
        directory.mkdir()
    os.utime(deleted, (long_ago, long_ago))
    kept = root / done.id  # its job is still in the store, however old its directory
    os.utime(kept, (long_ago, long_ago))
    (root / "callers-own").mkdir()  # not one of ours
    os.utime(root / "callers-own", (long_ago, long_ago))

    assert await queue.worker.sweep_local_files() == 1

    assert not deleted.exists()
    assert young.exists() and kept.exists() and (root / "callers-own").exists()
