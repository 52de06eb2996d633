"""Jobs in one named working directory run one after another (the README's promise)."""

from __future__ import annotations

from typing import Any


async def test_a_second_job_in_a_directory_waits_and_sees_what_the_first_left(
    make_api: Any,
) -> None:
    api = await make_api(max_jobs=2)
    first = await api.submit(
        "sleep 0.5; echo first >> log.txt", "shell", working_directory="shared"
    )
    await api.wait_for(first, {"running"})
    second = await api.submit(
        "cat log.txt; echo second >> log.txt", "shell", working_directory="shared"
    )

    await api.wait(second)
    body = await api.results(second)

    assert body["status"] == "completed", body
    assert body["stdout"] == "first\n"  # it started only once the first had ended
    assert (api.workspace_root / "shared" / "log.txt").read_text() == "first\nsecond\n"


async def test_a_job_whose_directory_stays_busy_ends_timeout_saying_why(make_api: Any) -> None:
    api = await make_api(max_jobs=2)
    busy = await api.submit("sleep 3", "shell", working_directory="busy", timeout=10)
    await api.wait_for(busy, {"running"})

    waiting = await api.run("print('never')", working_directory="busy", timeout=0.3)

    assert waiting["status"] == "timeout"
    assert waiting["stdout"] == ""
    assert "waiting for its working directory" in waiting["error_message"]
    await api.client.post(f"/jobs/{busy}/cancel")
