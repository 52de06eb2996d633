"""Bad input over the wire: the right 4xx with a JSON detail, never a 500; the server lives on."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance.server import ServerProcess, running_server, submit, wait_final

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]

MAX_CODE_BYTES = 2000
MAX_TIMEOUT_S = 60
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(
        tmp_path_factory.mktemp("bad-input"),
        INTERPRETER_MAX_CODE_BYTES=str(MAX_CODE_BYTES),
        INTERPRETER_MAX_TIMEOUT=str(MAX_TIMEOUT_S),
        INTERPRETER_RATE_LIMIT="10000/minute",  # every test submits; none tests the limit
    ) as server:
        yield server


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    client = server.client()
    yield client
    # whatever was sent, the server still runs a job afterwards
    job_id = submit(client, "print('still alive')")
    assert wait_final(client, job_id, deadline_s=10)["status"] == "completed"


def expect_error(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, f"HTTP {response.status_code}: {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and body.get("detail"), body
    assert "Traceback" not in response.text
    return body["detail"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"code": "print(1)", "language": ',  # cut short
        b"{'code': 'print(1)'}",  # not JSON
        b"",
        b"null",
        b'["print(1)"]',
        b'"print(1)"',
        b"\xff\xfe\x00garbage",
    ],
    ids=["truncated", "single-quotes", "empty", "null", "array", "string", "binary"],
)
def test_malformed_body_is_422(client: httpx.Client, raw: bytes) -> None:
    expect_error(client.post("/execute", content=raw, headers=JSON), 422)


def test_form_body_is_422(client: httpx.Client) -> None:
    expect_error(client.post("/execute", data={"code": "print(1)"}), 422)


@pytest.mark.parametrize(
    "body",
    [
        {"language": "python"},
        {"code": None},
        {"code": 123},
        {"code": ["print(1)"]},
        {"code": "print(1)", "language": 7},
        {"code": "print(1)", "timeout": "soon"},
        {"code": "print(1)", "timeout": [1]},
        {"code": "print(1)", "capture_files": "maybe"},
        {"code": "print(1)", "working_directory": 5},
        {"code": "print(1)", "environment_variables": ["A=1"]},
        {"code": "print(1)", "environment_variables": {"A": 1}},
        {"code": "print(1)", "environment_variables": {"A": None}},
        {"code": "print(1)", "metadata": "x"},
    ],
    ids=lambda body: ",".join(f"{k}={type(v).__name__}" for k, v in body.items()),
)
def test_wrong_types_are_422(client: httpx.Client, body: dict[str, Any]) -> None:
    expect_error(client.post("/execute", json=body), 422)


def test_code_over_the_limit_is_413(client: httpx.Client) -> None:
    detail = expect_error(client.post("/execute", json={"code": "#" * (MAX_CODE_BYTES + 1)}), 413)
    assert str(MAX_CODE_BYTES) in detail
    multibyte = "é" * (MAX_CODE_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
    expect_error(client.post("/execute", json={"code": multibyte}), 413)
    huge = "x" * (8 * 2**20)
    expect_error(client.post("/execute", json={"code": huge}), 413)


def test_code_at_the_limit_is_accepted(client: httpx.Client) -> None:
    code = "print('ok')" + " " * (MAX_CODE_BYTES - len("print('ok')"))
    job_id = submit(client, code)
    assert wait_final(client, job_id)["status"] == "completed"


def test_unknown_language_lists_the_supported_ones(client: httpx.Client) -> None:
    response = client.post("/execute", json={"code": "DISPLAY 'HI'.", "language": "cobol"})
    assert response.status_code in (400, 422)
    detail = expect_error(response, response.status_code)
    for name in ("python", "shell", "javascript"):
        assert name in detail


@pytest.mark.parametrize(
    "timeout",
    [-1, 0, -0.001, MAX_TIMEOUT_S + 0.5, 1e9],
    ids=["negative", "zero", "tiny-negative", "over-max", "huge"],
)
def test_out_of_range_timeout_is_422(client: httpx.Client, timeout: float) -> None:
    detail = expect_error(
        client.post("/execute", json={"code": "print(1)", "timeout": timeout}), 422
    )
    assert "timeout" in str(detail)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_timeout_is_422(client: httpx.Client, number: str) -> None:
    raw = b'{"code": "print(1)", "timeout": %s}' % number.encode()
    expect_error(client.post("/execute", content=raw, headers=JSON), 422)


@pytest.mark.parametrize(
    "directory",
    ["../outside", "a/../../outside", "/etc", "/", "/tmp", ".", "escape-link", "escape-link/sub"],
)
def test_working_directory_escaping_the_root_is_422(
    server: ServerProcess, client: httpx.Client, directory: str
) -> None:
    link = server.workspace_root / "escape-link"
    if not link.is_symlink():
        os.symlink(server.directory, link)  # a symlink inside the root pointing out of it
    body = {"code": "open('x', 'w').write('x')", "working_directory": directory}
    detail = expect_error(client.post("/execute", json=body), 422)
    assert "working_directory" in detail


def test_working_directory_with_nul_is_422(client: httpx.Client) -> None:
    body = {"code": "print(1)", "working_directory": "a\x00b"}
    expect_error(client.post("/execute", json=body), 422)


@pytest.mark.parametrize(
    "environment",
    [{"1BAD": "x"}, {"A=B": "x"}, {"": "x"}, {"OK": "nul\x00byte"}],
    ids=["digit-first", "equals", "empty-name", "nul-value"],
)
def test_invalid_environment_is_422(client: httpx.Client, environment: dict[str, str]) -> None:
    body = {"code": "print(1)", "environment_variables": environment}
    expect_error(client.post("/execute", json=body), 422)


def test_code_that_is_not_valid_unicode_never_causes_an_internal_error(
    client: httpx.Client,
) -> None:
    raw = b'{"code": "print(\\"\\ud800\\")", "language": "python"}'  # a lone surrogate
    response = client.post("/execute", content=raw, headers=JSON)
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        job_id = response.json()["job_id"]
        final = wait_final(client, job_id)
        assert final["status"] in ("completed", "failed")
        assert "internal error" not in (final["error_message"] or ""), final


@pytest.mark.parametrize(
    "job_id",
    [str(uuid.uuid4()), "not-a-uuid", "12345", str(uuid.uuid4()).upper(), "%20", "a" * 300],
    ids=["unknown", "word", "digits", "upper-unknown", "space", "long"],
)
@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "/jobs/{}/status"),
        ("GET", "/results/{}"),
        ("GET", "/jobs/{}/results"),
        ("POST", "/jobs/{}/cancel"),
        ("DELETE", "/jobs/{}"),
    ],
)
def test_unknown_or_malformed_job_id_is_404(
    server: ServerProcess, method: str, template: str, job_id: str
) -> None:
    response = server.client().request(method, template.format(job_id))
    detail = expect_error(response, 404)
    assert detail.startswith("Job not found"), detail


def test_unknown_job_detail_is_the_specs(server: ServerProcess) -> None:
    job_id = str(uuid.uuid4())
    response = server.client().get(f"/jobs/{job_id}/status")
    assert response.status_code == 404
    assert response.json() == {"detail": f"Job not found: {job_id}"}


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": -1},
        {"limit": 100000},
        {"limit": "x"},
        {"status": "bogus"},
        {"cursor": "abc"},
        {"cursor": "-1"},
        {"cursor": "9" * 26},
        {"cursor": str(2**63)},
        {"cursor": "\u00b2"},
    ],
    ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()),
)
def test_bad_jobs_list_query_is_422(client: httpx.Client, params: dict[str, Any]) -> None:
    expect_error(client.get("/jobs", params=params), 422)


def test_cursor_out_of_range_says_the_range(client: httpx.Client) -> None:
    detail = expect_error(client.get("/jobs", params={"cursor": "9" * 26}), 422)
    assert detail == (
        "cursor must be the next_cursor of a previous page: "
        "a whole number from 0 to 9223372036854775807"
    )


@pytest.mark.parametrize("wait", ["nan", "inf", "-1", "61"])
def test_wait_out_of_range_is_422(client: httpx.Client, wait: str) -> None:
    job_id = submit(client, "print(1)")
    expect_error(client.get(f"/jobs/{job_id}/status", params={"wait": wait}), 422)


@pytest.mark.parametrize("processes", [0, 1, 2])
def test_processes_below_what_the_sandbox_needs_is_422_saying_the_minimum(
    client: httpx.Client, processes: int
) -> None:
    body = {"code": "print(1)", "limits": {"processes": processes}}
    detail = expect_error(client.post("/execute", json=body), 422)
    assert "limits.processes must be at least 3 (the sandbox's own processes need 2)" in str(detail)


def test_the_fewest_processes_allowed_still_run_a_job(client: httpx.Client) -> None:
    job_id = submit(client, "print('three')", limits={"processes": 3})
    assert wait_final(client, job_id)["status"] == "completed"
    assert client.get(f"/results/{job_id}").json()["stdout"] == "three\n"


def test_unknown_route_and_method_are_json_4xx(server: ServerProcess) -> None:
    client = server.client()
    expect_error(client.get("/no-such-route"), 404)
    expect_error(client.get("/execute"), 405)
