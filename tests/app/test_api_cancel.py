"""Cancelling jobs: a pending job never starts, a running job's whole process tree dies."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import psutil

# Starts a background sleep, records its pid, then keeps the job busy.
LONG_SHELL_JOB = "sleep 300 &\necho $! > bg.pid\necho started\nsleep 30\n"


def gone(pid: int) -> bool:
    """The process no longer exists (a zombie waiting for an unrelated reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def start_long_job(api, directory: str) -> tuple[str, int]:
    """A running shell job with a background ``sleep 300``; returns its id and the sleep's pid."""
    job_id = await api.submit(LONG_SHELL_JOB, "shell", working_directory=directory, timeout=30)
    pid_file = api.workspace_root / directory / "bg.pid"
    await api.wait_until(
        lambda: pid_file.exists() and pid_file.read_text().strip().isdigit(),
        deadline_s=10,
        what="the job's background sleep to start",
    )
    pid = int(pid_file.read_text())
    assert not gone(pid)
    assert (await api.status(job_id))["status"] == "running"
    return job_id, pid


async def test_cancel_running_job_kills_its_whole_process_tree(make_api) -> None:
    api = await make_api(max_jobs=1)
    job_id, sleep_pid = await start_long_job(api, "tree")

    response = await api.client.post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["completed_at"] is not None
    assert (await api.status(job_id))["status"] == "cancelled"
    await api.wait_until(lambda: gone(sleep_pid), 5, f"background sleep {sleep_pid} to die")


async def test_cancelled_job_stays_cancelled_after_its_process_is_gone(make_api) -> None:
    api = await make_api(max_jobs=1)
    job_id, sleep_pid = await start_long_job(api, "stays")

    await api.client.post(f"/jobs/{job_id}/cancel")
    await api.wait_until(lambda: gone(sleep_pid), 5, "the job's processes to die")
    # The slot frees only when the worker is done with the cancelled job: a next job proves it.
    follower = await api.submit("print('next')")
    assert (await api.wait(follower))["status"] == "completed"

    status = await api.status(job_id)
    assert status["status"] == "cancelled"
    full = await api.results(job_id)
    assert full["status"] == "cancelled"
    assert full["stdout"] == "started\n"  # what it printed before the cancel is kept
    assert (await api.client.get(f"/results/{job_id}")).json()["status"] == "cancelled"
    listed = (await api.client.get("/jobs", params={"status": "cancelled"})).json()["jobs"]
    assert [j["job_id"] for j in listed] == [job_id]


async def test_cancel_pending_job_means_it_never_starts(make_api, tmp_path: Path) -> None:
    api = await make_api(max_jobs=1)
    running_id, _ = await start_long_job(api, "blocker")
    marker = tmp_path / "pending-job-ran"
    pending_id = await api.submit(f"open({str(marker)!r}, 'w').write('ran')")
    assert (await api.status(pending_id))["status"] == "pending"

    response = await api.client.post(f"/jobs/{pending_id}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["started_at"] is None
    # Free the slot, then run one more job: the queue has certainly moved past the cancelled one.
    await api.client.post(f"/jobs/{running_id}/cancel")
    follower = await api.submit("print('after')")
    assert (await api.wait(follower))["status"] == "completed"
    status = await api.status(pending_id)
    assert status["status"] == "cancelled"
    assert status["started_at"] is None
    assert not marker.exists()


async def test_delete_job_cancels_it(make_api) -> None:
    api = await make_api(max_jobs=1)
    job_id, sleep_pid = await start_long_job(api, "deleted")

    response = await api.client.delete(f"/jobs/{job_id}")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert (await api.status(job_id))["status"] == "cancelled"
    await api.wait_until(lambda: gone(sleep_pid), 5, f"background sleep {sleep_pid} to die")


async def test_cancel_finished_job_is_a_conflict_with_a_clear_detail(api) -> None:
    job_id = await api.submit("print('done')")
    await api.wait(job_id)

    for response in (
        await api.client.post(f"/jobs/{job_id}/cancel"),
        await api.client.delete(f"/jobs/{job_id}"),
    ):
        assert response.status_code == 409
        detail = response.json()["detail"]
        assert isinstance(detail, str)
        assert "completed" in detail and "finished" in detail
    assert (await api.status(job_id))["status"] == "completed"


async def test_cancel_twice_is_a_conflict_and_keeps_cancelled(make_api) -> None:
    api = await make_api(max_jobs=1)
    job_id, _ = await start_long_job(api, "twice")
    assert (await api.client.post(f"/jobs/{job_id}/cancel")).status_code == 200

    again = await api.client.post(f"/jobs/{job_id}/cancel")

    assert again.status_code == 409
    assert "cancelled" in again.json()["detail"]
    assert (await api.status(job_id))["status"] == "cancelled"


async def test_cancel_unknown_job_is_not_found(api) -> None:
    job_id = str(uuid.uuid4())

    for response in (
        await api.client.post(f"/jobs/{job_id}/cancel"),
        await api.client.delete(f"/jobs/{job_id}"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": f"Job not found: {job_id}"}


async def test_cancel_during_timeout_kill_keeps_one_final_status(make_api) -> None:
    api = await make_api(max_jobs=1)
    job_id = await api.submit(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\ntime.sleep(30)",
        timeout=0.5,
    )
    await api.wait_for(job_id, {"running"})
    await asyncio.sleep(0.6)  # the timeout has fired; the kill grace is running

    response = await api.client.post(f"/jobs/{job_id}/cancel")
    final = await api.wait(job_id)
    await asyncio.sleep(0.5)

    assert response.status_code in (200, 409)
    expected = "cancelled" if response.status_code == 200 else final["status"]
    assert final["status"] == expected
    assert (await api.status(job_id))["status"] == expected


async def test_concurrent_cancels_of_one_job_succeed_once(make_api) -> None:
    api = await make_api(max_jobs=1)
    job_id, sleep_pid = await start_long_job(api, "race")

    responses = await asyncio.gather(*(api.client.post(f"/jobs/{job_id}/cancel") for _ in range(5)))

    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 409, 409, 409, 409]
    assert (await api.status(job_id))["status"] == "cancelled"
    await api.wait_until(lambda: gone(sleep_pid), 5, "the job's processes to die")
    text = (await api.client.get("/metrics")).text
    assert 'interpreter_jobs_finished_total{status="cancelled"} 1.0' in text
