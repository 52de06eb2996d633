"""An operator's interpreter, for real: a venv's python as ``INTERPRETER_PYTHON_COMMAND`` runs
jobs in the sandbox, and a command that cannot run there is caught once at start (the language
unavailable, saying why) instead of failing every job.

Each test starts ``python -m interpreter.server`` (``tests/acceptance/server.py``) with the
sandbox on, or off where it says so.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.server import ServerProcess, results, submit, wait_final
from tests.sandbox.usable import UNUSABLE

StartServer = Callable[..., ServerProcess]

needs_bwrap = pytest.mark.skipif(UNUSABLE is not None, reason=f"no sandbox here: {UNUSABLE}")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """``start_server(INTERPRETER_...="...")``: a healthy server, killed at the end."""
    servers: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        servers.append(ServerProcess(tmp_path / f"server{len(servers)}", env))
        return servers[-1].start()

    yield start
    for server in servers:
        server.cleanup()


def languages(client: httpx.Client) -> dict[str, dict[str, Any]]:
    response = client.get("/languages")
    assert response.status_code == 200, response.text
    return {lang["name"]: lang for lang in response.json()}


def run(client: httpx.Client, code: str, language: str) -> dict[str, Any]:
    job_id = submit(client, code, language)
    wait_final(client, job_id)
    return results(client, job_id)


def broken_interpreter(directory: Path) -> Path:
    """An executable script whose shebang names an interpreter that does not exist: the file is
    there (the old check passed), but nothing can run it."""
    directory.mkdir()
    script = directory / "python3"
    script.write_text("#!/nonexistent/bin/python3\n")
    script.chmod(0o755)
    return script


@needs_bwrap
def test_a_venv_under_tmp_runs_python_jobs_in_the_sandbox(
    start_server: StartServer, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    server = start_server(INTERPRETER_PYTHON_COMMAND=str(venv / "bin" / "python"))
    client = server.client()

    python = languages(client)["python"]
    body = run(client, "import sys\nprint(sys.prefix)\nprint(sum(range(10)))", "python")

    assert python["available"] is True and python["problem"] is None
    assert python["version"].startswith("Python 3.")
    assert body["status"] == "completed", body
    assert body["stdout"] == f"{venv}\n45\n"
    assert client.get("/health").json()["service_checks"]["enhanced_terminal"] == "healthy"


def assert_caught_at_start(server: ServerProcess, why: str) -> None:
    """The language is unavailable with ``why`` as its problem, the server degraded and
    submissions refused with the reason, while shell jobs still run."""
    client = server.client()

    python = languages(client)["python"]
    health = client.get("/health")
    refused = client.post("/execute", json={"code": "print(1)", "language": "python"})
    shell = run(client, "echo still here", "shell")

    assert python["available"] is False
    assert why in python["problem"]
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["service_checks"]["enhanced_terminal"] == "degraded"
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == (
        f"Language 'python' cannot run on this host: {python['problem']}"
    )
    assert shell["status"] == "completed" and shell["stdout"] == "still here\n"
    assert "language python cannot run" in server.stderr_path.read_text()


@needs_bwrap
def test_a_command_that_cannot_run_in_the_sandbox_makes_python_unavailable(
    start_server: StartServer, tmp_path: Path
) -> None:
    script = broken_interpreter(tmp_path / "tool")
    server = start_server(INTERPRETER_PYTHON_COMMAND=str(script))

    assert_caught_at_start(server, f"bwrap: execvp {script}: No such file or directory")


def test_without_a_sandbox_the_command_is_tried_directly(
    start_server: StartServer, tmp_path: Path
) -> None:
    script = broken_interpreter(tmp_path / "tool")
    server = start_server(INTERPRETER_SANDBOX="none", INTERPRETER_PYTHON_COMMAND=str(script))

    assert_caught_at_start(server, f"cannot run {script}: No such file or directory")
