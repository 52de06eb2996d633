"""Abuse of the API itself: pending-job caps, environment names."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from interpreter.environment import REFUSED_NAMES
from interpreter.job import Job, JobRequest, new_job_id
from interpreter.pending import PendingJobs
from interpreter.service import owner_of
from interpreter.store.memory import MemoryStore

A = {"X-API-Key": "key-a"}
B = {"X-API-Key": "key-b"}
TRIVIAL = {"code": "true", "language": "shell"}
BLOCKING = {"code": "sleep 30", "language": "shell", "timeout": 30}


async def post(api, body: object = TRIVIAL, **kwargs: Any) -> httpx.Response:
    return await api.client.post("/execute", json=body, **kwargs)


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
    await api.wait_until(lambda: len(api.app.state.parts.dispatcher.pending) == 0, 5, "no pending")
    assert api.app.state.parts.dispatcher.pending.count(owner_of("key-a")) == 0


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

    async def broken(job: Job) -> Job:
        raise OSError("disk full")

    real_create = api.store.create
    api.store.create = broken  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await post(api)
    api.store.create = real_create  # type: ignore[method-assign]

    assert len(api.app.state.parts.dispatcher.pending) == 0
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
