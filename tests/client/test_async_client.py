"""The asynchronous client against a real server: the main paths of ``AsyncClient``."""

from __future__ import annotations

import asyncio
import io
import tarfile
import uuid

import pytest

from interpreter.client import AsyncClient, AsyncJob, JobConflict, JobNotFound, OutputEvent
from tests.acceptance.server import ServerProcess
from tests.client.conftest import KEY, OTHER_KEY
from tests.client.drops import AsyncDropFirstAnswer, AsyncDropFirstStream


async def wait_running(job: AsyncJob, deadline_s: float = 10.0) -> None:
    async with asyncio.timeout(deadline_s):
        while await job.status() != "running":
            await asyncio.sleep(0.05)


async def test_run_and_gather(aclient: AsyncClient) -> None:
    results = await asyncio.gather(*(aclient.run(f"print({n} * 2)") for n in range(3)))
    assert [r.stdout for r in results] == ["0\n", "2\n", "4\n"]
    assert all(r.ok for r in results)
    failed = await aclient.run("exit 4", language="shell")
    assert (failed.status, failed.exit_code) == ("failed", 4)


async def test_submit_wait_files_and_archive(aclient: AsyncClient) -> None:
    job = await aclient.submit(
        "print(open('in.txt').read().upper(), end='')\nopen('out.txt', 'w').write('out')",
        files={"in.txt": "abc"},
    )
    result = await job.wait()
    assert (result.stdout, result.job_id) == ("ABC", job.id)
    assert await job.result() == result
    assert {info.path for info in await job.files()} == {"in.txt", "out.txt"}
    assert await job.download("out.txt") == b"out"
    with tarfile.open(fileobj=io.BytesIO(await job.archive()), mode="r:gz") as archive:
        assert "out.txt" in archive.getnames()
    assert (await job.full_result())["exit_code"] == 0


async def test_a_ranged_download_reads_the_first_bytes_and_learns_the_size(
    aclient: AsyncClient,
) -> None:
    code = "open('big.txt', 'w').write('x' * 5000)\nopen('empty.txt', 'w')"
    job = aclient.job((await aclient.run(code)).job_id)
    assert await job.download("big.txt", max_bytes=10) == b"x" * 10
    assert await job.download_head("big.txt", 10) == (b"x" * 10, 5000)
    assert await job.download_head("big.txt", 9000) == (b"x" * 5000, 5000)
    assert await job.download("empty.txt", max_bytes=10) == b""
    assert await job.download_head("empty.txt", 10) == (b"", 0)


async def test_stream_and_cancel(aclient: AsyncClient) -> None:
    job = await aclient.submit("import time\nprint('up', flush=True)\ntime.sleep(30)")
    events: list[OutputEvent] = []
    async for event in job.stream():
        events.append(event)
        if event.event == "stdout":
            assert await job.status() == "running"
            assert (await job.cancel())["status"] == "cancelled"
    assert "".join(e.text for e in events) == "up\n"
    assert events[-1].event == "end" and events[-1].data["status"] == "cancelled"
    with pytest.raises(JobConflict):
        await job.cancel()


async def test_stream_resumes_a_dropped_connection(server: ServerProcess) -> None:
    transport = AsyncDropFirstStream()
    code = "import time\nfor i in range(5):\n    print(i, flush=True)\n    time.sleep(0.2)"
    async with AsyncClient(server.url, api_key=KEY, transport=transport) as client:
        job = await client.submit(code)
        events = [event async for event in job.stream()]
    assert len(transport.last_event_ids) == 2 and transport.last_event_ids[1] is not None
    assert "".join(e.text for e in events if e.event == "stdout") == "0\n1\n2\n3\n4\n"
    assert events[-1].event == "end"


async def test_another_keys_job_is_not_found(aclient: AsyncClient, server: ServerProcess) -> None:
    job = await aclient.submit("print(1)")
    async with AsyncClient(server.url, api_key=OTHER_KEY) as other:
        with pytest.raises(JobNotFound):
            await other.job(job.id).wait()
    await job.wait()


async def test_a_retry_after_a_lost_answer_does_not_run_the_code_twice(
    server: ServerProcess,
) -> None:
    directory = f"sdk-async-{uuid.uuid4().hex}"
    transport = AsyncDropFirstAnswer()
    async with AsyncClient(server.url, api_key=KEY, transport=transport) as client:
        job = await client.submit(
            "with open('count.txt', 'a') as f:\n    f.write('ran\\n')", working_directory=directory
        )
        await job.wait()
        count = await client.run(
            "print(open('count.txt').read(), end='')", working_directory=directory
        )
    assert count.stdout == "ran\n"
    assert transport.execute_keys[0] == transport.execute_keys[1] != transport.execute_keys[2]
