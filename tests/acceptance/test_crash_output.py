"""What a job printed before the server was SIGKILLed is still its output after the restart."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.acceptance.server import (
    ServerProcess,
    live_directory,
    submit,
    wait_final,
    wait_for_file,
    wait_for_status,
)
from tests.sandbox.usable import UNUSABLE

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]

JOB = """\
import sys, time
for i in range(3):
    print(f"line {i}", flush=True)
print("warning 1", file=sys.stderr, flush=True)
with open("printed.txt", "w") as f:
    f.write("done\\n")
time.sleep(60)
"""

SANDBOXES = [
    pytest.param(
        "bwrap", marks=pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox: {UNUSABLE}")
    ),
    "none",
]


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_sigkilled_server_keeps_what_the_running_job_printed(
    start_server: Callable[..., ServerProcess], sandbox: str
) -> None:
    server = start_server(INTERPRETER_SANDBOX=sandbox)
    client = server.client()
    job_id = submit(client, JOB, working_directory="crash", timeout=120)
    wait_for_status(client, job_id, {"running"}, deadline_s=10)
    where = live_directory(server, job_id) if sandbox == "bwrap" else server.workspace_root
    wait_for_file(where / "crash" / "printed.txt" if sandbox == "none" else where / "printed.txt")
    server.track(server.descendants())

    server.kill()
    server.start()
    client = server.client()

    final = wait_final(client, job_id, deadline_s=10)
    assert final["status"] == "failed"
    assert final["error_message"] == "server restarted during execution"
    structured = client.get(f"/results/{job_id}").json()
    assert structured["status"] == "failed"
    assert structured["stdout"] == "line 0\nline 1\nline 2\n"
    assert structured["stderr"] == "warning 1\n"
    full = client.get(f"/jobs/{job_id}/results").json()
    assert full["stdout"] == "line 0\nline 1\nline 2\n"
    assert full["stderr"] == "warning 1\n"
    assert full["termination_reason"] == "sandbox_error"  # not the code's doing
