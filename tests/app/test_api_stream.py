"""``GET /jobs/{id}/stream``: a job's output as Server-Sent Events while it runs, over a real
HTTP server (uvicorn in process: an ASGI client would only answer once the stream ended)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from tests.sse import Event, events, output

PRINT_SLEEP_PRINT = (
    "import time\nprint('first', flush=True)\ntime.sleep(1.0)\nprint('second', flush=True)\n"
)


@contextlib.asynccontextmanager
async def http_server(app) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` (its lifespan already entered) served over HTTP on a free port, and a client."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "the server did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            yield client
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
async def http(api) -> AsyncIterator[httpx.AsyncClient]:
    async with http_server(api.app) as client:
        yield client


async def read_all(http: httpx.AsyncClient, job_id: str, **headers: str) -> list[Event]:
    async with http.stream("GET", f"/jobs/{job_id}/stream", headers=headers) as response:
        assert response.status_code == 200
        return [event async for event in events(response)]


async def test_the_first_chunk_arrives_while_the_job_runs(api, http) -> None:
    job_id = await api.submit(PRINT_SLEEP_PRINT)
    received: list[Event] = []
    async with http.stream("GET", f"/jobs/{job_id}/stream") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in events(response):
            received.append(event)
            if event.name == "stdout" and len(output(received, "stdout")) == len("first\n"):
                assert (await api.status(job_id))["status"] == "running"

    assert output(received, "stdout") == b"first\nsecond\n"
    statuses = [e.json["status"] for e in received if e.name == "status"]
    assert statuses[-1] == "completed"
    assert "running" in statuses
    assert received[-1].name == "end"
    assert received[-1].json == {
        "status": "completed",
        "exit_code": 0,
        "termination_reason": "exit",
        "error_message": None,
    }
    assert received[-1].id == "13:0"  # the bytes of each stream sent


async def test_a_dropped_connection_resumes_with_last_event_id(api, http) -> None:
    job_id = await api.submit(PRINT_SLEEP_PRINT)
    first: list[Event] = []
    async with http.stream("GET", f"/jobs/{job_id}/stream") as response:
        async for event in events(response):
            first.append(event)
            if event.name == "stdout":
                break  # the connection drops

    rest = await read_all(http, job_id, **{"Last-Event-ID": first[-1].id or ""})

    before = output(first, "stdout")
    assert before == b"first\n"
    assert output(rest, "stdout", start=len(before)) == b"second\n"
    assert rest[-1].name == "end"


async def test_a_finished_job_replays_everything_then_ends(api, http) -> None:
    job_id = await api.submit("import sys\nprint('out')\nprint('err', file=sys.stderr)")
    await api.wait(job_id)

    received = await read_all(http, job_id)

    assert [e.name for e in received] == ["status", "stdout", "stderr", "end"]
    assert received[0].json == {"status": "completed"}
    assert output(received, "stdout") == b"out\n"
    assert output(received, "stderr") == b"err\n"

    # resumed from given offsets, it sends only what comes after them
    again = await read_all(http, job_id, **{"Last-Event-ID": "2:0"})
    assert output(again, "stdout", start=2) == b"t\n"
    assert output(again, "stderr") == b"err\n"
    # the query parameter does the same, for clients that cannot set the header
    async with http.stream("GET", f"/jobs/{job_id}/stream?last_event_id=4:4") as response:
        tail = [event async for event in events(response)]
    assert [e.name for e in tail] == ["status", "end"]


ODD_OUTPUT = r"""
import sys, time
out, err = sys.stdout.buffer, sys.stderr.buffer
def put(stream, data):
    stream.write(data); stream.flush(); time.sleep(0.15)
