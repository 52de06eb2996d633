"""GET /sandbox: behind the API key when authentication is on, and no host path in its answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

K1 = {"X-API-Key": "k1"}
CGROUP_PATHS = {
    "cgroup v1, jobs under /sys/fs/cgroup/memory/srv/interpreter-jobs, "
    "/sys/fs/cgroup/pids/srv/interpreter-jobs": "cgroup v1",
    "cgroup v2, jobs under /sys/fs/cgroup/system.slice/interpreter.service/jobs": "cgroup v2",
    "cgroup v2": "cgroup v2",
    "/sys/fs/cgroup/unexpected": "unknown",
}


def describing(api: Any, monkeypatch: pytest.MonkeyPatch, cgroup: str) -> None:
    """Make the app's sandbox describe itself as a bubblewrap sandbox on ``cgroup``."""
    sandbox = api.app.state.parts.runner.sandbox

    def describe() -> dict[str, Any]:
        return {
            "mode": "bwrap",
            "isolated": True,
            "limits_enforced": True,
            "cgroup": cgroup,
        }

    monkeypatch.setattr(sandbox, "describe", describe)


async def test_sandbox_without_a_key_is_401_when_authentication_is_on(make_api) -> None:
    api = await make_api(api_keys=["k1"])

    anonymous = await api.client.get("/sandbox")
    wrong = await api.client.get("/sandbox", headers={"X-API-Key": "k2"})
    keyed = await api.client.get("/sandbox", headers=K1)

    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert anonymous.json()["detail"]
    assert keyed.status_code == 200
    assert keyed.json()["mode"] == "none"


@pytest.mark.parametrize(("described", "shown"), list(CGROUP_PATHS.items()))
async def test_sandbox_shows_the_cgroup_version_and_no_cgroup_path(
    api, monkeypatch: pytest.MonkeyPatch, described: str, shown: str
) -> None:
    describing(api, monkeypatch, described)

    body = (await api.client.get("/sandbox")).json()

    assert body["details"]["cgroup"] == shown
    assert "/sys/fs/cgroup" not in json.dumps(body)
