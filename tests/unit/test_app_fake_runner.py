"""The API end to end through the real app (routes, service, ``LocalQueue``, lifecycle,
``MemoryStore``) with a ``FakeRunner``: no process starts, not even at start-up.

How no process starts: the app gets the fake as its only runner; the language registry's
version probe (the one start-up step that runs interpreters, ``<interpreter> --version``) is
replaced on the app's own registry by one that reads nothing; and every way to start a process
(``asyncio.create_subprocess_*``, ``subprocess.Popen``, ``os.fork``, ``os.posix_spawn``, ...) is
patched to record the attempt and raise, the record asserted empty after each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from interpreter.api.app import create_app
from interpreter.api.deps import AppParts
from interpreter.api.sse import KEEPALIVE, Offsets, job_events
from interpreter.config import Settings
from interpreter.running.lifecycle import CANCEL_MESSAGE
from interpreter.store.memory import MemoryStore
from interpreter.workspace import JobPaths
from tests.asgi import serve
from tests.fakes import EXECUTION_TIME_MS, FakeRunner

LONG_POLL = {"wait": 5}  # a bound: a job the fake ends at once is final long before
SETTINGS: dict[str, Any] = {
    "sandbox": "none",
    "max_jobs": 2,
    "kill_grace_s": 0.2,
    "shutdown_grace_s": 0.2,  # blocked jobs left at the end are cancelled this soon
    "default_timeout_s": 10.0,
}


class ProcessStarted(AssertionError):
    """Raised by anything that would start a process while a test runs."""


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every attempt to start a process fails, and is recorded: the test fails at teardown if
    any was made (even one the code under test caught)."""
    attempts: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{name}{args[:2]!r}")
            raise ProcessStarted(f"a process was started: {name}{args[:2]!r}")

        return refused

    async def refused_async(*args: Any, **kwargs: Any) -> Any:
        refuse("asyncio.create_subprocess")(*args)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", refused_async)
    monkeypatch.setattr(asyncio, "create_subprocess_shell", refused_async)
    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse("subprocess.Popen"))
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv", "execve"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse(f"os.{name}"))
    yield attempts
    assert attempts == [], f"processes were started: {attempts}"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read INTERPRETER_* from the environment: none of the developer's may leak in."""
    for name in list(os.environ):
        if name.startswith("INTERPRETER_"):
            monkeypatch.delenv(name)


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    runner: FakeRunner
    store: MemoryStore

    async def submit(self, code: str, **fields: Any) -> str:
        body = {"code": code, "language": "python", **fields}
        response = await self.client.post("/execute", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "pending"
        job_id: str = response.json()["job_id"]
        return job_id

    async def final_status(self, job_id: str) -> dict[str, Any]:
        """The long poll: answered once the job is final (failing if it is not)."""
        response = await self.client.get(f"/jobs/{job_id}/status", params=LONG_POLL)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["status"] in {"completed", "failed", "timeout", "cancelled"}, body
        return body

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = await self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawned: list[str], environment: None
) -> AsyncIterator[MakeApi]:
    """``make_api(**settings)``: the app with a FakeRunner, started (lifespan) and a client."""
    stack = contextlib.AsyncExitStack()
    # An interpreter that exists (the registry requires one to accept a job) but never runs.
    python = tmp_path / "bin" / "python3"
    python.parent.mkdir()
    python.write_text("#!/bin/false\n")
    python.chmod(0o755)

    async def make(**overrides: Any) -> Api:
        settings = Settings(
            data_dir=tmp_path / "data", python_command=str(python), **{**SETTINGS, **overrides}
        )
        runner = FakeRunner(JobPaths(settings.data_dir, settings.workspaces))
        store = MemoryStore()
        app = create_app(settings, store=store, runner=runner)
        parts: AppParts = app.state.parts

        async def probe_versions() -> None:  # instead of running each `<interpreter> --version`
            registry = parts.registry
            registry.versions = {
                name: "fake 1.0" if language.available else None
                for name, language in registry.languages.items()
            }

        monkeypatch.setattr(parts.registry, "probe_versions", probe_versions)
        client = await serve(stack, app)
        return Api(app=app, client=client, runner=runner, store=store)

    async with stack:
        yield make


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()


async def test_the_app_starts_with_the_fake_as_its_only_runner(
    api: Api, spawned: list[str]
) -> None:
    parts: AppParts = api.app.state.parts
    assert parts.runner is api.runner
    assert parts.queue.runner is api.runner  # type: ignore[attr-defined]
    assert spawned == []  # start-up started nothing
    listed: list[dict[str, Any]] = (await api.client.get("/languages")).json()
    languages = {lang["name"]: lang for lang in listed}
    assert languages["python"]["available"] is True
    assert languages["python"]["version"] == "fake 1.0"
    sandbox = await api.get("/sandbox")
    assert (sandbox["mode"], sandbox["isolated"]) == ("none", False)
    health = await api.get("/health")
    assert health["status"] in {"healthy", "degraded"}


