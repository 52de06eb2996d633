"""Per-job limits: the server's defaults, a request's overrides and their maximums."""

from __future__ import annotations

import pytest

from interpreter.config import Settings
from interpreter.errors import ConfigurationError, InvalidRequest
from interpreter.job import Job, JobRequest, new_job_id
from interpreter.limits import ResourceLimits, describe_bytes, resolve_limits
from interpreter.store.sql import SqlStore


def test_defaults_come_from_the_settings() -> None:
    settings = Settings(memory_limit_bytes=256 * 2**20, process_limit=64, tmp_limit_bytes=2**24)
    limits = resolve_limits(settings, None)
    assert limits == ResourceLimits(
        cpu_time_s=60.0,
        memory_bytes=256 * 2**20,
        processes=64,
        file_size_bytes=256 * 2**20,
        open_files=256,
        workspace_bytes=2**30,
        tmp_bytes=2**24,
    )


def test_a_request_overrides_within_the_maximums() -> None:
    requested = {"cpu_time_s": 2.5, "memory_bytes": 2**30, "open_files": 64}
    limits = resolve_limits(Settings(), requested)
    assert (limits.cpu_time_s, limits.memory_bytes, limits.open_files) == (2.5, 2**30, 64)
    assert limits.processes == 128  # left out: the default


def test_above_the_maximum_is_refused_naming_the_limit_and_setting() -> None:
    with pytest.raises(InvalidRequest) as info:
        resolve_limits(Settings(), {"memory_bytes": 8 * 2**30, "processes": 5000})
    message = info.value.message
    assert "limits.memory_bytes must be at most 4294967296 (4 GiB)" in message
    assert "INTERPRETER_MAX_MEMORY_LIMIT" in message and "got 8589934592 (8 GiB)" in message
    assert "limits.processes must be at most 1024" in message


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("cpu_time_s", 0, "above 0"),
        ("memory_bytes", 2**20, r"at least 16777216 \(16 MiB\)"),
        ("processes", 2.5, "whole number"),
        ("bogus", 1, "not a limit"),
    ],
)
def test_below_the_minimum_or_unknown_is_refused(name: str, value: float, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        resolve_limits(Settings(), {name: value})


def test_a_default_above_its_maximum_refuses_to_start() -> None:
    settings = Settings(memory_limit_bytes=2**31, max_memory_limit_bytes=2**30)
    with pytest.raises(ConfigurationError, match="INTERPRETER_MEMORY_LIMIT .* must not exceed"):
        ResourceLimits.defaults(settings)


def test_describe_bytes() -> None:
    assert describe_bytes(256 * 2**20) == "256 MiB"
    assert describe_bytes(3 * 2**30) == "3 GiB"
    assert describe_bytes(1000) == "1000 bytes"


async def test_limits_survive_the_sql_store(tmp_path) -> None:
    store = SqlStore.sqlite(tmp_path / "jobs.sqlite3")
    await store.open()
    try:
        limits = resolve_limits(Settings(), {"memory_bytes": 2**28})
        job = Job(new_job_id(), JobRequest(code="", language="python", timeout_s=1, limits=limits))
        await store.create(job)
        stored = await store.get(job.id)
        assert stored is not None and stored.request.limits == limits
    finally:
        await store.close()


# -- through the API -----------------------------------------------------------------------------
async def test_request_limits_are_kept_and_shown_in_full_results(api) -> None:
    result = await api.run("print(1)", limits={"memory_bytes": 2**28, "cpu_time_s": 5})
    assert result["limits"]["memory_bytes"] == 2**28
    assert result["limits"]["cpu_time_s"] == 5
    assert result["limits"]["processes"] == api.settings.process_limit
    assert result["termination_reason"] == "exit"


async def test_limit_above_the_maximum_is_a_422_with_a_clear_detail(api) -> None:
    response = await api.client.post(
        "/execute", json={"code": "print(1)", "limits": {"memory_bytes": 2**40}}
    )
    assert response.status_code == 422
    assert "limits.memory_bytes must be at most" in response.json()["detail"]


async def test_unknown_or_invalid_limit_fields_are_a_422(api) -> None:
    for limits in ({"memory": 1}, {"processes": 0}, {"cpu_time_s": -1}):
        response = await api.client.post("/execute", json={"code": "1", "limits": limits})
        assert response.status_code == 422, limits
