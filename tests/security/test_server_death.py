"""A SIGKILLed server leaves no job process behind, and its next start removes the job's cgroup."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.acceptance.server import (
    ServerProcess,
    job_processes,
    new_marker,
    submit,
    survivors,
    wait_final,
    wait_for_status,
)
from tests.sandbox.usable import UNUSABLE, cgroup_dirs

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.timeout(90),
    pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox here: {UNUSABLE}"),
]

# A daemon (setsid, double fork) and a plain child, then the job waits.
JOB = (
    "import os, subprocess, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        time.sleep(300)\n"
    "    os._exit(0)\n"
    "subprocess.Popen(['sleep', '300'])\n"
    "time.sleep(300)\n"
)


def test_sigkilled_server_leaves_no_job_process_and_its_restart_removes_the_cgroup(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "server", {"INTERPRETER_SANDBOX": "bwrap"})
    try:
        server.start()
        client = server.client()
        marker = new_marker()
        job_id = submit(client, JOB, environment_variables=marker, timeout=120)
        wait_for_status(client, job_id, {"running"}, deadline_s=10)
        procs = job_processes(marker, expected=3)  # the job, its daemon, its sleep
        server.track(procs)
        assert cgroup_dirs(job_id)

        server.kill()  # SIGKILL; the job runs in sessions of its own, out of the server's group

        assert survivors(procs, deadline_s=5.0) == []
        server.start()
        final = wait_final(server.client(), job_id)
        assert final["status"] == "failed"
        assert final["error_message"] == "server restarted during execution"
        give_up = time.monotonic() + 10
        while cgroup_dirs(job_id):
            assert time.monotonic() < give_up, f"cgroups of {job_id} remain"
            time.sleep(0.05)
    finally:
        server.cleanup()
