from __future__ import annotations

import os
import stat
from pathlib import Path

from interpreter import tree
from interpreter.process.filetrack import EMPTY, FileStat, Snapshot, diff, scan, scan_async
from interpreter.process.run import ScanLimits

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


def _chain(base: Path, depth: int) -> tuple[str, int]:
    """``depth`` nested directories ``dir`` under ``base`` with a file ``leaf`` at the bottom,
    made by descriptor: the leaf's absolute path and a descriptor of its directory."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("dir", dir_fd=fd)
        deeper = os.open("dir", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    return str(base) + "/dir" * depth + "/leaf", fd


async def test_a_file_under_a_path_longer_than_path_max_is_found_and_its_changes_reported(
    tmp_path: Path,
) -> None:
    leaf, bottom = _chain(tmp_path, 1200)  # deeper than the recursion limit too
    try:
        assert len(leaf) > 4096
        before = await scan_async(tmp_path, LIMITS)
        assert list(before.entries) == [leaf] and before.complete
        out = os.open("leaf", os.O_WRONLY | os.O_APPEND, dir_fd=bottom)
        os.write(out, b"x" * 100_000)
        os.close(out)
        os.close(os.open("new", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=bottom))
        changes = diff(before, await scan_async(tmp_path, LIMITS))
        assert changes.modified == (leaf,)
        assert changes.created == (leaf.removesuffix("leaf") + "new",)
    finally:
        os.close(bottom)
        tree.remove_path(tmp_path / "dir")


def test_scan_of_a_descriptor_is_not_redirected_by_a_component_swapped_for_a_symlink(
    tmp_path: Path,
) -> None:
    workspaces = tmp_path / "workspaces"
    (workspaces / "proj" / "sub").mkdir(parents=True)
    (workspaces / "proj" / "sub" / "mine").write_text("x")
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "SECRET").write_text("host")
    root = os.open(workspaces, os.O_RDONLY | os.O_DIRECTORY)
    cwd = tree.open_beneath(root, "proj/sub")
    try:
        (workspaces / "proj").rename(workspaces / "moved")  # the job swaps a component
        (workspaces / "proj").symlink_to(outside)
        shown = workspaces / "proj" / "sub"
        snapshot = scan(shown, LIMITS, root_fd=cwd)
        assert list(snapshot.entries) == [str(shown / "mine")]
    finally:
        os.close(cwd)
        os.close(root)
