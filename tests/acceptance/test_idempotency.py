"""Idempotency-Key on the embedded server (SQLite): concurrent retries make one job."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

from tests.acceptance.server import ServerProcess, wait_final


def test_concurrent_submissions_with_one_key_make_one_job_on_sqlite(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    clients = [server.client() for _ in range(8)]
    body = {"code": "print('once')", "language": "python"}

    def post(client_index: int) -> tuple[str, str | None]:
        response = clients[client_index].post(
            "/execute", json=body, headers={"Idempotency-Key": "sqlite-burst"}
        )
        assert response.status_code == 200, response.text
        return response.json()["job_id"], response.headers.get("Idempotent-Replayed")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))

    assert len({job_id for job_id, _ in answers}) == 1
    assert [replayed for _, replayed in answers].count(None) == 1
    job_id = answers[0][0]
    assert wait_final(clients[0], job_id)["status"] == "completed"
    assert [job["job_id"] for job in clients[0].get("/jobs").json()["jobs"]] == [job_id]
