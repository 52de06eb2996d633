from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from interpreter.process.output import StreamCapture, truncation_marker


def capture_all(path: Path, limit_bytes: int, chunks: list[bytes]) -> StreamCapture:
    capture = StreamCapture(path, limit_bytes)
    for chunk in chunks:
        capture.feed(chunk)
    capture.finish()
    return capture


def expected_file(data: bytes, limit_bytes: int) -> bytes:
    if len(data) <= limit_bytes:
        return data
    head = limit_bytes // 2
    tail = limit_bytes - head
    dropped = len(data) - head - tail
    return data[:head] + truncation_marker(dropped) + data[len(data) - tail :]


def test_short_stream_is_kept_exactly(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "stdout"
    capture = capture_all(path, 100, [b"hello ", b"\x00\xff world\n"])
    assert path.read_bytes() == b"hello \x00\xff world\n"
    assert capture.total_bytes == 15
    assert not capture.truncated


def test_stream_exactly_at_the_limit_is_not_truncated(tmp_path: Path) -> None:
    data = bytes(range(100))
    capture = capture_all(tmp_path / "out", 100, [data[:30], data[30:]])
    assert (tmp_path / "out").read_bytes() == data
    assert not capture.truncated


def test_long_stream_keeps_head_marker_and_tail(tmp_path: Path) -> None:
    data = b"".join(f"line {i}\n".encode() for i in range(10_000))
    capture = capture_all(tmp_path / "out", 1000, [data])
    content = (tmp_path / "out").read_bytes()
    assert content == expected_file(data, 1000)
    assert content.startswith(b"line 0\nline 1\n")
    assert content.endswith(b"line 9999\n")
    assert f"[... {len(data) - 1000} bytes truncated ...]".encode() in content
    assert capture.truncated
    assert capture.total_bytes == len(data)


@pytest.mark.parametrize("limit_bytes", [0, 1, 2, 7, 64, 1001])
def test_ring_keeps_the_latest_bytes_whatever_the_chunking(
    tmp_path: Path, limit_bytes: int
) -> None:
    rng = random.Random(limit_bytes)
    data = rng.randbytes(5000)
    chunks: list[bytes] = []
    offset = 0
    while offset < len(data):
        size = rng.choice([1, 3, 50, 499, 700, 2000])
        chunks.append(data[offset : offset + size])
        offset += size
    capture = capture_all(tmp_path / "out", limit_bytes, chunks)
    assert (tmp_path / "out").read_bytes() == expected_file(data, limit_bytes)
    assert capture.total_bytes == len(data)


def test_output_file_symlink_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "out").symlink_to(victim)
    capture = StreamCapture(tmp_path / "out", 100)
    capture.feed(b"overwritten")
    capture.finish()
    assert victim.read_bytes() == b"precious"


def test_a_stream_that_stays_empty_leaves_no_file(tmp_path: Path) -> None:
    capture = StreamCapture(tmp_path / "out", 100)
    capture.finish()
    assert capture.total_bytes == 0
    assert not (tmp_path / "out").exists()


async def test_attached_pipe_is_read_until_eof(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    capture = StreamCapture(tmp_path / "out", 64)
    capture.attach(asyncio.get_running_loop(), read_fd)
    data = bytes(range(256)) * 40
    os.write(write_fd, data)
    os.close(write_fd)
    assert await capture.wait_eof(5.0)
    capture.finish()
    assert (tmp_path / "out").read_bytes() == expected_file(data, 64)
    assert capture.total_bytes == len(data)


async def test_wait_eof_gives_up_while_a_writer_holds_the_pipe(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    try:
        capture = StreamCapture(tmp_path / "out", 64)
        capture.attach(asyncio.get_running_loop(), read_fd)
        os.write(write_fd, b"partial")
        assert not await capture.wait_eof(0.05)
        capture.finish()  # closes the read end
        assert (tmp_path / "out").read_bytes() == b"partial"
    finally:
        os.close(write_fd)
