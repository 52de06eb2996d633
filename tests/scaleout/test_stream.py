"""``GET /jobs/{id}/stream`` across replicas: a worker process runs the job and publishes its
output through PostgreSQL; another API replica streams it live and resumes a dropped stream."""

from __future__ import annotations

import httpx

from tests.acceptance.server import submit, wait_final
from tests.scaleout.conftest import Cluster
from tests.sse import Event, events, output

CODE = (
    "import sys, time\n"
    "print('first', flush=True)\n"
    "time.sleep(1.0)\n"
    "print('warn', file=sys.stderr, flush=True)\n"
    "print('second', flush=True)\n"
    "time.sleep(0.3)\n"
    "print('third', flush=True)\n"
)


async def test_a_workers_job_streams_live_through_another_replica(cluster: Cluster) -> None:
    a, b = cluster.api(), cluster.api()
    cluster.worker()
    cluster.wait_workers(1)
    job_id = submit(a.client(), CODE)

    first: list[Event] = []
    async with httpx.AsyncClient(base_url=b.url, trust_env=False, timeout=20) as client:
        async with client.stream("GET", f"/jobs/{job_id}/stream") as response:
            assert response.status_code == 200
            async for event in events(response):
                first.append(event)
                if event.name == "stdout":
                    status = (await client.get(f"/jobs/{job_id}/status")).json()["status"]
                    assert status == "running"  # the first chunk arrives while it runs
                    break  # the connection drops

        last_id = first[-1].id or ""
        async with client.stream(
            "GET", f"/jobs/{job_id}/stream", headers={"Last-Event-ID": last_id}
        ) as response:
            rest = [event async for event in events(response)]

        # once final, the stream replays from job_outputs, from the start
        async with client.stream("GET", f"/jobs/{job_id}/stream") as response:
            replay = [event async for event in events(response)]

    before = output(first, "stdout")
    assert before == b"first\n"
    assert output(rest, "stdout", start=len(before)) == b"second\nthird\n"
    assert output(rest, "stderr") == b"warn\n"
    assert rest[-1].name == "end" and rest[-1].json["status"] == "completed"
    assert output(replay, "stdout") == b"first\nsecond\nthird\n"
    assert replay[-1].name == "end"
    assert wait_final(a.client(), job_id)["status"] == "completed"