async def test_the_process_guard_catches_a_process_start(spawned: list[str]) -> None:
    with pytest.raises(ProcessStarted):
        await asyncio.create_subprocess_exec("true")
    with pytest.raises(ProcessStarted):
        subprocess.run(["true"], check=False)
    assert len(spawned) == 2
    spawned.clear()  # caught on purpose: the teardown's check is for the other tests


async def test_a_job_runs_and_its_results_carry_its_output(api: Api) -> None:
    job_id = await api.submit("print('hi')", metadata={"task": "t1"})
    status = await api.final_status(job_id)
    assert status["status"] == "completed"
    assert status["error_message"] is None
    assert status["started_at"] is not None and status["completed_at"] is not None
    # whole milliseconds (1.5 rounds half up), the precise value beside it
    assert status["execution_time_ms"] == 2 and isinstance(status["execution_time_ms"], int)
    assert status["execution_time_precise_ms"] == EXECUTION_TIME_MS
    assert status["metadata"]["task"] == "t1"
    structured = await api.get(f"/results/{job_id}")
    assert structured == {"status": "completed", "stdout": "hi\n", "stderr": "", "files": []}
    full = await api.get(f"/jobs/{job_id}/results")
    assert (full["stdout"], full["stderr"]) == ("hi\n", "")
    assert (full["exit_code"], full["signal"]) == (0, None)
    assert full["termination_reason"] == "exit"
    assert full["metadata"]["stdout_length"] == 3
    assert full["resource_usage"]["memory_bytes"]["peak_rss"] == 0
    assert api.runner.started == [job_id]


async def test_stdout_and_stderr_are_both_returned(api: Api) -> None:
    job_id = await api.submit("stdout:line one\nstderr:a warning\nprint('line two')")
    await api.final_status(job_id)
    structured = await api.get(f"/results/{job_id}")
    assert structured["status"] == "completed"
    assert structured["stdout"] == "line one\nline two\n"
    assert structured["stderr"] == "a warning\n"


async def test_a_failed_job_reads_failed(api: Api) -> None:
    job_id = await api.submit("print('before')\nfail:ValueError: boom")
    status = await api.final_status(job_id)
    assert status["status"] == "failed"
    assert status["error_message"] == "ValueError: boom"
    full = await api.get(f"/jobs/{job_id}/results")
    assert full["exit_code"] == 1
    assert full["termination_reason"] == "exit"
    assert (full["stdout"], full["stderr"]) == ("before\n", "ValueError: boom\n")
    structured = await api.get(f"/results/{job_id}")
    assert structured["status"] == "failed"


async def test_a_timed_out_job_reads_timeout(api: Api) -> None:
    job_id = await api.submit("print('slow')\ntimeout", timeout=3)
    status = await api.final_status(job_id)
    assert status["status"] == "timeout"
    assert status["error_message"] == "timed out after 3 s"
    full = await api.get(f"/jobs/{job_id}/results")
    assert full["termination_reason"] == "timeout"
    assert (full["exit_code"], full["signal"]) == (None, 9)
    assert full["stdout"] == "slow\n"


async def test_the_long_poll_answers_when_the_job_ends(api: Api) -> None:
    job_id = await api.submit("block")
    await api.runner.wait_started(job_id)
    polling = asyncio.create_task(api.client.get(f"/jobs/{job_id}/status", params=LONG_POLL))
    running = await api.get(f"/jobs/{job_id}/status")  # no wait: answered at once
    assert running["status"] == "running"
    assert not polling.done()
    api.runner.release(job_id)
    response = await polling
    assert response.json()["status"] == "completed"


