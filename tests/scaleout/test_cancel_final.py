"""A cancel on PostgreSQL: the worker running the job stops it and writes its final record, which
the cancel answers with; a cancel that comes after the job's process exited is a 409."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.acceptance.server import (
    live_directory,
    results,
    submit,
    wait_final,
    wait_for_status,
)
from tests.sandbox.usable import UNUSABLE
from tests.scaleout.conftest import Cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(90)]

# Prints, says so in a file, then waits to be cancelled.
LONG_JOB = "echo started\n: > up.txt\nsleep 60\n"
# Prints, makes many small files (the scan and copy after its exit take a while), then says it is
# done and exits at once.
MANY_FILES_JOB = """\
echo started
i=0
while [ $i -lt 10000 ]; do : > "f$i"; i=$((i + 1)); done
echo finished
: > done.txt
"""


def wait_for_path(path: Path, deadline_s: float) -> None:
    give_up_at = time.monotonic() + deadline_s
    while not path.exists():
        assert time.monotonic() < give_up_at, f"{path} never appeared"
        time.sleep(0.001)


@pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox: {UNUSABLE}")
def test_cancel_answers_with_the_final_record_and_after_the_exit_is_a_conflict(
    cluster: Cluster,
) -> None:
    a, b = cluster.api(), cluster.api()
    worker = cluster.worker(INTERPRETER_KILL_GRACE_S="0.5")
    cluster.wait_workers(1)
    client_a, client_b = a.client(timeout=30.0), b.client(timeout=30.0)

    # A running job, cancelled on the other replica: the answer is its final record.
    job_id = submit(client_a, LONG_JOB, "shell", timeout=120)
    wait_for_status(client_b, job_id, {"running"}, 15)
    wait_for_path(live_directory(worker, job_id) / "up.txt", deadline_s=10)

    response = client_b.post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 200, response.text
    answered = response.json()
    assert answered["status"] == "cancelled"
    assert answered["error_message"] == "cancelled by request"
    assert answered["completed_at"] is not None
    assert answered["execution_time_ms"] is not None
    full = results(client_a, job_id)
    assert full["stdout"] == "started\n"  # what it printed before the kill, there at once
    assert full["termination_reason"] == "cancelled"
    assert full["worker"]["id"]
    again = client_a.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    time.sleep(2)
    assert client_a.get(f"/jobs/{job_id}/status").json() == answered
    assert results(client_b, job_id) == full

    # A job whose process has exited while its worker still collects what it did: a conflict,
    # and the job ends as it ran.
    job_id = submit(client_a, MANY_FILES_JOB, "shell", timeout=120)
    wait_for_status(client_b, job_id, {"running"}, 15)
    wait_for_path(live_directory(worker, job_id) / "done.txt", deadline_s=20)
    time.sleep(0.05)  # its shell has exited

    response = client_b.post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 409, response.text
    assert "completed" in response.json()["detail"]
    final = wait_final(client_a, job_id, deadline_s=20)
    assert final["status"] == "completed"
    full = results(client_a, job_id)
    assert (full["termination_reason"], full["exit_code"]) == ("exit", 0)
    assert full["stdout"] == "started\nfinished\n"
