"""The scale-out tier: API replicas and workers as real processes on one fresh PostgreSQL database.

``cluster.api()`` starts an API-only replica (``INTERPRETER_INPROCESS_WORKER=false``) and waits
until it is healthy; ``cluster.worker()`` starts ``python -m interpreter.worker``;
``cluster.wait_workers(n)`` waits until n workers' heartbeats are recent. Heartbeats are short
here (0.3 s, lost after 1.5 s) so that a lost worker is noticed within a test's patience. Every
process, and every process they started, is killed at teardown, and the database dropped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.server import ServerProcess
from tests.pg import fresh_database

HEARTBEAT_S = "0.3"
LOST_AFTER_S = "1.5"


class Cluster:
    def __init__(self, directory: Path, database_url: str) -> None:
        self.directory = directory
        self.env = {
            "INTERPRETER_DATABASE_URL": database_url,
            "INTERPRETER_WORKER_HEARTBEAT": HEARTBEAT_S,
            "INTERPRETER_WORKER_LOST_AFTER": LOST_AFTER_S,
            "INTERPRETER_SHUTDOWN_GRACE_S": "10",
        }
        self.processes: list[ServerProcess] = []
        self.apis: list[ServerProcess] = []
        self.workers: list[ServerProcess] = []

    def _process(self, name: str, module: str, env: dict[str, str]) -> ServerProcess:
        process = ServerProcess(self.directory / name, {**self.env, **env}, module)
        self.processes.append(process)
        return process

    def api(self, **env: str) -> ServerProcess:
        """An API-only replica, unless ``INTERPRETER_INPROCESS_WORKER="true"`` is given."""
        api = self._process(
            f"api{len(self.apis)}",
            "interpreter.server",
            {"INTERPRETER_INPROCESS_WORKER": "false", **env},
        )
        self.apis.append(api)
        return api.start()

    def worker(self, **env: str) -> ServerProcess:
        worker = self._process(f"worker{len(self.workers)}", "interpreter.worker", env)
        self.workers.append(worker)
        worker.spawn()
        return worker

    def wait_workers(self, count: int, deadline_s: float = 20.0) -> None:
        """Until ``/health`` of the first API counts ``count`` live workers."""
        assert self.apis, "start an API first"
        alive = None
        with httpx.Client(base_url=self.apis[0].url, trust_env=False, timeout=5) as client:
            end = time.monotonic() + deadline_s
            while time.monotonic() < end:
                for worker in self.workers:
                    if worker.popen is not None and worker.popen.poll() not in (None, -9):
                        pytest.fail(f"a worker exited early\n{worker.log_tail()}")
                alive = client.get("/health").json()["queue"]["workers_alive"]
                if alive == count:
                    return
                time.sleep(0.05)
        logs = "\n".join(w.log_tail() for w in self.workers)
        pytest.fail(f"{alive} workers alive, not {count}, after {deadline_s:g} s\n{logs}")

    def cleanup(self) -> None:
        for process in self.processes:
            process.cleanup()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with fresh_database() as url:
        cluster = Cluster(tmp_path, url)
        try:
            yield cluster
        finally:
            cluster.cleanup()
