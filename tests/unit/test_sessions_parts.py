"""The pure parts of sessions: a cell's outputs kept within their caps, and what the Kernel
Gateway channels take from a client before anything reaches a kernel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from interpreter.errors import InvalidRequest
from interpreter.sessions.cell import Cell
from interpreter.sessions.kernel import last_words, plain
from interpreter.sessions.relay import Relay

pytestmark = pytest.mark.unit


def cell(tmp_path: Path, total: int = 1000, bundle: int = 100) -> Cell:
    return Cell(
        tmp_path / "out", tmp_path / "err", 64, None, total_bytes=total, bundle_bytes=bundle
    )


def test_a_value_over_the_bundle_cap_is_left_out_and_the_bundle_says_so(tmp_path: Path) -> None:
    kept = cell(tmp_path)
    kept.bundle("display_data", {"text/plain": "<Figure>", "image/png": "A" * 500})
    kept.bundle("execute_result", {"application/json": {"a": [1, 2]}, 3: "not a mime type"})
    assert kept.outputs == [
        {"type": "display_data", "data": {"text/plain": "<Figure>"}, "truncated": True},
        {"type": "execute_result", "data": {"application/json": {"a": [1, 2]}}, "truncated": False},
    ]
    assert not kept.outputs_truncated


def test_bundles_past_the_total_are_left_out(tmp_path: Path) -> None:
    kept = cell(tmp_path, total=150, bundle=100)
    for n in range(4):
        kept.bundle("display_data", {"text/plain": f"{n}" * 60})
    assert [o["data"]["text/plain"][0] for o in kept.outputs] == ["0", "1"]
    assert kept.outputs_truncated


def test_printed_text_goes_to_the_output_files_head_and_tail(tmp_path: Path) -> None:
    kept = cell(tmp_path)
    kept.stream("stdout", "x" * 100 + "END")
    kept.stream("stderr", "warning\n")
    kept.stream("bogus", "to stderr\n")
    kept.finish()
    out = (tmp_path / "out").read_text()
    assert out.startswith("x" * 32) and out.endswith("END") and "truncated" in out
    assert (tmp_path / "err").read_text() == "warning\nto stderr\n"


def test_an_error_is_kept_within_the_cap_and_without_colours(tmp_path: Path) -> None:
    kept = cell(tmp_path, bundle=50)
    kept.error("ValueError", "v" * 80, "line\n" * 30 + "last")
    assert kept.error_info is not None
    assert len(kept.error_info["value"]) == 50 and kept.error_info["traceback"].endswith("last")
    assert plain("\x1b[0;31mValueError\x1b[0m: \x1b[1mbad\x1b[0m") == "ValueError: bad"


class Channel:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


class Client:
    def __init__(self) -> None:
        self.shell_channel = Channel()
        self.control_channel = Channel()


class KernelStub:
    def __init__(self) -> None:
        self.client = Client()


def relay() -> tuple[Relay, Client]:
    kernel = KernelStub()
    return Relay(kernel), kernel.client  # type: ignore[arg-type]


def frame(msg_type: str, channel: str = "shell", **content: Any) -> str:
    header = {"msg_id": "m1", "msg_type": msg_type, "session": "s", "username": "u"}
    return json.dumps({"channel": channel, "header": header, "content": content})


def test_an_execute_request_is_sent_with_stdin_off() -> None:
    sending, client = relay()
    sending.send(frame("execute_request", code="1 + 1", allow_stdin=True))
    (sent,) = client.shell_channel.sent
    assert sent["content"] == {"code": "1 + 1", "allow_stdin": False}
    assert (sent["msg_id"], sent["msg_type"], sent["parent_header"]) == (
        "m1",
        "execute_request",
        {},
    )
    sending.send(frame("interrupt_request", channel="control"))
    assert [m["msg_type"] for m in client.control_channel.sent] == ["interrupt_request"]


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[1, 2]",
        json.dumps({"header": {"msg_type": "execute_request"}}),  # no msg_id
        frame("shutdown_request", channel="control"),  # DELETE ends a kernel
        frame("execute_request", channel="stdin"),
        frame("debug_request", channel="control"),
        json.dumps({"header": {"msg_id": "1", "msg_type": "execute_request"}, "content": [1]}),
    ],
)
def test_a_frame_the_kernel_should_not_get_is_refused(bad: str) -> None:
    sending, client = relay()
    with pytest.raises(InvalidRequest):
        sending.send(bad)
    assert client.shell_channel.sent == [] and client.control_channel.sent == []


@pytest.mark.parametrize(
    ("output", "words"),
    [
        (  # a traceback: its last line
            "Traceback (most recent call last):\n"
            '  File "<frozen runpy>", line 198, in _run_module_as_main\n'
            "ModuleNotFoundError: No module named 'ipykernel_launcher'\n",
            "ModuleNotFoundError: No module named 'ipykernel_launcher'",
        ),
        (  # a fatal error at start: the exception, not the thread dump after it
            "Fatal Python error: init_sys_streams: can't initialize sys standard streams\n"
            "Python runtime state: core initialized\n"
            "LookupError: unknown encoding: no-such-encoding\n\n"
            "Current thread 0x00007f (most recent call first):\n"
            "  <no Python frame>\n",
            "LookupError: unknown encoding: no-such-encoding",
        ),
        ("Killed\n", "Killed"),  # no exception: the last line
        ("", "no output"),
    ],
)
def test_a_kernel_that_could_not_start_says_why(output: str, words: str) -> None:
    assert last_words(output) == words
