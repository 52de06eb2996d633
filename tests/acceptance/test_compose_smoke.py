"""docker-compose.yml without Docker: its API and worker services as plain processes on loopback.

Every service whose command is ``python -m interpreter.…`` runs as ``sys.executable -m …`` with
the environment compose would give it (defaults of ``${VAR:-default}`` applied), except what only
makes sense inside the compose network: ``INTERPRETER_DATABASE_URL`` points at a fresh database
on the local PostgreSQL (tests/pg.py), each API listens on a free port of 127.0.0.1 instead of
0.0.0.0:8000, data directories live in tmp_path, a ``redis://`` rate-limit storage is the local
Redis (127.0.0.1:6379), and the sandbox is off when bubblewrap and cgroups are unusable here.

One job submitted to one API replica, before any worker runs, stays pending (the replicas run no
job); once the workers start, a worker runs it and the other replica reads its result.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.acceptance.server import REPO_ROOT, ServerProcess
from tests.pg import fresh_database
from tests.sandbox.usable import UNUSABLE

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]

COMPOSE = REPO_ROOT / "docker-compose.yml"
LOCAL_REDIS = ("127.0.0.1", 6379)
JOB_DEADLINE_S = 15.0
PENDING_OBSERVED_S = 1.0
POLL_S = 0.05
VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


# -- docker-compose.yml ----------------------------------------------------------------------------


def interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` / ``${NAME-default}`` / ``$$``, with an empty shell
    environment: the file's own defaults, whatever this machine's environment holds."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return match.group(3) or ""

    return VARIABLE.sub(replace, value)


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {str(k): interpolate("" if v is None else str(v)) for k, v in environment.items()}


def interpreter_module(service: Mapping[str, Any]) -> str | None:
    """``interpreter.server`` for ``command: ["python", "-m", "interpreter.server"]``."""
    command = service.get("command") or []
    words = command.split() if isinstance(command, str) else [str(word) for word in command]
    if len(words) == 3 and words[0] == "python" and words[1] == "-m":
        if words[2].startswith("interpreter."):
            return words[2]
    return None


# -- what this machine offers ----------------------------------------------------------------------


def require_local_redis() -> str:
    try:
        with socket.create_connection(LOCAL_REDIS, timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        pytest.fail(
            f"docker-compose.yml shares rate limits through Redis, so this test needs one at "
            f"{LOCAL_REDIS[0]}:{LOCAL_REDIS[1]} (`redis-server --daemonize yes`): {exc}"
        )
    assert answer.startswith(b"+PONG"), f"{LOCAL_REDIS} answers {answer!r} to PING"
    return f"redis://{LOCAL_REDIS[0]}:{LOCAL_REDIS[1]}"


# -- processes -------------------------------------------------------------------------------------


class ComposeService(ServerProcess):
    """A compose service as ``sys.executable -m <module>`` with its compose environment (and
    the loopback overrides); the server's lifecycle and cleanup helpers come with it."""

    def __init__(
        self, name: str, module: str, directory: Path, environment: dict[str, str]
    ) -> None:
        super().__init__(directory, environment, module)
        self.name = name

    def env(self) -> dict[str, str]:
        env = super().env()  # PATH, HOME, PYTHONPATH..., then the compose environment
        # What only makes sense inside the compose network, or in a container of its own:
        env["INTERPRETER_HOST"] = "127.0.0.1"
        env["INTERPRETER_PORT"] = str(self.port)
        env["INTERPRETER_DATA_DIR"] = str(self.data_dir)
        env["INTERPRETER_WORKSPACE_ROOT"] = str(self.workspace_root)
        return env

    def check_alive(self, context: str) -> None:
        assert self.popen is not None
        if self.popen.poll() is not None:
            pytest.fail(
                f"{self.name} ({self.module}) exited with {self.popen.returncode} {context}\n"
                + self.log_tail()
            )


