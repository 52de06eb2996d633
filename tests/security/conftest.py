"""The adversarial suite: a real server with the sandbox on, attacked by jobs.

One server for the whole suite (``python -m interpreter.server`` with ``INTERPRETER_SANDBOX=bwrap``,
authentication on, a secret in its own environment); ``Attacker.attack`` runs one hostile job and
checks what every case must hold: the job reaches a final status within its timeout plus a grace
period, no secret (a host file outside the workspace, the server's environment variable, the API
keys) appears in its output, file lists or error, no process of it survives, and the server still
runs a control job. At the end of the session the server's log must hold no secret either.

The server knows two API keys, two tenants: ``attacker`` submits with the first
(``API_KEY``), ``attacker.as_other_tenant()`` with the second (``API_KEY_B``). Submissions are not
rate limited in practice (the suite submits hundreds of jobs within a minute).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.acceptance.server import ServerProcess, results, running_server, submit, wait_final
from tests.sandbox.usable import UNUSABLE

MARKER = "SECURITY_JOB"
GRACE_S = 10.0
API_KEY = f"key-{uuid.uuid4().hex}"
API_KEY_B = f"key-{uuid.uuid4().hex}"  # a second tenant
HOST_SECRET = f"host-file-secret-{uuid.uuid4().hex}"
ENV_SECRET = f"server-env-secret-{uuid.uuid4().hex}"


def marked(marker: str) -> list[psutil.Process]:
    """Running processes whose environment carries ``marker`` (jobs get it with --setenv)."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARKER) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


@dataclass
class Attacker:
    server: ServerProcess
    client: httpx.Client
    host: Path  # outside every workspace: the planted secret and a canary live here
    secrets: tuple[str, ...] = (HOST_SECRET, ENV_SECRET, API_KEY, API_KEY_B)
    seen: dict[str, Any] = field(default_factory=dict)
    client_b: httpx.Client | None = None  # the second tenant's client (API_KEY_B)

    def as_other_tenant(self) -> Attacker:
        """The same attacker submitting (and running its control jobs) with the second key."""
        assert self.client_b is not None, "the server has no second tenant"
        return dataclasses.replace(self, client=self.client_b)

    @property
    def secret_file(self) -> Path:
        return self.host / "secret.txt"

    def start(self, code: str, language: str = "python", **fields: Any) -> tuple[str, str]:
        """Submit a hostile job; returns its id and the marker of its processes."""
        marker = uuid.uuid4().hex
        env = {MARKER: marker, **fields.pop("environment_variables", {})}
        job_id = submit(self.client, code, language, environment_variables=env, **fields)
        return job_id, marker

    def attack(self, code: str, language: str = "python", **fields: Any) -> dict[str, Any]:
        """Run a hostile job to its end and check everything every case must hold."""
        timeout_s = float(fields.setdefault("timeout", 10))
        job_id, marker = self.start(code, language, **fields)
        wait_final(self.client, job_id, deadline_s=timeout_s + GRACE_S)
        return self.check(job_id, marker)

    def check(self, job_id: str, marker: str) -> dict[str, Any]:
        body = results(self.client, job_id)
        structured = self.client.get(f"/results/{job_id}").json()
        shown = json.dumps([body, structured])
        for secret in self.secrets:
            assert secret not in shown, f"a secret leaked into job {job_id}'s results"
        self.no_survivors(marker)
        self.control()
        return body

    def no_survivors(self, marker: str, deadline_s: float = 5.0) -> None:
        give_up = time.monotonic() + deadline_s
        while alive := marked(marker):
            if time.monotonic() > give_up:
                for proc in alive:
                    with contextlib.suppress(psutil.Error):
                        proc.kill()
                pytest.fail(f"processes of the job survive: {alive}")
            time.sleep(0.05)

    def control(self) -> None:
        job_id = submit(self.client, "print('control')")
        assert wait_final(self.client, job_id)["status"] == "completed"
        assert self.client.get(f"/results/{job_id}").json()["stdout"] == "control\n"


@pytest.fixture(scope="session")
def attacker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attacker]:
    if UNUSABLE is not None:
        pytest.skip(f"no sandbox here: {UNUSABLE}")
    host = tmp_path_factory.mktemp("host")
    (host / "secret.txt").write_text(HOST_SECRET + "\n")
    (host / "canary.txt").write_text("unchanged\n")
    with running_server(
        tmp_path_factory.mktemp("security-server"),
        INTERPRETER_SANDBOX="bwrap",
        INTERPRETER_AUTH="true",
        INTERPRETER_API_KEYS=f"{API_KEY},{API_KEY_B}",
        INTERPRETER_RATE_LIMIT="100000/minute",
        INTERPRETER_MAX_JOBS="4",
        INTERPRETER_KILL_GRACE_S="0.2",
        INTERPRETER_MAX_OUTPUT_BYTES="1048576",
        INTERPRETER_PROCESS_LIMIT="64",
        INTERPRETER_MEMORY_LIMIT=str(256 * 2**20),
        SERVER_SECRET_TOKEN=ENV_SECRET,
    ) as server:
        client = server.client(headers={"X-API-Key": API_KEY})
        client_b = server.client(headers={"X-API-Key": API_KEY_B})
        attacker = Attacker(server, client, host, client_b=client_b)
        yield attacker
        log = server.stderr_path.read_text() + server.stdout_path.read_text()
        for secret in (HOST_SECRET, ENV_SECRET, API_KEY, API_KEY_B):
            assert secret not in log, "a secret leaked into the server's log"
        assert (host / "secret.txt").read_text() == HOST_SECRET + "\n"
        assert (host / "canary.txt").read_text() == "unchanged\n"
        assert sorted(p.name for p in host.iterdir()) == ["canary.txt", "secret.txt"]
