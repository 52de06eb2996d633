"""limits.processes: never below what the sandbox needs to start a job at all."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from interpreter.config import Settings
from interpreter.limits import LIMITS, MIN_PROCESSES


@pytest.mark.parametrize("processes", [0, 1, 2])
async def test_processes_below_what_a_job_needs_is_422_saying_the_minimum(
    api, processes: int
) -> None:
    response = await api.client.post(
        "/execute", json={"code": "print(1)", "limits": {"processes": processes}}
    )

    assert response.status_code == 422
    why = (
        f"limits.processes must be at least 3 (the sandbox's own processes need 2); got {processes}"
    )
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "limits", "processes"]
    assert error["msg"] == why
    assert response.json()["detail"] == f"Invalid body field 'limits.processes': {why}"
    assert api.store.jobs == {}


async def test_processes_at_the_minimum_is_accepted(api) -> None:
    response = await api.client.post(
        "/execute", json={"code": "print(1)", "limits": {"processes": 3}}
    )

    assert response.status_code == 200
    assert (await api.wait(response.json()["job_id"]))["status"] == "completed"


async def test_the_openapi_document_gives_the_processes_minimum(api) -> None:
    schemas = (await api.client.get("/openapi.json")).json()["components"]["schemas"]

    processes = schemas["LimitsRequest"]["properties"]["processes"]

    assert {"type": "integer", "minimum": 3, "maximum": 1024} in processes["anyOf"]


@pytest.mark.parametrize("field", ["process_limit", "max_process_limit"])
def test_the_server_cannot_be_configured_below_the_processes_minimum(tmp_path, field: str) -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 3"):
        Settings(data_dir=tmp_path, **{field: 2})


def test_every_processes_minimum_is_the_same() -> None:
    properties = Settings.model_json_schema()["properties"]
    floors = {
        properties[name]["minimum"]
        for name in ("INTERPRETER_PROCESS_LIMIT", "INTERPRETER_MAX_PROCESS_LIMIT")
    }

    assert floors == {MIN_PROCESSES} == {LIMITS["processes"].minimum} == {3}
