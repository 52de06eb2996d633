"""Bad input and unknown jobs: clear 4xx answers, never a 500 or a stack trace.

The ``api`` fixture fails any test that sees a 500 or a traceback in an error response.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

JOB_ROUTES = [
    ("GET", "/jobs/{id}/status"),
    ("GET", "/results/{id}"),
    ("GET", "/jobs/{id}/results"),
    ("POST", "/jobs/{id}/cancel"),
    ("DELETE", "/jobs/{id}"),
]


async def post_raw(api, body: bytes):
    return await api.client.post(
        "/execute", content=body, headers={"content-type": "application/json"}
    )


def detail_text(response) -> str:
    return json.dumps(response.json()["detail"])


# -- unknown and malformed job ids -------------------------------------------------------------
@pytest.mark.parametrize(("method", "route"), JOB_ROUTES)
async def test_unknown_job_is_404_with_the_spec_detail(api, method: str, route: str) -> None:
    job_id = str(uuid.uuid4())

    response = await api.client.request(method, route.format(id=job_id))

    assert response.status_code == 404
    assert response.json() == {"detail": f"Job not found: {job_id}"}


@pytest.mark.parametrize(("method", "route"), JOB_ROUTES)
@pytest.mark.parametrize(
    "job_id", ["invalid-job-id", "123", "550e8400-e29b-41d4-a716-44665544000z", "' OR 1=1 --"]
)
async def test_malformed_job_id_is_the_same_404(api, method: str, route: str, job_id: str) -> None:
    response = await api.client.request(method, route.format(id=job_id))

    assert response.status_code == 404
    assert response.json() == {"detail": f"Job not found: {job_id}"}


# -- invalid bodies ------------------------------------------------------------------------------
async def test_malformed_json_is_422(api) -> None:
    response = await post_raw(api, b'{"code": "print(1)",')

    assert response.status_code == 422
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"code": 123},
        {"code": "print(1)", "timeout": "abc"},
        {"code": "print(1)", "language": 5},
        {"code": "print(1)", "capture_files": "maybe"},
        {"code": "print(1)", "environment_variables": ["A=1"]},
        {"code": "print(1)", "environment_variables": {"A": 1}},
        {"code": "print(1)", "metadata": ["not", "an", "object"]},
        {"code": "print(1)", "working_directory": 7},
        [],
        "print(1)",
        None,
    ],
)
async def test_wrong_types_are_422(api, body) -> None:
    response = await api.client.post("/execute", json=body)

    assert response.status_code == 422
    assert response.json()["detail"]


async def test_missing_code_is_422_naming_the_field(api) -> None:
    response = await api.client.post("/execute", json={"language": "python"})

    assert response.status_code == 422
    assert "code" in detail_text(response)


async def test_validation_errors_do_not_echo_submitted_values(api) -> None:
    response = await api.client.post(
        "/execute",
        json={"code": "print(1)", "environment_variables": {"DB_TOKEN": 98765432101234}},
    )

    assert response.status_code == 422
    assert "98765432101234" not in response.text


async def test_unknown_language_is_422_listing_the_supported_ones(api) -> None:
    response = await api.client.post("/execute", json={"code": "x", "language": "cobol"})

    assert response.status_code == 422
    detail = detail_text(response)
    assert "cobol" in detail
    for name in ("python", "shell", "javascript"):
        assert name in detail


@pytest.mark.parametrize("timeout", [0, -1, 301, 1e9])
async def test_timeout_out_of_range_is_422(api, timeout: float) -> None:
    response = await api.client.post("/execute", json={"code": "print(1)", "timeout": timeout})

    assert response.status_code == 422
    assert "timeout" in detail_text(response)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
async def test_non_finite_timeout_is_422(api, literal: bytes) -> None:
    response = await post_raw(api, b'{"code": "print(1)", "timeout": ' + literal + b"}")

    assert response.status_code == 422


async def test_timeout_above_a_configured_maximum_is_422(make_api) -> None:
    api = await make_api(max_timeout_s=5, default_timeout_s=2)

    response = await api.client.post("/execute", json={"code": "print(1)", "timeout": 6})

    assert response.status_code == 422
    assert "5" in detail_text(response)
    assert (await api.client.post("/execute", json={"code": "1", "timeout": 5})).status_code == 200


async def test_code_over_the_configured_size_is_413(make_api) -> None:
    api = await make_api(max_code_bytes=64)

    too_big = await api.client.post("/execute", json={"code": "#" * 65})
    just_fits = await api.client.post("/execute", json={"code": "#" * 64})

    assert too_big.status_code == 413
    assert "64" in detail_text(too_big)
    assert just_fits.status_code == 200
    await api.wait(just_fits.json()["job_id"])


async def test_code_size_counts_bytes_not_characters(make_api) -> None:
    api = await make_api(max_code_bytes=64)

    response = await api.client.post("/execute", json={"code": "#" + "é" * 40})  # 81 bytes

    assert response.status_code == 413


# -- working directory ---------------------------------------------------------------------------
@pytest.mark.parametrize("directory", ["../x", "a/../../x", "/etc", "/"])
async def test_working_directory_outside_the_root_is_422(api, directory: str) -> None:
    response = await api.client.post(
        "/execute", json={"code": "print(1)", "working_directory": directory}
    )

    assert response.status_code == 422
    assert "working_directory" in detail_text(response)


@pytest.mark.parametrize(
    "directory",
    ["..", "../x", "a/../../x", "/etc", "/", "/tmp/elsewhere", "escape", "escape/deeper"],
)
async def test_a_refused_working_directory_never_shows_a_host_path(
    api, tmp_path, directory: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    link = api.workspace_root / "escape"
    if not link.is_symlink():
        os.symlink(outside, link)  # inside the root, pointing out of it

    response = await api.client.post(
        "/execute", json={"code": "print(1)", "working_directory": directory}
    )

    assert response.status_code == 422
    text = response.text
    for host_path in {str(api.settings.data_dir), str(api.workspace_root), str(tmp_path)}:
        assert host_path not in text, f"{directory!r}: {text}"


async def test_symlink_inside_the_root_pointing_out_is_422(api, tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, api.workspace_root / "escape")

    for directory in ("escape", "escape/deeper", str(api.workspace_root / "escape")):
        response = await api.client.post(
            "/execute", json={"code": "print(1)", "working_directory": directory}
        )
        assert response.status_code == 422, directory
    assert list(outside.iterdir()) == []


async def test_working_directory_that_is_a_file_is_422(api) -> None:
    (api.workspace_root / "plain.txt").write_text("x")

    response = await api.client.post(
        "/execute", json={"code": "print(1)", "working_directory": "plain.txt"}
    )

    assert response.status_code == 422


async def test_absolute_working_directory_inside_the_root_is_accepted(api) -> None:
    target = api.workspace_root / "abs" / "nested"

    body = await api.run("import os\nprint(os.getcwd())", working_directory=str(target))

    assert body["status"] == "completed"
    assert os.path.realpath(body["stdout"].strip()) == str(target)


# -- environment variables -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["1BAD", "A=B", "", "WITH SPACE", "A-B", "É"])
async def test_invalid_environment_variable_name_is_422(api, name: str) -> None:
    response = await api.client.post(
        "/execute", json={"code": "print(1)", "environment_variables": {name: "x"}}
    )

    assert response.status_code == 422
    assert "environment" in detail_text(response)


async def test_nul_byte_in_an_environment_value_is_422(api) -> None:
    response = await api.client.post(
        "/execute", json={"code": "print(1)", "environment_variables": {"A": "a\x00b"}}
    )

    assert response.status_code == 422


# -- hostile input never becomes a 500 -----------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b'{"code": "print(1)", "language": "\\ud800"}',
        b'{"code": "print(1)", "environment_variables": {"\\ud800": "x"}}',
        b'{"code": "print(1)", "working_directory": "\\ud800"}',
        b'{"code": "print(1)", "working_directory": "a\\u0000b"}',
        b"\xff\xfe\xfd",
    ],
    ids=["surrogate-language", "surrogate-env-name", "surrogate-workdir", "nul-workdir", "binary"],
)
async def test_hostile_submission_is_a_client_error(api, body: bytes) -> None:
    response = await post_raw(api, body)

    assert 400 <= response.status_code < 500
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "metadata",
    [b'{"k": "\\ud800"}', b'{"a":' * 600 + b"1" + b"}" * 600],
    ids=["surrogate", "nested-600-deep"],
)
async def test_accepted_metadata_never_breaks_reading_the_job_or_the_list(
    api, metadata: bytes
) -> None:
    response = await post_raw(api, b'{"code": "print(1)", "metadata": ' + metadata + b"}")

    assert response.status_code in (200, 422)
    if response.status_code == 422:
        return
    job_id = response.json()["job_id"]
    assert (await api.wait(job_id))["status"] == "completed"
    assert (await api.client.get(f"/jobs/{job_id}/results")).status_code == 200
    assert (await api.client.get("/jobs")).status_code == 200


async def test_code_with_a_lone_surrogate_is_refused_or_fails_cleanly(api) -> None:
    response = await post_raw(api, b'{"code": "print(\'\\ud800 CODE-SECRET\')"}')

    assert response.status_code in (200, 422)
    if response.status_code == 422:
        return
    status = await api.wait(response.json()["job_id"])
    assert status["status"] == "failed"
    assert not status["error_message"].startswith("internal error")
    assert "CODE-SECRET" not in status["error_message"]


async def test_unknown_routes_and_methods_answer_json(api) -> None:
    missing = await api.client.get("/no/such/route")
    wrong_method = await api.client.put("/execute", json={"code": "1"})

    assert missing.status_code == 404
    assert missing.json()["detail"]
    assert wrong_method.status_code == 405
    assert wrong_method.json()["detail"]


async def test_sessions_turned_off_answer_501_saying_why(make_api) -> None:
    api = await make_api(sessions=False)

    for method, route in (("POST", "/sessions"), ("GET", "/sessions"), ("GET", "/api/kernels")):
        response = await api.client.request(method, route, json={})

        assert response.status_code == 501, response.text
        assert "INTERPRETER_SESSIONS=false" in response.json()["detail"], route
