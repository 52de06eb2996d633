"""The agent API across replicas: an Idempotency-Key holds on every replica, stdin reaches a
worker's job."""

from __future__ import annotations

import concurrent.futures

import pytest

from tests.acceptance.server import wait_final
from tests.scaleout.conftest import Cluster

pytestmark = pytest.mark.acceptance


def test_one_idempotency_key_on_two_replicas_makes_one_job_run_once(cluster: Cluster) -> None:
    a, b = (
        cluster.api(INTERPRETER_INPROCESS_WORKER="false"),
        cluster.api(INTERPRETER_INPROCESS_WORKER="false"),
    )
    cluster.worker()
    cluster.wait_workers(1)
    clients = [a.client(), b.client()]
    body = {"code": "import sys; print(sys.stdin.read().upper())", "stdin": "once\n"}

    def post(i: int) -> tuple[int, str, str | None]:
        response = clients[i % 2].post(
            "/execute", json=body, headers={"Idempotency-Key": "agent-call-7"}
        )
        return (
            response.status_code,
            response.json()["job_id"],
            response.headers.get("Idempotent-Replayed"),
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))

    assert {code for code, _, _ in answers} == {200}
    assert len({job_id for _, job_id, _ in answers}) == 1
    assert sum(1 for *_, replayed in answers if replayed is None) == 1  # one made it
    job_id = answers[0][1]
    assert wait_final(clients[1], job_id)["status"] == "completed"
    assert clients[0].get(f"/results/{job_id}").json()["stdout"] == "ONCE\n\n"
    assert len(clients[0].get("/jobs").json()["jobs"]) == 1  # ran once: one job in all
    other = clients[1].post(
        "/execute", json={**body, "stdin": "twice"}, headers={"Idempotency-Key": "agent-call-7"}
    )
    assert other.status_code == 422


def test_a_named_directory_works_when_the_worker_has_its_own_workspace_root(
    cluster: Cluster, tmp_path
) -> None:
    """The API checks the name under its root; the worker opens it under its own (a worker
    on another machine mounts the shared directory wherever it likes)."""
    api = cluster.api(INTERPRETER_WORKSPACE_ROOT=str(tmp_path / "api-root"))
    cluster.worker(INTERPRETER_WORKSPACE_ROOT=str(tmp_path / "worker-root"))
    cluster.wait_workers(1)
    client = api.client()

    def run(code: str) -> dict:
        response = client.post(
            "/execute",
            params={"wait": 30},
            json={"code": code, "working_directory": "project-a"},
            timeout=40,
        )
        assert response.status_code == 200, response.text
        return response.json()

    wrote = run("open('notes.txt', 'w').write('kept')")
    read = run("print(open('notes.txt').read())")

    assert wrote["status"] == "completed", wrote["error_message"]
    assert read["stdout"] == "kept\n"
    assert (tmp_path / "worker-root" / "project-a" / "notes.txt").read_text() == "kept"
    assert read["working_directory"] == str(tmp_path / "worker-root" / "project-a")
