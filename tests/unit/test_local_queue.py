"""The embedded server's queue on its own: ``LocalQueue`` over a ``MemoryStore`` with a
``FakeRunner`` (no process). Each test decides when a job ends (``block`` / ``hold`` and
``release``), so order and concurrency are asserted without sleeps or clocks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from interpreter.errors import QueueFull, TooManyPendingJobs
from interpreter.job import Job, JobRequest, JobStatus, TerminationReason, new_job_id
from interpreter.queues.local import LocalQueue, PendingCaps
from interpreter.running.lifecycle import CANCEL_MESSAGE, RESTART_MESSAGE, SHUTDOWN_MESSAGE
from interpreter.store.base import JobStore
from interpreter.store.memory import MemoryStore
from interpreter.workspace import JobPaths
from tests.fakes import FakeRunner

BOUND_S = 5.0  # how long a test waits for something that happens at once, before failing

MakeQueue = Callable[..., LocalQueue]


def job(code: str = "print('ok')", owner: str | None = None) -> Job:
    request = JobRequest(code=code, language="python", timeout_s=10.0)
    return Job(id=new_job_id(), request=request, owner=owner)


@pytest.fixture
def paths(tmp_path: Path) -> JobPaths:
    return JobPaths(tmp_path / "data", tmp_path / "workspaces")


@pytest.fixture
def runner(paths: JobPaths) -> FakeRunner:
    return FakeRunner(paths)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def make_queue(store: MemoryStore, runner: FakeRunner) -> AsyncIterator[MakeQueue]:
    """``make_queue(max_jobs, caps)``: a queue on the test's store and runner (started by the
    test); whatever still runs at the end is cancelled by ``stop``."""
    made: list[LocalQueue] = []

    def make(max_jobs: int = 1, caps: PendingCaps | None = None) -> LocalQueue:
        queue = LocalQueue(store, runner, max_jobs, caps=caps)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        await queue.stop(0)


async def submit(queue: LocalQueue, code: str = "print('ok')", owner: str | None = None) -> str:
    submitted, _ = await queue.submit(job(code, owner))
    return submitted.id


async def final(queue: LocalQueue, job_id: str) -> Job:
    """The job once its final status is written (announced, or seen on a re-read)."""
    async with asyncio.timeout(BOUND_S):
        while True:
            current = await queue.store.get(job_id)
            assert current is not None
            if current.is_final:
                return current
            await queue.watch.wait(job_id, 0.05)


async def stored(store: JobStore, job_id: str) -> Job:
    found = await store.get(job_id)
    assert found is not None
    return found


async def settle() -> None:
    """Let every ready task run until it waits on something (no clock involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_jobs_start_in_submission_order_one_at_a_time(
    make_queue: MakeQueue, runner: FakeRunner
) -> None:
    queue = make_queue(max_jobs=1)
    await queue.start()
    first = await submit(queue, "block")
    rest = [await submit(queue, f"print({n})") for n in range(4)]
    await runner.wait_started(first)
    await settle()
    assert runner.started == [first]  # the others wait behind it
    assert (await stored(queue.store, rest[0])).status is JobStatus.PENDING
    runner.release(first)
    for job_id in [first, *rest]:
        assert (await final(queue, job_id)).status is JobStatus.COMPLETED
    assert runner.started == [first, *rest]
    assert runner.peak_running == 1


async def test_at_most_max_jobs_run_at_once(make_queue: MakeQueue, runner: FakeRunner) -> None:
    queue = make_queue(max_jobs=2)
    await queue.start()
    ids = [await submit(queue, "block") for _ in range(5)]
    await runner.wait_started(ids[0])
    await runner.wait_started(ids[1])
    await settle()
    assert runner.started == ids[:2]
    state = await queue.state()
    assert (state.running, state.depth) == (2, 3)
    for job_id in ids:  # each release frees a slot for the next one
        runner.release(job_id)
        assert (await final(queue, job_id)).status is JobStatus.COMPLETED
    assert runner.started == ids
    assert runner.peak_running == 2


async def test_the_pending_cap_per_key_refuses_that_key_only(
    make_queue: MakeQueue, runner: FakeRunner, store: MemoryStore
) -> None:
    queue = make_queue(max_jobs=1, caps=PendingCaps(per_owner=2, total=100))
    await queue.start()
    running = await submit(queue, "block", owner="a")
    await runner.wait_started(running)  # running: no longer counted as pending
    waiting = [await submit(queue, owner="a") for _ in range(2)]
    refused = job(owner="a")
    with pytest.raises(TooManyPendingJobs) as caught:
        await queue.submit(refused)
    assert "too many pending jobs for this key (2)" in caught.value.message
    assert refused.id not in store.jobs  # nothing stored for a refused job
    await submit(queue, owner="b")  # another key still may
    await submit(queue)  # and so may a caller without a key (only the global cap applies)
    cancelled = await queue.cancel(waiting[0])
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    await submit(queue, owner="a")  # the cancelled job freed its place
    assert queue.queue_depth == 4


async def test_the_global_pending_cap_refuses_everyone(
    make_queue: MakeQueue, runner: FakeRunner, store: MemoryStore
) -> None:
    queue = make_queue(max_jobs=1, caps=PendingCaps(per_owner=100, total=2))
    await queue.start()
    running = await submit(queue, "block")
    await runner.wait_started(running)
    await submit(queue, owner="a")
    await submit(queue, owner="b")
    refused = job(owner="c")
    with pytest.raises(QueueFull) as caught:
        await queue.submit(refused)
    assert "too many pending jobs on this server (2)" in caught.value.message
    assert refused.id not in store.jobs
    state = await queue.state()
    assert (state.state, state.depth) == ("degraded", 2)
    runner.release(running)
    await final(queue, running)
    await submit(queue, owner="c")  # a job left pending: room again


async def test_a_cancelled_pending_job_never_runs(
    make_queue: MakeQueue, runner: FakeRunner
) -> None:
    queue = make_queue(max_jobs=1)
    await queue.start()
    ahead = await submit(queue, "block")
    await runner.wait_started(ahead)
    waiting = await submit(queue)
    cancelled = await queue.cancel(waiting)
    assert cancelled is not None
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.error_message == CANCEL_MESSAGE
    assert cancelled.completed_at is not None and cancelled.started_at is None
    assert queue.queue_depth == 0
    runner.release(ahead)
    after = await submit(queue)  # queued behind the cancelled job's id: the worker passed it
    assert (await final(queue, after)).status is JobStatus.COMPLETED
    assert runner.started == [ahead, after]
    assert not runner.ran(waiting)
    assert (await stored(queue.store, waiting)).status is JobStatus.CANCELLED


async def test_cancel_of_a_running_job_returns_its_final_record(
    make_queue: MakeQueue, runner: FakeRunner
) -> None:
    queue = make_queue(max_jobs=1)
    await queue.start()
    job_id = await submit(queue, "print('started')\nblock")
    await runner.wait_started(job_id)
    record = await queue.cancel(job_id)
    assert record is not None
    assert record.status is JobStatus.CANCELLED
    assert record.error_message == CANCEL_MESSAGE
    assert record.completed_at is not None
    assert record.result is not None
    assert record.result.termination_reason is TerminationReason.CANCELLED
    assert record.result.stdout_bytes == len(b"started\n")  # what ran is kept
    assert runner.cancels_seen == {job_id}
    assert queue.running_count == 0


async def test_a_second_cancel_of_a_running_job_gets_none(
    make_queue: MakeQueue, runner: FakeRunner
) -> None:
    queue = make_queue(max_jobs=1)
    await queue.start()
    job_id = await submit(queue, "block")
    await runner.wait_started(job_id)
    first, second = await asyncio.gather(queue.cancel(job_id), queue.cancel(job_id))
    assert first is not None and first.status is JobStatus.CANCELLED
    assert second is None  # the service answers 409 to it


async def test_cancel_of_a_job_that_ends_by_itself_meanwhile_returns_its_own_status(
    make_queue: MakeQueue, runner: FakeRunner
) -> None:
    queue = make_queue(max_jobs=1)
    await queue.start()
    job_id = await submit(queue, "hold\nprint('done')")
    await runner.wait_started(job_id)
    cancelling = asyncio.create_task(queue.cancel(job_id))
    await runner.wait_cancel_seen(job_id)
    runner.release(job_id)  # its "process" exits before the kill lands
    record = await cancelling
    assert record is not None
    assert record.status is JobStatus.COMPLETED  # the service answers 409 with it
    assert record.error_message is None


async def test_cancel_after_the_job_ended_returns_none_and_changes_nothing(
    make_queue: MakeQueue, runner: FakeRunner
) -> None:
    queue = make_queue(max_jobs=1)
    await queue.start()
    job_id = await submit(queue, "print('hi')")
    done = await final(queue, job_id)
    assert done.status is JobStatus.COMPLETED
    assert await queue.cancel(job_id) is None  # the service answers 409
    assert await stored(queue.store, job_id) == done
    assert runner.cancels_seen == set()


async def test_restart_fails_the_jobs_left_running_and_runs_the_pending_ones(
    make_queue: MakeQueue, runner: FakeRunner, store: MemoryStore, paths: JobPaths
) -> None:
    crashed = await store.create(job("block"))
    await store.transition(crashed.id, JobStatus.RUNNING)
    paths.outputs.mkdir(parents=True)
    paths.stdout(crashed.id).write_bytes(b"partial\n")  # what it printed before the crash
    pending = [(await store.create(job(f"print({n})"))).id for n in range(2)]
    queue = make_queue(max_jobs=1)
    await queue.start()
    failed = await stored(store, crashed.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error_message == RESTART_MESSAGE
    assert runner.recovered == [crashed.id]
    assert failed.result is not None
    assert failed.result.stdout_bytes == len(b"partial\n")
    assert failed.result.termination_reason is TerminationReason.SANDBOX_ERROR
    for job_id in pending:
        assert (await final(queue, job_id)).status is JobStatus.COMPLETED
    assert runner.started == pending  # in order; the crashed job does not run again


async def test_stop_cancels_the_jobs_that_outlive_the_grace(
    make_queue: MakeQueue, runner: FakeRunner, store: MemoryStore
) -> None:
    queue = make_queue(max_jobs=1)
    await queue.start()
    running = await submit(queue, "block")
    await runner.wait_started(running)
    waiting = await submit(queue)
    await queue.stop(0.01)
    assert not queue.accepting
    stopped = await stored(store, running)
    assert stopped.status is JobStatus.CANCELLED
    assert stopped.error_message == SHUTDOWN_MESSAGE
    assert runner.cancels_seen == {running}
    # a pending job stays pending, for the next start
    assert (await stored(store, waiting)).status is JobStatus.PENDING
    assert not runner.ran(waiting)
    assert runner.closed


async def test_stop_lets_a_job_end_within_the_grace(
    make_queue: MakeQueue, runner: FakeRunner, store: MemoryStore
) -> None:
    queue = make_queue(max_jobs=1)
    await queue.start()
    running = await submit(queue, "block")
    await runner.wait_started(running)
    stopping = asyncio.create_task(queue.stop(BOUND_S))
    await settle()
    assert not queue.accepting
    assert not stopping.done()  # waiting for the running job
    runner.release(running)
    await asyncio.wait_for(stopping, BOUND_S)
    ended = await stored(store, running)
    assert ended.status is JobStatus.COMPLETED
    assert runner.cancels_seen == set()
    assert runner.closed


async def test_a_runner_fault_fails_the_job_and_the_queue_goes_on(
    make_queue: MakeQueue, runner: FakeRunner
) -> None:
    queue = make_queue(max_jobs=1)
    await queue.start()
    broken = await submit(queue, "crash")
    after = await submit(queue)
    failed = await final(queue, broken)
    assert failed.status is JobStatus.FAILED
    assert failed.error_message is not None
    assert failed.error_message.startswith("internal error (RuntimeError)")
    assert (await final(queue, after)).status is JobStatus.COMPLETED
    assert queue.alive


async def test_a_sessions_execution_takes_no_worker_from_other_jobs(
    make_queue: MakeQueue, runner: FakeRunner, store: MemoryStore
) -> None:
    """A session's execution waits for its session (one at a time), never for a worker: with
    one worker, a blocked session execution holds back no other job."""
    queue = make_queue(max_jobs=1)
    await queue.start()
    in_session = job("block").evolve(
        request=JobRequest(code="block", language="python", timeout_s=10.0, session_id="s1")
    )
    await queue.submit(in_session)
    await runner.wait_started(in_session.id)
    plain, _ = await queue.submit(job("print('ok')"))
    await runner.wait_ended(plain.id)
    finished = await store.get(plain.id)
    assert finished is not None and finished.status == JobStatus.COMPLETED
    still = await store.get(in_session.id)
    assert still is not None and still.status == JobStatus.RUNNING
    runner.release(in_session.id)
    await runner.wait_ended(in_session.id)
