"""Per-job packages without the sandbox (jobs run as plain processes here): the environment at
its host path, and what the server does when the registry cannot be reached."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from interpreter.packages.resolver import PackageResolver
from interpreter.packages.uv import Uv, find_uv
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
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")  # fail at once rather than after retries
    again = await api.run("import six", packages=["six"])
    assert again["status"] == "completed", again
    assert again["environment"]["id"] == first["environment"]["id"]

    response = await api.client.post("/execute", json={"code": "import idna", "packages": ["idna"]})
    assert response.status_code == 503, response.text
    assert "package registry could not be reached" in response.json()["detail"]


async def test_pins_made_for_another_python_are_resolved_again_where_the_job_runs(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica on another Python resolved the request to pins that do not install here: the
    worker sees that the pins are for another interpreter and resolves them for its own."""
    api = await make_api()
    real_tag, real_compile = PackageResolver.python_tag, Uv.compile
    tags: list[str] = []

    async def tag(self: PackageResolver) -> str:
        tags.append("asked")
        return "cpython 2.7 sparc" if len(tags) == 1 else await real_tag(self)

    async def compile_for(self: Uv, requirements: tuple[str, ...], *args: Any) -> tuple[str, ...]:
        if tags == ["asked"]:  # the replica's resolution: for its own, other, Python
            return ("six==0.0.0.1",)
        return await real_compile(self, requirements, *args)

    monkeypatch.setattr(PackageResolver, "python_tag", tag)
    monkeypatch.setattr(Uv, "compile", compile_for)
    result = await api.run("import six; print(six.__version__)", packages=["six"])
    assert result["status"] == "completed", result
    assert result["stdout"] == f"{result['environment']['packages']['six']}\n"
    assert result["environment"]["packages"]["six"] != "0.0.0.1"
    job = await api.store.get(result["job_id"])
    assert job is not None
    assert job.request.lock == ("six==0.0.0.1",) and job.request.lock_python == "cpython 2.7 sparc"


async def test_an_api_only_replica_bounds_its_cache_and_drops_old_resolutions(
    tmp_path: Path,
) -> None:
    class Quick(Uv):
        async def compile(
            self,
            requirements: tuple[str, ...],
            python: str,
            timeout_s: float,
            offline: bool = False,
        ) -> tuple[str, ...]:
            return ("six==1.17.0",)

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "wheel-data").write_bytes(b"x" * 2**21)  # 2 MiB of what resolving left
    locks = tmp_path / "locks"
    locks.mkdir()
    old = locks / "old.json"
    old.write_text("{}")
    os.utime(old, (0, 0))  # written long ago
    resolver = PackageResolver(Quick(find_uv(), cache), "/usr/bin/python3", locks, 8, 60, 30)
    resolver.cache_bytes = 2**20
    await resolver.resolve(["six"])
    assert not old.exists()
    assert [p.name for p in locks.iterdir()] != []  # the new resolution is kept
    assert not (cache / "wheel-data").exists()  # uv's cache emptied: it passed its bound
