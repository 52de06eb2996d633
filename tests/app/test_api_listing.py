"""GET /jobs: newest first, filtered by status, paginated with a cursor."""

from __future__ import annotations

import pytest


async def submit_and_finish(api, count: int) -> list[str]:
    ids = [await api.submit("true", "shell") for _ in range(count)]
    for job_id in ids:
        await api.wait(job_id)
    return ids


async def test_jobs_are_listed_newest_first(api) -> None:
    ids = await submit_and_finish(api, 3)

    response = await api.client.get("/jobs")

    assert response.status_code == 200
    body = response.json()
    assert [j["job_id"] for j in body["jobs"]] == ids[::-1]
    assert body["next_cursor"] is None
    first = body["jobs"][0]
    assert first["status"] == "completed"
    assert {"job_id", "status", "created_at", "started_at", "completed_at"} <= set(first)


async def test_status_filter_lists_only_that_status(api) -> None:
    ok = await api.submit("true", "shell")
    bad = await api.submit("exit 1", "shell")
    await api.wait(ok)
    await api.wait(bad)

    failed = (await api.client.get("/jobs", params={"status": "failed"})).json()
    completed = (await api.client.get("/jobs", params={"status": "completed"})).json()
    timeouts = (await api.client.get("/jobs", params={"status": "timeout"})).json()

    assert [j["job_id"] for j in failed["jobs"]] == [bad]
    assert [j["job_id"] for j in completed["jobs"]] == [ok]
    assert timeouts["jobs"] == []


async def test_pages_walk_every_job_once_in_order(api) -> None:
    ids = await submit_and_finish(api, 7)

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, str | int] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        response = await api.client.get("/jobs", params=params)
        assert response.status_code == 200
        page = response.json()
        assert len(page["jobs"]) <= 3
        seen += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert cursor is None
    assert seen == ids[::-1]
    assert len(set(seen)) == len(seen)


async def test_pagination_combines_with_the_status_filter(api) -> None:
    ids = [await api.submit("exit 1" if i % 2 else "true", "shell") for i in range(6)]
    for job_id in ids:
        await api.wait(job_id)

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2, "status": "failed"}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await api.client.get("/jobs", params=params)).json()
        seen += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == [ids[5], ids[3], ids[1]]


async def test_invalid_status_filter_is_422(api) -> None:
    response = await api.client.get("/jobs", params={"status": "exploded"})

    assert response.status_code == 422
    assert response.json()["detail"]


async def test_invalid_limit_is_422(api) -> None:
    for limit in ("0", "-1", "100000", "many"):
        response = await api.client.get("/jobs", params={"limit": limit})
        assert response.status_code == 422, limit
        assert response.json()["detail"]


async def test_bad_cursor_is_a_client_error_with_a_json_detail(api) -> None:
    for cursor in ("abc", "-5", "1.5", "", "%00"):
        response = await api.client.get("/jobs", params={"cursor": cursor})
        assert 400 <= response.status_code < 500, (cursor, response.status_code)
        detail = response.json()["detail"]
        assert detail, cursor


@pytest.mark.parametrize(
    "cursor",
    ["99999999999999999999999999", "9223372036854775808", "9" * 5000, "\u00b2", "\u0663"],
    ids=["26-digits", "2**63", "5000-digits", "superscript-two", "arabic-indic-three"],
)
async def test_cursor_beyond_a_sequence_number_is_422_saying_the_range(api, cursor: str) -> None:
    response = await api.client.get("/jobs", params={"cursor": cursor})

    assert response.status_code == 422
    assert response.json() == {
        "detail": "cursor must be the next_cursor of a previous page: "
        "a whole number from 0 to 9223372036854775807"
    }


async def test_the_largest_cursor_is_a_page_before_every_job(api) -> None:
    job_id = await api.submit("print(1)")

    response = await api.client.get("/jobs", params={"cursor": str(2**63 - 1)})

    assert response.status_code == 200
    assert [job["job_id"] for job in response.json()["jobs"]] == [job_id]
