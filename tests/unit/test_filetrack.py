from __future__ import annotations

import os
import stat
from pathlib import Path

from interpreter.executor import ScanLimits
from interpreter.filetrack import EMPTY, FileStat, Snapshot, diff, disk_usage, scan, scan_async

LIMITS = ScanLimits()


def test_scan_records_files_and_symlinks_by_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "b.bin").write_bytes(b"\x00" * 10)
    (tmp_path / "link").symlink_to("a.txt")
    snapshot = scan(tmp_path, LIMITS)
    assert set(snapshot.entries) == {
        str(tmp_path / "a.txt"),
        str(tmp_path / "sub" / "deeper" / "b.bin"),
        str(tmp_path / "link"),
    }
    assert snapshot.complete and snapshot.note is None
    st = os.lstat(tmp_path / "sub" / "deeper" / "b.bin")
    assert snapshot.entries[str(tmp_path / "sub" / "deeper" / "b.bin")] == FileStat(
        10, st.st_mtime_ns, st.st_ino
    )


def test_symlink_to_a_host_file_is_recorded_as_a_link_not_its_target(tmp_path: Path) -> None:
    (tmp_path / "passwd").symlink_to("/etc/passwd")
    entry = scan(tmp_path, LIMITS).entries[str(tmp_path / "passwd")]
    link = os.lstat(tmp_path / "passwd")
    assert stat.S_ISLNK(link.st_mode)
    assert entry == FileStat(len("/etc/passwd"), link.st_mtime_ns, link.st_ino)
    assert entry.inode != os.stat("/etc/passwd").st_ino


def test_symlink_to_a_directory_is_not_descended(tmp_path: Path) -> None:
    inside = tmp_path / "job"
    inside.mkdir()
    (inside / "etc").symlink_to("/etc")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("x")
    (inside / "out").symlink_to(outside)
    snapshot = scan(inside, LIMITS)
    assert sorted(snapshot.entries) == [str(inside / "etc"), str(inside / "out")]


def test_root_that_is_a_symlink_or_missing_gives_an_empty_snapshot(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("x")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert scan(tmp_path / "alias", LIMITS).entries == {}
    assert scan(tmp_path / "missing", LIMITS).entries == {}


def test_entry_bound_stops_the_scan_and_says_so(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"f{i}").write_text("x")
    snapshot = scan(tmp_path, ScanLimits(max_entries=10))
    assert not snapshot.complete
    assert snapshot.note == "file scan stopped after 10 entries"
    assert len(snapshot.entries) <= 10


def test_time_bound_stops_the_scan_and_says_so(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"f{i}").write_text("x")
    snapshot = scan(tmp_path, ScanLimits(max_seconds=0.0))
    assert not snapshot.complete
    assert snapshot.note == "file scan stopped after 0 s"


async def test_diff_reports_created_modified_and_deleted_sorted(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("same")
    (tmp_path / "change").write_text("old")
    (tmp_path / "gone").write_text("bye")
    before = await scan_async(tmp_path, LIMITS)
    (tmp_path / "change").write_text("new and longer")
    (tmp_path / "gone").unlink()
    (tmp_path / "z-new").write_text("hi")
    (tmp_path / "a-new").mkdir()
    (tmp_path / "a-new" / "inner").write_text("hi")
    changes = diff(before, await scan_async(tmp_path, LIMITS))
    assert changes.created == (str(tmp_path / "a-new" / "inner"), str(tmp_path / "z-new"))
    assert changes.modified == (str(tmp_path / "change"),)
    assert changes.deleted == (str(tmp_path / "gone"),)
    assert changes.complete and changes.note is None


def test_replacing_a_file_with_same_size_and_mtime_is_a_modification() -> None:
    before = Snapshot({"/w/f": FileStat(3, 100, 1)})
    after = Snapshot({"/w/f": FileStat(3, 100, 2)})
    assert diff(before, after).modified == ("/w/f",)


def test_diff_is_incomplete_when_either_snapshot_is() -> None:
    partial = Snapshot({}, complete=False, note="file scan stopped after 5 entries")
    changes = diff(EMPTY, partial)
    assert not changes.complete
    assert changes.note == "file scan stopped after 5 entries"


def test_disk_usage_counts_the_tree_and_never_follows_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"x" * (4 << 20))
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "sub" / "data").write_bytes(b"y" * (1 << 20))
    (work / "link").symlink_to(outside)

    used = disk_usage(work, ScanLimits())

    assert 1 << 20 <= used < 2 << 20  # the 1 MiB file, not the 4 MiB one behind the link
