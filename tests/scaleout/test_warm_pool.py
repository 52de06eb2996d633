"""Scale-out with the warm pool: each worker forks Python jobs from parents of its own; an
API-only replica starts none."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.acceptance.server import run_in_one_trip
from tests.scaleout.conftest import Cluster

pytestmark = pytest.mark.acceptance

PARENT = "interpreter-warm-parent"
# A warm job's pid 1 is its leader (a cold job's is bwrap)
WHO_IS_PID_1 = "print(open('/proc/1/cmdline', 'rb').read().split(b'\\0')[1].decode())"


def parents_of(pid: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children():
        try:
            if any(part.startswith(PARENT) for part in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_a_worker_forks_python_jobs_from_its_own_warm_parents(cluster: Cluster) -> None:
    api = cluster.api()
    worker = cluster.worker()
    cluster.wait_workers(1)
    client = api.client()
    give_up = time.monotonic() + 20
    while not parents_of(worker.pid) and time.monotonic() < give_up:
        time.sleep(0.1)
    assert parents_of(worker.pid), "the worker started no warm parent"
    assert parents_of(api.pid) == [], "an API-only replica runs no job: it needs no parent"
    while (body := run_in_one_trip(client, WHO_IS_PID_1))["stdout"] != "(warm leader)\n":
        assert body["status"] == "completed", body  # cold while the parents were not ready
        assert time.monotonic() < give_up, f"no job ran warm: {body}"
        time.sleep(0.2)
    shell = client.post(
        "/execute?wait=30", json={"code": "tr '\\0' ' ' < /proc/1/cmdline", "language": "shell"}
    ).json()
    assert shell["stdout"].split()[0].endswith("bwrap"), shell  # other languages stay cold
