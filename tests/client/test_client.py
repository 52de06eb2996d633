"""The synchronous client against a real server: what a caller of ``Client`` sees."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from interpreter.client import (
    AuthenticationError,
    Client,
    ClientError,
    FileInfo,
    InvalidRequest,
    JobConflict,
    JobNotFound,
    OutputEvent,
    ServerUnavailable,
    WaitTimeout,
)
from tests.acceptance.server import ServerProcess, free_port
from tests.client.conftest import KEY, OTHER_KEY
from tests.client.drops import DropFirstAnswer, DropFirstStream


def wait_running(job_status: object, deadline_s: float = 10.0) -> None:
    give_up_at = time.monotonic() + deadline_s
    while time.monotonic() < give_up_at:
        if job_status() == "running":  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail("the job did not start")


def test_run_answers_the_result_in_one_call(client: Client) -> None:
    result = client.run("print(6 * 7)")
    assert result.ok
    assert (result.status, result.stdout, result.stderr, result.exit_code) == (
        "completed",
        "42\n",
        "",
        0,
    )
    assert result.termination_reason == "exit"
    assert result.execution_time_ms is not None
    assert result.raw["job_id"] == result.job_id


def test_a_failing_job_is_a_result_not_an_error(client: Client) -> None:
    result = client.run("import sys\nprint('bad', file=sys.stderr)\nsys.exit(3)")
    assert not result.ok
    assert (result.status, result.exit_code, result.stderr) == ("failed", 3, "bad\n")


def test_a_job_over_its_timeout_has_timed_out(client: Client) -> None:
    result = client.run("import time\ntime.sleep(30)", timeout=1)
    assert result.timed_out
    assert result.status == "timeout" and not result.ok


def test_stdin_shell_and_environment(client: Client) -> None:
    result = client.run("import sys\nprint(sys.stdin.read().upper())", stdin="abc")
    assert result.stdout == "ABC\n"
    result = client.run('echo "$GREETING"', language="shell", environment={"GREETING": "hi"})
    assert result.stdout == "hi\n"


def test_files_in_and_out(client: Client, tmp_path: Path) -> None:
    local = tmp_path / "local.txt"
    local.write_text("from disk")
    code = (
        "import os\n"
        "os.makedirs('out', exist_ok=True)\n"
        "text = open('data/in.txt').read() + open('local.txt').read()\n"
        "open('out/result.txt', 'w').write(text.upper())\n"
        "print(open('raw.bin', 'rb').read().hex())\n"
    )
    result = client.run(
        code, files={"data/in.txt": "hello ", "local.txt": local, "raw.bin": b"\x00\xff"}
    )
    assert result.ok, result
    assert result.stdout == "00ff\n"
    assert [Path(p).name for p in result.files_created] == ["result.txt"]

    job = client.job(result.job_id)
    files = {info.path: info for info in job.files()}
    assert set(files) == {"data/in.txt", "local.txt", "raw.bin", "out/result.txt"}
    content = job.download("out/result.txt")
    assert content == b"HELLO FROM DISK"
    assert files["out/result.txt"] == FileInfo(
        path="out/result.txt",
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        created_at=files["out/result.txt"].created_at,
        modified_at=files["out/result.txt"].modified_at,
    )
    with tarfile.open(fileobj=io.BytesIO(job.archive()), mode="r:gz") as archive:
        member = archive.extractfile("out/result.txt")
        assert member is not None and member.read() == content
    with pytest.raises(JobNotFound):
        job.download("missing.txt")


def test_a_ranged_download_reads_the_first_bytes_and_learns_the_size(client: Client) -> None:
    code = "open('big.bin', 'wb').write(bytes(range(256)) * 40)\nopen('empty.txt', 'w')"
    job = client.job(client.run(code).job_id)
    assert job.download("big.bin", max_bytes=100) == bytes(range(100))
    assert job.download_head("big.bin", 100) == (bytes(range(100)), 10240)
    assert job.download_head("big.bin", 20000) == (bytes(range(256)) * 40, 10240)
    assert job.download("empty.txt", max_bytes=10) == b""
    assert job.download_head("empty.txt", 10) == (b"", 0)
    with pytest.raises(JobNotFound):
        job.download_head("missing.txt", 10)
    with pytest.raises(ValueError):
        job.download("big.bin", max_bytes=0)


def test_large_files_go_as_multipart(client: Client) -> None:
    """1.5 MiB would be 2 MiB of base64, over the JSON body's cap: the client sends multipart."""
    data = os.urandom(3 * 512 * 1024)
    code = "import hashlib\nprint(hashlib.sha256(open('big/data.bin', 'rb').read()).hexdigest())"
    result = client.run(code, files={"big/data.bin": data})
    assert result.ok, result
    assert result.stdout.strip() == hashlib.sha256(data).hexdigest()


