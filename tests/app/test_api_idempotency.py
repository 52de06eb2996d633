"""Idempotency-Key on POST /execute: a retried submission never runs the code twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from interpreter.job import utcnow

K1 = {"X-API-Key": "k1"}
K2 = {"X-API-Key": "k2"}


def appending(path: str) -> str:
    """Code whose every run leaves one more line in ``path``: the side effect that counts runs."""
    return f"with open({path!r}, 'a') as f: f.write('ran\\n')\nprint('done')"


async def test_a_retry_with_the_same_key_returns_the_same_job_and_runs_once(api, tmp_path) -> None:
    marker = tmp_path / "runs.txt"
    body = {"code": appending(str(marker))}
    headers = {"Idempotency-Key": "retry-1"}

    first = await api.client.post("/execute", json=body, headers=headers)
    await api.wait(first.json()["job_id"])
    again = await api.client.post("/execute", json=body, headers=headers)

    assert first.status_code == again.status_code == 200
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.json()["status"] == "completed"
    assert marker.read_text() == "ran\n"


async def test_a_replay_with_wait_answers_the_original_jobs_full_result(api) -> None:
    body = {"code": "print('once')"}
    headers = {"Idempotency-Key": "wait-1"}

    first = await api.client.post("/execute?wait=10", json=body, headers=headers)
    again = await api.client.post("/execute?wait=10", json=body, headers=headers)

    assert first.json()["stdout"] == again.json()["stdout"] == "once\n"
    assert again.json()["job_id"] == first.json()["job_id"]


async def test_concurrent_submissions_with_one_key_make_one_job(api, tmp_path) -> None:
    marker = tmp_path / "runs.txt"
    body = {"code": appending(str(marker))}
    headers = {"Idempotency-Key": "burst"}

    responses = await asyncio.gather(
        *(api.client.post("/execute", json=body, headers=headers) for _ in range(8))
    )

    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["job_id"] for r in responses}) == 1
    await api.wait(responses[0].json()["job_id"])
    assert marker.read_text() == "ran\n"


async def test_the_same_key_with_another_body_is_422(api) -> None:
    headers = {"Idempotency-Key": "k-body"}
    first = await api.client.post("/execute", json={"code": "print(1)"}, headers=headers)

    other = await api.client.post("/execute", json={"code": "print(2)"}, headers=headers)

    assert first.status_code == 200
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["detail"]
    assert "different request" in other.json()["detail"]


async def test_another_key_or_none_runs_again(api) -> None:
    body = {"code": "print(1)"}

    a = await api.client.post("/execute", json=body, headers={"Idempotency-Key": "a"})
    b = await api.client.post("/execute", json=body, headers={"Idempotency-Key": "b"})
    plain = [await api.client.post("/execute", json=body) for _ in range(2)]

    ids = {a.json()["job_id"], b.json()["job_id"], *(r.json()["job_id"] for r in plain)}
    assert len(ids) == 4


async def test_keys_belong_to_their_api_key(make_api) -> None:
    api = await make_api(api_keys=["k1", "k2"])
    body = {"code": "print(1)"}

    mine = await api.client.post("/execute", json=body, headers={**K1, "Idempotency-Key": "x"})
    theirs = await api.client.post("/execute", json=body, headers={**K2, "Idempotency-Key": "x"})

    assert mine.status_code == theirs.status_code == 200
    assert mine.json()["job_id"] != theirs.json()["job_id"]


async def test_a_key_older_than_a_day_starts_a_new_job(api) -> None:
    body = {"code": "print(1)"}
    headers = {"Idempotency-Key": "old"}
    first = (await api.client.post("/execute", json=body, headers=headers)).json()["job_id"]
    await api.wait(first)
    stored = api.store.jobs[first]
    api.store.jobs[first] = stored.evolve(created_at=utcnow() - timedelta(hours=24, seconds=1))

    again = await api.client.post("/execute", json=body, headers=headers)

    assert again.status_code == 200
    assert again.json()["job_id"] != first
    assert "Idempotent-Replayed" not in again.headers


async def test_a_malformed_key_is_refused(api) -> None:
    for key in ("", "x" * 256, "caf\u00e9"):
        response = await api.client.post(
            "/execute",
            json={"code": "print(1)"},
            headers={"Idempotency-Key": key.encode("utf-8")},  # type: ignore[dict-item]
        )
        assert response.status_code == 422, key
        assert "Idempotency-Key" in response.json()["detail"]


async def test_a_retry_answers_with_its_job_while_the_server_shuts_down(api, monkeypatch) -> None:
    body = {"code": "print(1)"}
    first = await api.client.post("/execute", json=body, headers={"Idempotency-Key": "late"})
    queue = api.app.state.parts.queue
    monkeypatch.setattr(type(queue), "accepting", property(lambda self: False))

    again = await api.client.post("/execute", json=body, headers={"Idempotency-Key": "late"})
    new = await api.client.post("/execute", json=body, headers={"Idempotency-Key": "new"})

    assert again.status_code == 200 and again.json()["job_id"] == first.json()["job_id"]
    assert new.status_code == 503
