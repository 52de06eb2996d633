"""Without the sandbox, a SIGKILLed server's jobs die with it: its leader, the background children
in its process group and those that left it (a new session), right away, not at the next start."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.acceptance.server import (
    ServerProcess,
    job_processes,
    new_marker,
    submit,
    survivors,
    wait_for_file,
    wait_for_status,
)
from tests.pg import fresh_database
from tests.scaleout.conftest import Cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]


def job(markers: Path) -> str:
    """A background child (the job's group), a daemon in a session of its own: each writes
    its marker after 3 s; the job says when both run, then sleeps."""
    return (
        f"(sleep 3; echo x > {markers}/child) &\n"
        f"setsid sh -c 'sleep 3; echo x > {markers}/daemon' &\n"
        "sleep 0.2; echo ready > ready.txt\n"
        "sleep 30\n"
    )


@pytest.mark.parametrize("working_directory", [None, "named"])
def test_sigkilled_server_takes_its_unsandboxed_jobs_processes_along(
    start_server: Callable[..., ServerProcess], tmp_path: Path, working_directory: str | None
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    server = start_server(INTERPRETER_SANDBOX="none")
    client = server.client()
    marker = new_marker()
    fields = {"working_directory": working_directory} if working_directory else {}
    job_id = submit(
        client, job(markers), "shell", timeout=60, environment_variables=marker, **fields
    )
    wait_for_status(client, job_id, {"running"}, deadline_s=10)
    workdir = server.workspace_root / (working_directory or job_id)
    wait_for_file(workdir / "ready.txt")
    # the job's sleep (bash execs its last command), its subshell and sleep, the daemon's sh
    # and sleep
    procs = job_processes(marker, expected=5, deadline_s=2.0)
    server.track(procs)
    time.sleep(0.5)

    server.kill()

    assert survivors(procs, deadline_s=4.0) == [], "the job's processes outlived the server"
    time.sleep(max(0.0, 3.5 - 0.5))  # past the 3 s after which the children would write
    assert sorted(p.name for p in markers.iterdir()) == []
    assert job_processes(marker, expected=0, deadline_s=0) == []


def test_sigkilled_worker_takes_its_unsandboxed_jobs_processes_along(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with fresh_database() as url:
        cluster = Cluster(tmp_path / "cluster", url)
        try:
            api = cluster.api(INTERPRETER_SANDBOX="none")
            worker = cluster.worker(INTERPRETER_SANDBOX="none")
            cluster.wait_workers(1)
            client = api.client()
            marker = new_marker()
            job_id = submit(client, job(markers), "shell", timeout=60, environment_variables=marker)
            wait_for_status(client, job_id, {"running"}, deadline_s=20)
            wait_for_file(worker.workspace_root / job_id / "ready.txt")
            procs = job_processes(marker, expected=5, deadline_s=2.0)
            worker.track(procs)
            time.sleep(0.5)

            worker.kill()

            assert survivors(procs, deadline_s=4.0) == [], "the job's processes outlived it"
            time.sleep(3.0)
            assert sorted(p.name for p in markers.iterdir()) == []
            assert job_processes(marker, expected=0, deadline_s=0) == []
        finally:
            cluster.cleanup()
