"""Two API replicas and two workers on one PostgreSQL: every replica sees every job, a cancel
reaches the worker that runs the job, a lost worker's job is re-run or failed, nothing is lost
across a full stop, and 500 jobs run exactly once."""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import httpx
import psutil
import pytest

from tests.acceptance.server import (
    live_directory,
    results,
    run_in_one_trip,
    submit,
    wait_final,
    wait_for_file,
    wait_for_status,
)
from tests.scaleout.conftest import Cluster

pytestmark = pytest.mark.acceptance


def marked_processes(marker: str) -> list[psutil.Process]:
    """Processes whose command line carries ``marker`` (the job's code is on its argv)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_a_job_submitted_to_one_replica_is_read_from_the_other(cluster: Cluster) -> None:
    a, b = cluster.api(), cluster.api()
    cluster.worker()
    cluster.worker()
    cluster.wait_workers(2)
    client_a, client_b = a.client(), b.client()

    job_id = submit(client_a, "import sys; print(6 * 7); print('warn', file=sys.stderr)")

    final = wait_final(client_b, job_id)
    assert final["status"] == "completed"
    assert client_b.get(f"/results/{job_id}").json() == {
        "status": "completed",
        "stdout": "42\n",
        "stderr": "warn\n",
        "files": [],
    }
    full = results(client_b, job_id)
    assert full["exit_code"] == 0 and full["attempts"] == 1
    assert full["worker"]["id"] and full["worker"]["host"]
    assert results(client_a, job_id)["stdout"] == "42\n"
    listed = client_b.get("/jobs").json()["jobs"]
    assert [job["job_id"] for job in listed] == [job_id]
    health = client_a.get("/health").json()
    assert health["queue"]["backend"] == "procrastinate"
    assert health["queue"]["database"] == "postgresql"
    assert health["queue"]["workers_alive"] == 2


def test_one_node_needs_one_command(cluster: Cluster) -> None:
    node = cluster.api(INTERPRETER_INPROCESS_WORKER="true")  # the default of the server
    client = node.client()
    cluster.wait_workers(1)

    job_id = submit(client, "print('one node')")

    assert wait_final(client, job_id)["status"] == "completed"
    assert client.get(f"/results/{job_id}").json()["stdout"] == "one node\n"
    assert client.get("/sandbox").json()["mode"] in ("bwrap", "none")
    node.stop()  # SIGTERM: its worker stops with it


def test_a_job_waits_for_a_worker_and_health_says_so(cluster: Cluster) -> None:
    a = cluster.api()
    client = a.client()
    job_id = submit(client, "print('late')")
    time.sleep(0.5)
    assert client.get(f"/jobs/{job_id}/status").json()["status"] == "pending"
    health = client.get("/health").json()
    assert health["service_checks"]["job_manager"] == "degraded"
    assert health["queue"]["depth"] == 1 and health["queue"]["workers_alive"] == 0

    cluster.worker()
    assert wait_final(client, job_id)["status"] == "completed"
    assert client.get(f"/results/{job_id}").json()["stdout"] == "late\n"


def test_cancel_on_one_replica_kills_the_job_a_worker_runs(cluster: Cluster) -> None:
    a, b = cluster.api(), cluster.api()
    cluster.worker()
    cluster.wait_workers(1)
    marker = f"MARK{uuid.uuid4().hex}"
    job_id = submit(
        a.client(),
        f"import time  # {marker}\nprint('started', flush=True)\n"
        "open('printed', 'w').write('yes\\n')\ntime.sleep(60)",
        timeout=120,
    )
    wait_for_status(b.client(), job_id, {"running"}, 15)
    # cancel once it has printed (on a loaded machine Python takes a while to get there)
    wait_for_file(live_directory(cluster.workers[0], job_id) / "printed", deadline_s=15)
    assert marked_processes(marker), "the job's process is not there"

    response = b.client().post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    deadline = time.monotonic() + 5
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not marked_processes(marker), "the job's process tree outlived the cancel"
    full = results(a.client(), job_id)
    deadline = time.monotonic() + 5
    while full["termination_reason"] != "cancelled" or full["stdout"] == "":
        assert time.monotonic() < deadline, full
        time.sleep(0.05)
        full = results(a.client(), job_id)
    assert full["status"] == "cancelled"
    assert full["stdout"] == "started\n"  # what it printed before the kill is kept
    assert b.client().post(f"/jobs/{job_id}/cancel").status_code == 409


def test_a_pending_job_cancelled_on_another_replica_never_runs(cluster: Cluster) -> None:
    a, b = cluster.api(), cluster.api()
    job_id = submit(a.client(), "print('must not run')")
    assert b.client().delete(f"/jobs/{job_id}").json()["status"] == "cancelled"
    cluster.worker()
    cluster.wait_workers(1)
    follow_up = submit(a.client(), "print('after')")
    assert wait_final(a.client(), follow_up)["status"] == "completed"
    full = results(b.client(), job_id)
    assert full["status"] == "cancelled" and full["started_at"] is None
    assert full["stdout"] == "" and full["worker"] is None


def _runner_of(cluster: Cluster, marker: str) -> int:
    """Index of the worker whose process tree holds the job's process."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        job_pids = {p.pid for p in marked_processes(marker)}
        for index, worker in enumerate(cluster.workers):
            if job_pids & {p.pid for p in worker.descendants()}:
                return index
        time.sleep(0.02)
    pytest.fail("no worker runs the job")