async def test_cancel_of_a_pending_job_answers_cancelled_and_it_never_runs(
    make_api: MakeApi,
) -> None:
    api = await make_api(max_jobs=1)
    ahead = await api.submit("block")
    await api.runner.wait_started(ahead)
    waiting = await api.submit("print('never')")
    response = await api.client.post(f"/jobs/{waiting}/cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["error_message"] == CANCEL_MESSAGE
    assert body["started_at"] is None and body["completed_at"] is not None
    api.runner.release(ahead)
    after = await api.submit("print('after')")  # queued behind the cancelled one
    assert (await api.final_status(after))["status"] == "completed"
    assert api.runner.started == [ahead, after]
    assert not api.runner.ran(waiting)
    structured = await api.get(f"/results/{waiting}")
    assert structured == {"status": "cancelled", "stdout": "", "stderr": "", "files": []}


async def test_cancel_of_a_running_job_answers_its_final_record(api: Api) -> None:
    job_id = await api.submit("print('partial')\nblock")
    await api.runner.wait_started(job_id)
    response = await api.client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["error_message"] == CANCEL_MESSAGE
    assert body["started_at"] is not None and body["completed_at"] is not None
    assert api.runner.cancels_seen == {job_id}
    full = await api.get(f"/jobs/{job_id}/results")
    assert full["status"] == "cancelled"
    assert full["termination_reason"] == "cancelled"
    assert full["stdout"] == "partial\n"  # what it printed before the cancel is kept


async def test_delete_cancels_too(api: Api) -> None:
    job_id = await api.submit("block")
    await api.runner.wait_started(job_id)
    response = await api.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"


async def test_cancel_after_the_job_finished_is_a_conflict(api: Api) -> None:
    job_id = await api.submit("print('done')")
    await api.final_status(job_id)
    for response in (
        await api.client.post(f"/jobs/{job_id}/cancel"),
        await api.client.delete(f"/jobs/{job_id}"),
    ):
        assert response.status_code == 409, response.text
        assert "already finished with status 'completed'" in response.json()["detail"]
    assert (await api.get(f"/jobs/{job_id}/status"))["status"] == "completed"
    assert api.runner.cancels_seen == set()


async def test_cancel_of_a_job_that_ends_by_itself_meanwhile_is_a_conflict(api: Api) -> None:
    job_id = await api.submit("hold\nprint('finished anyway')")
    await api.runner.wait_started(job_id)
    cancelling = asyncio.create_task(api.client.post(f"/jobs/{job_id}/cancel"))
    await api.runner.wait_cancel_seen(job_id)
    api.runner.release(job_id)  # its "process" exits before the kill lands
    response = await cancelling
    assert response.status_code == 409, response.text
    assert "already finished with status 'completed'" in response.json()["detail"]
    structured = await api.get(f"/results/{job_id}")
    assert structured["status"] == "completed"
    assert structured["stdout"] == "finished anyway\n"


async def test_jobs_are_listed_newest_first_a_page_at_a_time(api: Api) -> None:
    ids = [await api.submit(f"print({n})") for n in range(3)]
    failed = await api.submit("fail:no")
    for job_id in [*ids, failed]:
        await api.final_status(job_id)
    first = await api.get("/jobs", limit=2)
    assert [job["job_id"] for job in first["jobs"]] == [failed, ids[2]]
    assert first["next_cursor"] is not None
    second = await api.get("/jobs", limit=2, cursor=first["next_cursor"])
    assert [job["job_id"] for job in second["jobs"]] == [ids[1], ids[0]]
    last = await api.get("/jobs", limit=2, cursor=second["next_cursor"])
    assert last == {"jobs": [], "next_cursor": None}
    only_failed = await api.get("/jobs", status="failed")
    assert [job["job_id"] for job in only_failed["jobs"]] == [failed]
    assert only_failed["next_cursor"] is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs/{id}/status"),
        ("GET", "/jobs/{id}/results"),
        ("GET", "/results/{id}"),
        ("POST", "/jobs/{id}/cancel"),
        ("DELETE", "/jobs/{id}"),
    ],
)
async def test_an_unknown_job_is_not_found(api: Api, method: str, path: str) -> None:
    for job_id in (str(uuid.uuid4()), "not-a-job-id"):
        response = await api.client.request(method, path.format(id=job_id))
        assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    "body",
    [
        {"language": "python"},  # no code
        ["print(1)", "python"],  # not an object
        {"code": "print(1)", "language": "python", "unknown_field": 1},
        {"code": "print(1)", "language": "cobol"},
        {"code": "print(1)", "language": "python", "timeout": -1},
        {"code": 42, "language": "python"},
    ],
)
async def test_a_bad_body_is_refused_and_nothing_runs(api: Api, body: Any) -> None:
    response = await api.client.post("/execute", json=body)
    assert response.status_code == 422, response.text
    assert (await api.get("/jobs"))["jobs"] == []
    assert api.runner.started == []


# -- one round trip: POST /execute?wait= -------------------------------------------------------


async def test_execute_with_wait_answers_with_the_full_result_of_a_job_that_ended(api: Api) -> None:
    body = {"code": "print('one trip')", "language": "python"}
    response = await api.client.post("/execute", json=body, params={"wait": 30})
    assert response.status_code == 200, response.text
    full = response.json()
    assert full["status"] == "completed"
    assert full["stdout"] == "one trip\n"
    assert full["exit_code"] == 0 and full["termination_reason"] == "exit"
    assert full == await api.get(f"/jobs/{full['job_id']}/results")  # the same record