@pytest.fixture
def compose_processes(tmp_path: Path) -> Iterator[dict[str, ComposeService]]:
    """The API and worker services of docker-compose.yml, built but not started."""
    services = compose_services()
    sandbox_problem = UNUSABLE
    started: dict[str, ComposeService] = {}
    with fresh_database() as database_url:
        for name, service in services.items():
            module = interpreter_module(service)
            if module is None:
                continue  # postgres, redis: provided by this machine
            env = environment_of(service)
            assert env.get("INTERPRETER_DATABASE_URL", "").startswith("postgresql://"), name
            env["INTERPRETER_DATABASE_URL"] = database_url
            if env.get("INTERPRETER_SANDBOX", "bwrap") == "bwrap" and sandbox_problem:
                env["INTERPRETER_SANDBOX"] = "none"
            storage = env.get("INTERPRETER_RATE_LIMIT_STORAGE", "memory://")
            if storage.startswith(("redis://", "async+redis://")):
                env["INTERPRETER_RATE_LIMIT_STORAGE"] = require_local_redis()
            started[name] = ComposeService(name, module, tmp_path / name, env)
        try:
            yield started
        finally:
            for process in started.values():
                process.cleanup()


def wait_for_result(
    client: httpx.Client, job_id: str, workers: list[ComposeService]
) -> dict[str, Any]:
    """``GET /results/{id}`` until the job is final (a dead worker fails at once)."""
    give_up_at = time.monotonic() + JOB_DEADLINE_S
    body: dict[str, Any] = {}
    while time.monotonic() < give_up_at:
        response = client.get(f"/results/{job_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in ("completed", "failed", "timeout", "cancelled"):
            return body
        for worker in workers:
            worker.check_alive(f"while job {job_id} was {body['status']}")
        time.sleep(POLL_S)
    logs = "\n".join(f"=== {worker.name}\n{worker.log_tail()}" for worker in workers)
    pytest.fail(f"job {job_id} is still {body.get('status')!r} after {JOB_DEADLINE_S:g} s\n{logs}")


def test_compose_services_run_a_job_submitted_to_one_replica_read_from_the_other(
    compose_processes: dict[str, ComposeService],
) -> None:
    processes = compose_processes
    apis = [p for p in processes.values() if p.module == "interpreter.server"]
    workers = [p for p in processes.values() if p.module == "interpreter.worker"]
    assert [p.name for p in apis] == ["api-a", "api-b"], sorted(processes)
    assert [p.name for p in workers] == ["worker-1", "worker-2"], sorted(processes)
    api_a, api_b = apis

    for api in apis:
        assert api.extra_env["INTERPRETER_INPROCESS_WORKER"] == "false"
        api.start()  # and wait for GET /health 200
    key = api_a.extra_env["INTERPRETER_API_KEYS"].split(",")[0].strip()
    assert key, "docker-compose.yml gives the API no key"
    client_a = api_a.client(headers={"X-API-Key": key})
    client_b = api_b.client(headers={"X-API-Key": key})
    assert client_b.get("/results/nope").status_code == 404
    assert api_b.client().get("/results/nope").status_code == 401  # authentication is on

    response = client_a.post("/execute", json={"code": "print(6*7)", "language": "python"})
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]

    # No worker yet: the API replicas must not run it themselves.
    time.sleep(PENDING_OBSERVED_S)
    pending = client_b.get(f"/results/{job_id}")
    assert pending.status_code == 200, pending.text
    assert pending.json()["status"] == "pending", pending.json()

    for worker in workers:
        worker.spawn()
    result = wait_for_result(client_b, job_id, workers)
    assert result["status"] == "completed", (
        result,
        "\n".join(f"=== {worker.name}\n{worker.log_tail()}" for worker in workers),
    )
    assert result["stdout"] == "42\n", result
    assert result["stderr"] == "", result
    assert client_a.get(f"/results/{job_id}").json() == result
    full = client_a.get(f"/jobs/{job_id}/results")
    assert full.status_code == 200, full.text
    assert full.json()["worker"] is not None, full.json()  # run by a worker, not by an API
    assert full.json()["attempts"] == 1, full.json()

    # SIGTERM (what `docker compose stop` sends) ends an idle worker well within its grace.
    for worker in workers:
        worker.check_alive("after the job")
        took = worker.stop(deadline_s=float(worker.extra_env["INTERPRETER_SHUTDOWN_GRACE_S"]))
        assert worker.popen is not None and worker.popen.returncode in (0, -signal.SIGTERM), (
            f"{worker.name} exited with {worker.popen.returncode} after {took:.1f} s\n"
            + worker.log_tail()
        )
