"""``?wait=``: a status or result request that answers as soon as the job is final."""

from __future__ import annotations

import asyncio
import time

import pytest


async def test_status_wait_answers_as_soon_as_the_job_is_final(api) -> None:
    job_id = await api.submit("import time\ntime.sleep(0.3)\nprint('done')")

    started = time.monotonic()
    response = await api.client.get(f"/jobs/{job_id}/status", params={"wait": 10})
    elapsed_s = time.monotonic() - started

    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    assert 0.2 <= elapsed_s < 5


async def test_status_wait_gives_up_with_the_current_status(api) -> None:
    job_id = await api.submit("import time\ntime.sleep(5)", timeout=10)

    started = time.monotonic()
    response = await api.client.get(f"/jobs/{job_id}/status", params={"wait": 0.3})
    elapsed_s = time.monotonic() - started

    assert response.json()["status"] in ("pending", "running")
    assert 0.25 <= elapsed_s < 2


@pytest.mark.parametrize("route", ["/results/{}", "/jobs/{}/results"])
async def test_results_wait_returns_the_finished_output(api, route: str) -> None:
    job_id = await api.submit("import time\ntime.sleep(0.2)\nprint('late output')")

    response = await api.client.get(route.format(job_id), params={"wait": 10})

    assert response.json()["status"] == "completed"
    assert response.json()["stdout"] == "late output\n"


async def test_a_cancel_wakes_a_waiting_request(api) -> None:
    job_id = await api.submit("import time\ntime.sleep(30)", timeout=60)
    await api.wait_for(job_id, {"running"})
    waiting = asyncio.create_task(api.client.get(f"/jobs/{job_id}/status", params={"wait": 20}))
    await asyncio.sleep(0.1)

    started = time.monotonic()
    await api.client.post(f"/jobs/{job_id}/cancel")
    response = await asyncio.wait_for(waiting, 5)

    assert response.json()["status"] == "cancelled"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("wait", ["-1", "61", "soon"])
async def test_wait_out_of_range_is_422(api, wait: str) -> None:
    job_id = await api.submit("print(1)")

    response = await api.client.get(f"/jobs/{job_id}/status", params={"wait": wait})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "wait"]
    assert response.json()["detail"].startswith("Invalid query parameter 'wait': ")


@pytest.mark.parametrize("wait", ["nan", "inf", "-inf", "1e999"])
async def test_wait_that_is_not_a_finite_number_is_422_saying_so(api, wait: str) -> None:
    job_id = await api.submit("print(1)")

    response = await api.client.get(f"/jobs/{job_id}/status", params={"wait": wait})

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["loc"] == ["query", "wait"]
    assert error["msg"] == "Input should be a finite number"
    assert response.json()["detail"] == (
        "Invalid query parameter 'wait': Input should be a finite number"
    )


async def test_wait_on_an_unknown_job_is_404_at_once(api) -> None:
    started = time.monotonic()
    response = await api.client.get(
        "/jobs/7f1b1a2e-1c1d-4c1e-9f1a-1b1c1d1e1f1a/status", params={"wait": 10}
    )

    assert response.status_code == 404
    assert time.monotonic() - started < 1
