"""Sessions through a real server: a sandboxed ipykernel per session keeps its variables between
executions; each execution is a job. One server (API keys on, a small per-key cap) serves most
tests; each test deletes the sessions it made so the cap is only met where a test means it."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import psutil
import pytest

from tests.acceptance.server import (
    FINAL_STATUSES,
    ServerProcess,
    job_processes,
    job_status,
    new_marker,
    results,
    running_server,
    survivors,
    wait_final,
)
from tests.sandbox.usable import UNUSABLE

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.timeout(300),
    pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox: {UNUSABLE}"),
]

KEY_A = {"Authorization": "Bearer key-a"}
KEY_B = {"X-API-Key": "key-b"}
MAX_PER_KEY = 3
CREATE_TIMEOUT_S = 240.0  # the first session of a data directory installs ipykernel with uv
IDLE_S = 120.0  # what a test leaves behind is reaped before long
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(30)\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(
        tmp_path_factory.mktemp("sessions"),
        INTERPRETER_API_KEYS="key-a,key-b",
        INTERPRETER_MAX_SESSIONS_PER_KEY=str(MAX_PER_KEY),
    ) as server:
        yield server


@pytest.fixture
def client(server: ServerProcess) -> httpx.Client:
    return server.client(headers=KEY_A, timeout=CREATE_TIMEOUT_S)


class Sessions:
    """Creates sessions (as key-a unless told) and deletes at teardown every one it made."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.made: list[tuple[httpx.Client, str]] = []

    def attempt(self, owner: httpx.Client | None = None, **body: Any) -> httpx.Response:
        owner = owner or self.client
        body = {"language": "python", "idle_timeout_s": IDLE_S, **body}
        response = owner.post("/sessions", json=body, timeout=CREATE_TIMEOUT_S)
        if response.status_code == 201:
            self.made.append((owner, response.json()["session_id"]))
        return response

    def create(self, owner: httpx.Client | None = None, **body: Any) -> dict[str, Any]:
        response = self.attempt(owner, **body)
        assert response.status_code == 201, response.text
        session: dict[str, Any] = response.json()
        assert session["status"] == "idle", session
        assert session["language"] == "python"
        return session

    def delete_all(self) -> None:
        for owner, session_id in self.made:
            with contextlib.suppress(httpx.HTTPError):
                owner.delete(f"/sessions/{session_id}")


@pytest.fixture
def sessions(client: httpx.Client) -> Iterator[Sessions]:
    made = Sessions(client)
    yield made
    made.delete_all()


