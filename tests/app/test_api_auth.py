"""API keys (a job is visible only to the key that created it) and CORS."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from interpreter.api.app import create_app
from interpreter.config import Settings
from interpreter.errors import ConfigurationError

K1 = {"X-API-Key": "k1"}
K2 = {"X-API-Key": "k2"}
JSON = {"Content-Type": "application/json"}
JOB_ID = "550e8400-e29b-41d4-a716-446655440000"


@pytest.fixture
async def secured(make_api):
    return await make_api(enable_authentication=True, api_keys=["k1", "k2"])


async def test_no_key_is_401_with_a_json_detail(secured) -> None:
    job_id = "550e8400-e29b-41d4-a716-446655440000"
    for method, path in [
        ("POST", "/execute"),
        ("GET", "/jobs"),
        ("GET", f"/jobs/{job_id}/status"),
        ("GET", f"/results/{job_id}"),
        ("POST", f"/jobs/{job_id}/cancel"),
    ]:
        response = await secured.client.request(method, path, json={"code": "print(1)"})
        assert response.status_code == 401, path
        assert "key" in response.json()["detail"].lower()


async def test_wrong_key_is_401(secured) -> None:
    for headers in ({"X-API-Key": "nope"}, {"Authorization": "Bearer nope"}, {"X-API-Key": ""}):
        response = await secured.client.post("/execute", json={"code": "print(1)"}, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["detail"]


async def test_x_api_key_and_bearer_token_both_work(secured) -> None:
    by_header = await secured.client.post("/execute", json={"code": "1"}, headers=K1)
    by_bearer = await secured.client.post(
        "/execute", json={"code": "1"}, headers={"Authorization": "Bearer k1"}
    )

    assert by_header.status_code == 200
    assert by_bearer.status_code == 200
    job_id = by_header.json()["job_id"]
    bearer_view = await secured.client.get(
        f"/jobs/{job_id}/status", headers={"Authorization": "Bearer k1"}
    )
    assert bearer_view.status_code == 200  # the same key, however it is sent


async def test_a_job_is_invisible_to_another_key(secured) -> None:
    secured.client.headers.update(K1)  # the helpers act as k1; k2 is passed explicitly
    job_id = await secured.submit("print('mine')")
    await secured.wait(job_id)
    not_found = {"detail": f"Job not found: {job_id}"}

    for method, path in [
        ("GET", f"/jobs/{job_id}/status"),
        ("GET", f"/results/{job_id}"),
        ("GET", f"/jobs/{job_id}/results"),
        ("POST", f"/jobs/{job_id}/cancel"),
        ("DELETE", f"/jobs/{job_id}"),
    ]:
        response = await secured.client.request(method, path, headers=K2)
        assert response.status_code == 404, path
        assert response.json() == not_found
    assert (await secured.client.get("/jobs", headers=K2)).json()["jobs"] == []
    mine = (await secured.client.get("/jobs")).json()["jobs"]
    assert [j["job_id"] for j in mine] == [job_id]
    assert (await secured.client.get(f"/results/{job_id}")).json()["stdout"] == "mine\n"


async def test_another_key_cannot_cancel_a_running_job(make_api) -> None:
    api = await make_api(enable_authentication=True, api_keys=["k1", "k2"], max_jobs=1)
    api.client.headers.update(K1)
    job_id = await api.submit("import time\ntime.sleep(30)", timeout=30)
    await api.wait_for(job_id, {"running"})

    response = await api.client.post(f"/jobs/{job_id}/cancel", headers=K2)

    assert response.status_code == 404
    assert (await api.status(job_id))["status"] == "running"
    assert (await api.client.post(f"/jobs/{job_id}/cancel")).status_code == 200


async def test_health_stays_open_with_authentication(secured) -> None:
    response = await secured.client.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "healthy"


async def test_languages_metrics_and_the_api_documentation_stay_open(secured) -> None:
    for path in ("/languages", "/metrics", "/docs", "/redoc", "/openapi.json"):
        response = await secured.client.get(path)
        assert response.status_code == 200, path


async def test_sandbox_and_unknown_paths_need_a_key(secured) -> None:
    for path in ("/sandbox", "/no-such-route"):
        response = await secured.client.get(path)
        assert response.status_code == 401, path
        assert "key" in response.json()["detail"].lower()
    assert (await secured.client.get("/sandbox", headers=K1)).status_code == 200


# -- the key is checked before the body is read -------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\x80", b"", b"null", b'{"code": 5, "language": []}', b'{"bogus": 1}'],
    ids=["malformed", "undecodable", "empty", "null", "wrong-types", "unknown-field"],
)
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "guess"}], ids=["no-key", "wrong-key"])
async def test_a_body_that_does_not_parse_without_a_valid_key_is_401(
    secured, body: bytes, headers: dict[str, str]
) -> None:
    response = await secured.client.post("/execute", content=body, headers={**JSON, **headers})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "key" in response.json()["detail"].lower()


async def test_a_body_over_the_size_limit_without_a_key_is_401(make_api) -> None:
    api = await make_api(api_keys=["k1"], max_body_bytes=1024)
    body = json.dumps({"code": "x" * 4000}).encode()

    without = await api.client.post("/execute", content=body, headers=JSON)
    with_key = await api.client.post("/execute", content=body, headers={**JSON, **K1})

    assert without.status_code == 401
    assert with_key.status_code == 413  # a valid key reaches the size check
    assert api.store.jobs == {}


async def test_a_chunked_body_without_a_key_is_401_without_reading_any_of_it(make_api) -> None:
    api = await make_api(api_keys=["k1"], max_body_bytes=1024)
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for piece in (b'{"code": "', b"x" * 4000, b'"}'):
            sent += 1
            yield piece

    response = await api.client.post("/execute", content=chunks(), headers=JSON)

    assert response.status_code == 401
    assert sent == 0


async def test_bad_query_parameters_without_a_key_are_401(secured) -> None:
    for path in ("/jobs?cursor=abc", "/jobs?limit=0", f"/jobs/{JOB_ID}/status?wait=-1"):
        response = await secured.client.get(path)
        assert response.status_code == 401, path


async def test_with_a_valid_key_a_body_that_does_not_parse_is_still_422(secured) -> None:
    response = await secured.client.post("/execute", content=b"{not json", headers={**JSON, **K1})

    assert response.status_code == 422


# -- when authentication is on -------------------------------------------------------------------
async def test_api_keys_alone_turn_authentication_on(make_api) -> None:
    api = await make_api(api_keys=["k1"])

    anonymous = await api.client.post("/execute", json={"code": "print(1)"})
    keyed = await api.client.post("/execute", json={"code": "print(1)"}, headers=K1)

    assert anonymous.status_code == 401
    assert keyed.status_code == 200


async def test_a_key_file_alone_turns_authentication_on(make_api, tmp_path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("from-file\n")
    api = await make_api(api_keys_file=key_file)

    assert (await api.client.get("/jobs")).status_code == 401
    assert (await api.client.get("/jobs", headers={"X-API-Key": "from-file"})).status_code == 200


async def test_api_keys_from_the_environment_turn_authentication_on(make_api, monkeypatch) -> None:
    monkeypatch.setenv("INTERPRETER_API_KEYS", "env-key")
    api = await make_api()

    assert (await api.client.get("/jobs")).status_code == 401
    assert (await api.client.get("/jobs", headers={"X-API-Key": "env-key"})).status_code == 200


async def test_without_keys_or_authentication_the_server_is_open(api) -> None:
    assert (await api.client.get("/jobs")).status_code == 200
    assert (await api.client.get("/sandbox")).status_code == 200


@pytest.mark.parametrize("source", ["INTERPRETER_API_KEYS", "INTERPRETER_API_KEYS_FILE"])
def test_api_keys_with_authentication_explicitly_off_refuse_to_start_saying_how(
    tmp_path, source: str
) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("k1\n")
    keys = {"api_keys": ["k1"]} if source == "INTERPRETER_API_KEYS" else {"api_keys_file": key_file}
    settings = Settings(data_dir=tmp_path, enable_authentication=False, **keys)

    with pytest.raises(ConfigurationError) as info:
        create_app(settings)

    message = info.value.message
    assert "INTERPRETER_AUTH=false" in message
    assert "Unset INTERPRETER_AUTH" in message and "set it to true" in message


def test_authentication_off_from_the_environment_with_keys_refuses_to_start(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("INTERPRETER_AUTH", "false")
    monkeypatch.setenv("INTERPRETER_API_KEYS", "k1")

    with pytest.raises(ConfigurationError, match="INTERPRETER_AUTH=false"):
        create_app(Settings(data_dir=tmp_path))


def test_api_keys_set_to_nothing_refuse_to_start_rather_than_run_open(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("INTERPRETER_API_KEYS", "")

    with pytest.raises(ConfigurationError) as info:
        create_app(Settings(data_dir=tmp_path))

    assert "no API key is configured" in info.value.message


def test_an_unreadable_key_file_refuses_to_start_naming_the_setting(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, api_keys_file=tmp_path / "missing.txt")

    with pytest.raises(ConfigurationError, match="cannot read INTERPRETER_API_KEYS_FILE"):
        create_app(settings)


async def test_keys_can_come_from_a_file(make_api, tmp_path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# one key per line\nfrom-file\n\n")
    api = await make_api(enable_authentication=True, api_keys_file=key_file)

    allowed = await api.client.get("/jobs", headers={"X-API-Key": "from-file"})
    comment = await api.client.get("/jobs", headers={"X-API-Key": "# one key per line"})

    assert allowed.status_code == 200
    assert comment.status_code == 401


def test_authentication_without_keys_refuses_to_start_saying_how(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, enable_authentication=True)

    with pytest.raises(ConfigurationError) as info:
        create_app(settings)

    assert "INTERPRETER_API_KEYS" in info.value.message


# -- CORS ----------------------------------------------------------------------------------------
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


async def test_cors_preflight_from_an_allowed_origin_is_allowed(make_api) -> None:
    api = await make_api(enable_cors=True, cors_origins=["https://app.example"])

    response = await api.client.options(
        "/execute", headers={"Origin": "https://app.example", **PREFLIGHT}
    )

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in response.headers["access-control-allow-methods"]


async def test_cors_preflight_from_another_origin_is_not_allowed(make_api) -> None:
    api = await make_api(enable_cors=True, cors_origins=["https://app.example"])

    response = await api.client.options(
        "/execute", headers={"Origin": "https://evil.example", **PREFLIGHT}
    )

    assert response.headers.get("access-control-allow-origin") != "https://evil.example"
    assert response.headers.get("access-control-allow-origin") != "*"


async def test_cors_simple_request_carries_the_allowed_origin_only(make_api) -> None:
    api = await make_api(enable_cors=True, cors_origins=["https://app.example"])

    allowed = await api.client.get("/health", headers={"Origin": "https://app.example"})
    other = await api.client.get("/health", headers={"Origin": "https://evil.example"})

    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


async def test_cors_preflight_needs_no_key_with_authentication(make_api) -> None:
    api = await make_api(api_keys=["k1"], enable_cors=True, cors_origins=["https://app.example"])

    response = await api.client.options(
        "/execute", headers={"Origin": "https://app.example", **PREFLIGHT}
    )
    refused = await api.client.post(
        "/execute", json={"code": "1"}, headers={"Origin": "https://app.example"}
    )

    assert response.status_code == 200
    assert refused.status_code == 401  # and the browser may read why
    assert refused.headers["access-control-allow-origin"] == "https://app.example"


async def test_cors_is_off_by_default(api) -> None:
    response = await api.client.get("/health", headers={"Origin": "https://app.example"})

    assert "access-control-allow-origin" not in response.headers