put(out, b"a\r\nb\rc\n\n")
put(err, b"warning\n")
euro = "\u20ac".encode()
put(out, b"x" + euro[:1])
put(out, euro[1:] + b"\xf0\x9f")
put(out, b"\x98\x80!\n")
put(out, b"bad \xff\xfe end\n")
put(err, b"done\n")
"""


async def test_output_arrives_exactly_as_written(api, http) -> None:
    job_id = await api.submit(ODD_OUTPUT)

    received = await read_all(http, job_id)

    stdout = "a\r\nb\rc\n\nx\u20ac\U0001f600!\n".encode() + b"bad \xff\xfe end\n"
    assert output(received, "stdout") == stdout
    assert output(received, "stderr") == b"warning\ndone\n"
    chunks = [e for e in received if e.name in ("stdout", "stderr")]
    # cut only between characters: every chunk but the invalid one is valid UTF-8 as is
    assert all("base64" not in e.json for e in chunks if b"\xff" not in e.bytes)
    assert any("base64" in e.json for e in chunks)
    # the streams interleave as the job wrote them
    order = [e.name for e in chunks]
    assert order.index("stderr") < order.index("stdout", 1)
    assert order[-1] == "stderr"


async def test_a_chunk_reaches_the_client_soon_after_the_print(api, http) -> None:
    code = (
        "import time\nfor _ in range(5):\n    print(time.time(), flush=True)\n    time.sleep(0.1)\n"
    )
    job_id = await api.submit(code)

    received = await read_all(http, job_id)

    delays = [
        e.received - float(line)
        for e in received
        if e.name == "stdout"
        for line in e.json["text"].split()
    ]
    assert len(delays) == 5
    assert sorted(delays)[2] < 0.25  # the benchmark measures it: a few ms


async def test_a_client_that_goes_away_leaves_nothing_behind(api, http) -> None:
    job_id = await api.submit("import time\nprint('x', flush=True)\ntime.sleep(30)", timeout=60)
    watch = api.app.state.parts.queue.watch
    async with http.stream("GET", f"/jobs/{job_id}/stream") as response:
        async for event in events(response):
            if event.name == "stdout":
                assert watch.streams(job_id) == 1
                break

    await api.wait_until(lambda: watch.streams(job_id) == 0, 5, "the stream to stop")
    await api.client.post(f"/jobs/{job_id}/cancel")


async def test_another_keys_job_and_an_unknown_job_are_404(make_api) -> None:
    api = await make_api(enable_authentication=True, api_keys=["k1", "k2"])
    response = await api.client.post(
        "/execute", json={"code": "print(1)", "language": "python"}, headers={"X-API-Key": "k1"}
    )
    job_id = response.json()["job_id"]
    async with http_server(api.app) as http:
        mine = await http.get(f"/jobs/{job_id}/stream", headers={"X-API-Key": "k1"})
        theirs = await http.get(f"/jobs/{job_id}/stream", headers={"X-API-Key": "k2"})
        unknown = await http.get(
            "/jobs/00000000-0000-4000-8000-000000000000/stream", headers={"X-API-Key": "k1"}
        )
        nobody = await http.get(f"/jobs/{job_id}/stream")

    assert mine.status_code == 200
    assert theirs.status_code == 404
    assert unknown.status_code == 404
    assert theirs.json() == unknown.json() | {"detail": theirs.json()["detail"]}
    assert job_id not in unknown.text
    assert nobody.status_code == 401


@pytest.mark.parametrize(
    "bad", ["12", "a:b", "-1:0", "1:2:3", "1" * 20 + ":0", f"{2**63 - 1}:0", f"0:{2**62 + 1}"]
)
async def test_a_malformed_last_event_id_is_422(api, bad: str) -> None:
    job_id = await api.submit("print(1)")
    response = await api.client.get(f"/jobs/{job_id}/stream", headers={"Last-Event-ID": bad})
    assert response.status_code == 422
    assert "detail" in response.json()


async def test_offsets_past_the_output_end_the_stream_cleanly(api, http) -> None:
    job_id = await api.submit("print('out')")
    await api.wait(job_id)

    received = await read_all(http, job_id, **{"Last-Event-ID": f"{2**62}:{2**62}"})

    assert [e.name for e in received] == ["status", "end"]
    assert received[-1].json["status"] == "completed"


async def test_past_the_output_cap_the_stream_is_the_stored_output(make_api) -> None:
    api = await make_api(max_output_bytes=1024)
    code = (
        "import time\n"
        "print('h' * 599, flush=True)\n"  # the head is the first 512 bytes: it arrives live
        "time.sleep(3)\n"  # long enough for the stream to connect on a loaded machine
        "print('t' * 1999, flush=True)\n"
    )
    job_id = await api.submit(code)
    async with http_server(api.app) as http:
        received: list[Event] = []
        async with http.stream("GET", f"/jobs/{job_id}/stream") as response:
            async for event in events(response):
                received.append(event)
                if event.name == "stdout" and event.json["offset"] == 0:
                    assert event.bytes == b"h" * 512  # the head, while the job runs
                    assert (await api.status(job_id))["status"] == "running"

    stored = (await api.results(job_id))["stdout"]
    assert output(received, "stdout").decode() == stored
    assert "bytes truncated" in stored and stored.endswith("t" * 511 + "\n")
