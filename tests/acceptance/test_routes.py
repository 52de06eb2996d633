"""Every route and every status of the API, over HTTP, against a real server process."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.server import (
    ServerProcess,
    job_status,
    results,
    run_in_one_trip,
    running_server,
    submit,
    wait_final,
    wait_for_status,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]

STATUS_KEYS = {
    "job_id",
    "status",
    "created_at",
    "started_at",
    "completed_at",
    "execution_time_ms",
    "error_message",
    "metadata",
}
FULL_RESULT_KEYS = STATUS_KEYS | {
    "stdout",
    "stderr",
    "stdout_truncated",
    "stderr_truncated",
    "files_created",
    "files_modified",
    "files_deleted",
    "exit_code",
    "resource_usage",
    "environment_snapshot",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("routes"), INTERPRETER_MAX_JOBS="4") as server:
        yield server


def utc(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0, value
    return parsed


def test_completed_job_answers_on_every_result_route(server: ServerProcess) -> None:
    client = server.client()
    code = "import os\nopen('out.txt', 'w').write('x')\nprint('hello', os.environ['GREETING'])\n"
    response = client.post(
        "/execute",
        json={
            "code": code,
            "language": "python",
            "timeout": 20,
            "environment_variables": {"GREETING": "hi", "API_TOKEN": "s3cret"},
            "metadata": {"user": "orchestrator", "task_id": "12345"},
        },
    )
    assert response.status_code == 200, response.text
    accepted = response.json()
    assert set(accepted) >= {"job_id", "status", "estimated_start_time"}
    assert uuid.UUID(accepted["job_id"]).version == 4
    assert accepted["status"] == "pending"
    utc(accepted["estimated_start_time"])
    job_id = accepted["job_id"]

    final = wait_final(client, job_id)
    assert set(final) >= STATUS_KEYS
    assert final["status"] == "completed", final
    assert final["error_message"] is None
    assert utc(final["created_at"]) <= utc(final["started_at"]) <= utc(final["completed_at"])
    assert final["execution_time_ms"] > 0
    assert final["metadata"]["language"] == "python"
    assert final["metadata"]["timeout"] == 20

    structured = client.get(f"/results/{job_id}")
    assert structured.status_code == 200, structured.text
    body = structured.json()
    assert set(body) == {"status", "stdout", "stderr", "files"}
    assert body["status"] == "completed"
    assert body["stdout"] == "hello hi\n"
    assert body["stderr"] == ""
    assert len(body["files"]) == 1 and body["files"][0].endswith("/out.txt")
    assert Path(body["files"][0]).is_absolute()

    full = results(client, job_id)
    assert set(full) >= FULL_RESULT_KEYS
    assert full["job_id"] == job_id
    assert full["status"] == "completed"
    assert full["stdout"] == "hello hi\n"
    assert full["stdout_truncated"] is False and full["stderr_truncated"] is False
    assert full["files_created"] == body["files"]
    assert full["files_modified"] == [] and full["files_deleted"] == []
    assert full["exit_code"] == 0
    usage = full["resource_usage"]
    assert usage["cpu_percent"]["average"] >= 0
    assert set(usage["memory_bytes"]) >= {"peak_rss"}
    snapshot = full["environment_snapshot"]
    assert snapshot["GREETING"] == "hi"
    assert snapshot["API_TOKEN"] != "s3cret"  # redacted
    assert "INTERPRETER_DATA_DIR" not in snapshot  # nothing of the server's environment
    metadata = full["metadata"]
    assert metadata["user"] == "orchestrator" and metadata["task_id"] == "12345"
    assert metadata["language"] == "python"
    assert metadata["files_created_count"] == 1
    assert metadata["stdout_length"] == len("hello hi\n")


def test_resource_usage_is_the_jobs_own(server: ServerProcess) -> None:
    client = server.client()
    trivial = [submit(client, "print('hi')") for _ in range(5)]
    hungry = submit(client, "x = bytearray(150 * 2**20)\nx[::4096] = b'y' * len(x[::4096])\n")
    peaks = []
    for job_id in [*trivial, hungry]:
        assert wait_final(client, job_id)["status"] == "completed"
        peaks.append(results(client, job_id)["resource_usage"]["memory_bytes"]["peak_rss"])
    # python's print(1) peaks at about 8 MiB; the server itself holds ~80 MiB. (A job that ends
    # within a millisecond, like bash's `echo`, may report only a floor: see the README.)
    trivial_peaks = peaks[:-1]
    assert all(2**20 <= peak < 64 * 2**20 for peak in trivial_peaks), f"print: {trivial_peaks}"
    assert peaks[-1] >= 150 * 2**20, f"peak_rss of a job filling 150 MiB is {peaks[-1]}"


@pytest.mark.parametrize(
    ("language", "code", "stdout"),
    [
        ("shell", "echo from-bash", "from-bash\n"),
        ("bash", "echo from-bash", "from-bash\n"),
        ("javascript", "console.log('from-node')", "from-node\n"),
        ("js", "console.log('from-node')", "from-node\n"),
    ],
)
def test_every_language_and_alias_runs(
    server: ServerProcess, language: str, code: str, stdout: str
) -> None:
    client = server.client()
    job_id = submit(client, code, language)
    assert wait_final(client, job_id)["status"] == "completed"
    assert client.get(f"/results/{job_id}").json()["stdout"] == stdout


def test_failed_job_reports_exit_code_and_last_stderr_line(server: ServerProcess) -> None:
    client = server.client()
    code = "import sys\nprint('partial')\nprint('boom: it broke', file=sys.stderr)\nsys.exit(3)\n"
    job_id = submit(client, code)
    final = wait_final(client, job_id)
    assert final["status"] == "failed"
    assert final["error_message"] == "boom: it broke"
    full = results(client, job_id)
    assert full["exit_code"] == 3
    assert full["stdout"] == "partial\n"
    assert full["stderr"] == "boom: it broke\n"


def test_job_killed_by_a_signal_fails_saying_so(server: ServerProcess) -> None:
    client = server.client()
    job_id = submit(client, "kill -KILL $$", "shell")
    final = wait_final(client, job_id)
    assert final["status"] == "failed"
    assert "signal 9" in (final["error_message"] or ""), final


def test_timeout_kills_the_job_and_keeps_partial_output(server: ServerProcess) -> None:
    client = server.client()
    started = time.monotonic()
    job_id = submit(client, "import time\nprint('before', flush=True)\ntime.sleep(30)\n", timeout=1)
    final = wait_final(client, job_id, deadline_s=10)
    assert final["status"] == "timeout", final
    assert time.monotonic() - started < 8
    assert "timed out" in (final["error_message"] or ""), final
    assert client.get(f"/results/{job_id}").json() == {
        "status": "timeout",
        "stdout": "before\n",
        "stderr": "",
        "files": [],
    }


def test_cancel_running_job_then_cancel_again_is_409(server: ServerProcess) -> None:
    client = server.client()
    job_id = submit(client, "sleep 30", "shell")
    running = wait_for_status(client, job_id, {"running"}, deadline_s=10)
    assert running["started_at"] is not None and running["completed_at"] is None

    response = client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    time.sleep(1.5)  # the killed process is reaped meanwhile: no late writer may change it
    final = job_status(client, job_id)
    assert final["status"] == "cancelled"
    assert final["completed_at"] is not None
    assert client.get(f"/results/{job_id}").json()["status"] == "cancelled"

    for again in (client.post(f"/jobs/{job_id}/cancel"), client.delete(f"/jobs/{job_id}")):
        assert again.status_code == 409, again.text
        assert "cancelled" in again.json()["detail"]


def test_cancel_finished_job_is_409(server: ServerProcess) -> None:
    client = server.client()
    job_id = submit(client, "print(1)")
    assert wait_final(client, job_id)["status"] == "completed"
    response = client.delete(f"/jobs/{job_id}")
    assert response.status_code == 409, response.text
    assert "completed" in response.json()["detail"]
    assert job_status(client, job_id)["status"] == "completed"


def test_pending_job_is_observed_and_cancelled_before_it_ever_runs(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(INTERPRETER_MAX_JOBS="1")
    client = server.client()
    blocker = submit(client, "sleep 30", "shell")
    assert wait_for_status(client, blocker, {"running"}, deadline_s=10)["status"] == "running"

    response = client.post(
        "/execute",
        json={
            "code": "open('ran.txt', 'w').write('ran')",
            "language": "python",
            "working_directory": "never-ran",
        },
    )
    assert response.status_code == 200, response.text
    pending_id = response.json()["job_id"]
    assert utc(response.json()["estimated_start_time"]) > utc(
        job_status(client, blocker)["started_at"]
    )
    pending = job_status(client, pending_id)
    assert pending["status"] == "pending"
    assert pending["started_at"] is None
    assert client.get(f"/results/{pending_id}").json() == {
        "status": "pending",
        "stdout": "",
        "stderr": "",
        "files": [],
    }
    assert results(client, pending_id)["status"] == "pending"
    listed = client.get("/jobs", params={"status": "pending"}).json()["jobs"]
    assert [job["job_id"] for job in listed] == [pending_id]

    response = client.delete(f"/jobs/{pending_id}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    response = client.post(f"/jobs/{blocker}/cancel")
    assert response.status_code == 200, response.text

    follower = submit(client, "print('next')")  # the slot is free again
    assert wait_final(client, follower)["status"] == "completed"
    cancelled = job_status(client, pending_id)
    assert cancelled["status"] == "cancelled"
    assert cancelled["started_at"] is None
    assert not (server.workspace_root / "never-ran" / "ran.txt").exists()


def test_jobs_list_is_newest_first_filtered_and_paginated(server: ServerProcess) -> None:
    client = server.client()
    ids = [submit(client, f"print({i})") for i in range(3)]
    failed = submit(client, "raise SystemExit(1)")
    for job_id in [*ids, failed]:
        wait_final(client, job_id)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get("/jobs", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["jobs"]) <= 2
        seen += [job["job_id"] for job in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 100
    assert len(seen) == len(set(seen)), "a job appeared on two pages"
    ours = [job_id for job_id in seen if job_id in {*ids, failed}]
    assert ours == [failed, *reversed(ids)]

    only_failed = client.get("/jobs", params={"status": "failed", "limit": 500}).json()["jobs"]
    assert failed in [job["job_id"] for job in only_failed]
    assert {job["status"] for job in only_failed} == {"failed"}


def test_languages_lists_each_with_aliases_version_and_availability(
    server: ServerProcess,
) -> None:
    response = server.client().get("/languages")
    assert response.status_code == 200
    by_name = {lang["name"]: lang for lang in response.json()}
    assert set(by_name) >= {"python", "shell", "javascript"}
    assert {"bash", "sh"} <= set(by_name["shell"]["aliases"])
    assert {"js", "node"} <= set(by_name["javascript"]["aliases"])
    for name in ("python", "shell", "javascript"):
        assert by_name[name]["available"] is True
        assert by_name[name]["version"]


def test_health_is_the_specs_shape_and_fast(server: ServerProcess) -> None:
    client = server.client()
    started = time.monotonic()
    response = client.get("/health")
    assert time.monotonic() - started < 0.5
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {
        "status",
        "timestamp",
        "uptime_seconds",
        "version",
        "active_jobs",
        "total_jobs_processed",
        "system_resources",
        "service_checks",
    }
    assert body["status"] == "healthy"
    utc(body["timestamp"])
    assert set(body["system_resources"]) >= {"cpu_percent", "memory_percent", "disk_usage_percent"}
    assert body["service_checks"] == {
        "job_manager": "healthy",
        "enhanced_terminal": "healthy",
        "async_interpreter": "healthy",
    }


def test_metrics_are_prometheus_text(server: ServerProcess) -> None:
    client = server.client()
    job_id = submit(client, "print(1)")
    wait_final(client, job_id)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        "interpreter_http_request_duration_seconds_bucket",
        'interpreter_jobs_finished_total{status="completed"}',
        "interpreter_queue_depth",
        "interpreter_running_jobs",
        "interpreter_job_duration_seconds_bucket",
    ):
        assert name in text, f"{name} missing from /metrics"


def test_docs_and_openapi_describe_every_route(server: ServerProcess) -> None:
    client = server.client()
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    expected = {
        "/execute": {"post"},
        "/jobs/{job_id}/status": {"get"},
        "/results/{job_id}": {"get"},
        "/jobs/{job_id}/results": {"get"},
        "/jobs/{job_id}/cancel": {"post"},
        "/jobs/{job_id}": {"delete"},
        "/jobs": {"get"},
        "/languages": {"get"},
        "/health": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, f"{path} missing from /openapi.json"
        assert methods <= set(paths[path]), f"{path}: {sorted(paths[path])}"
    execute = paths["/execute"]["post"]
    assert "requestBody" in execute
    assert {"200", "413", "422"} <= set(execute["responses"])
    assert "404" in paths["/jobs/{job_id}/status"]["get"]["responses"]
    assert "409" in paths["/jobs/{job_id}/cancel"]["post"]["responses"]


def test_one_round_trip_answers_with_the_full_result(server: ServerProcess) -> None:
    client = server.client()
    full = run_in_one_trip(client, "print(6 * 7)")
    assert (full["status"], full["stdout"], full["exit_code"]) == ("completed", "42\n", 0)
    assert full == client.get(f"/jobs/{full['job_id']}/results").json()
