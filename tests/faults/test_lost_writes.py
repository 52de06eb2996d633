"""A job the database says is running, but whose queue entry no worker runs (writes lost in a
failover to a replica that was behind, or a hand-edited queue), is queued again and runs once
more; the attempt that may still be running it stops as stale."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.acceptance.server import results
from tests.faults.conftest import LOST_AFTER_S, FaultCluster, Ledger
from tests.faults.test_worker_faults import _fail, _job, _wait_all_final

pytestmark = pytest.mark.acceptance


@pytest.mark.timeout(120)
def test_running_job_whose_queue_entry_vanished_runs_again(
    fault_cluster: FaultCluster, ledger: Ledger
) -> None:
    cluster = fault_cluster
    api = cluster.api()
    cluster.worker(INTERPRETER_WORKER_CONCURRENCY="2")
    cluster.wait_workers(1)
    client = api.client()
    sleep_s = 10.0
    token, job_id = _job(client, ledger, sleep_s)
    starts = ledger.wait_starts(token, 1, deadline_s=15)
    if starts is None:
        _fail(cluster, [f"job {job_id} never started: {results(client, job_id)}"])
    started = time.monotonic()

    with psycopg.connect(cluster.env["INTERPRETER_DATABASE_URL"], autocommit=True) as conn:
        deleted = conn.execute(
            "DELETE FROM procrastinate_jobs WHERE id = (SELECT queue_id FROM jobs WHERE id = %s)",
            (job_id,),
        ).rowcount
    assert deleted == 1

    rerun = ledger.wait_starts(token, 2, deadline_s=LOST_AFTER_S * 2 + 3)
    if rerun is None:
        _fail(cluster, [f"not re-run: {results(client, job_id)}", f"{ledger.of(token)}"])
    status = _wait_all_final([client], [job_id], deadline_s=sleep_s + 20)[job_id]
    time.sleep(max(0.0, started + sleep_s + 1.5 - time.monotonic()))  # the first run's end
    full = results(client, job_id)
    runs = ledger.of(token)
    problems = []
    if status != "completed" or full["attempts"] != 2:
        problems.append(f"{status}, attempts {full['attempts']}: {full['error_message']!r}")
    if full["stdout"] != f"out {token} {rerun[1]}\n":
        problems.append(f"stdout {full['stdout']!r} is not the re-run's (pid {rerun[1]})")
    if runs.ends != 1:
        problems.append(f"{runs.ends} ends, not 1: the first attempt was not stopped")
    if problems:
        _fail(cluster, problems)
