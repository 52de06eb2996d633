"""Restart recovery: SIGKILL the server mid-job and start it again on the same data directory."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.acceptance.server import (
    ServerProcess,
    job_processes,
    job_status,
    live_directory,
    new_marker,
    submit,
    survivors,
    wait_final,
    wait_for_file,
    wait_for_status,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]


def test_sigkilled_server_fails_the_running_job_and_runs_the_pending_ones_after_restart(
    start_server: Callable[..., ServerProcess], record_property: Callable[[str, object], None]
) -> None:
    server = start_server(INTERPRETER_MAX_JOBS="1")
    client = server.client()
    marker = new_marker()
    long_job = submit(
        client,
        'sleep 30 & echo "$$ $!" > pids.txt; wait',
        "shell",
        working_directory="long",
        environment_variables=marker,
    )
    quick = [submit(client, f"print('quick {i}')") for i in range(3)]
    wait_for_status(client, long_job, {"running"}, deadline_s=10)
    wait_for_file(live_directory(server, long_job) / "pids.txt")
    job_procs = job_processes(marker, expected=2)  # bash and its sleep
    server.track(job_procs)
    for job_id in quick:
        assert job_status(client, job_id)["status"] == "pending"

    server.kill()
    # A SIGKILLed server cannot kill its jobs; the next start finds and kills what they left.
    record_property("job_processes_alive_after_server_sigkill", survivors(job_procs, 0.5))

    server.start()
    client = server.client()
    assert survivors(job_procs, deadline_s=5.0) == [], "the restart left the job's processes"
    failed = wait_final(client, long_job, deadline_s=5)
    assert failed["status"] == "failed"
    assert failed["error_message"] == "server restarted during execution"
    for i, job_id in enumerate(quick):
        final = wait_final(client, job_id, deadline_s=15)
        assert final["status"] == "completed", final
        assert client.get(f"/results/{job_id}").json()["stdout"] == f"quick {i}\n"
    known = {job["job_id"] for job in client.get("/jobs", params={"limit": 500}).json()["jobs"]}
    assert {long_job, *quick} <= known
