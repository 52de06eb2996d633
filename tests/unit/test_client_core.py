"""The client's pure parts: reading events, errors and results, without a server."""

from __future__ import annotations

import json

from interpreter.client import (
    AuthenticationError,
    ClientError,
    InvalidRequest,
    JobConflict,
    JobNotFound,
    OutputEvent,
    RateLimited,
    Result,
    ServerUnavailable,
)
from interpreter.client import _core as core


def events(text: str) -> list[OutputEvent]:
    parser = core.EventParser()
    found = [parser.feed(line) for line in text.split("\n")]
    return [event for event in found if event is not None]


def test_event_parser_reads_events_ids_and_skips_comments() -> None:
    stream = (
        ": keep-alive\n\n"
        'event: status\nid: 0:0\ndata: {"status":"running"}\n\n'
        'event: stdout\nid: 3:0\ndata: {"offset":0,"text":"a\\nb"}\n\n'
        'event: stderr\nid: 3:2\ndata: {"offset":0,"text":"\\ufffd","base64":"/w=="}\n\n'
        'event: stdout\ndata: {"offset": 3, "te'  # cut: never dispatched
    )
    found = events(stream)
    assert [(e.event, e.id) for e in found] == [
        ("status", "0:0"),
        ("stdout", "3:0"),
        ("stderr", "3:2"),
    ]
    assert found[1].text == "a\nb" and found[1].offset == 0
    assert found[2].bytes == b"\xff" and found[2].text == "\ufffd"
    assert found[0].text == "" and found[0].bytes == b""


def test_stream_state_skips_the_repeated_status_of_a_resumed_stream() -> None:
    state = core.StreamState()
    running = OutputEvent("status", "0:0", {"status": "running"})
    out = OutputEvent("stdout", "2:0", {"offset": 0, "text": "a\n"})
    assert state.accept(running) and state.accept(out)
    state.reconnect()
    assert state.last_id == "2:0"
    assert not state.accept(OutputEvent("status", "2:0", {"status": "running"}))
    assert state.accept(OutputEvent("end", "2:0", {"status": "completed"})) and state.done


def test_errors_are_typed_by_status_with_the_servers_detail() -> None:
    def error(status: int, body: object, **headers: str) -> ClientError:
        return core.error_for(status, headers, json.dumps(body).encode())

    assert isinstance(error(401, {"detail": "Invalid API key"}), AuthenticationError)
    missing = error(404, {"detail": "Job not found: x"})
    assert isinstance(missing, JobNotFound) and missing.detail == "Job not found: x"
    assert isinstance(error(409, {"detail": "done"}), JobConflict)
    invalid = error(422, {"detail": "bad", "errors": [{"loc": ["body"], "msg": "m", "type": "t"}]})
    assert isinstance(invalid, InvalidRequest) and invalid.errors[0]["msg"] == "m"
    limited = error(429, {"detail": "slow down"}, **{"retry-after": "7"})
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0
    unavailable = error(503, {"detail": "shutting down"})
    assert isinstance(unavailable, ServerUnavailable) and unavailable.retry_after is None
    plain = core.error_for(500, {}, b"<html>oops</html>")
    assert type(plain) is ClientError and plain.status_code == 500 and "oops" in plain.detail
    assert core.retry_delay_s(RateLimited("x", retry_after=3600), 1) == core.MAX_RETRY_AFTER_S


def test_small_files_go_in_the_body_large_ones_as_multipart() -> None:
    body = {"code": "x", "language": "python"}
    small = core.execute_call(body, {"a.txt": "hi"}, wait_s=0, idempotency_key="k")
    assert small.json is not None and small.files is None
    assert small.json["input_files"] == [{"path": "a.txt", "content": "aGk="}]
    assert small.headers == {"Idempotency-Key": "k"} and small.params == {}
    large = core.execute_call(body, {"b.bin": b"0" * (2 << 20)}, wait_s=6, idempotency_key="k")
    assert large.json is None and large.files is not None and large.params == {"wait": "6"}
    assert [name for name, _ in large.files] == ["request", "files"]
    assert core.execute_wait_s(None) == 60 and core.execute_wait_s(1) == 6


def test_result_properties() -> None:
    raw = {
        "job_id": "j",
        "status": "timeout",
        "stdout": "",
        "stderr": "",
        "exit_code": None,
        "termination_reason": "timeout",
    }
    result = Result.from_dict(raw)
    assert result.timed_out and not result.ok and result.files_created == []
    assert Result.from_dict({**raw, "status": "completed", "exit_code": 0}).ok


def test_a_ranged_download_asks_for_the_first_bytes_and_reads_the_size() -> None:
    call = core.download_call("j1", "out/a b.txt", 100)
    assert (call.path, call.headers) == ("/jobs/j1/files/out/a%20b.txt", {"Range": "bytes=0-99"})
    assert core.download_call("j1", "a.txt", None).headers == {}
    assert core.file_head(b"x" * 100, {"content-range": "bytes 0-99/5000"}, 100) == (
        b"x" * 100,
        5000,
    )
    # a server that ignored the range sent the whole file
    assert core.file_head(b"x" * 300, {}, 100) == (b"x" * 100, 300)
