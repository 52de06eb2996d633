"""Submitting jobs and reading what they did: the app in process, real processes."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

SPEC_FULL_RESULT_FIELDS = {
    "job_id",
    "status",
    "stdout",
    "stderr",
    "files_created",
    "files_modified",
    "execution_time_ms",
    "exit_code",
    "resource_usage",
    "environment_snapshot",
    "error_message",
    "metadata",
    "created_at",
    "started_at",
    "completed_at",
}


def utc(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), f"{value} is not UTC"
    return parsed


# -- submission and results ---------------------------------------------------------------------
async def test_execute_answers_pending_with_uuid4_and_utc_estimate(api) -> None:
    before = datetime.now(UTC)
    response = await api.client.post("/execute", json={"code": "print('hi')"})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"job_id", "status", "estimated_start_time"}
    assert api.is_uuid4(body["job_id"])
    assert body["status"] == "pending"
    assert body["estimated_start_time"].endswith(("Z", "+00:00"))
    estimate = utc(body["estimated_start_time"])
    assert before - timedelta(seconds=1) <= estimate <= before + timedelta(seconds=60)
    await api.wait(body["job_id"])


async def test_execute_returns_at_once_while_the_job_runs_in_the_background(api) -> None:
    started = time.monotonic()
    job_id = await api.submit("import time\nprint('start', flush=True)\ntime.sleep(2)")
    assert time.monotonic() - started < 1.0

    running = await api.wait_for(job_id, {"running"}, deadline_s=5)
    assert running["started_at"] is not None
    assert running["completed_at"] is None
    done = await api.wait(job_id)
    assert done["status"] == "completed"


async def test_queued_job_gets_a_later_estimated_start(make_api) -> None:
    api = await make_api(max_jobs=1)
    first = await api.client.post("/execute", json={"code": "sleep 30", "language": "shell"})
    await api.wait_for(first.json()["job_id"], {"running"})

    second = await api.client.post("/execute", json={"code": "true", "language": "shell"})

    now = datetime.now(UTC)
    assert utc(second.json()["estimated_start_time"]) > now
    assert utc(second.json()["estimated_start_time"]) > utc(first.json()["estimated_start_time"])
    await api.client.post(f"/jobs/{first.json()['job_id']}/cancel")


async def test_results_of_an_unfinished_job_answer_its_current_status(make_api) -> None:
    api = await make_api(max_jobs=1)
    running = await api.submit("sleep 30", "shell", timeout=30)
    pending = await api.submit("true", "shell")
    await api.wait_for(running, {"running"})

    for job_id, status in ((running, "running"), (pending, "pending")):
        structured = await api.client.get(f"/results/{job_id}")
        assert structured.status_code == 200
        assert structured.json()["status"] == status
        assert structured.json()["files"] == []
        full = await api.results(job_id)
        assert full["status"] == status
        assert full["exit_code"] is None
        assert full["completed_at"] is None
    assert (await api.status(pending))["started_at"] is None
    await api.client.post(f"/jobs/{running}/cancel")


async def test_default_timeout_applies_when_none_is_given(make_api) -> None:
    api = await make_api(default_timeout_s=1.5)

    body = await api.run("import time\ntime.sleep(30)")

    assert body["status"] == "timeout"
    assert body["metadata"]["timeout"] == 1.5


async def test_structured_result_has_exactly_status_stdout_stderr_files(api) -> None:
    code = (
        "import sys\n"
        "open('out.txt', 'w').write('x')\n"
        "print('hello')\n"
        "print('warn', file=sys.stderr)"
    )
    job_id = await api.submit(code)
    await api.wait(job_id)

    response = await api.client.get(f"/results/{job_id}")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "stdout", "stderr", "files"}
    assert body["status"] == "completed"
    assert body["stdout"] == "hello\n"
    assert body["stderr"] == "warn\n"
    assert len(body["files"]) == 1
    assert os.path.isabs(body["files"][0])
    assert body["files"][0].endswith("/out.txt")


async def test_full_results_have_every_spec_field_and_more(api) -> None:
    metadata = {"user": "orchestrator", "task_id": "12345"}
    job_id = await api.submit(
        "open('a.txt', 'w').write('1')\nprint('Hello World!')", metadata=metadata
    )
    status = await api.wait(job_id)
    assert status["status"] == "completed"

    body = await api.results(job_id)

    missing = SPEC_FULL_RESULT_FIELDS | {"files_deleted", "stdout_truncated", "stderr_truncated"}
    assert missing - set(body) == set()
    assert body["job_id"] == job_id
    assert body["status"] == "completed"
    assert body["stdout"] == "Hello World!\n"
    assert body["stderr"] == ""
    assert body["exit_code"] == 0
    assert body["error_message"] is None
    assert body["stdout_truncated"] is False and body["stderr_truncated"] is False
    assert [os.path.basename(p) for p in body["files_created"]] == ["a.txt"]
    assert body["files_modified"] == [] and body["files_deleted"] == []
    assert body["execution_time_ms"] > 0
    assert body["metadata"]["language"] == "python"
    assert body["metadata"]["files_created_count"] == 1
    assert body["metadata"]["stdout_length"] == len("Hello World!\n")
    assert body["metadata"]["user"] == "orchestrator"
    assert body["metadata"]["task_id"] == "12345"
    created, started, completed = (
        utc(body["created_at"]),
        utc(body["started_at"]),
        utc(body["completed_at"]),
    )
    assert created <= started <= completed


async def test_callers_metadata_round_trips_unchanged(api) -> None:
    metadata = {"nested": {"a": [1, 2.5, {"b": None}], "ok": True}, "note": "héllo ✓"}
    job_id = await api.submit("print(1)", metadata=metadata)
    await api.wait(job_id)

    status = await api.status(job_id)
    full = await api.results(job_id)

    for name, value in metadata.items():
        assert status["metadata"][name] == value
        assert full["metadata"][name] == value


async def test_status_carries_timings_and_the_callers_metadata(api) -> None:
    job_id = await api.submit("print(1)", metadata={"task_id": "t-1"}, timeout=5)
    body = await api.wait(job_id)

    assert body["job_id"] == job_id
    assert body["status"] == "completed"
    assert body["execution_time_ms"] > 0
    assert body["error_message"] is None
    assert body["metadata"]["language"] == "python"
    assert body["metadata"]["timeout"] == 5
    assert body["metadata"]["task_id"] == "t-1"
    assert utc(body["created_at"]) <= utc(body["started_at"]) <= utc(body["completed_at"])


async def test_resource_usage_measures_the_jobs_own_cpu_and_memory(api) -> None:
    code = (
        "import time\n"
        "block = bytearray(80 * 1024 * 1024)\n"
        "for i in range(0, len(block), 4096): block[i] = 1\n"
        "t = time.time()\n"
        "while time.time() - t < 0.4: pass\n"
    )
    body = await api.run(code)

    assert body["status"] == "completed"
    usage = body["resource_usage"]
    assert usage["cpu_percent"]["average"] > 30
    assert usage["cpu_time_s"]["total"] >= 0.2
    assert usage["cpu_time_s"]["total"] == pytest.approx(
        usage["cpu_time_s"]["user"] + usage["cpu_time_s"]["system"], abs=1e-3
    )
    peak_rss = usage["memory_bytes"]["peak_rss"]
    assert 80 * 1024 * 1024 <= peak_rss < 400 * 1024 * 1024


async def test_trivial_job_reports_a_nonzero_peak_rss(api) -> None:
    # alive for 0.1 s: a job that ends before its first sample (1 ms after the spawn, later on a
    # loaded machine) reports 0 (the kernel keeps no figure of the job's own for a zombie)
    body = await api.run("import time; time.sleep(0.1); print(1)")

    usage = body["resource_usage"]
    assert usage["cpu_percent"]["average"] >= 0
    assert usage["memory_bytes"]["peak_rss"] > 0


# -- scheduling ---------------------------------------------------------------------------------
async def test_pending_jobs_run_in_submission_order(make_api) -> None:
    api = await make_api(max_jobs=1)
    ids = [
        await api.submit(f"echo {i} >> order.txt", "shell", working_directory="fifo")
        for i in range(5)
    ]
    for job_id in ids:
        await api.wait(job_id)

    assert (api.workspace_root / "fifo" / "order.txt").read_text().split() == list("01234")


async def test_no_more_than_max_jobs_run_at_once(make_api) -> None:
    api = await make_api(max_jobs=2)
    ids = [await api.submit("import time\ntime.sleep(0.3)") for _ in range(5)]
    bodies = [await api.wait(job_id) for job_id in ids]

    spans = [(utc(b["started_at"]), utc(b["completed_at"])) for b in bodies]
    overlaps = [sum(1 for s, e in spans if s <= start < e) for start, _ in spans]
    assert max(overlaps) == 2  # two at once, never three


async def test_execution_time_reflects_the_jobs_wall_time(api) -> None:
    body = await api.run("import time\ntime.sleep(0.5)")

    assert 450 <= body["execution_time_ms"] < 3000


# -- languages ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("language", "code", "canonical"),
    [
        ("python", "print('ran', 6 * 7)", "python"),
        ("shell", "echo ran $((6 * 7))", "shell"),
        ("bash", "echo ran $((6 * 7))", "shell"),
        ("sh", "echo ran $((6 * 7))", "shell"),
        ("javascript", "console.log('ran', 6 * 7)", "javascript"),
        ("js", "console.log('ran', 6 * 7)", "javascript"),
        ("node", "console.log('ran', 6 * 7)", "javascript"),
    ],
)
async def test_every_language_and_alias_runs(api, language: str, code: str, canonical: str) -> None:
    body = await api.run(code, language)

    assert body["status"] == "completed", body["stderr"]
    assert body["stdout"] == "ran 42\n"
    assert body["metadata"]["language"] == canonical


# -- environment --------------------------------------------------------------------------------
DUMP_ENV = "import json, os\nprint(json.dumps(dict(os.environ)))"


async def test_environment_variables_reach_the_code(api) -> None:
    body = await api.run(DUMP_ENV, environment_variables={"GREETING": "hello", "PYTHONPATH": "/x"})

    env = json.loads(body["stdout"])
    assert env["GREETING"] == "hello"
    assert env["PYTHONPATH"] == "/x"


async def test_server_environment_is_not_visible_to_the_job(make_api, monkeypatch) -> None:
    monkeypatch.setenv("SERVER_SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://admin:pw@db/prod")
    api = await make_api()

    body = await api.run(DUMP_ENV)

    env = json.loads(body["stdout"])
    assert "SERVER_SECRET_TOKEN" not in env
    assert "DATABASE_URL" not in env
    assert "hunter2" not in json.dumps(body)
    assert "SERVER_SECRET_TOKEN" not in body["environment_snapshot"]


async def test_environment_snapshot_redacts_secret_looking_values(api) -> None:
    variables = {
        "MY_API_KEY": "value-of-key",
        "AUTH_TOKEN": "value-of-token",
        "CLIENT_SECRET": "value-of-secret",
        "DB_PASSWORD": "value-of-password",
        "GREETING": "hello",
    }
    code = (
        "import os\n"
        "names = ('MY_API_KEY', 'AUTH_TOKEN', 'CLIENT_SECRET', 'DB_PASSWORD')\n"
        "seen = [os.environ[n] for n in names]\n"
        "print(seen == ['value-of-key', 'value-of-token', 'value-of-secret', 'value-of-password'])"
    )
    body = await api.run(code, environment_variables=variables)

    assert body["stdout"] == "True\n"  # the job itself gets the real values
    snapshot = body["environment_snapshot"]
    for name in ("MY_API_KEY", "AUTH_TOKEN", "CLIENT_SECRET", "DB_PASSWORD"):
        assert name in snapshot
        assert snapshot[name] != variables[name]
    assert snapshot["GREETING"] == "hello"
    assert "PATH" in snapshot
    assert "value-of" not in json.dumps(body)


async def test_home_is_the_jobs_own_directory(api) -> None:
    body = await api.run("import os\nprint(os.environ['HOME'])\nprint(os.getcwd())")

    home, cwd = body["stdout"].splitlines()
    assert home == cwd
    assert os.path.realpath(cwd).startswith(str(api.workspace_root) + os.sep)
    assert body["environment_snapshot"]["HOME"] == home


async def test_server_working_directory_is_unchanged_by_jobs(api) -> None:
    before = os.getcwd()

    body = await api.run("import os\nos.chdir('/')\nprint(os.getcwd())")
    await api.run("cd /tmp && pwd", "shell")

    assert body["stdout"] == "/\n"
    assert os.getcwd() == before


# -- failures and timeouts ---------------------------------------------------------------------
async def test_non_zero_exit_is_failed_with_the_last_stderr_line(api) -> None:
    job_id = await api.submit("print('before')\n1 / 0")
    status = await api.wait(job_id)

    assert status["status"] == "failed"
    assert "ZeroDivisionError" in status["error_message"]
    body = await api.results(job_id)
    assert body["exit_code"] == 1
    assert body["stdout"] == "before\n"
    assert body["error_message"] == body["stderr"].strip().splitlines()[-1]
    assert (await api.client.get(f"/results/{job_id}")).json()["status"] == "failed"


async def test_shell_exit_code_is_reported(api) -> None:
    body = await api.run("echo oops >&2; exit 3", "shell")

    assert body["status"] == "failed"
    assert body["exit_code"] == 3
    assert body["error_message"] == "oops"


async def test_silent_non_zero_exit_says_the_exit_code(api) -> None:
    body = await api.run("import sys\nsys.exit(5)")

    assert body["status"] == "failed"
    assert body["exit_code"] == 5
    assert "5" in body["error_message"]


async def test_javascript_exception_error_message_names_the_error(api) -> None:
    body = await api.run("throw new Error('boom')", "javascript")

    assert body["status"] == "failed"
    assert body["exit_code"] == 1
    assert "Error: boom" in body["stderr"]
    assert "boom" in body["error_message"]  # not node's trailing "Node.js v20.x" banner


async def test_stderr_output_alone_does_not_fail_a_job(api) -> None:
    body = await api.run("import sys\nprint('warning: careful', file=sys.stderr)")

    assert body["status"] == "completed"
    assert body["error_message"] is None
    assert body["stderr"] == "warning: careful\n"


async def test_job_killed_by_a_signal_says_which(api) -> None:
    body = await api.run("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")

    assert body["status"] == "failed"
    assert body["error_message"].startswith("killed by signal 9")
    assert body["exit_code"] is None


async def test_timeout_keeps_partial_output_and_ends_promptly(api) -> None:
    code = "import time\nprint('partial', flush=True)\ntime.sleep(30)\nprint('never')"
    started = time.monotonic()
    job_id = await api.submit(code, timeout=1)
    status = await api.wait(job_id, deadline_s=10)
    elapsed = time.monotonic() - started

    assert status["status"] == "timeout"
    assert elapsed < 1 + 4
    assert status["error_message"]
    body = await api.results(job_id)
    assert body["stdout"] == "partial\n"
    structured = (await api.client.get(f"/results/{job_id}")).json()
    assert structured["status"] == "timeout"
    assert structured["stdout"] == "partial\n"


async def test_timeout_kills_a_job_that_ignores_sigterm(api) -> None:
    started = time.monotonic()
    body = await api.run("trap '' TERM\necho up\nsleep 300", "shell", timeout=1)

    assert body["status"] == "timeout"
    assert body["stdout"] == "up\n"
    assert time.monotonic() - started < 1 + 4


async def test_huge_output_is_capped_keeping_head_and_tail(make_api) -> None:
    api = await make_api(max_output_bytes=64 * 1024)
    code = (
        "import sys\nsys.stdout.write('HEAD-MARK\\n' + 'x' * (1024 * 1024) + '\\nTAIL-MARK\\n')\n"
    )
    body = await api.run(code)

    assert body["status"] == "completed"
    assert body["stdout_truncated"] is True
    assert body["stderr_truncated"] is False
    assert len(body["stdout"]) < 100 * 1024
    assert body["stdout"].startswith("HEAD-MARK\n")
    assert body["stdout"].endswith("\nTAIL-MARK\n")
    structured = (await api.client.get(f"/results/{body['job_id']}")).json()
    assert len(structured["stdout"]) < 100 * 1024


# -- working directories and file tracking -------------------------------------------------------
async def test_relative_working_directory_runs_inside_the_workspace_root(api) -> None:
    code = "import os\nopen('made.txt', 'w').write('x')\nprint(os.getcwd())"
    body = await api.run(code, working_directory="proj")

    project = api.workspace_root / "proj"
    assert body["status"] == "completed", body["stderr"]
    assert os.path.realpath(body["stdout"].strip()) == str(project)
    assert body["files_created"] == [str(project / "made.txt")]
    assert (project / "made.txt").exists()
    structured = (await api.client.get(f"/results/{body['job_id']}")).json()
    assert structured["files"] == [str(project / "made.txt")]


async def test_second_job_in_a_directory_sees_modified_and_deleted_files(api) -> None:
    first = await api.run(
        "open('keep.txt', 'w').write('1')\nopen('gone.txt', 'w').write('2')",
        working_directory="shared",
    )
    project = api.workspace_root / "shared"
    assert first["files_created"] == [str(project / "gone.txt"), str(project / "keep.txt")]

    second = await api.run(
        "import os\nopen('keep.txt', 'a').write('more')\nos.remove('gone.txt')",
        working_directory="shared",
    )

    assert second["status"] == "completed", second["stderr"]
    assert second["files_created"] == []
    assert second["files_modified"] == [str(project / "keep.txt")]
    assert second["files_deleted"] == [str(project / "gone.txt")]


async def test_capture_files_false_reports_no_files(api) -> None:
    body = await api.run("open('x.txt', 'w').write('x')", capture_files=False)

    assert body["status"] == "completed"
    assert body["files_created"] == []


async def test_concurrent_jobs_do_not_see_each_others_files(make_api) -> None:
    api = await make_api(max_jobs=2)
    code = (
        "import os, time\n"
        "open(os.environ['MINE'], 'w').write('x')\n"
        "time.sleep(0.7)\n"
        "print(sorted(os.listdir('.')))"
    )
    first = await api.submit(code, environment_variables={"MINE": "first.txt"})
    second = await api.submit(code, environment_variables={"MINE": "second.txt"})
    await api.wait(first)
    await api.wait(second)
    a, b = await api.results(first), await api.results(second)

    assert utc(a["started_at"]) < utc(b["completed_at"])  # they overlapped
    assert utc(b["started_at"]) < utc(a["completed_at"])
    assert a["stdout"] == "['first.txt']\n"
    assert b["stdout"] == "['second.txt']\n"
    assert [os.path.basename(p) for p in a["files_created"]] == ["first.txt"]
    assert [os.path.basename(p) for p in b["files_created"]] == ["second.txt"]
    assert os.path.dirname(a["files_created"][0]) != os.path.dirname(b["files_created"][0])


@pytest.mark.parametrize("language", ["python", "shell", "javascript"])
async def test_code_too_long_for_the_command_line_runs_from_a_file(api, language: str) -> None:
    padding = {"python": "#", "shell": "#", "javascript": "//"}[language]
    printer = {
        "python": "print('long ok')",
        "shell": "echo 'long ok'",
        "javascript": "console.log('long ok')",
    }[language]
    code = f"{padding} {'x' * 200_000}\n{printer}\n"

    body = await api.run(code, language=language, timeout=10)

    assert body["status"] == "completed", body["error_message"]
    assert body["stdout"] == "long ok\n"


async def test_the_jobs_tmpdir_is_private_and_removed_afterwards(api) -> None:
    body = await api.run(
        "import os, tempfile\n"
        "print(tempfile.gettempdir())\n"
        "open(os.path.join(tempfile.gettempdir(), 'scratch.bin'), 'wb').write(b'x' * 1000)"
    )

    tmpdir = body["stdout"].strip()
    assert body["environment_snapshot"]["TMPDIR"] == tmpdir
    assert not tmpdir.startswith(body["working_directory"])
    for _ in range(100):  # removed off the hot path, moments after the job
        if not os.path.exists(tmpdir):
            break
        await asyncio.sleep(0.02)
    assert not os.path.exists(tmpdir)
