"""A client generated from the server's own ``/openapi.json`` by a standard generator
(openapi-python-client) runs a job end to end, with an API key, and reads an error.

The generator runs offline in a subprocess, into the test's tmp_path; its package is imported
from there and removed from ``sys.modules`` afterwards.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.acceptance.server import ServerProcess

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

PACKAGE = "interpreter_client"
GENERATE_DEADLINE_S = 60.0
API_KEY = f"client-key-{uuid.uuid4().hex}"
CONFIG = f"""\
project_name_override: interpreter-client
package_name_override: {PACKAGE}
post_hooks: []
# A job's file comes in its own media type (*/*), its archive as application/gzip: bytes either
# way, which the generator reads as application/octet-stream when told so.
content_type_overrides:
  "*/*": application/octet-stream
  application/gzip: application/octet-stream
"""


def generate(spec: dict[str, object], directory: Path) -> Path:
    """The client package generated from ``spec``; its parent goes on sys.path."""
    (directory / "spec.json").write_text(json.dumps(spec))
    (directory / "config.yaml").write_text(CONFIG)
    out = directory / "client"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(directory / "spec.json"),
            "--output-path",
            str(out),
            "--config",
            str(directory / "config.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=GENERATE_DEADLINE_S,
        cwd=directory,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The generator warns about what it could not turn into code; the document must have none.
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    return out


@pytest.fixture
def client_package(tmp_path: Path) -> Iterator[Callable[[Path], ModuleType]]:
    """``load(out)``: the generated package's modules importable, forgotten at teardown."""
    paths: list[str] = []

    def load(out: Path) -> ModuleType:
        sys.path.insert(0, str(out))
        paths.append(str(out))
        importlib.invalidate_caches()
        return importlib.import_module(PACKAGE)

    yield load
    for path in paths:
        sys.path.remove(path)
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def test_a_generated_client_runs_a_job_end_to_end(
    start_server: Callable[..., ServerProcess],
    tmp_path: Path,
    client_package: Callable[[Path], ModuleType],
) -> None:
    server = start_server(INTERPRETER_API_KEYS=API_KEY)
    spec = httpx.get(f"{server.url}/openapi.json", timeout=10).json()

    load = client_package
    package = load(generate(spec, tmp_path))
    execute = importlib.import_module(f"{PACKAGE}.api.jobs.execute")
    get_job_status = importlib.import_module(f"{PACKAGE}.api.jobs.get_job_status")
    get_full_result = importlib.import_module(f"{PACKAGE}.api.jobs.get_full_result")
    get_result = importlib.import_module(f"{PACKAGE}.api.jobs.get_result")
    models = importlib.import_module(f"{PACKAGE}.models")

    with package.AuthenticatedClient(base_url=server.url, token=API_KEY, timeout=60) as client:
        body = models.ExecuteRequest(
            code="print('hello from a generated client')",
            language=models.ExecuteRequestLanguage.PYTHON,
            timeout=20,
            limits=models.LimitsRequest(memory_bytes=256 * 2**20),
        )
        submitted = execute.sync(client=client, body=body)
        assert isinstance(submitted, models.ExecuteResponse), submitted

        full = get_full_result.sync(client=client, job_id=submitted.job_id, wait=30)
        assert isinstance(full, models.FullResult), full
        assert full.status == models.JobStatus.COMPLETED
        assert full.stdout == "hello from a generated client\n"
        assert full.exit_code == 0
        assert isinstance(full.execution_time_ms, int) and full.execution_time_ms > 0

        status = get_job_status.sync(client=client, job_id=submitted.job_id)
        assert isinstance(status, models.StatusResponse)
        assert status.execution_time_ms == full.execution_time_ms
        structured = get_result.sync(client=client, job_id=submitted.job_id)
        assert isinstance(structured, models.StructuredResult)
        assert structured.stdout == full.stdout

        missing = get_job_status.sync(client=client, job_id=str(uuid.uuid4()))
        assert isinstance(missing, models.ErrorResponse)
        assert missing.detail.startswith("Job not found: ")

        refused = execute.sync_detailed(
            client=client, body=models.ExecuteRequest(code="print(1)", timeout=10_000)
        )
        assert refused.status_code == 422
        assert isinstance(refused.parsed, models.ErrorResponse)
        assert "timeout" in refused.parsed.detail

    anonymous = package.Client(base_url=server.url)
    with anonymous as client:
        unauthorized = execute.sync_detailed(client=client, body=models.ExecuteRequest(code="1"))
        assert unauthorized.status_code == 401
        assert isinstance(unauthorized.parsed, models.ErrorResponse)
