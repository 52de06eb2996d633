"""A cancel never contradicts what ran, and its answers carry the job's final record.

- A cancel that arrives after the job's process exited (while the server still reads its output
  and scans its files) is a 409: the job ends as it ran, never ``cancelled`` with exit code 0.
- A cancelled job's long poll and the cancel's own answer are the final record (times set, what
  it printed kept): the same as a read of the job later.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.server import (
    ServerProcess,
    live_directory,
    results,
    running_server,
    submit,
    wait_final,
    wait_for_status,
)
from tests.sandbox.usable import UNUSABLE

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.timeout(90),
    pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox: {UNUSABLE}"),
]

FILES = 10_000
# Prints, makes many small files (the scan and copy after its exit take a while), then says it is
# done and exits at once.
MANY_FILES_JOB = f"""\
echo started
i=0
while [ $i -lt {FILES} ]; do : > "f$i"; i=$((i + 1)); done
echo finished
: > done.txt
"""
# Prints, says so in a file, then waits to be cancelled.
LONG_JOB = "echo started\n: > up.txt\nsleep 30\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # a short kill grace: a cancel answers within a second
    with running_server(
        tmp_path_factory.mktemp("cancel"), INTERPRETER_MAX_JOBS="2", INTERPRETER_KILL_GRACE_S="0.5"
    ) as server:
        yield server


def wait_for_path(path: Path, deadline_s: float) -> None:
    """Until ``path`` exists (polled every millisecond)."""
    give_up_at = time.monotonic() + deadline_s
    while not path.exists():
        assert time.monotonic() < give_up_at, f"{path} never appeared"
        time.sleep(0.001)


def test_cancel_after_the_process_exited_is_a_conflict_and_the_job_ends_as_it_ran(
    server: ServerProcess,
) -> None:
    client = server.client(timeout=30.0)
    for _ in range(2):  # two jobs, each cancelled again and again from just after it exited
        job_id = submit(client, MANY_FILES_JOB, "shell", timeout=60)
        wait_for_status(client, job_id, {"running"}, deadline_s=10)
        wait_for_path(live_directory(server, job_id) / "done.txt", deadline_s=20)
        time.sleep(0.05)  # its shell has exited: the server is collecting what it did

        answers = []
        while True:
            response = client.post(f"/jobs/{job_id}/cancel")
            answers.append(response)
            if response.status_code == 409:
                break
            assert response.status_code == 200, response.text
            assert len(answers) < 1000

        final = wait_final(client, job_id, deadline_s=20)
        full = results(client, job_id)
        assert [a.status_code for a in answers] == [409], (
            f"a cancel after the exit was accepted: {[a.json() for a in answers]}; "
            f"the job ended {final['status']}, {full['termination_reason']}, "
            f"exit code {full['exit_code']}"
        )
        detail = answers[-1].json()["detail"]
        assert "completed" in detail and "finished" in detail
        assert final["status"] == "completed"
        assert final["error_message"] is None
        assert full["exit_code"] == 0
        assert full["termination_reason"] == "exit"
        assert full["stdout"] == "started\nfinished\n"
        assert len(full["files_created"]) + (not full["files_complete"]) > 0
        time.sleep(0.5)
        assert client.get(f"/jobs/{job_id}/status").json() == final


def long_poll(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/jobs/{job_id}/status", params={"wait": 10})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_long_poll_and_cancel_answer_with_the_final_record(server: ServerProcess) -> None:
    client = server.client(timeout=30.0)
    job_id = submit(client, LONG_JOB, "shell", timeout=60)
    wait_for_status(client, job_id, {"running"}, deadline_s=10)
    wait_for_path(live_directory(server, job_id) / "up.txt", deadline_s=10)

    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(long_poll, server.client(timeout=30.0), job_id)
        time.sleep(0.3)  # the long poll waits
        assert not waiting.done()
        cancel = client.post(f"/jobs/{job_id}/cancel")
        polled = waiting.result(timeout=15)

    assert cancel.status_code == 200, cancel.text
    answered = cancel.json()
    for body in (answered, polled):
        assert body["status"] == "cancelled"
        assert body["error_message"] == "cancelled by request"
        assert body["completed_at"] is not None
        assert body["execution_time_ms"] is not None
    full = results(client, job_id)
    assert full["stdout"] == "started\n"
    assert full["termination_reason"] == "cancelled"
    assert full["signal"] is not None or full["exit_code"] not in (None, 0)
    time.sleep(2)
    later = client.get(f"/jobs/{job_id}/status").json()
    assert answered == polled == later
    assert results(client, job_id) == full