def execute(
    client: httpx.Client,
    session_id: str,
    code: str,
    *,
    timeout: float | None = None,
    wait: float = 60.0,
) -> dict[str, Any]:
    """``POST /sessions/{id}/execute?wait=``: the full result when it ended within ``wait``."""
    body: dict[str, Any] = {"code": code}
    if timeout is not None:
        body["timeout"] = timeout
    response = client.post(
        f"/sessions/{session_id}/execute",
        params={"wait": wait},
        json=body,
        timeout=wait + 30,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    if wait > 0:
        assert result["status"] in FINAL_STATUSES, result
    return result


def expect_error(response: httpx.Response, *statuses: int) -> str:
    """The response is one of ``statuses`` with a JSON ``detail``; returns the detail."""
    assert response.status_code in statuses, f"HTTP {response.status_code}: {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and body.get("detail"), body
    assert "Traceback" not in response.text
    return str(body["detail"])


def session_routes(session_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("GET", f"/sessions/{session_id}", None),
        ("POST", f"/sessions/{session_id}/execute", {"code": "print('intruder')"}),
        ("POST", f"/sessions/{session_id}/interrupt", None),
        ("POST", f"/sessions/{session_id}/restart", None),
        ("DELETE", f"/sessions/{session_id}", None),
    ]


def kernel_processes(server: ServerProcess, marker: dict[str, str]) -> list[psutil.Process]:
    """The running processes of the session created with ``environment_variables=marker``."""
    procs = job_processes(marker, expected=1, deadline_s=10.0)
    server.track(procs)
    return procs


def wait_for_output(client: httpx.Client, job_id: str, text: str, deadline_s: float = 15.0) -> None:
    """Read the execution's live output (``GET /jobs/{id}/stream``) until it printed ``text``:
    the cell itself runs, not only its job."""
    printed = ""
    event = ""
    give_up_at = time.monotonic() + deadline_s
    with client.stream("GET", f"/jobs/{job_id}/stream", timeout=deadline_s) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:") and event == "stdout":
                printed += json.loads(line.partition(":")[2]).get("text", "")
                if text in printed:
                    return
            if event == "end" or time.monotonic() > give_up_at:
                break
    pytest.fail(f"the execution {job_id} did not print {text!r} in time: {printed!r}")


def plain(result: dict[str, Any]) -> str:
    """The text/plain of the execution's one result (its last expression's value)."""
    assert len(result["results"]) == 1, result
    value: str = result["results"][0]["data"]["text/plain"]
    return value


# -- state between executions ---------------------------------------------------------------------


def test_variables_imports_and_the_directory_survive_and_each_execution_is_a_job(
    client: httpx.Client, sessions: Sessions
) -> None:
    session = sessions.create()
    session_id = session["session_id"]
    assert session["executions"] == 0

    first = execute(
        client,
        session_id,
        "import math, os\n"
        "x = 41\n"
        "os.makedirs('sub', exist_ok=True)\n"
        "os.chdir('sub')\n"
        "with open('note.txt', 'w') as f:\n"
        "    f.write('kept')\n"
        "print('hello')\n",
    )
    assert first["status"] == "completed", first
    assert first["stdout"] == "hello\n"
    assert first["results"] == [] and first["error"] is None
    assert first["session_id"] == session_id

    second = execute(client, session_id, "x + 1")
    assert second["status"] == "completed", second
    assert second["results"][0]["type"] == "execute_result"
    assert plain(second) == "42"
    assert second["stdout"] == ""

    third = execute(
        client,
        session_id,
        "print(math.floor(math.pi), os.path.basename(os.getcwd()))\nprint(open('note.txt').read())",
    )
    assert third["status"] == "completed", third
    assert third["stdout"] == "3 sub\nkept\n"

    job_ids = [first["job_id"], second["job_id"], third["job_id"]]
    assert len(set(job_ids)) == 3
    for job_id, stdout in zip(job_ids, ["hello\n", "", "3 sub\nkept\n"], strict=True):
        full = client.get(f"/jobs/{job_id}/results")
        assert full.status_code == 200, full.text
        assert full.json()["job_id"] == job_id
        assert full.json()["session_id"] == session_id
        assert full.json()["stdout"] == stdout
        short = client.get(f"/results/{job_id}")
        assert short.status_code == 200, short.text
        assert short.json().keys() == {"status", "stdout", "stderr", "files"}
        assert short.json()["status"] == "completed"
        assert short.json()["stdout"] == stdout
        assert client.get(f"/jobs/{job_id}/status").json()["status"] == "completed"

    now = client.get(f"/sessions/{session_id}")
    assert now.status_code == 200, now.text
    assert now.json()["executions"] == 3
    assert now.json()["status"] == "idle"
    last_activity = datetime.fromisoformat(now.json()["last_activity_at"])
    assert last_activity > datetime.fromisoformat(session["last_activity_at"])


def test_plots_and_dataframes_come_back_as_rich_results(
    client: httpx.Client, sessions: Sessions
) -> None:
    session = sessions.create(packages=["matplotlib", "pandas"])
    assert session["environment"] is not None, session
    assert {"matplotlib", "pandas", "ipykernel"} <= session["environment"]["packages"].keys()
    session_id = session["session_id"]

    plot = execute(
        client,
        session_id,
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()\n",
    )
    assert plot["status"] == "completed", plot
    images = [
        r for r in plot["results"] if r["type"] == "display_data" and "image/png" in r["data"]
    ]
    assert len(images) == 1, plot["results"]
    assert base64.b64decode(images[0]["data"]["image/png"]).startswith(PNG_MAGIC)
    assert images[0]["truncated"] is False

    frame = execute(
        client, session_id, "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': [3, 4]})"
    )
    assert frame["status"] == "completed", frame
    [value] = frame["results"]
    assert value["type"] == "execute_result"
    assert "<table" in value["data"]["text/html"]
    assert value["data"]["text/plain"].split() == ["a", "b", "0", "1", "3", "1", "2", "4"]


def test_an_exception_fails_the_execution_with_a_plain_traceback_and_the_session_lives_on(
    client: httpx.Client, sessions: Sessions
) -> None:
    session_id = sessions.create()["session_id"]
    execute(client, session_id, "y = 5")

    failed = execute(client, session_id, "print('before')\n1 / 0\n")
    assert failed["status"] == "failed", failed
    assert failed["termination_reason"] == "exit"
    assert failed["error_message"] == "the code raised an exception"
    assert failed["stdout"] == "before\n"
    error = failed["error"]
    assert error["name"] == "ZeroDivisionError"
    assert error["value"] == "division by zero"
    assert "ZeroDivisionError" in error["traceback"]
    assert "\x1b[" not in error["traceback"]

    after = execute(client, session_id, "y * 2")
    assert after["status"] == "completed", after
    assert plain(after) == "10"


# -- timeouts, memory, cancel, interrupt ----------------------------------------------------------


def test_a_python_loop_past_its_timeout_is_interrupted_and_the_variables_are_kept(
    client: httpx.Client, sessions: Sessions
) -> None:
    session_id = sessions.create()["session_id"]
    execute(client, session_id, "x = 7")

    started = time.monotonic()
    loop = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass\n"
    result = execute(client, session_id, loop, timeout=2)
    took = time.monotonic() - started
    assert result["status"] == "timeout", result
    assert took < 10, f"a 2 s timeout ended after {took:.1f} s"

    after = execute(client, session_id, "x")
    assert after["status"] == "completed", after
    assert plain(after) == "7"


def test_a_c_loop_past_its_timeout_costs_a_kernel_restart(
    client: httpx.Client, sessions: Sessions
) -> None:
    session_id = sessions.create()["session_id"]
    execute(client, session_id, "x = 7")

    started = time.monotonic()
    result = execute(client, session_id, "sum(range(10**12))", timeout=2)  # deaf to SIGINT
    took = time.monotonic() - started
    assert result["status"] == "timeout", result
    assert took < 20, f"a 2 s timeout ended after {took:.1f} s"
    assert "restart" in (result["error_message"] or "").lower(), result

    after = execute(client, session_id, "print('fresh')\nx")
    assert after["stdout"] == "fresh\n", after
    assert after["status"] == "failed"
    assert after["error"]["name"] == "NameError"
    assert client.get(f"/sessions/{session_id}").json()["status"] == "idle"


def test_a_memory_bomb_kills_the_session_and_it_answers_409_after(
    server: ServerProcess, client: httpx.Client, sessions: Sessions
) -> None:
    marker = new_marker()
    session = sessions.create(limits={"memory_bytes": 256 * 2**20}, environment_variables=marker)
    session_id = session["session_id"]
    procs = kernel_processes(server, marker)

    # growth in pieces (one huge allocation would be a MemoryError): 1 GiB at most, by count
    bomb = "x = []\nfor _ in range(64):\n    x.append(bytearray(16 * 1024**2))\n"
    result = execute(client, session_id, bomb, timeout=30)
    assert result["status"] == "failed", result
    assert result["termination_reason"] == "memory_limit", result

    now = client.get(f"/sessions/{session_id}")
    assert now.status_code == 200, now.text
    assert now.json()["status"] == "dead", now.json()
    assert now.json()["error"], now.json()
    expect_error(client.post(f"/sessions/{session_id}/execute", json={"code": "1"}), 409)
    assert survivors(procs, deadline_s=10) == [], "the dead kernel left processes"


def test_cancelling_a_running_execution_ends_it_cancelled_and_the_session_works(
    client: httpx.Client, sessions: Sessions
) -> None:
    session_id = sessions.create()["session_id"]
    execute(client, session_id, "z = 3")

    queued = execute(client, session_id, SLEEPER, timeout=60, wait=0)
    assert queued.keys() >= {"job_id", "status", "estimated_start_time"}, queued
    assert queued["status"] in ("pending", "running"), queued
    job_id = queued["job_id"]
    wait_for_output(client, job_id, "sleeping\n")
    assert job_status(client, job_id)["status"] == "running"
    assert client.get(f"/sessions/{session_id}").json()["status"] == "busy"

    cancel = client.post(f"/jobs/{job_id}/cancel")
    assert cancel.status_code == 200, cancel.text
    assert wait_final(client, job_id, deadline_s=10)["status"] == "cancelled"

    after = execute(client, session_id, "print('alive')")
    assert after["status"] == "completed", after
    assert after["stdout"] == "alive\n"


def test_an_interrupt_stops_the_running_execution_and_keeps_the_variables(
    client: httpx.Client, sessions: Sessions
) -> None:
    session_id = sessions.create()["session_id"]
    execute(client, session_id, "w = 11")
    job_id = execute(client, session_id, SLEEPER, timeout=60, wait=0)["job_id"]
    wait_for_output(client, job_id, "sleeping\n")  # the cell runs: not only its job

    interrupted = client.post(f"/sessions/{session_id}/interrupt")
    assert interrupted.status_code == 200, interrupted.text
    assert interrupted.json()["session_id"] == session_id
    assert wait_final(client, job_id, deadline_s=10)["status"] == "failed"
    stopped = results(client, job_id)
    assert stopped["error"]["name"] == "KeyboardInterrupt", stopped
    assert stopped["stdout"] == "sleeping\n"

    after = execute(client, session_id, "w")
    assert after["status"] == "completed", after
    assert plain(after) == "11"


def test_a_restart_gives_a_fresh_kernel_in_the_same_directory(
    client: httpx.Client, sessions: Sessions
) -> None:
    session_id = sessions.create()["session_id"]
    execute(client, session_id, "v = 1\nopen('kept.txt', 'w').write('yes')")

    restarted = client.post(f"/sessions/{session_id}/restart", timeout=60)
    assert restarted.status_code == 200, restarted.text
    assert restarted.json()["session_id"] == session_id
    assert restarted.json()["status"] == "idle"

    after = execute(client, session_id, "print(open('kept.txt').read())\nv")
    assert after["stdout"] == "yes\n", after
    assert after["status"] == "failed"
    assert after["error"]["name"] == "NameError"


# -- lifetime: idle reaping, delete, server restart -----------------------------------------------


def test_an_idle_session_is_reaped_with_its_processes(
    server: ServerProcess, client: httpx.Client, sessions: Sessions
) -> None:
    marker = new_marker()
    session = sessions.create(idle_timeout_s=2, environment_variables=marker)
    assert session["idle_timeout_s"] == 2
    session_id = session["session_id"]
    procs = kernel_processes(server, marker)

    give_up = time.monotonic() + 12
    while (response := client.get(f"/sessions/{session_id}")).status_code == 200:
        assert time.monotonic() < give_up, f"idle for 2 s, still there: {response.json()}"
        time.sleep(0.2)
    expect_error(response, 404)
    assert survivors(procs, deadline_s=5) == [], "the reaped session left processes"
    assert session_id not in [s["session_id"] for s in client.get("/sessions").json()["sessions"]]


def test_a_deleted_session_is_gone_with_its_processes(
    server: ServerProcess, client: httpx.Client, sessions: Sessions
) -> None:
    marker = new_marker()
    session_id = sessions.create(environment_variables=marker)["session_id"]
    procs = kernel_processes(server, marker)
    execute(client, session_id, "x = 1")

    deleted = client.delete(f"/sessions/{session_id}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"session_id": session_id, "status": "terminated"}
    assert survivors(procs, deadline_s=5) == [], "the deleted session left processes"

    expect_error(client.get(f"/sessions/{session_id}"), 404)
    expect_error(client.post(f"/sessions/{session_id}/execute", json={"code": "x"}), 404)
    expect_error(client.delete(f"/sessions/{session_id}"), 404)


def test_sessions_do_not_survive_a_server_restart_nor_do_their_processes(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    client = server.client(timeout=CREATE_TIMEOUT_S)
    marker = new_marker()
    created = client.post(
        "/sessions",
        json={"language": "python", "idle_timeout_s": IDLE_S, "environment_variables": marker},
    )
    assert created.status_code == 201, created.text
    session_id = created.json()["session_id"]
    procs = kernel_processes(server, marker)
    assert execute(client, session_id, "x = 1")["status"] == "completed"

    server.stop()
    server.start()
    client = server.client(timeout=30)

    detail = expect_error(client.get(f"/sessions/{session_id}"), 404)
    assert "restart" in detail.lower(), detail
    expect_error(client.post(f"/sessions/{session_id}/execute", json={"code": "x"}), 404)
    assert client.get("/sessions").json()["sessions"] == []
    assert survivors(procs, deadline_s=10) == [], "the first server's kernel outlived it"
    assert job_processes(marker, expected=0, deadline_s=0) == []


# -- keys, caps and bad requests ------------------------------------------------------------------


def test_a_key_holds_at_most_its_cap_and_no_other_key_reaches_its_sessions(
    server: ServerProcess, client: httpx.Client, sessions: Sessions
) -> None:
    other = server.client(headers=KEY_B, timeout=CREATE_TIMEOUT_S)
    mine = [sessions.create()["session_id"] for _ in range(MAX_PER_KEY)]

    detail = expect_error(sessions.attempt(), 429)
    assert str(MAX_PER_KEY) in detail, detail
    listed = client.get("/sessions")
    assert listed.status_code == 200, listed.text
    assert sorted(s["session_id"] for s in listed.json()["sessions"]) == sorted(mine)

    for method, path, body in session_routes(mine[0]):
        response = other.request(method, path, json=body)
        expect_error(response, 404)
    assert client.get(f"/sessions/{mine[0]}").json()["executions"] == 0  # nothing of key-b's ran

    theirs = sessions.create(other)["session_id"]  # the cap is per key
    assert [s["session_id"] for s in other.get("/sessions").json()["sessions"]] == [theirs]
    assert theirs not in [s["session_id"] for s in client.get("/sessions").json()["sessions"]]
    expect_error(client.get(f"/sessions/{theirs}"), 404)

    mine_result = execute(client, mine[0], "print('mine')")
    assert mine_result["stdout"] == "mine\n", mine_result
    expect_error(other.get(f"/jobs/{mine_result['job_id']}/results"), 404)


def test_a_kernel_its_environment_breaks_is_refused_as_the_requests_fault(
    sessions: Sessions,
) -> None:
    # the interpreter cannot start with an encoding that does not exist: retrying would fail
    # the same way, so the answer is a 422 saying why, not a 503 saying "retry later"
    broken = sessions.attempt(environment_variables={"PYTHONIOENCODING": "no-such-encoding"})
    detail = expect_error(broken, 422)
    assert detail.startswith("the session could not start with its packages or environment"), detail
    assert sessions.client.get("/sessions").json()["sessions"] == []  # nothing left of it
    assert sessions.create()["status"] == "idle"  # and the next session starts


def test_bad_bodies_and_unknown_sessions_are_json_errors(client: httpx.Client) -> None:
    # shell sessions take no packages (and a server without shell sessions refuses the language)
    shell = client.post("/sessions", json={"language": "bash", "packages": ["six"]})
    assert expect_error(shell, 422, 501) != "Internal server error"
    expect_error(client.post("/sessions", json={"language": "cobol"}), 422)
    expect_error(client.post("/sessions", json={"language": "python", "idle_timeout_s": -1}), 422)
    expect_error(client.post("/sessions", json={"language": "python", "packages": "six"}), 422)

    for method, path, body in session_routes("no-such-session"):
        response = client.request(method, path, json=body)
        expect_error(response, 404)
    assert client.get("/sessions").json()["sessions"] == []  # none of these made one
