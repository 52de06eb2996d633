"""An attempt whose worker was declared lost (its job queued and run again since) finishes late:
nothing it writes lands, and it is neither announced nor counted."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import pytest

from interpreter.job import CapturedOutput, Job, JobRequest, JobResult, JobStatus, new_job_id
from interpreter.metrics import Metrics
from interpreter.running.lifecycle import Execution
from interpreter.running.runner import Finish, JobRunner
from interpreter.store import MemoryStore
from interpreter.watch import JobWatch
from interpreter.workspace import JobPaths


class Paths(JobPaths):
    """Where a job's captured output files are, as the runner's paths say it; its fresh
    working directory under ``root/workspaces``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, root / "workspaces")
        self.root = root

    def stdout(self, job_id: str) -> Path:
        return self.root / f"{job_id}.out"

    def stderr(self, job_id: str) -> Path:
        return self.root / f"{job_id}.err"


class Runner:
    def __init__(self, root: Path) -> None:
        self.paths = Paths(root)


class CountingWatch(JobWatch):
    def __init__(self) -> None:
        super().__init__()
        self.notified: list[str] = []

    def notify(self, job_id: str) -> None:
        self.notified.append(job_id)
        super().notify(job_id)


def make_execution(store: MemoryStore, tmp_path: Path) -> tuple[Execution, CountingWatch]:
    watch = CountingWatch()
    runner = cast(JobRunner, Runner(tmp_path))
    return Execution(store, runner, Metrics(), watch, outputs_in_store=True), watch


async def claim(execution: Execution, job_id: str, worker_id: str, attempts: int) -> Job:
    job = await execution.claim(job_id, worker_id=worker_id, worker_host="h", attempts=attempts)
    assert job is not None
    return job


async def requeue(store: MemoryStore, job: Job) -> None:
    """What the lost-worker recovery does to a job of a worker that stopped answering."""
    assert await store.compare_and_set(
        job.id,
        JobStatus.PENDING,
        expect={"worker_id": job.worker_id, "attempts": job.attempts},
        worker_id=None,
        worker_host=None,
        started_at=None,
    )


def completed(exit_code: int) -> Finish:
    return Finish(JobStatus.COMPLETED, JobResult(exit_code=exit_code), None, 5.0)


def write_outputs(tmp_path: Path, job_id: str, stdout: bytes) -> None:
    (tmp_path / f"{job_id}.out").write_bytes(stdout)
    (tmp_path / f"{job_id}.err").write_bytes(b"")


async def new_job(store: MemoryStore) -> Job:
    request = JobRequest(code="print(1)", language="python", timeout_s=5.0)
    return await store.create(Job(id=new_job_id(), request=request))


def finished(execution: Execution, status: str) -> float:
    value = execution.metrics.registry.get_sample_value(
        "interpreter_jobs_finished_total", {"status": status}
    )
    return value or 0.0


async def test_a_stale_attempt_finishing_late_leaves_the_new_attempts_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    execution, watch = make_execution(store, tmp_path)
    job = await new_job(store)
    first = await claim(execution, job.id, "worker0", 1)
    await requeue(store, first)
    second = await claim(execution, job.id, "worker1", 2)

    write_outputs(tmp_path, job.id, b"from worker0")
    with caplog.at_level(logging.WARNING, logger="interpreter.running.lifecycle"):
        await execution._finish(first, completed(9), None)
    now = await store.get(job.id)
    assert now is not None and now.status == JobStatus.RUNNING  # attempt 2 still runs
    assert await store.get_outputs(job.id) is None
    assert watch.notified == [] and execution.processed == 0
    assert finished(execution, "completed") == 0
    refused = [r for r in caplog.records if "stale attempt" in r.getMessage()]
    assert refused and refused[0].__dict__["job_id"] == job.id
    assert refused[0].__dict__["attempts"] == 1

    write_outputs(tmp_path, job.id, b"from worker1")
    (tmp_path / "workspaces" / job.id).mkdir(parents=True)
    (tmp_path / "workspaces" / job.id / "out.txt").write_text("from worker1")
    await execution._finish(second, completed(0), None)
    assert [row.path for row in await store.list_files(job.id)] == ["out.txt"]
    final = await store.get(job.id)
    assert final is not None
    assert (final.status, final.attempts, final.worker_id, final.result) == (
        JobStatus.COMPLETED,
        2,
        "worker1",
        JobResult(exit_code=0),
    )
    assert await store.get_outputs(job.id) == CapturedOutput(b"from worker1", b"")
    assert watch.notified == [job.id] and finished(execution, "completed") == 1


async def test_a_stale_failing_attempt_cannot_end_a_job_queued_again(tmp_path: Path) -> None:
    store = MemoryStore()
    execution, watch = make_execution(store, tmp_path)
    job = await new_job(store)
    first = await claim(execution, job.id, "worker0", 1)
    await requeue(store, first)
    await execution._finish(first, Finish(JobStatus.FAILED, None, "killed", 5.0), None)
    now = await store.get(job.id)
    assert now is not None and now.status == JobStatus.PENDING
    assert watch.notified == [] and finished(execution, "failed") == 0


async def test_the_owner_cancelled_by_the_api_still_gets_its_result_attached(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    execution, _ = make_execution(store, tmp_path)
    job = await new_job(store)
    first = await claim(execution, job.id, "worker0", 1)
    assert await store.transition(job.id, JobStatus.CANCELLED) is not None
    write_outputs(tmp_path, job.id, b"partial")
    await execution._finish(
        first, Finish(JobStatus.CANCELLED, JobResult(exit_code=-9), None, 3.0), None
    )
    now = await store.get(job.id)
    assert now is not None
    assert (now.status, now.result) == (JobStatus.CANCELLED, JobResult(exit_code=-9))
    assert await store.get_outputs(job.id) == CapturedOutput(b"partial", b"")