def test_submit_then_wait(client: Client) -> None:
    job = client.submit("import time\ntime.sleep(0.5)\nprint('done')", metadata={"who": "sdk"})
    assert job.status() in {"pending", "running"}
    result = job.wait()
    assert (result.job_id, result.stdout) == (job.id, "done\n")
    assert job.result() == result
    assert job.status() == "completed"
    assert job.full_result()["metadata"]["who"] == "sdk"
    assert job.id in [entry["job_id"] for entry in client.jobs(status="completed", limit=500)]


def test_wait_gives_up_at_its_timeout_and_cancel_stops_the_job(client: Client) -> None:
    job = client.submit("import time\ntime.sleep(30)")
    wait_running(job.status)
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        job.wait(timeout=0.5)
    assert time.monotonic() - started < 5
    assert job.cancel()["status"] == "cancelled"
    assert job.wait().status == "cancelled"
    with pytest.raises(JobConflict) as conflict:
        job.cancel()
    assert conflict.value.status_code == 409


def test_stream_delivers_output_while_the_job_runs(client: Client) -> None:
    job = client.submit("import time\nprint('first', flush=True)\ntime.sleep(1)\nprint('second')")
    events: list[OutputEvent] = []
    status_at_first_output = None
    for event in job.stream():
        if event.event == "stdout" and status_at_first_output is None:
            status_at_first_output = job.status()
        events.append(event)
    assert status_at_first_output == "running"
    assert "".join(e.text for e in events if e.event == "stdout") == "first\nsecond\n"
    assert events[-1].event == "end"
    assert events[-1].data["status"] == "completed"


def test_stream_resumes_a_dropped_connection_without_loss(server: ServerProcess) -> None:
    transport = DropFirstStream()
    with Client(server.url, api_key=KEY, transport=transport) as client:
        code = (
            "import time\n"
            "for i in range(6):\n"
            "    print(f'line {i}', flush=True)\n"
            "    time.sleep(0.2)\n"
        )
        job = client.submit(code)
        events = list(job.stream())
    assert len(transport.last_event_ids) == 2, transport.last_event_ids
    assert transport.last_event_ids[0] is None and transport.last_event_ids[1] is not None
    stdout = [e for e in events if e.event == "stdout"]
    expected = "".join(f"line {i}\n" for i in range(6))
    assert "".join(e.text for e in stdout) == expected
    offsets = [e.offset for e in stdout]
    assert offsets == [sum(len(e.bytes) for e in stdout[:i]) for i in range(len(stdout))]
    assert [e.event for e in events].count("end") == 1 and events[-1].event == "end"
    assert [e.data["status"] for e in events if e.event == "status"].count("running") <= 1


def test_stream_text_of_bytes_that_are_not_utf8(client: Client) -> None:
    job = client.submit("import sys\nsys.stdout.buffer.write(b'ok \\xff\\n')")
    stdout = [e for e in job.stream() if e.event == "stdout"]
    assert b"".join(e.bytes for e in stdout) == b"ok \xff\n"
    assert "".join(e.text for e in stdout) == "ok \ufffd\n"


def test_typed_errors(client: Client, server: ServerProcess) -> None:
    job = client.submit("print(1)")
    with Client(server.url, api_key=OTHER_KEY) as other, pytest.raises(JobNotFound) as missing:
        other.job(job.id).status()
    assert missing.value.status_code == 404 and job.id in missing.value.detail
    with (
        Client(server.url, api_key="wrong") as stranger,
        pytest.raises(AuthenticationError) as auth,
    ):
        stranger.run("print(1)")
    assert auth.value.status_code == 401 and auth.value.detail
    with pytest.raises(InvalidRequest) as invalid:
        client.run("print(1)", language="cobol")
    assert invalid.value.status_code == 422 and "cobol" in invalid.value.detail
    assert isinstance(invalid.value, ClientError)
    job.wait()


def test_no_server_is_server_unavailable_after_the_retries() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", max_retries=2) as client:
        started = time.monotonic()
        with pytest.raises(ServerUnavailable) as unavailable:
            client.health()
    assert unavailable.value.status_code is None
    assert time.monotonic() - started > 0.1  # it backed off between the tries


def test_a_retry_after_a_lost_answer_does_not_run_the_code_twice(server: ServerProcess) -> None:
    directory = f"sdk-{uuid.uuid4().hex}"
    transport = DropFirstAnswer()
    with Client(server.url, api_key=KEY, transport=transport) as client:
        code = "with open('count.txt', 'a') as f:\n    f.write('ran\\n')\nprint('once')"
        result = client.run(code, working_directory=directory)
        assert result.stdout == "once\n"
        count = client.run("print(open('count.txt').read(), end='')", working_directory=directory)
    assert count.stdout == "ran\n"
    first_key = transport.execute_keys[0]
    assert len(transport.execute_keys) == 3  # the lost one, its retry, the second job
    assert transport.execute_keys[1] == first_key and transport.execute_keys[2] != first_key


def test_health(client: Client) -> None:
    assert client.health()["status"] in {"healthy", "ok"}
