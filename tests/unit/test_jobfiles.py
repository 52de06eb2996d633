"""The pure pieces of a job's files: requested paths, Range headers, what a capture keeps, the
archive's stream; on a directory made here (no job, no server)."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from interpreter.errors import JobFileNotFound, RangeNotSatisfiable
from interpreter.job import Job, JobRequest, new_job_id, utcnow
from interpreter.jobfiles import (
    CaptureLimits,
    StoredFiles,
    archive,
    capture,
    content_type,
    listing_of,
    parse_range,
    path_parts,
    scan,
)
from interpreter.store import MemoryStore


@pytest.mark.parametrize(
    ("path", "parts"),
    [("a.txt", ["a.txt"]), ("d/e/f", ["d", "e", "f"]), ("./d//f", ["d", "f"])],
)
def test_a_relative_path_is_its_components(path: str, parts: list[str]) -> None:
    assert path_parts(path) == parts


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "..", "a/../b", "a/..", ".", "a\x00b", "//x", "a.txt/", "d/"]
)
def test_a_path_that_leaves_or_names_nothing_is_not_found(path: str) -> None:
    with pytest.raises(JobFileNotFound):
        path_parts(path)


@pytest.mark.parametrize(
    ("header", "span"),
    [
        (None, None),
        ("bytes=0-0", (0, 1)),
        ("bytes=0-99", (0, 100)),
        ("bytes=10-", (10, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=-1000", (0, 100)),
        ("bytes=50-1000", (50, 100)),
        ("Bytes = 5 - 6", (5, 7)),
        ("bytes=0-1,3-4", None),  # several ranges: the whole file
        ("items=0-1", None),
        ("bytes=5-2", None),  # invalid: ignored
        ("bytes=x-", None),
        ("bytes=\u00b2-", None),  # a digit to str.isdigit, not to int
        ("bytes=1-\u0663", None),
        ("bytes=-", None),
        ("bytes", None),
    ],
)
def test_range_headers(header: str | None, span: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == span


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),
        ("bytes=200-300", 100),
        ("bytes=-0", 100),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
    ],
)
def test_a_range_outside_the_file_is_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        parse_range(header, size)
    assert raised.value.size == size


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    root = tmp_path / "job"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"a" * 10)
    (root / "b.txt").write_bytes(b"b" * 20)
    (root / "sub" / "c.txt").write_bytes(b"c" * 30)
    os.symlink("/etc/passwd", root / "link")
    os.mkfifo(root / "pipe")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield root, fd
    finally:
        os.close(fd)


def test_a_capture_keeps_files_within_its_caps_and_says_what_it_skipped(directory) -> None:
    _, fd = directory
    rows = {row.path: row for row in capture(fd, CaptureLimits(max_bytes=35, max_files=10))}

    assert rows["a.txt"].content == b"a" * 10 and rows["b.txt"].content == b"b" * 20
    assert rows["sub/c.txt"].content is None and "35 captured bytes" in (
        rows["sub/c.txt"].reason or ""
    )
    assert rows["sub"].kind == "directory"
    assert (rows["link"].kind, rows["pipe"].kind) == ("symlink", "fifo")
    listing = listing_of(list(rows.values()))
    assert [f.path for f in listing.files] == ["a.txt", "b.txt"]
    assert {s.path for s in listing.skipped} == {"sub/c.txt", "link", "pipe"}


def test_a_capture_keeps_at_most_its_count_of_files(directory) -> None:
    _, fd = directory
    rows = capture(fd, CaptureLimits(max_files=1))
    kept = [row.path for row in rows if row.content is not None]
    assert kept == ["a.txt"]
    assert "1 captured files" in next(r.reason or "" for r in rows if r.path == "b.txt")


def test_a_scan_past_its_bound_is_incomplete(directory) -> None:
    _, fd = directory
    listing = scan(fd, max_entries=2, max_seconds=5)
    assert not listing.complete and listing.note and "2 entries" in listing.note


async def test_an_archive_from_the_store_holds_the_captured_files(directory) -> None:
    _, fd = directory
    store = MemoryStore()
    job = await store.create(
        Job(id=new_job_id(), request=JobRequest(code="", language="python", timeout_s=1))
    )
    assert await store.put_files(job.id, capture(fd, CaptureLimits()))
    source = StoredFiles(store, job.id)

    data = b"".join([chunk async for chunk in archive(source, await source.listing(), utcnow())])

    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = sorted(tar.getnames())
        assert tar.extractfile("sub/c.txt").read() == b"c" * 30  # type: ignore[union-attr]
    assert names == ["a.txt", "b.txt", "sub", "sub/c.txt"]
    opened = await source.open("sub/c.txt")
    assert b"".join([c async for c in opened.chunks(5, 8)]) == b"ccc"
    with pytest.raises(JobFileNotFound):
        await source.open("link")


@pytest.mark.parametrize(
    ("path", "media"),
    [
        ("out.csv", "text/csv"),
        ("d/page.html", "text/html"),
        ("blob.bin", "application/octet-stream"),
        ("noextension", "application/octet-stream"),
        ("data.json", "application/json"),
        ("dist/a.tar.gz", "application/gzip"),
        ("log.txt.xz", "application/x-xz"),
    ],
)
def test_content_types_are_guessed_from_the_name(path: str, media: str) -> None:
    assert content_type(path) == media


def test_a_capture_records_a_bounded_number_of_skipped_entries(tmp_path: Path) -> None:
    root = tmp_path / "job"
    root.mkdir()
    for i in range(5):
        os.symlink("/etc/passwd", root / f"link{i}")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rows = capture(fd, CaptureLimits(max_files=2))
    finally:
        os.close(fd)
    listing = listing_of(rows)
    assert len(listing.skipped) == 2
    assert not listing.complete and listing.note and "3 directories or skipped" in listing.note


def test_a_name_that_is_not_utf8_is_skipped_once_even_when_a_real_name_spells_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "job"
    root.mkdir()
    (root / "\\xff.txt").write_text("real")  # the escaped spelling of the other one
    with open(os.fsencode(root) + b"/\xff.txt", "wb") as raw:
        raw.write(b"raw")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        listing = scan(fd, max_entries=100, max_seconds=5)
        rows = capture(fd, CaptureLimits())
    finally:
        os.close(fd)
    assert [s.reason for s in listing.skipped] == ["its name is not valid UTF-8: not served"]
    assert [f.path for f in listing.files] == ["\\xff.txt"]
    assert [row.path for row in rows] == ["\\xff.txt"]  # one row a path: the store's key