async def test_execute_with_wait_answers_the_submission_when_the_job_still_runs(api: Api) -> None:
    body = {"code": "block", "language": "python"}
    response = await api.client.post("/execute", json=body, params={"wait": 0.2})
    assert response.status_code == 200, response.text
    submitted = response.json()
    assert set(submitted) == {"job_id", "status", "estimated_start_time"}
    assert submitted["status"] == "running"
    api.runner.release(submitted["job_id"])
    assert (await api.final_status(submitted["job_id"]))["status"] == "completed"


async def test_execute_without_wait_answers_at_once(api: Api) -> None:
    job_id = await api.submit("print('later')")  # asserts the submission body, status pending
    assert (await api.final_status(job_id))["status"] == "completed"


@pytest.mark.parametrize("wait", ["-1", "61", "nan", "soon"])
async def test_execute_with_a_bad_wait_is_refused_and_nothing_runs(api: Api, wait: str) -> None:
    body = {"code": "print('never')", "language": "python"}
    response = await api.client.post("/execute", json=body, params={"wait": wait})
    assert response.status_code == 422, response.text
    assert api.runner.started == []


async def test_operation_ids_read_as_method_names(api: Api) -> None:
    schema = await api.get("/openapi.json")
    ids = {
        f"{method.upper()} {path}": operation["operationId"]
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert ids == {
        "POST /execute": "execute",
        "GET /jobs/{job_id}/status": "get_job_status",
        "GET /results/{job_id}": "get_result",
        "GET /jobs/{job_id}/results": "get_full_result",
        "GET /jobs/{job_id}/stream": "stream_job",
        "GET /environments": "list_environments",
        "POST /environments": "build_environment",
        "DELETE /environments/{environment_id}": "delete_environment",
        "POST /jobs/{job_id}/cancel": "cancel_job",
        "DELETE /jobs/{job_id}": "delete_job",
        "GET /jobs": "list_jobs",
        "GET /jobs/{job_id}/files": "list_job_files",
        "GET /jobs/{job_id}/files/{path}": "get_job_file",
        "GET /jobs/{job_id}/archive": "get_job_archive",
        "GET /health": "get_health",
        "GET /languages": "list_languages",
        "GET /metrics": "get_metrics",
        "GET /sandbox": "describe_sandbox",
        "POST /sessions": "create_session",
        "GET /sessions": "list_sessions",
        "GET /sessions/{session_id}": "get_session",
        "DELETE /sessions/{session_id}": "delete_session",
        "POST /sessions/{session_id}/execute": "execute_in_session",
        "POST /sessions/{session_id}/interrupt": "interrupt_session",
        "POST /sessions/{session_id}/restart": "restart_session",
        "GET /api/kernelspecs": "list_kernelspecs",
        "POST /api/kernels": "start_kernel",
        "GET /api/kernels": "list_kernels",
        "GET /api/kernels/{kernel_id}": "get_kernel",
        "DELETE /api/kernels/{kernel_id}": "shutdown_kernel",
        "POST /api/kernels/{kernel_id}/interrupt": "interrupt_kernel",
        "POST /api/kernels/{kernel_id}/restart": "restart_kernel",
    }


async def test_the_callers_metadata_keys_are_kept_beside_the_servers(api: Api) -> None:
    mine = {"language": "as I call it", "stdout_length": "mine", "task": 7}
    job_id = await api.submit("print('x')", metadata=mine)
    status = await api.final_status(job_id)
    assert status["metadata"] == {**mine, "timeout": status["metadata"]["timeout"]}
    full = await api.get(f"/jobs/{job_id}/results")
    assert full["metadata"]["language"] == "as I call it"
    assert full["metadata"]["stdout_length"] == "mine"
    assert full["metadata"]["task"] == 7
    assert full["metadata"]["stderr_length"] == 0 and full["metadata"]["files_created_count"] == 0


async def test_a_quiet_stream_sends_keep_alive_comments_and_ends_with_the_job(api: Api) -> None:
    job_id = await api.submit("block")
    await api.runner.wait_started(job_id)
    parts: AppParts = api.app.state.parts
    stream = job_events(parts.service, job_id, None, Offsets(), keepalive_s=0.05)

    assert b'"status":"running"' in await anext(stream)
    assert await asyncio.wait_for(anext(stream), 2) == KEEPALIVE
    assert parts.queue.watch.streams(job_id) == 1
    api.runner.release(job_id)
    rest = [item async for item in stream]

    assert rest[-1].startswith(b"event: end\nid: 0:0\n")
    assert b'"status":"completed"' in rest[-1]
    assert parts.queue.watch.streams(job_id) == 0