@pytest.mark.parametrize("reruns", ["1", "0"])
def test_a_worker_killed_mid_job_has_its_job_rerun_or_failed(cluster: Cluster, reruns: str) -> None:
    a = cluster.api()
    for _ in range(2):
        cluster.worker(INTERPRETER_WORKER_LOST_RERUNS=reruns)
    cluster.wait_workers(2)
    client = a.client()
    marker = f"MARK{uuid.uuid4().hex}"
    job_id = submit(client, f"import time  # {marker}\ntime.sleep(1.5)\nprint('done')")
    wait_for_status(client, job_id, {"running"}, 15)
    first = results(client, job_id)["worker"]
    victim = _runner_of(cluster, marker)

    cluster.workers[victim].kill()
    killed_at = time.monotonic()

    final = wait_final(client, job_id, deadline_s=20)
    within_s = time.monotonic() - killed_at
    full = results(client, job_id)
    if reruns == "1":
        assert final["status"] == "completed", (full["error_message"], full)
        assert full["stdout"] == "done\n"
        assert full["attempts"] == 2
        assert full["worker"]["id"] != first["id"]
    else:
        assert final["status"] == "failed", full
        assert full["error_message"].startswith("worker lost")
    # noticed within the lost-worker window plus a heartbeat (and the re-run's 1.5 s)
    assert within_s < 1.5 + 0.3 + 1.5 + 3.0


def test_every_job_completes_after_every_process_stopped_with_jobs_pending(
    cluster: Cluster,
) -> None:
    a, b = cluster.api(), cluster.api()
    cluster.worker(INTERPRETER_WORKER_CONCURRENCY="1")
    cluster.wait_workers(1)
    ids = [
        submit((a if i % 2 else b).client(), f"import time; time.sleep(1); print({i})")
        for i in range(12)
    ]
    time.sleep(0.3)  # one runs, the rest wait (a second each: at most a few ended under load)
    counts = _statuses(ids, a.client())
    assert counts.get("pending", 0) >= 8, counts
    for process in cluster.processes:
        process.stop()

    a.start()
    b.start()
    cluster.workers[0].spawn()
    cluster.worker(INTERPRETER_WORKER_CONCURRENCY="2")
    for i, job_id in enumerate(ids):
        final = wait_final((b if i % 2 else a).client(), job_id, deadline_s=30)
        assert final["status"] == "completed", results(a.client(), job_id)
        assert a.client().get(f"/results/{job_id}").json()["stdout"] == f"{i}\n"


def _statuses(ids: list[str], client: httpx.Client) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job_id in ids:
        status = client.get(f"/jobs/{job_id}/status").json()["status"]
        counts[status] = counts.get(status, 0) + 1
    return counts


