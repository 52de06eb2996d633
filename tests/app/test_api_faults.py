"""A slow or failing job store: the API's promises hold anyway.

The MemoryStore answers instantly; a real database does not. These subclasses add latency or a
transient failure at one step, to exercise the races and error paths a real store opens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

from interpreter.errors import ExecutionError, StoreError
from interpreter.job import InputFile, Job, JobStatus
from interpreter.store.memory import MemoryStore


class SlowToMarkRunning(MemoryStore):
    """Recording ``running`` takes a while (a busy database)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def transition(self, job_id: str, to: JobStatus, **changes: Any) -> Job | None:
        if to == JobStatus.RUNNING:
            await asyncio.sleep(self.delay_s)
        return await super().transition(job_id, to, **changes)


class FailsOnce(MemoryStore):
    """The first transition to ``target`` raises StoreError (a dropped connection), then works."""

    def __init__(self, target: JobStatus) -> None:
        super().__init__()
        self.target = target
        self.failed = False

    async def transition(self, job_id: str, to: JobStatus, **changes: Any) -> Job | None:
        if to == self.target and not self.failed:
            self.failed = True
            raise StoreError("connection lost")
        return await super().transition(job_id, to, **changes)


async def test_job_cancelled_while_still_pending_never_runs_its_code(make_api, tmp_path) -> None:
    api = await make_api(store=SlowToMarkRunning(delay_s=0.5), max_jobs=1)
    marker = tmp_path / "ran"
    job_id = await api.submit(f"echo ran > {marker}\nsleep 5", "shell", timeout=10)
    await asyncio.sleep(0.2)  # the dispatcher has picked it up; the store still says pending
    status = await api.status(job_id)
    assert status["status"] == "pending"

    response = await api.client.post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["started_at"] is None
    await asyncio.sleep(0.6)
    assert (await api.status(job_id))["status"] == "cancelled"
    assert not marker.exists(), "a job reported cancelled before it started ran its code"


async def test_status_never_says_pending_while_the_code_runs(make_api, tmp_path) -> None:
    api = await make_api(store=SlowToMarkRunning(delay_s=0.5), max_jobs=1)
    marker = tmp_path / "ran"
    job_id = await api.submit(f"echo ran > {marker}\nsleep 2", "shell", timeout=10)
    await api.wait_until(marker.exists, 5, "the job's code to run")

    status = await api.status(job_id)

    assert status["status"] == "running"
    await api.client.post(f"/jobs/{job_id}/cancel")


async def test_transient_store_failure_when_starting_does_not_lose_the_job(make_api) -> None:
    api = await make_api(store=FailsOnce(JobStatus.RUNNING), max_jobs=1)
    job_id = await api.submit("print('hi')")

    status = await api.wait(job_id, deadline_s=5)

    assert status["status"] in ("completed", "failed")
    follower = await api.submit("print('next')")
    assert (await api.wait(follower))["status"] == "completed"


async def test_transient_store_failure_when_finishing_does_not_leave_it_running(make_api) -> None:
    api = await make_api(store=FailsOnce(JobStatus.COMPLETED), max_jobs=1)
    job_id = await api.submit("print('hi')")

    status = await api.wait(job_id, deadline_s=5)

    assert status["status"] in ("completed", "failed")
    follower = await api.submit("print('next')")
    assert (await api.wait(follower))["status"] == "completed"


class CreateFails(MemoryStore):
    """The database is down (or locked by another process) when a job is submitted."""

    async def create(self, job: Job, inputs: Sequence[InputFile] = ()) -> Job:
        raise StoreError("job store error: OperationalError: database is locked")


async def test_a_store_outage_at_submission_is_a_503_to_retry(make_api) -> None:
    api = await make_api(store=CreateFails())

    response = await api.client.post("/execute", json={"code": "print(1)", "language": "python"})

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {"detail": "The job store is unavailable; retry later"}
    assert (await api.client.get("/languages")).status_code == 200  # and it goes on serving


class ReadFails(MemoryStore):
    """Every read fails the way a driver says it, naming the socket it could not reach."""

    async def list(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreError(
            "job store error: OperationalError: connection to server on socket "
            '"/var/run/postgresql/.s.PGSQL.5432" failed: No such file or directory'
        )


async def test_a_store_outage_answers_503_without_the_drivers_words(make_api, caplog) -> None:
    api = await make_api(store=ReadFails())

    response = await api.client.get("/jobs")

    assert response.status_code == 503
    assert "/var/run/postgresql" not in response.text
    assert response.json() == {"detail": "The job store is unavailable; retry later"}
    assert any("/var/run/postgresql" in r.getMessage() for r in caplog.records)  # for the operator


async def test_an_internal_error_answers_500_without_its_message(make_api, caplog) -> None:
    api = await make_api()
    secret_path = str(api.settings.data_dir / "scratch" / "job")

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise ExecutionError(f"cannot prepare the job's directories: {secret_path}: EACCES")

    api.app.state.parts.service.validate = fail
    transport = httpx.ASGITransport(app=api.app)  # without the fixture's check that forbids a 500
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/execute", json={"code": "print(1)"})

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error"}
    assert any(secret_path in r.getMessage() for r in caplog.records)
