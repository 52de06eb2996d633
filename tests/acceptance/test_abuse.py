"""Limits on the API over a real socket: body size by Content-Length and while a chunked body
streams (uvicorn's framing, which the in-process transport does not exercise), and the rate limit
with its Retry-After. After each, the server still runs a job."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.acceptance.server import ServerProcess, running_server, submit, wait_final

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]

MAX_BODY_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(
        tmp_path_factory.mktemp("abuse"),
        INTERPRETER_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        INTERPRETER_RATE_LIMIT="1000/minute",
    ) as server:
        yield server


def still_runs_a_job(server: ServerProcess) -> None:
    client = server.client()
    job_id = submit(client, "print('still alive')")
    assert wait_final(client, job_id, deadline_s=10)["status"] == "completed"


def read_response(
    sock: socket.socket, deadline_s: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 response with a Content-Length."""
    data = b""
    give_up = time.monotonic() + deadline_s
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        assert time.monotonic() < give_up, f"no complete response: {data[:300]!r}"
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def test_a_declared_body_over_the_limit_is_413_before_it_is_sent(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /execute HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\nExpect: 100-continue\r\n\r\n"
        )
        status, headers, body = read_response(sock)  # no 100 Continue: the body is not wanted

    assert status == 413
    assert json.loads(body) == {
        "detail": f"request body is 50000000 bytes; the maximum is {MAX_BODY_BYTES} bytes"
    }
    assert headers["connection"] == "close"
    still_runs_a_job(server)


def test_a_chunked_body_over_the_limit_is_413_while_it_streams(server: ServerProcess) -> None:
    chunk = b"x" * 16384
    sent = 0
    with connect(server) as sock:
        sock.sendall(
            b"POST /execute HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        while sent < 256 * 2**20:  # far more than the cap: the answer must come first
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        status, _, body = read_response(sock)

    assert status == 413
    assert json.loads(body) == {
        "detail": f"request body is larger than the maximum of {MAX_BODY_BYTES} bytes"
    }
    still_runs_a_job(server)


def test_a_chunked_body_within_the_limit_is_accepted(server: ServerProcess) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"code": "print(6 * 7)", '
        yield b'"language": "python"}'

    client = server.client()
    response = client.post(
        "/execute", content=pieces(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    assert wait_final(client, job_id)["status"] == "completed"
    assert client.get(f"/results/{job_id}").json()["stdout"] == "42\n"


def test_over_the_rate_limit_is_429_with_retry_after_and_polls_go_on(start_server) -> None:
    server = start_server(INTERPRETER_RATE_LIMIT="2/minute")
    client: httpx.Client = server.client()
    job_id = submit(client, "print(1)")
    submit(client, "print(2)")

    refused = client.post("/execute", json={"code": "print(3)"})

    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("rate limit exceeded: 2 per 1 minute; retry in ")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert wait_final(client, job_id)["status"] == "completed"
    assert all(client.get(f"/jobs/{job_id}/status").status_code == 200 for _ in range(10))