def test_500_jobs_across_both_replicas_run_exactly_once(cluster: Cluster) -> None:
    shared = cluster.directory / "shared-workspaces"
    limits = {"INTERPRETER_WORKSPACE_ROOT": str(shared), "INTERPRETER_RATE_LIMIT": "10000/minute"}
    a, b = cluster.api(**limits), cluster.api(**limits)
    cluster.worker(INTERPRETER_WORKSPACE_ROOT=str(shared), INTERPRETER_WORKER_CONCURRENCY="4")
    cluster.worker(INTERPRETER_WORKSPACE_ROOT=str(shared), INTERPRETER_WORKER_CONCURRENCY="4")
    cluster.wait_workers(2)
    clients = [a.client(), b.client()]

    def one(i: int) -> str:
        return submit(
            clients[i % 2],
            f'echo "{i}" >> runs.log; echo {i}',
            language="shell",
            working_directory="ledger",
            capture_files=False,
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(one, range(500)))
    assert len(set(ids)) == 500

    deadline = time.monotonic() + 240
    for i, job_id in enumerate(ids):
        remaining = max(1.0, deadline - time.monotonic())
        final = wait_final(clients[(i + 1) % 2], job_id, deadline_s=remaining)
        assert final["status"] == "completed", results(clients[0], job_id)
    runs = (shared / "ledger" / "runs.log").read_text().split()
    assert sorted(int(n) for n in runs) == list(range(500))  # each once: none lost, none twice
    assert clients[0].get(f"/results/{ids[7]}").json()["stdout"] == "7\n"
    health = clients[1].get("/health").json()
    assert health["total_jobs_processed"] == 500 and health["queue"]["depth"] == 0


def test_rate_limit_and_pending_cap_hold_across_replicas(cluster: Cluster) -> None:
    key = f"key-{uuid.uuid4().hex}"  # a fresh identity: its Redis counters start at zero
    env = {
        "INTERPRETER_AUTH": "true",
        "INTERPRETER_API_KEYS": key,
        "INTERPRETER_RATE_LIMIT_STORAGE": "redis://127.0.0.1:6379",
        "INTERPRETER_RATE_LIMIT": "5/minute",
        "INTERPRETER_MAX_PENDING_PER_KEY": "3",
    }
    a, b = cluster.api(**env), cluster.api(**env)
    clients = [a.client(headers={"X-API-Key": key}), b.client(headers={"X-API-Key": key})]
    body = {"code": "print(1)", "language": "python"}

    # no worker runs: jobs stay pending; the cap of 3 counts both replicas' jobs
    answers = [clients[i % 2].post("/execute", json=body).status_code for i in range(4)]
    assert answers == [200, 200, 200, 429]
    # the 5th and 6th submissions: the budget of 5 a minute is shared, whichever replica answers
    assert clients[1].post("/execute", json=body).status_code == 429  # pending cap again
    over = clients[0].post("/execute", json=body)
    assert over.status_code == 429 and "rate limit exceeded" in over.json()["detail"]
    assert int(over.headers["Retry-After"]) > 0


def test_a_stopped_worker_cancels_what_outlives_its_grace_period(cluster: Cluster) -> None:
    api = cluster.api()
    worker = cluster.worker(INTERPRETER_SHUTDOWN_GRACE_S="0.5")
    cluster.wait_workers(1)
    client = api.client()
    marker = f"MARK{uuid.uuid4().hex}"
    job_id = submit(client, f"import time  # {marker}\ntime.sleep(60)", timeout=120)
    wait_for_status(client, job_id, {"running"}, 15)

    took_s = worker.stop()  # SIGTERM

    assert took_s < 10
    full = results(client, job_id)
    assert full["status"] == "cancelled", full
    assert full["error_message"] == "cancelled: the server shut down during execution"
    assert not marked_processes(marker), "the job's process outlived its worker"


def test_one_round_trip_answers_from_a_replica_when_a_worker_ran_the_job(cluster: Cluster) -> None:
    api = cluster.api()
    cluster.worker()
    cluster.wait_workers(1)
    full = run_in_one_trip(api.client(), "print(6 * 7)")
    assert (full["status"], full["stdout"], full["attempts"]) == ("completed", "42\n", 1)
    assert full["worker"]["id"]
