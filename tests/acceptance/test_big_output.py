"""A job printing 100 MB: the server stays responsive and small, the output is capped."""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil
import pytest

from tests.acceptance.server import ServerProcess, job_status, results, submit

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]

OUTPUT_MIB = 100
MAX_SERVER_RSS_BYTES = 200 * 2**20
MAX_HEALTH_S = 1.0
BIG_JOB = f"""\
import sys
lines = (b"y" * 1023 + b"\\n") * 1024  # 1 MiB of 1 KiB lines
for _ in range({OUTPUT_MIB}):
    sys.stdout.buffer.write(lines)
sys.stdout.flush()
print("the end")
"""


def test_job_printing_100_mb_is_capped_and_the_server_stays_responsive(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    client = server.client()
    health_client = server.client()
    server_proc = psutil.Process(server.pid)
    peak_rss = server_proc.memory_info().rss

    job_id = submit(client, BIG_JOB, timeout=45)
    slowest_health_s = 0.0
    health_checks_while_running = 0
    give_up_at = time.monotonic() + 45
    while True:
        status = job_status(client, job_id)["status"]
        started = time.monotonic()
        response = health_client.get("/health")
        took_s = time.monotonic() - started
        assert response.status_code == 200
        slowest_health_s = max(slowest_health_s, took_s)
        if status == "running":
            health_checks_while_running += 1
        peak_rss = max(peak_rss, server_proc.memory_info().rss)
        if status not in ("pending", "running"):
            break
        assert time.monotonic() < give_up_at, f"job still {status}"
        time.sleep(0.01)

    assert status == "completed", job_status(client, job_id)
    assert health_checks_while_running > 0, "the job ended before /health could be checked"
    assert slowest_health_s < MAX_HEALTH_S, f"/health took {slowest_health_s:.2f} s"

    full = results(client, job_id)
    peak_rss = max(peak_rss, server_proc.memory_info().rss)
    assert full["stdout_truncated"] is True
    assert full["stderr_truncated"] is False
    assert full["stdout"].startswith("y" * 1023 + "\n")
    assert full["stdout"].endswith("the end\n")
    assert len(full["stdout"]) <= 11 * 2**20  # the default cap: 10 MiB and a marker
    structured = client.get(f"/results/{job_id}").json()
    assert structured["stdout"] == full["stdout"]
    peak_rss = max(peak_rss, server_proc.memory_info().rss)
    assert peak_rss < MAX_SERVER_RSS_BYTES, f"server RSS reached {peak_rss / 2**20:.0f} MiB"
    assert client.get("/health").status_code == 200
