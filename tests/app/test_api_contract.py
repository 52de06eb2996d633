"""The contract clients are generated from: integer times, one error shape, strict request
types, and an OpenAPI document that states what the server enforces."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from interpreter.environment import REFUSED_NAMES

KEY = {"X-API-Key": "key-a"}
ERROR_STATUSES = {"400", "401", "404", "409", "413", "422", "429", "503"}


async def openapi(api) -> dict[str, Any]:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        op["operationId"]: op for methods in document["paths"].values() for op in methods.values()
    }


def assert_error_shape(response: httpx.Response) -> None:
    """``{"detail": "<one sentence>"}``, plus ``errors`` on a 422 only."""
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"], body
    assert "\n" not in body["detail"] and "Traceback" not in body["detail"]
    if response.status_code == 422 and "errors" in body:
        assert set(body) == {"detail", "errors"}
        for error in body["errors"]:
            assert set(error) == {"loc", "msg", "type"}
    else:
        assert set(body) == {"detail"}, body


# -- 1. execution_time_ms -----------------------------------------------------------------------
async def test_execution_time_ms_is_an_integer_with_the_precise_value_beside_it(api) -> None:
    job_id = await api.submit("import time; time.sleep(0.05)")
    status = await api.wait(job_id)
    full = await api.results(job_id)
    listed = (await api.client.get("/jobs")).json()["jobs"][0]

    for body in (status, full, listed):
        assert isinstance(body["execution_time_ms"], int), body["execution_time_ms"]
        assert isinstance(body["execution_time_precise_ms"], float)
        assert body["execution_time_ms"] == int(body["execution_time_precise_ms"] + 0.5)
        assert body["execution_time_ms"] >= 50


async def test_execution_time_ms_is_null_before_the_job_ran(make_api) -> None:
    api = await make_api(max_jobs=1)
    blocker = await api.submit("import time; time.sleep(30)", timeout=30)
    waiting = await api.submit("print(1)")

    status = await api.status(waiting)

    assert status["status"] == "pending"
    assert status["execution_time_ms"] is None and status["execution_time_precise_ms"] is None
    for job_id in (waiting, blocker):
        await api.client.post(f"/jobs/{job_id}/cancel")


async def test_the_openapi_document_says_execution_time_ms_is_an_integer(api) -> None:
    schemas = (await openapi(api))["components"]["schemas"]

    for model in ("StatusResponse", "FullResult"):
        prop = schemas[model]["properties"]["execution_time_ms"]
        assert {"type": "integer"} in prop["anyOf"]
        precise = schemas[model]["properties"]["execution_time_precise_ms"]
        assert {"type": "number"} in precise["anyOf"]


# -- 2. one error shape -------------------------------------------------------------------------
async def test_a_validation_error_is_a_sentence_naming_the_field_with_every_reason_listed(
    api,
) -> None:
    response = await api.client.post(
        "/execute", json={"code": "print(1)", "timeout": "5", "capture_files": 0}
    )

    assert response.status_code == 422
    assert_error_shape(response)
    body = response.json()
    assert body["detail"] == (
        "Invalid body field 'timeout': Input should be a valid number "
        "(and 1 more error, listed in errors)"
    )
    assert [error["loc"] for error in body["errors"]] == [
        ["body", "timeout"],
        ["body", "capture_files"],
    ]
    assert body["errors"][1]["type"] == "bool_type"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"code": "print(1)",', "Invalid request body: JSON decode error"),
        (b"{}", "Invalid body field 'code': Field required"),
        (b"[]", "Invalid request body: Input should be a valid dictionary or object"),
    ],
)
async def test_a_body_that_is_not_a_request_says_so_in_a_sentence(
    api, body: bytes, detail: str
) -> None:
    response = await api.client.post(
        "/execute", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert_error_shape(response)
    assert response.json()["detail"].startswith(detail), response.json()["detail"]


async def test_a_model_level_refusal_reads_without_pydantics_prefix(api) -> None:
    response = await api.client.post(
        "/execute", json={"code": "print(1)", "metadata": {"x": "y" * 70_000}}
    )

    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid request body: metadata is ")
    assert "Value error" not in response.text


async def test_every_error_status_answers_the_same_shape(make_api) -> None:
    api = await make_api(
        enable_authentication=True, api_keys=["key-a"], max_body_bytes=1024, rate_limit="3/minute"
    )
    answers = [
        await api.client.get(f"/jobs/{uuid.uuid4()}/status", headers=KEY),  # 404
        await api.client.get("/no/such/route", headers=KEY),  # 404 of the router
        await api.client.put("/execute", headers=KEY),  # 405
        await api.client.get("/jobs", params={"limit": 0}, headers=KEY),  # 422, query
        await api.client.get("/jobs", params={"cursor": "x"}, headers=KEY),  # 422, ours
        await api.client.post("/execute", json={"code": "x" * 2000}, headers=KEY),  # 413
        await api.client.post("/execute", json={"code": "print(1)"}),  # 401
    ]
    done = await api.client.post(
        "/execute", params={"wait": 10}, json={"code": "print(1)"}, headers=KEY
    )
    job_id = done.json()["job_id"]
    answers.append(await api.client.post(f"/jobs/{job_id}/cancel", headers=KEY))  # 409
    answers.append(await api.client.post("/execute", json={"code": "print(1)"}, headers=KEY))
    answers.append(await api.client.post("/execute", json={"code": "print(1)"}, headers=KEY))

    statuses = [answer.status_code for answer in answers]
    assert statuses == [404, 404, 405, 422, 422, 413, 401, 409, 200, 429], statuses
    for answer in answers:
        if answer.status_code >= 400:
            assert_error_shape(answer)


# -- 3. the OpenAPI document --------------------------------------------------------------------
async def test_with_authentication_the_document_declares_the_key_schemes(make_api) -> None:
    api = await make_api(enable_authentication=True, api_keys=["key-a"])
    document = await openapi(api)

    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key of this server (INTERPRETER_API_KEYS)",
    }
    assert schemes["BearerKey"]["scheme"] == "bearer"
    ops = operations(document)
    for name in ("execute", "get_job_status", "get_result", "get_full_result", "cancel_job"):
        assert ops[name]["security"] == [{"ApiKeyHeader": []}, {"BearerKey": []}]
        assert "401" in ops[name]["responses"]
    for name in ("get_health", "list_languages", "get_metrics"):
        assert "security" not in ops[name] and "401" not in ops[name]["responses"]


async def test_without_authentication_the_document_asks_for_no_key(api) -> None:
    document = await openapi(api)

    assert "securitySchemes" not in document["components"]
    for operation in operations(document).values():
        assert "security" not in operation and "401" not in operation["responses"]


async def test_every_error_answer_is_documented_with_the_error_shape_and_an_example(
    make_api,
) -> None:
    api = await make_api(enable_authentication=True, api_keys=["key-a"])
    document = await openapi(api)
    ops = operations(document)

    assert set(ops["execute"]["responses"]) == {"200", *ERROR_STATUSES} - {"404", "409"}
    for name in ("get_job_status", "get_result", "get_full_result"):
        assert {"401", "404", "422", "503"} <= set(ops[name]["responses"])
    assert {"401", "404", "409", "503"} <= set(ops["cancel_job"]["responses"])
    for name, operation in ops.items():
        for status, response in operation["responses"].items():
            if status not in ERROR_STATUSES or name == "get_health":
                continue
            content = response["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}, name
            assert isinstance(content["example"]["detail"], str), (name, status)
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"]
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    error = schemas["ErrorResponse"]
    assert error["required"] == ["detail"]
    assert error["properties"]["detail"]["type"] == "string"


async def test_the_document_states_this_servers_constraints(make_api) -> None:
    api = await make_api(
        max_timeout_s=120.0, max_memory_limit_bytes=2**30, max_cpu_time_limit_s=90.0
    )
    schemas = (await openapi(api))["components"]["schemas"]
    request = schemas["ExecuteRequest"]["properties"]
    limits = schemas["LimitsRequest"]["properties"]

    timeout = next(b for b in request["timeout"]["anyOf"] if b["type"] == "number")
    assert (timeout["exclusiveMinimum"], timeout["maximum"]) == (0, 120.0)
    languages = (await api.client.get("/languages")).json()
    names = {name for lang in languages for name in (lang["name"], *lang["aliases"])}
    assert set(request["language"]["enum"]) == names
    assert {"py", "bash", "js"} <= names
    memory = next(b for b in limits["memory_bytes"]["anyOf"] if b["type"] == "integer")
    assert (memory["minimum"], memory["maximum"]) == (16 * 2**20, 2**30)
    cpu = next(b for b in limits["cpu_time_s"]["anyOf"] if b["type"] == "number")
    assert (cpu["exclusiveMinimum"], cpu["maximum"]) == (0, 90.0)
    assert request["working_directory"]["anyOf"][0]["maxLength"] == 1024


async def test_the_documents_environment_names_are_the_ones_the_server_takes(api) -> None:
    env = (await openapi(api))["components"]["schemas"]["ExecuteRequest"]["properties"][
        "environment_variables"
    ]
    names = env["propertyNames"]
    refused_exactly = set(names["not"]["anyOf"][0]["enum"])
    refused_prefix = re.compile(names["not"]["anyOf"][1]["pattern"])
    valid = re.compile(names["pattern"])

    def schema_allows(name: str) -> bool:
        return (
            bool(valid.search(name))
            and name not in refused_exactly
            and not (refused_prefix.search(name))
        )

    assert refused_exactly == set(REFUSED_NAMES)
    for name in (
        "GREETING",
        "_x1",
        "PYTHONPATH",
        "LD_PRELOAD",
        "BASH_FUNC_x%%",
        "1A",
        "A-B",
        "IFS",
    ):
        response = await api.client.post(
            "/execute", json={"code": "print(1)", "environment_variables": {name: "v"}}
        )
        assert (response.status_code == 200) == schema_allows(name), (name, response.text)
    assert re.search(env["additionalProperties"]["pattern"], "a\x00b") is None


# -- 4. strict request types --------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields",
    [
        {"timeout": "5"},
        {"timeout": True},
        {"capture_files": 0},
        {"capture_files": "true"},
        {"code": 1},
        {"language": ["python"]},
        {"limits": {"memory_bytes": "268435456"}},
        {"limits": {"memory_bytes": 268435456.5}},
        {"limits": {"processes": True}},
        {"limits": {"cpu_time_s": "10"}},
        {"environment_variables": {"A": 1}},
    ],
)
async def test_request_fields_are_strictly_typed(api, fields: dict[str, Any]) -> None:
    response = await api.client.post("/execute", json={"code": "print(1)", **fields})

    assert response.status_code == 422, response.text
    assert_error_shape(response)
    assert api.store.jobs == {}


async def test_numbers_are_read_as_json_schema_reads_them(api) -> None:
    """5 is a number of seconds; 268435456.0 is an integer (JSON Schema's "integer")."""
    limits = {"cpu_time_s": 3, "processes": 8.0, "memory_bytes": 268435456.0}
    body = {"code": "print(1)", "timeout": 5, "limits": limits}
    response = await api.client.post("/execute", json=body)

    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    assert (await api.wait(job_id))["status"] == "completed"
    ran_with = (await api.results(job_id))["limits"]
    assert (ran_with["processes"], ran_with["memory_bytes"]) == (8, 268435456)


async def test_query_parameters_stay_lax(api) -> None:
    response = await api.client.get("/jobs", params={"limit": "5"})

    assert response.status_code == 200


# -- 5. the default rate limit ------------------------------------------------------------------
async def test_without_authentication_a_batch_of_200_is_not_throttled(api) -> None:
    statuses = [
        (await api.client.post("/execute", json={"code": "true", "language": "shell"})).status_code
        for _ in range(200)
    ]

    assert statuses == [200] * 200


async def test_with_authentication_a_batch_of_200_from_one_key_is_not_throttled(make_api) -> None:
    api = await make_api(enable_authentication=True, api_keys=["key-a"])
    body = {"code": "true", "language": "shell"}

    statuses = [
        (await api.client.post("/execute", json=body, headers=KEY)).status_code for _ in range(200)
    ]

    assert statuses == [200] * 200
