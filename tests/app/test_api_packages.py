"""Per-job packages without the sandbox (jobs run as plain processes here): the environment at
its host path, and what the server does when the registry cannot be reached."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.app.conftest import MakeApi

pytestmark = pytest.mark.timeout(180)

SHOW = "import os, sys, six; print(sys.prefix); print(os.environ['VIRTUAL_ENV'])"


async def test_without_the_sandbox_the_job_runs_in_its_environment_at_its_host_path(
    make_api: MakeApi,
) -> None:
    api = await make_api()
    result = await api.run(SHOW, packages=["six"])
    assert result["status"] == "completed", result
    env_id = result["environment"]["id"]
    where = Path(os.path.realpath(api.settings.data_dir)) / "packages" / "envs" / env_id
    assert result["stdout"] == f"{where}\n{where}\n"


async def test_an_unreachable_registry_uses_the_last_resolution_or_answers_503(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await make_api(packages_lock_ttl_s=0)  # every request asks the registry again
    first = await api.run("import six", packages=["six"])
    assert first["status"] == "completed", first

    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # passed to uv: nothing listens there
    again = await api.run("import six", packages=["six"])
    assert again["status"] == "completed", again
    assert again["environment"]["id"] == first["environment"]["id"]

    response = await api.client.post(
        "/execute", json={"code": "import idna", "packages": ["idna"]}
    )
    assert response.status_code == 503, response.text
    assert "package registry could not be reached" in response.json()["detail"]
