"""The stream's pure parts: cutting output between UTF-8 characters, event ids, and the
worker's batching of live output into the store."""

from __future__ import annotations

import asyncio

import pytest

from interpreter.api.sse import Offsets, complete_prefix, event, output_data, pieces
from interpreter.errors import InvalidRequest
from interpreter.job import OutputChunk
from interpreter.running.live import ChunkPublisher
from interpreter.store.memory import MemoryStore

EURO = "\u20ac".encode()  # 3 bytes
SMILE = "\U0001f600".encode()  # 4 bytes


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (b"", 0),
        (b"abc", 3),
        (b"a" + EURO, 4),
        (b"a" + EURO[:1], 1),
        (b"a" + EURO[:2], 1),
        (b"a" + SMILE[:3], 1),
        (b"a" + SMILE, 5),
        (b"a\xff", 2),  # invalid: nothing to wait for
        (b"\x80\x80", 2),  # continuation bytes without a lead
    ],
)
def test_complete_prefix_holds_back_only_an_unfinished_character(data: bytes, kept: int) -> None:
    assert complete_prefix(data) == kept


def test_pieces_are_cut_between_characters() -> None:
    data = EURO * 10
    cut = pieces(data, limit=8)
    assert b"".join(cut) == data
    assert all(len(p) <= 8 for p in cut)
    assert [p.decode() for p in cut]  # each piece decodes alone


def test_offsets_parse_and_print() -> None:
    assert Offsets.parse(None) == Offsets(0, 0)
    assert Offsets.parse("12:3") == Offsets(12, 3)
    assert Offsets(12, 3).advanced("stderr", 2).event_id == "12:5"
    for bad in ("12", "a:b", "1:2:3", "-1:0"):
        with pytest.raises(InvalidRequest):
            Offsets.parse(bad)


def test_an_event_is_one_data_line_whatever_the_output_holds() -> None:
    raw = event("stdout", output_data(7, b"a\r\nb\rc\n\xff"), Offsets(13, 0)).decode()
    lines = raw.split("\n")
    assert lines[:2] == ["event: stdout", "id: 13:0"]
    assert lines[2].startswith("data: {") and "\r" not in raw
    assert lines[3:] == ["", ""]
    assert '"base64":"YQ0KYg1jCv8="' in lines[2]


async def test_the_publisher_batches_a_tight_loop_into_few_writes() -> None:
    store = MemoryStore()
    writes = 0
    add = store.add_chunks

    async def counting(job_id: str, chunks: list[OutputChunk]) -> None:
        nonlocal writes
        writes += 1
        await add(job_id, chunks)

    store.add_chunks = counting  # type: ignore[method-assign]
    publisher = ChunkPublisher(store, window_s=0.05)
    offset = 0
    for i in range(200):  # 200 prints within ~0.1 s
        data = f"line {i}\n".encode()
        publisher.write("job", "stdout", offset, data)
        offset += len(data)
        if i % 50 == 0:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)

    stored = await store.get_chunks("job", 0, 0)
    assert b"".join(c.data for c in stored) == b"".join(f"line {i}\n".encode() for i in range(200))
    assert 1 <= writes <= 6

    publisher.write("job", "stdout", offset, b"never published")
    publisher.forget("job")  # the process ended: its output is stored whole with its end
    await asyncio.sleep(0.1)
    assert b"".join(c.data for c in await store.get_chunks("job", 0, 0)).endswith(b"199\n")
