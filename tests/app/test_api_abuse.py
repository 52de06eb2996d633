"""Abuse of the API itself: rate limits, pending-job caps, body size, environment names."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from interpreter.api import ratelimit
from interpreter.api.app import create_app
from interpreter.api.auth import owner_of
from interpreter.api.ratelimit import MemoryCounters, client_address
from interpreter.config import Settings
from interpreter.environment import REFUSED_NAMES
from interpreter.errors import ConfigurationError
from interpreter.job import Job, JobRequest, new_job_id
from interpreter.queues.pending import PendingJobs
from interpreter.server import EnhancedInterpreterServer
from interpreter.store.memory import MemoryStore

A = {"X-API-Key": "key-a"}
B = {"X-API-Key": "key-b"}
TRIVIAL = {"code": "true", "language": "shell"}
BLOCKING = {"code": "sleep 30", "language": "shell", "timeout": 30}


async def post(api, body: object = TRIVIAL, **kwargs: Any) -> httpx.Response:
    return await api.client.post("/execute", json=body, **kwargs)


def other_address(api, host: str) -> httpx.AsyncClient:
    """A client of the same app that connects from ``host``."""
    transport = httpx.ASGITransport(app=api.app, client=(host, 4321))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


# -- rate limit ----------------------------------------------------------------------------------
async def test_execute_over_the_rate_limit_is_429_with_retry_after(make_api) -> None:
    api = await make_api(rate_limit="3/minute")
    for _ in range(3):
        assert (await post(api)).status_code == 200

    refused = await post(api)

    assert refused.status_code == 429
    detail = refused.json()["detail"]
    assert detail.startswith("rate limit exceeded: 3 per 1 minute; retry in ")
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert f"retry in {retry_after} s" in detail
    assert len(api.store.jobs) == 3


async def test_building_environments_shares_the_rate_limit_of_jobs(make_api) -> None:
    api = await make_api(rate_limit="2/minute")
    assert (await post(api)).status_code == 200
    # refused before the body is read, let alone packages resolved and installed
    first = await api.client.post("/environments", json={"packages": ["-r /etc/passwd"]})
    assert first.status_code == 422
    refused = await api.client.post("/environments", json={"packages": ["six"]})
    assert refused.status_code == 429
    assert (await post(api)).status_code == 429
    assert (await api.client.get("/environments")).status_code == 200  # reading is not limited


async def test_rate_limit_is_checked_before_the_body_is_read(make_api) -> None:
    api = await make_api(rate_limit="1/minute")
    assert (await post(api)).status_code == 200

    refused = await api.client.post(
        "/execute", content=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert refused.status_code == 429  # not 422: the body was never parsed


async def test_a_rate_limited_chunked_body_is_not_read_at_all(make_api) -> None:
    api = await make_api(rate_limit="1/minute")
    assert (await post(api)).status_code == 200
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for piece in (b'{"code": "true", ', b'"language": "shell"}'):
            sent += 1
            yield piece

    refused = await api.client.post(
        "/execute", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert refused.status_code == 429
    assert sent == 0


async def test_each_api_key_has_its_own_budget(make_api) -> None:
    api = await make_api(
        rate_limit="2/minute", enable_authentication=True, api_keys=["key-a", "key-b"]
    )
    for _ in range(2):
        assert (await post(api, headers=A)).status_code == 200
    assert (await post(api, headers=A)).status_code == 429
    assert (await post(api, headers={"Authorization": "Bearer key-a"})).status_code == 429

    assert (await post(api, headers=B)).status_code == 200


async def test_without_authentication_each_client_address_has_its_own_budget(
    make_api,
) -> None:
    api = await make_api(rate_limit="2/minute")
    for _ in range(2):
        assert (await post(api)).status_code == 200
    assert (await post(api)).status_code == 429

    async with other_address(api, "10.0.0.2") as elsewhere:
        assert (await elsewhere.post("/execute", json=TRIVIAL)).status_code == 200


async def test_requests_without_a_valid_key_are_limited_by_address(make_api) -> None:
    api = await make_api(rate_limit="2/minute", enable_authentication=True, api_keys=["key-a"])
    wrong = {"X-API-Key": "guess"}
    assert (await post(api, headers=wrong)).status_code == 401
    assert (await post(api)).status_code == 401

    assert (await post(api, headers=wrong)).status_code == 429  # guessing keys is limited too
    assert (await post(api, headers=A)).status_code == 200  # the key has its own budget


async def test_status_polls_results_and_listing_are_not_limited(make_api) -> None:
    api = await make_api(rate_limit="1/minute")
    job_id = await api.submit("true", "shell")
    await api.wait(job_id)

    for _ in range(20):
        assert (await api.client.get(f"/jobs/{job_id}/status")).status_code == 200
        assert (await api.client.get(f"/results/{job_id}")).status_code == 200
    assert (await api.client.get("/jobs")).status_code == 200
    assert (await api.client.get("/health")).status_code == 200
    assert (await post(api)).status_code == 429


async def test_memory_counters_reset_at_the_window_end_and_drop_expired_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: now[0])
    counters = MemoryCounters()
    assert [await counters.incr("a", 60) for _ in range(3)] == [1, 2, 3]
    await counters.incr("b", 60)
    assert await counters.get_expiry("a") == 1060.0

    now[0] = 1059.9
    assert await counters.get("a") == 3
    now[0] = 1060.0
    assert (await counters.get("a"), await counters.get_expiry("a")) == (0, 1060.0)
    assert await counters.incr("a", 60) == 1  # a new window from this hit
    assert set(counters._counters) == {"a"}  # b's expired counter was swept
    assert await counters.get_expiry("a") == 1120.0


async def test_a_client_may_submit_again_once_the_window_has_passed(
    make_api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await make_api(rate_limit="1/minute")
    now = [ratelimit.time.time()]
    monkeypatch.setattr(ratelimit.time, "time", lambda: now[0])
    assert (await post(api)).status_code == 200
    refused = await post(api)
    assert refused.headers["Retry-After"] == "60"

    now[0] += 45
    assert (await post(api)).headers["Retry-After"] == "15"
    now[0] += 15
    assert (await post(api)).status_code == 200


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
    ],
)
def test_client_address_is_the_ipv4_address_or_the_ipv6_64(host: str, expected: str) -> None:
    assert client_address({"client": (host, 1)}) == expected


def test_client_address_without_a_client_is_one_bucket() -> None:
    assert client_address({"client": None}) == "unknown"


@pytest.mark.parametrize("value", ["lots", "", "0/minute", "120/fortnight", "12"])
def test_a_bad_rate_limit_refuses_to_start(tmp_path, value: str) -> None:
    with pytest.raises(ConfigurationError, match="INTERPRETER_RATE_LIMIT="):
        create_app(Settings(data_dir=tmp_path, rate_limit=value), store=MemoryStore())


def test_a_bad_rate_limit_refuses_to_start_the_server(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="'120 a minute' is not a rate limit"):
        EnhancedInterpreterServer(data_dir=tmp_path, rate_limit="120 a minute")


def test_an_unknown_rate_limit_storage_refuses_to_start(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="INTERPRETER_RATE_LIMIT_STORAGE='nosuch://x'"):
        create_app(
            Settings(data_dir=tmp_path, rate_limit="10/minute", rate_limit_storage="nosuch://x"),
            store=MemoryStore(),
        )


def test_several_limits_are_accepted(tmp_path) -> None:
    create_app(
        Settings(data_dir=tmp_path, rate_limit="10/second;1000 per hour"), store=MemoryStore()
    )


async def test_every_limit_of_several_applies(make_api) -> None:
    api = await make_api(rate_limit="100/second;2/minute")
    for _ in range(2):
        assert (await post(api)).status_code == 200

    refused = await post(api)

    assert refused.status_code == 429
    assert "2 per 1 minute" in refused.json()["detail"]


# -- pending-job caps ----------------------------------------------------------------------------
async def test_too_many_pending_jobs_of_one_key_is_429_and_other_keys_go_on(
    make_api,
) -> None:
    api = await make_api(
        max_jobs=1, max_pending_per_key=2, enable_authentication=True, api_keys=["key-a", "key-b"]
    )
    api.client.headers.update(A)  # the helpers act as key A; key B is passed explicitly
    running = await api.submit(**BLOCKING)
    await api.wait_for(running, {"running"})
    waiting = [await api.submit(**TRIVIAL) for _ in range(2)]

    refused = await post(api)

    assert refused.status_code == 429
    assert refused.json()["detail"] == (
        "too many pending jobs for this key (2); wait for some to start, or cancel some"
    )
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await post(api, headers=B)).status_code == 200  # the cap is per key

    assert (await api.client.post(f"/jobs/{waiting[0]}/cancel")).status_code == 200
    assert (await post(api)).status_code == 200  # a cancelled pending job frees its slot
    assert (await post(api)).status_code == 429
    await api.client.post(f"/jobs/{running}/cancel")


async def test_too_many_pending_jobs_on_the_server_is_503_with_retry_after(
    make_api,
) -> None:
    api = await make_api(max_jobs=1, max_pending_jobs=2)
    running = await api.submit(**BLOCKING)
    await api.wait_for(running, {"running"})
    waiting = [await api.submit(**TRIVIAL) for _ in range(2)]

    refused = await post(api)

    assert refused.status_code == 503
    assert refused.json()["detail"] == "too many pending jobs on this server (2); retry later"
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await api.client.get("/health")).json()["status"] == "degraded"

    await api.client.post(f"/jobs/{waiting[0]}/cancel")
    assert (await post(api)).status_code == 200
    assert (await post(api)).status_code == 503


async def test_pending_counts_drop_as_jobs_start(make_api) -> None:
    api = await make_api(
        max_jobs=1, max_pending_per_key=1, enable_authentication=True, api_keys=["key-a"]
    )
    api.client.headers.update(A)
    first = await api.submit(**BLOCKING)
    await api.wait_for(first, {"running"})  # it left pending: the key's one slot is free
    second = await api.submit(**BLOCKING)
    assert (await post(api)).status_code == 429

    await api.client.post(f"/jobs/{first}/cancel")
    await api.wait_for(second, {"running"})

    third = await api.submit(**TRIVIAL)
    await api.client.post(f"/jobs/{second}/cancel")
    await api.wait(third)
    await api.wait_until(lambda: len(api.app.state.parts.queue.pending) == 0, 5, "no pending")
    assert api.app.state.parts.queue.pending.count(owner_of("key-a")) == 0


async def test_pending_counts_are_rebuilt_from_the_store_at_start(make_api) -> None:
    store = MemoryStore()
    owner = owner_of("key-a")
    for _ in range(3):
        request = JobRequest(code="sleep 30", language="shell", timeout_s=30)
        await store.create(Job(id=new_job_id(), request=request, owner=owner))

    api = await make_api(
        store=store,
        max_jobs=1,
        max_pending_per_key=2,
        enable_authentication=True,
        api_keys=["key-a", "key-b"],
    )

    assert (await post(api, headers=A)).status_code == 429  # one runs, two still wait
    assert (await post(api, headers=B)).status_code == 200
    for job_id in list(store.jobs):
        await api.client.post(f"/jobs/{job_id}/cancel", headers=A)


async def test_a_failed_store_write_does_not_count_as_pending(make_api) -> None:
    api = await make_api(max_pending_jobs=1, max_jobs=1)

    async def broken(job: Job, inputs: object = ()) -> Job:
        raise OSError("disk full")

    real_create = api.store.create
    api.store.create = broken  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await post(api)
    api.store.create = real_create  # type: ignore[method-assign]

    assert len(api.app.state.parts.queue.pending) == 0
    assert (await post(api)).status_code == 200


def test_pending_jobs_count_each_job_once_and_forget_owners_with_none_left() -> None:
    pending = PendingJobs()
    pending.add("j1", "alice")
    pending.add("j1", "alice")
    pending.add("j2", "alice")
    pending.add("j3", None)

    assert (len(pending), pending.count("alice"), pending.count("bob")) == (3, 2, 0)
    for job_id in ("j1", "j1", "j2", "j3", "unknown"):
        pending.discard(job_id)

    assert len(pending) == 0
    assert pending._per_owner == {}


# -- request body size ---------------------------------------------------------------------------
async def test_a_body_over_the_limit_by_content_length_is_413(make_api) -> None:
    api = await make_api(max_body_bytes=1024)
    body = json.dumps({"code": "x" * 2000, "language": "python"}).encode()

    response = await api.client.post(
        "/execute", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["detail"] == (
        f"request body is {len(body)} bytes; the maximum is 1024 bytes"
    )
    assert api.store.jobs == {}


async def test_a_chunked_body_over_the_limit_is_413_without_reading_it_all(
    make_api,
) -> None:
    api = await make_api(max_body_bytes=1024)
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"code": "'
        for _ in range(1000):
            sent += 1
            yield b"x" * 256
        yield b'"}'

    response = await api.client.post(
        "/execute", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["detail"] == "request body is larger than the maximum of 1024 bytes"
    assert sent < 10  # stopped at the cap, not at the end of the body
    assert api.store.jobs == {}


async def test_a_chunked_body_within_the_limit_is_accepted(make_api) -> None:
    api = await make_api(max_body_bytes=1024)

    async def chunks() -> AsyncIterator[bytes]:
        for piece in (b'{"code": "print(', b"6 * 7", b')", "language": "python"}'):
            yield piece

    response = await api.client.post(
        "/execute", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 200, response.text
    await api.wait(response.json()["job_id"])
    assert (await api.results(response.json()["job_id"]))["stdout"] == "42\n"


async def test_code_over_max_code_bytes_within_the_body_limit_is_still_413(
    make_api,
) -> None:
    api = await make_api(max_code_bytes=10)

    response = await post(api, {"code": "print('more than ten bytes')"})

    assert response.status_code == 413
    assert "maximum is 10 bytes" in response.json()["detail"]


# -- environment variables -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "LD_DEBUG_OUTPUT",
        "BASH_ENV",
        "ENV",
        "BASH_FUNC_ls%%",
        "BASH_FUNC_ls",
        *sorted(set(REFUSED_NAMES) - {"BASH_ENV", "ENV"}),
    ],
)
async def test_an_environment_variable_that_could_weaken_the_sandbox_is_422(api, name: str) -> None:
    response = await post(
        api, {"code": "true", "language": "shell", "environment_variables": {name: "x"}}
    )

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("environment variables refused, as they could weaken the sandbox: ")
    assert f"{name} (" in detail
    assert api.store.jobs == {}


async def test_every_refused_name_is_named_with_its_reason(api) -> None:
    env = {"LD_PRELOAD": "/x.so", "BASH_ENV": "/x.sh", "GREETING": "hi"}

    response = await post(api, {"code": "true", "language": "shell", "environment_variables": env})

    assert response.json()["detail"] == (
        "environment variables refused, as they could weaken the sandbox: "
        "BASH_ENV (runs code when a shell starts); "
        "LD_PRELOAD (changes which libraries every program loads)"
    )


async def test_module_search_paths_and_ordinary_names_stay_allowed(api) -> None:
    env = {
        "PYTHONPATH": "/custom/path",
        "NODE_PATH": "/n",
        "PERL5LIB": "/p",
        "LDFLAGS": "-O2",
        "env": "production",
        "ld_preload": "is not what the loader reads",
    }

    body = await api.run(
        "import os, json; print(json.dumps(dict(os.environ)))", environment_variables=env
    )

    seen = json.loads(body["stdout"])
    assert {name: seen.get(name) for name in env} == env
