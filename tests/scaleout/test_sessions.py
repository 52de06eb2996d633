"""Sessions in the scale-out: a session's kernel lives on one worker; any API replica starts it,
runs code in it (each execution routed to that worker's own queue), shows, restarts and deletes
it; a worker's death ends its sessions, and their executions fail instead of waiting."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.scaleout.conftest import Cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(300)]

KEYS = {"INTERPRETER_API_KEYS": "key-a,key-b", "INTERPRETER_MAX_SESSIONS_PER_KEY": "2"}
KEY_A = {"Authorization": "Bearer key-a"}
KEY_B = {"Authorization": "Bearer key-b"}


def run(client: httpx.Client, session_id: str, code: str) -> dict[str, Any]:
    response = client.post(f"/sessions/{session_id}/execute", json={"code": code, "timeout": 30})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_session_on_a_worker_serves_every_replica_and_ends_with_it(cluster: Cluster) -> None:
    first, second = cluster.api(**KEYS), cluster.api(**KEYS)
    worker = cluster.worker(**KEYS)
    cluster.wait_workers(1)
    one = first.client(headers=KEY_A, timeout=300)  # the first start installs ipykernel
    two = second.client(headers=KEY_A, timeout=60)

    made = one.post("/sessions", json={})
    assert made.status_code == 201, made.text
    session = made.json()
    session_id = session["session_id"]
    assert session["status"] == "idle" and session["environment"]["packages"]["ipykernel"]

    assert run(one, session_id, "x = 41")["status"] == "completed"
    answer = run(two, session_id, "x + 1")  # the other replica: the same kernel
    assert answer["results"][0]["data"]["text/plain"] == "42", answer
    assert answer["worker"]["id"]  # run by the worker, as every job is
    job = two.get(f"/jobs/{answer['job_id']}/results").json()
    assert job["session_id"] == session_id and job["results"] == answer["results"]

    for _ in range(40):  # the worker writes the session's row as an execution ends
        shown = two.get(f"/sessions/{session_id}").json()
        if shown["executions"] == 2:
            break
        time.sleep(0.05)
    assert shown["executions"] == 2 and shown["status"] == "idle", shown
    assert [s["session_id"] for s in two.get("/sessions").json()["sessions"]] == [session_id]
    other = second.client(headers=KEY_B)
    assert other.get(f"/sessions/{session_id}").status_code == 404
    assert other.post(f"/sessions/{session_id}/execute", json={"code": "x"}).status_code == 404
    assert other.get("/sessions").json()["sessions"] == []
    # the Kernel Gateway routes need the process that holds the kernel: refused, REST and
    # websocket alike, with 501 and a JSON detail
    rest = one.get("/api/kernels")
    assert rest.status_code == 501 and "PostgreSQL" in rest.json()["detail"], rest.text
    url = first.url.replace("http://", "ws://") + f"/api/kernels/{session_id}/channels"
    with pytest.raises(InvalidStatus) as refused:
        with connect(url, additional_headers=KEY_A, open_timeout=10):
            pass
    assert refused.value.response.status_code == 501
    assert "PostgreSQL" in json.loads(refused.value.response.body)["detail"]
    # a kernel its environment breaks: refused as the request's fault, as in the embedded mode
    broken = one.post("/sessions", json={"environment_variables": {"PYTHONIOENCODING": "nope"}})
    assert broken.status_code == 422, broken.text
    assert broken.json()["detail"].startswith("the session could not start with its packages")
    assert broken.json()["detail"].endswith("LookupError: unknown encoding: nope"), broken.text

    restarted = two.post(f"/sessions/{session_id}/restart")
    assert restarted.status_code == 200, restarted.text
    assert run(one, session_id, "x")["error"]["name"] == "NameError"  # a fresh kernel

    second_session = one.post("/sessions", json={}).json()["session_id"]
    capped = one.post("/sessions", json={})
    assert capped.status_code == 429, capped.text
    assert two.delete(f"/sessions/{second_session}").status_code == 200
    assert one.get(f"/sessions/{second_session}").status_code == 404

    # The worker dies: its session ends with it; an execution sent to it fails, never waits
    worker.kill()
    give_up = time.monotonic() + 30
    while one.get(f"/sessions/{session_id}").status_code != 404:
        assert time.monotonic() < give_up, "the dead worker's session still shows"
        time.sleep(0.2)
    assert "restarts" in one.get(f"/sessions/{session_id}").json()["detail"]
    assert one.post(f"/sessions/{session_id}/execute", json={"code": "1"}).status_code == 404
    cluster.worker(**KEYS)
    cluster.wait_workers(1)
    again = one.post("/sessions", json={})
    assert again.status_code == 201, again.text  # the dead worker's session no longer counts
    assert run(two, again.json()["session_id"], "6 * 7")["results"][0]["data"]["text/plain"] == "42"
