"""Authentication: API keys, per-key job visibility, and refusing to start without a key."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.acceptance.server import ServerProcess, submit, tail, wait_final

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]

JSON = {"Content-Type": "application/json"}
JOB_ROUTES = [
    ("GET", "/jobs/{}/status"),
    ("GET", "/results/{}"),
    ("GET", "/jobs/{}/results"),
    ("POST", "/jobs/{}/cancel"),
    ("DELETE", "/jobs/{}"),
]


def test_keys_are_required_and_a_job_is_visible_only_to_its_key(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(INTERPRETER_AUTH="true", INTERPRETER_API_KEYS="k1,k2")
    anonymous = server.client()
    wrong = server.client(headers={"X-API-Key": "k3"})
    k1 = server.client(headers={"X-API-Key": "k1"})
    k2 = server.client(headers={"Authorization": "Bearer k2"})

    for client in (anonymous, wrong):
        response = client.post("/execute", json={"code": "print(1)"})
        assert response.status_code == 401, response.text
        assert response.json()["detail"]
        assert client.get("/jobs").status_code == 401

    job_id = submit(k1, "import time\ntime.sleep(0.5)\nprint('mine')\n")
    for method, template in JOB_ROUTES:
        path = template.format(job_id)
        assert anonymous.request(method, path).status_code == 401, path
        response = k2.request(method, path)
        assert response.status_code == 404, f"{method} {path}: {response.text}"
        assert response.json() == {"detail": f"Job not found: {job_id}"}
    assert job_id not in [job["job_id"] for job in k2.get("/jobs").json()["jobs"]]

    assert wait_final(k1, job_id)["status"] == "completed"  # k2's cancel did nothing
    assert k1.get(f"/results/{job_id}").json()["stdout"] == "mine\n"
    assert job_id in [job["job_id"] for job in k1.get("/jobs").json()["jobs"]]
    bearer_k1 = server.client(headers={"Authorization": "Bearer k1"})
    assert bearer_k1.get(f"/jobs/{job_id}/status").status_code == 200


def test_api_keys_alone_require_a_key_before_the_body_is_read(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(INTERPRETER_API_KEYS="k1", INTERPRETER_MAX_BODY_BYTES="65536")
    anonymous = server.client()
    k1 = server.client(headers={"X-API-Key": "k1"})
    huge = b'{"code": "' + b"x" * (8 * 2**20) + b'"}'

    for body in (b"{not json", b'{"code": 5}', huge):
        response = anonymous.post("/execute", content=body, headers=JSON)
        assert response.status_code == 401, response.text[:300]
        assert "API key" in response.json()["detail"]
    assert anonymous.get("/sandbox").status_code == 401
    assert anonymous.get("/jobs", params={"cursor": "9" * 30}).status_code == 401
    assert anonymous.get("/health").status_code == 200

    assert k1.post("/execute", content=huge, headers=JSON).status_code == 413
    assert k1.post("/execute", content=b"{not json", headers=JSON).status_code == 422
    assert wait_final(k1, submit(k1, "print('in')"))["status"] == "completed"


def test_api_keys_with_authentication_off_refuse_to_start_and_say_how(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(wait=False, INTERPRETER_AUTH="false", INTERPRETER_API_KEYS="k1")
    code = server.wait_exit(deadline_s=10)
    assert code != 0
    stderr = tail(server.stderr_path)
    assert "INTERPRETER_AUTH=false" in stderr, stderr
    assert "Unset INTERPRETER_AUTH" in stderr, stderr
    assert "Traceback" not in stderr, stderr


def test_authentication_without_keys_refuses_to_start_and_says_why(
    start_server: Callable[..., ServerProcess],
) -> None:
    started = time.monotonic()
    server = start_server(wait=False, INTERPRETER_AUTH="true")
    code = server.wait_exit(deadline_s=10)
    assert code != 0
    assert time.monotonic() - started < 10
    stderr = tail(server.stderr_path)
    assert "INTERPRETER_API_KEYS" in stderr, stderr
    assert "Traceback" not in stderr, stderr
