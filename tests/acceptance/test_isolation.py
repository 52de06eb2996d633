"""Two jobs running at once each get their own working directory."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import pytest

from tests.acceptance.server import ServerProcess, results, submit, wait_final

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]

JOB = """\
import json, os, time
open("{mine}", "w").write("{mine}")
time.sleep(1.5)  # the other job writes its file meanwhile
print(json.dumps({{
    "cwd": os.getcwd(),
    "listing": sorted(os.listdir(".")),
    "sees_other": os.path.exists("{other}") or os.path.exists("./{other}"),
}}))
"""


def test_concurrent_jobs_do_not_see_each_others_directory(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(INTERPRETER_MAX_JOBS="2")
    client = server.client()
    first = submit(client, JOB.format(mine="first.txt", other="second.txt"))
    second = submit(client, JOB.format(mine="second.txt", other="first.txt"))
    finals = {job_id: wait_final(client, job_id, deadline_s=15) for job_id in (first, second)}
    a, b = finals[first], finals[second]
    assert a["status"] == b["status"] == "completed", finals
    start_a, end_a = (
        datetime.fromisoformat(a["started_at"]),
        datetime.fromisoformat(a["completed_at"]),
    )
    start_b, end_b = (
        datetime.fromisoformat(b["started_at"]),
        datetime.fromisoformat(b["completed_at"]),
    )
    assert start_a < end_b and start_b < end_a, "the two jobs did not run at the same time"

    seen = {job_id: json.loads(results(client, job_id)["stdout"]) for job_id in (first, second)}
    full = {job_id: results(client, job_id) for job_id in (first, second)}
    assert seen[first]["cwd"] != seen[second]["cwd"]
    assert full[first]["working_directory"] != full[second]["working_directory"]
    for job_id, mine, other in (
        (first, "first.txt", "second.txt"),
        (second, "second.txt", "first.txt"),
    ):
        assert seen[job_id]["listing"] == [mine]
        assert seen[job_id]["sees_other"] is False
        created = full[job_id]["files_created"]
        assert [path.rsplit("/", 1)[-1] for path in created] == [mine], created
        assert not any(path.endswith("/" + other) for path in created)
