"""Stopping a sandboxed job in its first milliseconds: the stop reaches what it starts later.

A cancel or a timeout may come before the job's command exists (the sandbox is still setting up,
and its own init ignores SIGTERM from outside). Whatever the job starts during the grace must
get its SIGTERM too, and the grace's end kills everything, so a job stopped early never writes
its side effects after the cancel's answer or its timeout.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.usable import UNUSABLE

pytestmark = pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox here: {UNUSABLE}")

ROUNDS = 10
# A grace longer than the jobs below: a job that never gets its SIGTERM would run to its end.
LONG_GRACE_S = 1.0
SIDE_EFFECTS = {
    "shell": ("sleep 0.3; echo survived > side.txt; echo survived", "shell"),
    "python": (
        "import time; time.sleep(0.3); open('side.txt', 'w').write('x'); print('survived')",
        "python",
    ),
}


async def _final_result(api: Any, job_id: str) -> dict[str, Any]:
    """The full result once the worker is done with the job (a job cancelled while pending
    never starts) and its files, if it ran, are back in its directory."""
    queue = api.app.state.parts.queue
    await api.wait_until(
        lambda: queue.running_count == 0 and queue.queue_depth == 0, 10, "an idle worker"
    )
    body: dict[str, Any] = await api.results(job_id)
    return body


@pytest.mark.parametrize("when", ["submitted", "running"])
@pytest.mark.parametrize("language", sorted(SIDE_EFFECTS))
async def test_a_job_cancelled_at_once_never_writes_its_side_effect(
    make_api: Any, language: str, when: str
) -> None:
    api = await make_api(sandbox="bwrap", kill_grace_s=LONG_GRACE_S)
    code, language = SIDE_EFFECTS[language]
    for _ in range(ROUNDS):
        job_id = await api.submit(code, language, timeout=10)
        if when == "running":
            await api.wait_for(job_id, {"running"})
        response = await api.client.post(f"/jobs/{job_id}/cancel")
        assert response.status_code == 200, response.text
        body = await _final_result(api, job_id)
        assert body["status"] == "cancelled", body
        assert "survived" not in body["stdout"], body
        if body["working_directory"] is not None:  # None: cancelled before it started
            assert not (Path(body["working_directory"]) / "side.txt").exists(), body


@pytest.mark.parametrize("timeout_s", [0.001, 0.05])
async def test_a_tiny_timeout_stops_a_job_before_its_command_ends(
    make_api: Any, timeout_s: float
) -> None:
    api = await make_api(sandbox="bwrap", kill_grace_s=LONG_GRACE_S)
    for _ in range(3):
        body = await api.run("sleep 0.8; echo survived", "shell", timeout=timeout_s)
        assert (body["status"], body["termination_reason"]) == ("timeout", "timeout"), body
        assert "survived" not in body["stdout"], body


async def test_a_job_ignoring_sigterm_dies_at_the_end_of_the_grace(make_api: Any) -> None:
    api = await make_api(sandbox="bwrap", kill_grace_s=0.2)
    for timeout_s in (0.001, 0.3):
        started = time.monotonic()
        body = await api.run("trap '' TERM; sleep 5; echo survived", "shell", timeout=timeout_s)
        assert (body["status"], body["termination_reason"]) == ("timeout", "timeout"), body
        assert "survived" not in body["stdout"], body
        assert time.monotonic() - started < 3.0


async def test_without_a_grace_an_early_timeout_kills_at_once(make_api: Any) -> None:
    api = await make_api(sandbox="bwrap", kill_grace_s=0.0)
    for timeout_s in (0.001, 0.05):
        body = await api.run("sleep 0.8; echo survived", "shell", timeout=timeout_s)
        assert (body["status"], body["termination_reason"]) == ("timeout", "timeout"), body
        assert "survived" not in body["stdout"], body
