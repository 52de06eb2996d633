"""Cancel and timeout kill the job's whole process tree, background children included."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.acceptance.server import (
    ServerProcess,
    job_processes,
    live_directory,
    new_marker,
    running_server,
    submit,
    survivors,
    wait_final,
    wait_for_file,
    wait_for_status,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]

GONE_WITHIN_S = 5.0

# Each job writes the pids of all its processes to pids.txt once they run, then waits.
SHELL_JOB = 'sleep 300 &\necho "$$ $!" > pids.txt\nwait\n'
PYTHON_JOB = """\
import os, subprocess, time
child = subprocess.Popen(["sleep", "301"])
own_session = subprocess.Popen(["sleep", "302"], start_new_session=True)
with open("pids.txt", "w") as f:
    f.write(f"{os.getpid()} {child.pid} {own_session.pid}\\n")
time.sleep(300)
"""
JOBS = {"shell": SHELL_JOB, "python": PYTHON_JOB}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("tree"), INTERPRETER_MAX_JOBS="4") as server:
        yield server


def start_job(
    server: ServerProcess, client: httpx.Client, language: str, name: str, timeout_s: float
) -> tuple[str, list[psutil.Process]]:
    """Start the job and return its id and all its processes, once they all run."""
    marker = new_marker()
    job_id = submit(
        client,
        JOBS[language],
        language,
        working_directory=name,
        timeout=timeout_s,
        environment_variables=marker,
    )
    wait_for_status(client, job_id, {"running"}, deadline_s=10)
    pids = wait_for_file(live_directory(server, job_id) / "pids.txt").split()
    procs = job_processes(marker, expected=len(pids))
    server.track(procs)
    return job_id, procs


@pytest.mark.parametrize("language", ["shell", "python"])
def test_cancel_running_job_kills_process_tree(server: ServerProcess, language: str) -> None:
    client = server.client()
    job_id, procs = start_job(server, client, language, f"cancel-{language}", timeout_s=120)

    response = client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    alive = survivors(procs, GONE_WITHIN_S)
    assert not alive, f"still running {GONE_WITHIN_S:g} s after cancel: {alive}"
    final = wait_final(client, job_id, deadline_s=5)
    assert final["status"] == "cancelled"


@pytest.mark.parametrize("language", ["shell", "python"])
def test_timeout_kills_process_tree(server: ServerProcess, language: str) -> None:
    client = server.client()
    job_id, procs = start_job(server, client, language, f"timeout-{language}", timeout_s=1.5)

    final = wait_final(client, job_id, deadline_s=10)
    assert final["status"] == "timeout"
    alive = survivors(procs, GONE_WITHIN_S)
    assert not alive, f"still running {GONE_WITHIN_S:g} s after the timeout: {alive}"
