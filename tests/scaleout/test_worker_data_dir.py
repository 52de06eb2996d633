"""A worker owns its data directory: a second worker on it refuses, and a new worker removes the
output and scratch files a dead one left there (its outputs live in PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.acceptance.server import ServerProcess, submit, wait_final
from tests.scaleout.conftest import Cluster

pytestmark = pytest.mark.acceptance


def test_a_second_worker_on_the_same_data_directory_refuses(cluster: Cluster) -> None:
    api = cluster.api()
    first = cluster.worker()
    cluster.wait_workers(1)
    second = ServerProcess(first.directory, cluster.env, "interpreter.worker")
    cluster.processes.append(second)

    second.spawn()

    assert second.popen is not None and second.popen.wait(20) == 1
    assert f"another process (pid {first.pid}) runs jobs from" in second.stderr_path.read_text()
    client = api.client()
    assert wait_final(client, submit(client, "print(1)"))["status"] == "completed"


def test_a_new_worker_removes_what_a_dead_one_left(cluster: Cluster) -> None:
    api = cluster.api()
    worker = cluster.worker()
    cluster.wait_workers(1)
    worker.kill()
    outputs, scratch = worker.data_dir / "outputs", worker.data_dir / "scratch"
    (outputs / "0b7f0f38-6a0b-4c5e-9a39-5a0f4a7c2f10.stdout").write_text("a dead job's")
    (scratch / "0b7f0f38-6a0b-4c5e-9a39-5a0f4a7c2f10").mkdir()

    worker.spawn()
    client = api.client()
    job_id = submit(client, "print('after')")
    assert wait_final(client, job_id)["status"] == "completed"  # the new worker runs...

    assert list(outputs.iterdir()) == [] and list(scratch.iterdir()) == []  # ...after cleaning
    assert client.get(f"/results/{job_id}").json()["stdout"] == "after\n"
