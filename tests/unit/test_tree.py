"""Host-side operations on hostile job trees, by descriptor: deep trees, long paths, symlinks to
the host, swapped directories, fifos, descriptor bounds, and overlay upper layers."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from interpreter import tree

DEPTH = 3000  # three times the recursion limit; paths of 6,000 characters
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
AS_ROOT = os.geteuid() == 0


# -- helpers -----------------------------------------------------------------------------------
@contextlib.contextmanager
def opened(path: Path) -> Iterator[int]:
    fd = os.open(path, DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


def make_chain(base: Path, depth: int, name: str = "d") -> str:
    """``depth`` nested directories ``name`` under ``base`` and a file ``leaf`` at the bottom,
    made by descriptor; the leaf's path relative to ``base``."""
    fd = os.open(base, DIR_FLAGS)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            deeper = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = deeper
        os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    return f"{name}/" * depth + "leaf"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def canary(tmp_path: Path) -> Path:
    """A host directory outside the job's tree, with a file that must survive untouched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "SECRET").write_text("host data")
    return outside


def untouched(outside: Path) -> bool:
    secret = outside / "SECRET"
    return secret.read_text() == "host data" and sorted(os.listdir(outside)) == ["SECRET"]


@pytest.fixture(autouse=True)
def _clean_up(tmp_path: Path) -> Iterator[None]:
    """Whatever a test leaves (deep trees the stock cleanup cannot delete) goes by descriptor."""
    yield
    with opened(tmp_path) as fd:
        for name in os.listdir(fd):
            with contextlib.suppress(OSError):
                tree.remove_tree(fd, name)


@pytest.fixture(params=["openat2", "per-component"])
def resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with openat2 and with the component-by-component fallback."""
    monkeypatch.setattr(tree, "_openat2_missing", request.param != "openat2")
    return str(request.param)


class Exchanger:
    """A thread swapping two entries (a directory and a symlink) with renameat2 RENAME_EXCHANGE,
    as fast as it can, for at most ``max_swaps`` swaps or ``max_s`` seconds."""

    def __init__(self, a: Path, b: Path, max_swaps: int = 200_000, max_s: float = 5.0) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "renameat2"):
            pytest.skip("the C library has no renameat2")
        self._renameat2 = libc.renameat2
        self._a, self._b = os.fsencode(a), os.fsencode(b)
        self._max_swaps, self._max_s = max_swaps, max_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.swaps = 0

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_s
        while not self._stop.is_set() and self.swaps < self._max_swaps:
            if time.monotonic() > deadline:
                break
            if self._renameat2(-100, self._a, -100, self._b, 2) == 0:  # AT_FDCWD, EXCHANGE
                self.swaps += 1

    def __enter__(self) -> Exchanger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def record_open_fds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count this process's descriptors each time the tree code opens a directory."""
    counts: list[int] = []
    real = tree._open_dir

    def counting(name: str, dir_fd: int) -> int:
        fd = real(name, dir_fd)
        counts.append(open_fds())
        return fd

    monkeypatch.setattr(tree, "_open_dir", counting)
    return counts


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A tree ``DEPTH`` directories deep (read only: shared by the tests that walk it)."""
    base = tmp_path_factory.mktemp("deep")
    leaf = make_chain(base, DEPTH)
    yield base, leaf
    with opened(base) as fd:
        tree.remove_tree(fd, "d")


# -- open_beneath ------------------------------------------------------------------------------
def test_open_beneath_opens_a_nested_directory(tmp_path: Path, resolution: str) -> None:
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    with opened(tmp_path) as root:
        fd = tree.open_beneath(root, "a/./b//c/")
        try:
            assert os.fstat(fd).st_ino == os.stat(tmp_path / "a" / "b" / "c").st_ino
        finally:
            os.close(fd)
        same = tree.open_beneath(root, "")
        assert os.fstat(same).st_ino == os.stat(tmp_path).st_ino
        os.close(same)


@pytest.mark.parametrize("path", ["..", "a/../..", "a/..", "/etc", "/"])
def test_open_beneath_refuses_dotdot_and_absolute_paths(
    tmp_path: Path, resolution: str, path: str
) -> None:
    (tmp_path / "a").mkdir()
    before = open_fds()
    with opened(tmp_path) as root, pytest.raises(tree.UnsafePath) as refused:
        tree.open_beneath(root, path)
    assert refused.value.errno == errno.EXDEV
    assert open_fds() <= before  # (another thread of the test process may close one meanwhile)


@pytest.mark.parametrize("path", ["link", "link/inner", "a/link2", "a/link2/x"])
def test_open_beneath_refuses_a_symlink_component(
    tmp_path: Path, resolution: str, path: str
) -> None:
    outside = canary(tmp_path)
    (outside / "inner").mkdir()
    job = tmp_path / "job"
    (job / "a").mkdir(parents=True)
    (job / "link").symlink_to(outside)
    (job / "a" / "link2").symlink_to("..")
    before = open_fds()
    with opened(job) as root, pytest.raises(tree.UnsafePath) as refused:
        tree.open_beneath(root, path)
    assert refused.value.errno in (errno.ELOOP, errno.ENOTDIR)
    assert open_fds() <= before  # (another thread of the test process may close one meanwhile)


def test_open_beneath_refuses_a_file_or_fifo_component(tmp_path: Path, resolution: str) -> None:
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    with opened(tmp_path) as root:
        for path in ("file", "file/below", "fifo"):
            with pytest.raises(tree.UnsafePath) as refused:
                tree.open_beneath(root, path)
            assert refused.value.errno == errno.ENOTDIR


def test_open_beneath_says_a_missing_component_does_not_exist(
    tmp_path: Path, resolution: str
) -> None:
    (tmp_path / "a").mkdir()
    with opened(tmp_path) as root, pytest.raises(FileNotFoundError) as missing:
        tree.open_beneath(root, "a/missing/b")
    assert not isinstance(missing.value, tree.UnsafePath)
    assert missing.value.filename == "a/missing/b"


def test_open_beneath_create_makes_each_missing_directory(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with opened(tmp_path) as root:
        fd = tree.open_beneath(root, "a/b/c", create=True, mode=0o750)
        os.close(fd)
        fd = tree.open_beneath(root, "a/b/c", create=True)  # existing: opened as it is
        os.close(fd)
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b" / "c").st_mode) == 0o750 & ~_umask()


def test_open_beneath_create_never_makes_anything_through_a_symlink(tmp_path: Path) -> None:
    outside = canary(tmp_path)
    job = tmp_path / "job"
    job.mkdir()
    (job / "a").symlink_to(outside)
    with opened(job) as root, pytest.raises(tree.UnsafePath):
        tree.open_beneath(root, "a/b", create=True)
    assert untouched(outside)


def test_open_beneath_takes_a_path_longer_than_path_max(
    deep: tuple[Path, str], resolution: str
) -> None:
    base, leaf = deep
    relative = leaf.removesuffix("/leaf")
    assert len(relative) > 4096
    with opened(base) as root:
        fd = tree.open_beneath(root, relative)
        try:
            assert os.listdir(fd) == ["leaf"]
        finally:
            os.close(fd)


def test_open_beneath_falls_back_when_the_kernel_lacks_openat2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_openat2(dir_fd: int, path: bytes) -> int:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(tree, "_openat2_missing", False)
    monkeypatch.setattr(tree, "_openat2", no_openat2)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "link").symlink_to("b")
    with opened(tmp_path) as root:
        os.close(tree.open_beneath(root, "a/b"))
        assert tree._openat2_missing
        with pytest.raises(tree.UnsafePath):
            tree.open_beneath(root, "a/link")


def test_open_beneath_and_remove_tree_take_an_o_path_directory(
    tmp_path: Path, resolution: str
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = tree.open_beneath(root, "a/b")
        assert os.listdir(fd) == ["f"]  # readable, whatever the root was opened with
        os.close(fd)
        os.close(tree.open_beneath(root, "new/dir", create=True))
        tree.remove_tree(root, "a")
        tree.remove_tree(root, "new")
    finally:
        os.close(root)
    assert os.listdir(tmp_path) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- walk --------------------------------------------------------------------------------------
def test_walk_lists_every_entry_with_lstat_and_never_descends_a_symlink(tmp_path: Path) -> None:
    outside = canary(tmp_path)
    job = tmp_path / "job"
    (job / "sub" / "deeper").mkdir(parents=True)
    (job / "a.txt").write_text("hello")
    (job / "sub" / "deeper" / "b.bin").write_bytes(b"\0" * 10)
    (job / "out").symlink_to(outside)
    (job / "sub" / "root").symlink_to("/")
    with opened(job) as root:
        found = dict(tree.walk(root))
    assert set(found) == {"a.txt", "sub", "sub/deeper", "sub/deeper/b.bin", "out", "sub/root"}
    assert stat.S_ISLNK(found["out"].st_mode) and stat.S_ISDIR(found["sub"].st_mode)
    assert found["sub/deeper/b.bin"].st_size == 10


def test_walk_finds_a_file_under_a_path_longer_than_path_max_with_few_descriptors(
    deep: tuple[Path, str],
) -> None:
    base, leaf = deep
    before = open_fds()
    peak = before
    with opened(base) as root:
        paths = []
        for path, _ in tree.walk(root):
            paths.append(path)
            peak = max(peak, open_fds())
    assert leaf in paths and len(leaf) > 4096
    assert len(paths) == DEPTH + 1
    assert peak - before <= 4  # the root, the directory walked, its listing, one step
    assert open_fds() <= before  # (another thread of the test process may close one meanwhile)


def test_walk_abandoned_midway_leaks_no_descriptor(deep: tuple[Path, str]) -> None:
    base, _ = deep
    before = open_fds()
    with opened(base) as root:
        walker = tree.walk(root)
        for _ in range(DEPTH // 2):
            next(walker)
        walker.close()
    assert open_fds() <= before  # (another thread of the test process may close one meanwhile)


def test_walk_reports_names_with_newlines_and_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    base = os.fsencode(tmp_path)
    os.mkdir(base + b"/line\nbreak")
    with open(base + b"/line\nbreak/\xff\xfe-latin", "wb") as f:
        f.write(b"x")
    with opened(tmp_path) as root:
        found = {path for path, _ in tree.walk(root)}
    assert found == {"line\nbreak", "line\nbreak/" + os.fsdecode(b"\xff\xfe-latin")}


@pytest.mark.timeout(10)
def test_walk_lists_fifos_without_opening_them(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with opened(tmp_path) as root:
        found = dict(tree.walk(root))
    assert stat.S_ISFIFO(found["fifo"].st_mode)


def test_walk_stops_when_its_budget_is_spent(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"f{i}").write_text("x")
    with opened(tmp_path) as root:
        with pytest.raises(tree.WalkStopped) as stopped:
            list(tree.walk(root, max_entries=10))
        assert stopped.value.after == "10 entries"
        with pytest.raises(tree.WalkStopped, match="walk stopped after 0 s"):
            list(tree.walk(root, max_seconds=0.0))


def test_walk_skips_a_directory_replaced_after_its_parent_was_listed(tmp_path: Path) -> None:
    outside = canary(tmp_path)
    job = tmp_path / "job"
    for name in ("to-link", "to-other"):
        (job / name).mkdir(parents=True)
        (job / name / "inside").write_text("x")
    (job / "elsewhere").mkdir()
    (job / "elsewhere" / "moved-in").write_text("x")
    seen = []
    with opened(job) as root:
        for path, _ in tree.walk(root):
            seen.append(path)
            if path == "to-link":  # listed as a directory; swapped before the walk enters it
                (job / "to-link").rename(job / "was-to-link")
                (job / "to-link").symlink_to(outside)
            elif path == "to-other":  # swapped for another directory of the tree
                (job / "to-other").rename(job / "was-to-other")
                (job / "elsewhere").rename(job / "to-other")
    assert "to-link/SECRET" not in seen and "to-link/inside" not in seen
    assert "to-other/moved-in" not in seen and "to-other/inside" not in seen


@pytest.mark.timeout(30)
def test_walk_with_a_directory_and_a_symlink_exchanged_meanwhile_never_leaves_the_tree(
    tmp_path: Path,
) -> None:
    outside = canary(tmp_path)
    secret = os.stat(outside / "SECRET").st_ino
    job = tmp_path / "job"
    (job / "dir" / "sub").mkdir(parents=True)
    (job / "dir" / "sub" / "file").write_text("x")
    (job / "link").symlink_to("/")
    (job / "link2").symlink_to(outside)
    walks = 0
    with (
        opened(job) as root,
        Exchanger(job / "dir", job / "link") as ex,
        Exchanger(job / "link", job / "link2"),
    ):
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for path, st in tree.walk(root):
                assert st.st_ino != secret and "SECRET" not in path
                assert path.split("/")[0] in ("dir", "link", "link2")
                assert path.count("/") <= 2
            walks += 1
    assert ex.swaps > 100 and walks > 100


# -- remove_tree ---------------------------------------------------------------------------------
def test_remove_tree_deletes_a_tree_deeper_than_the_recursion_and_path_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaf = make_chain(tmp_path, DEPTH)
    assert len(leaf) > 4096
    before = open_fds()
    counts = record_open_fds(monkeypatch)
    with opened(tmp_path) as parent:
        tree.remove_tree(parent, "d")
    assert os.listdir(tmp_path) == []
    assert len(counts) >= DEPTH and max(counts) - before <= 4
    assert open_fds() <= before  # (another thread of the test process may close one meanwhile)


def test_remove_tree_deletes_links_never_their_targets(tmp_path: Path) -> None:
    outside = canary(tmp_path)
    job = tmp_path / "job"
    (job / "sub").mkdir(parents=True)
    (job / "dirlink").symlink_to(outside)
    (job / "sub" / "filelink").symlink_to(outside / "SECRET")
    (job / "sub" / "rootlink").symlink_to("/")
    os.link(outside / "SECRET", job / "hardlink")
    tree.remove_path(job)
    assert not job.exists()
    assert untouched(outside)


def test_remove_tree_of_a_symlink_or_file_removes_just_that(tmp_path: Path) -> None:
    outside = canary(tmp_path)
    (tmp_path / "link").symlink_to(outside)
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    with opened(tmp_path) as parent:
        for name in ("link", "file", "fifo", "missing"):
            tree.remove_tree(parent, name)
    assert os.listdir(tmp_path) == ["outside"] and untouched(outside)
    tree.remove_path(tmp_path / "no" / "such" / "dir")


def test_remove_tree_refuses_names_that_are_not_one_entry(tmp_path: Path) -> None:
    with opened(tmp_path) as parent:
        for name in ("", ".", "..", "a/b"):
            with pytest.raises(ValueError):
                tree.remove_tree(parent, name)


def test_remove_tree_deletes_a_directory_swapped_for_a_symlink_as_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = canary(tmp_path)
    job = tmp_path / "job"
    (job / "victim").mkdir(parents=True)
    (job / "victim" / "f").write_text("x")
    real = tree._open_dir

    def swap_first(name: str, dir_fd: int) -> int:
        if name == "victim" and not (job / "moved").exists():
            (job / "victim").rename(job / "moved")
            (job / "victim").symlink_to(outside)
        return real(name, dir_fd)

    monkeypatch.setattr(tree, "_open_dir", swap_first)
    tree.remove_path(job)
    assert not job.exists()
    assert untouched(outside)


@pytest.mark.timeout(60)
def test_remove_tree_with_a_directory_and_a_symlink_exchanged_meanwhile_spares_the_target(
    tmp_path: Path,
) -> None:
    outside = canary(tmp_path)
    for attempt in range(10):
        job = tmp_path / f"job{attempt}"
        (job / "dir" / "sub").mkdir(parents=True)
        for i in range(20):
            (job / "dir" / f"f{i}").write_text("x")
        (job / "link").symlink_to(outside)
        with Exchanger(job / "dir", job / "link", max_s=2.0):
            with contextlib.suppress(OSError):
                tree.remove_path(job)
        assert untouched(outside)
        tree.remove_path(job)
        assert not job.exists()


def test_remove_tree_opens_up_directories_that_deny_their_owner(tmp_path: Path) -> None:
    """As an ordinary user (a forked child drops root), who needs u+rwx to empty them."""
    job = tmp_path / "job"
    (job / "none" / "inner").mkdir(parents=True)
    (job / "none" / "inner" / "f").write_text("x")
    (job / "read-only" / "inner").mkdir(parents=True)
    (job / "read-only" / "inner" / "f").write_text("x")
    (job / "read-only" / "f").write_text("x")
    (job / "unlistable").mkdir()
    (job / "unlistable" / "f").write_text("x")
    for path, mode in (
        ("none/inner", 0o000),
        ("none", 0o000),
        ("read-only", 0o500),
        ("unlistable", 0o300),
    ):
        os.chmod(job / path, mode)
    if not AS_ROOT:
        tree.remove_path(job)
        assert not job.exists()
        return
    with opened(job) as fd:
        tree.chown_tree(fd, 65534, 65534)
    os.chmod(tmp_path, 0o777)
    parent = os.open(tmp_path, DIR_FLAGS)  # opened as root: its ancestors deny others
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            tree.remove_tree(parent, "job")
            code = 0
        finally:
            os._exit(code)
    os.close(parent)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not job.exists()


@pytest.mark.timeout(20)
def test_remove_tree_gives_up_once_on_an_entry_it_cannot_delete_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_chain(tmp_path, 200)
    real_unlink = os.unlink
    refused: list[str] = []

    def refuse(path: str, *, dir_fd: int | None = None) -> None:
        if path == "leaf":
            refused.append(path)
            raise PermissionError(errno.EPERM, "Operation not permitted", path)
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", refuse)
    with opened(tmp_path) as parent, pytest.raises(PermissionError):
        tree.remove_tree(parent, "d")
    assert len(refused) == 1  # no pass over the tree again for what cannot change
    monkeypatch.undo()
    tree.remove_path(tmp_path / "d")
    assert os.listdir(tmp_path) == []


def test_remove_tree_takes_another_pass_over_a_directory_filled_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "job" / "sub").mkdir(parents=True)
    real_rmdir = os.rmdir
    late: list[str] = []

    def fill_first(path: str, *, dir_fd: int | None = None) -> None:
        if path == "sub" and not late:  # the job writes one more file just before
            late.append(path)
            (tmp_path / "job" / "sub" / "late").write_text("x")
        real_rmdir(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "rmdir", fill_first)
    tree.remove_path(tmp_path / "job")
    assert late and os.listdir(tmp_path) == []


# -- chown_tree ----------------------------------------------------------------------------------
needs_root = pytest.mark.skipif(not AS_ROOT, reason="changing owners needs root")


@needs_root
def test_chown_tree_changes_every_entry_and_the_root_but_no_link_target(tmp_path: Path) -> None:
    outside = canary(tmp_path)
    job = tmp_path / "job"
    (job / "sub").mkdir(parents=True)
    (job / "sub" / "f").write_text("x")
    (job / "link").symlink_to(outside / "SECRET")
    (job / "dirlink").symlink_to(outside)
    with opened(job) as root:
        assert tree.chown_tree(root, 4321, 4322) == 5
        assert tree.chown_tree(root, 4321, 4322) == 0  # only what is not owned so
    for path in (job, job / "sub", job / "sub" / "f", job / "link", job / "dirlink"):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (4321, 4322)
    for path in (outside, outside / "SECRET"):
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (0, 0)


@needs_root
def test_chown_tree_reaches_a_tree_deeper_than_path_max(deep: tuple[Path, str]) -> None:
    base, leaf = deep
    with opened(base) as root:
        try:
            assert tree.chown_tree(root, 4321, 4321) == DEPTH + 2
            leaf_owner = _owner_below(root, leaf)
        finally:
            tree.chown_tree(root, 0, 0)
    assert leaf_owner == (4321, 4321)


@needs_root
@pytest.mark.timeout(30)
def test_chown_tree_with_a_directory_and_a_symlink_exchanged_meanwhile_spares_the_target(
    tmp_path: Path,
) -> None:
    outside = canary(tmp_path)
    job = tmp_path / "job"
    (job / "dir" / "sub").mkdir(parents=True)
    (job / "dir" / "sub" / "f").write_text("x")
    (job / "link").symlink_to(outside)
    with opened(job) as root, Exchanger(job / "dir", job / "link"):
        deadline = time.monotonic() + 1.5
        owner = 1000
        while time.monotonic() < deadline:
            owner += 1
            tree.chown_tree(root, owner, owner)
    for path in (outside, outside / "SECRET"):
        assert os.stat(path).st_uid == 0


def _owner_below(root: int, relative: str) -> tuple[int, int]:
    directory, _, name = relative.rpartition("/")
    fd = tree.open_beneath(root, directory)
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)
    return st.st_uid, st.st_gid


# -- apply_overlay_upper -----------------------------------------------------------------------
def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def opaque(path: Path) -> None:
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def layers(tmp_path: Path) -> tuple[Path, Path]:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    upper.mkdir()
    lower.mkdir()
    return upper, lower


def apply(upper: Path, lower: Path, **owner: int) -> None:
    with opened(upper) as u, opened(lower) as lo:
        tree.apply_overlay_upper(u, lo, **owner)


def listing(root: Path) -> dict[str, str]:
    """Every entry under ``root``: a file's content, a link's target, 'dir' for a directory."""
    found = {}
    with opened(root) as fd:
        for path, st in tree.walk(fd):
            full = root / path
            if stat.S_ISDIR(st.st_mode):
                found[path] = "dir"
            elif stat.S_ISLNK(st.st_mode):
                found[path] = "-> " + os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                found[path] = full.read_text()
            else:
                found[path] = "special"
    return found


needs_whiteouts = pytest.mark.skipif(not AS_ROOT, reason="whiteouts and trusted xattrs need root")


@needs_whiteouts
def test_overlay_whiteout_deletes_the_lower_entry_or_tree(tmp_path: Path) -> None:
    upper, lower = layers(tmp_path)
    (lower / "gone.txt").write_text("x")
    (lower / "gone-dir" / "deep").mkdir(parents=True)
    (lower / "gone-dir" / "deep" / "f").write_text("x")
    (lower / "kept").write_text("kept")
    whiteout(upper / "gone.txt")
    whiteout(upper / "gone-dir")
    whiteout(upper / "never-there")
    apply(upper, lower)
    assert listing(lower) == {"kept": "kept"}


@needs_whiteouts
def test_overlay_opaque_directory_replaces_the_lower_contents(tmp_path: Path) -> None:
    upper, lower = layers(tmp_path)
    (lower / "d" / "old-sub").mkdir(parents=True)
    (lower / "d" / "old-sub" / "f").write_text("old")
    (lower / "d" / "old").write_text("old")
    (upper / "d").mkdir()
    (upper / "d" / "new").write_text("new")
    opaque(upper / "d")
    apply(upper, lower)
    assert listing(lower) == {"d": "dir", "d/new": "new"}


def test_overlay_plain_directory_merges_and_replaces_what_is_not_a_directory(
    tmp_path: Path,
) -> None:
    upper, lower = layers(tmp_path)
    (lower / "d").mkdir()
    (lower / "d" / "lower-only").write_text("lower")
    (lower / "d" / "both").write_text("lower")
    (lower / "was-file").write_text("lower")
    (upper / "d").mkdir()
    (upper / "d" / "both").write_text("upper")
    (upper / "was-file" / "now").mkdir(parents=True)
    (upper / "new" / "deeper").mkdir(parents=True)
    (upper / "new" / "deeper" / "f").write_text("new")
    apply(upper, lower)
    assert listing(lower) == {
        "d": "dir",
        "d/lower-only": "lower",
        "d/both": "upper",
        "was-file": "dir",
        "was-file/now": "dir",
        "new": "dir",
        "new/deeper": "dir",
        "new/deeper/f": "new",
    }


def test_overlay_file_replaces_a_lower_directory_and_keeps_mode_times_and_given_owner(
    tmp_path: Path,
) -> None:
    upper, lower = layers(tmp_path)
    (lower / "x" / "sub").mkdir(parents=True)
    (lower / "x" / "sub" / "f").write_text("old")
    (upper / "x").write_text("file now")
    os.chmod(upper / "x", 0o6751)  # setuid and setgid are dropped
    os.utime(upper / "x", ns=(1_000_000_000, 2_000_000_000))
    (upper / "sub").mkdir()
    os.chmod(upper / "sub", 0o1751)
    os.utime(upper / "sub", ns=(3_000_000_000, 4_000_000_000))
    owner = {"uid": 4321, "gid": 4322} if AS_ROOT else {}
    apply(upper, lower, **owner)
    st = os.lstat(lower / "x")
    assert (lower / "x").read_text() == "file now"
    assert stat.S_IMODE(st.st_mode) == 0o751 and st.st_mtime_ns == 2_000_000_000
    sub = os.lstat(lower / "sub")
    assert stat.S_IMODE(sub.st_mode) == 0o1751 and sub.st_mtime_ns == 4_000_000_000
    if AS_ROOT:
        assert (st.st_uid, st.st_gid) == (sub.st_uid, sub.st_gid) == (4321, 4322)
    assert [n for n in os.listdir(lower) if n.startswith(".overlay-")] == []


def test_overlay_symlinks_are_recreated_and_never_followed(tmp_path: Path) -> None:
    outside = canary(tmp_path)
    upper, lower = layers(tmp_path)
    (lower / "to-host").symlink_to(outside)  # an upper directory merges here: not into outside
    (lower / "was-file").write_text("lower")
    (upper / "to-host").mkdir()
    (upper / "to-host" / "SECRET").write_text("overwritten?")
    (upper / "was-file").symlink_to(outside / "SECRET")
    (upper / "dangling").symlink_to("/nonexistent/\nweird")
    os.utime(upper / "dangling", ns=(5, 6_000_000_000), follow_symlinks=False)
    apply(upper, lower)
    assert untouched(outside)
    assert listing(lower) == {
        "to-host": "dir",
        "to-host/SECRET": "overwritten?",
        "was-file": f"-> {outside / 'SECRET'}",
        "dangling": "-> /nonexistent/\nweird",
    }
    assert os.lstat(lower / "dangling").st_mtime_ns == 6_000_000_000


@pytest.mark.timeout(10)
def test_overlay_fifos_and_sockets_are_not_copied_and_never_block(tmp_path: Path) -> None:
    upper, lower = layers(tmp_path)
    (lower / "fifo").write_text("lower")
    os.mkfifo(upper / "fifo")
    os.mkfifo(upper / "fresh-fifo")
    apply(upper, lower)
    assert listing(lower) == {}


def test_overlay_copies_large_files_in_pieces_and_without_copy_file_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upper, lower = layers(tmp_path)
    data = os.urandom(1 << 20)
    (upper / "a").write_bytes(data)
    (upper / "b").write_bytes(data)
    monkeypatch.setattr(tree, "_COPY_CHUNK", 4096)
    apply(upper, lower)
    assert (lower / "a").read_bytes() == data

    def unsupported(*args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", unsupported)
    (upper / "b").write_bytes(data[::-1])
    apply(upper, lower)
    assert (lower / "b").read_bytes() == data[::-1]


def test_overlay_applies_an_upper_tree_deeper_than_path_max(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upper, lower = layers(tmp_path)
    leaf = make_chain(upper, DEPTH // 2, name="ddd")
    assert len(leaf) > 4096
    before = open_fds()
    counts = record_open_fds(monkeypatch)
    apply(upper, lower)
    assert max(counts) - before <= 8
    with opened(lower) as root:
        bottom = tree.open_beneath(root, leaf.removesuffix("/leaf"))
        assert os.listdir(bottom) == ["leaf"]
        os.close(bottom)


# -- a real overlay mount ----------------------------------------------------------------------
def _view(root: Path) -> dict[str, tuple[object, ...]]:
    """What a tree shows: kind, permission bits, mtime, and content or target of each entry."""
    shown: dict[str, tuple[object, ...]] = {}
    with opened(root) as fd:
        for path, st in tree.walk(fd):
            full = root / path
            if stat.S_ISREG(st.st_mode):
                what: object = full.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(full)
            else:
                what = stat.S_IFMT(st.st_mode)
            shown[path] = (what, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return shown


@needs_root
@pytest.mark.timeout(60)
@pytest.mark.sandbox  # mount(8) runs: not a unit test, though it tests this module
def test_overlay_upper_from_a_real_mount_makes_the_lower_what_the_mount_showed(
    tmp_path: Path,
) -> None:
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here")
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for path in (lower, upper, work, merged):
        path.mkdir()
    (lower / "keep.txt").write_text("keep")
    (lower / "modify.txt").write_text("before")
    (lower / "delete.txt").write_text("delete me")
    (lower / "rename-me.txt").write_text("renamed")
    (lower / "chmod.txt").write_text("mode")
    (lower / "replaced" / "old-sub").mkdir(parents=True)
    (lower / "replaced" / "old-sub" / "f").write_text("old")
    (lower / "replaced" / "old").write_text("old")
    (lower / "merged" / "deep").mkdir(parents=True)
    (lower / "merged" / "deep" / "lower-only").write_text("lower")
    (lower / "merged" / "deep" / "edit").write_text("lower")
    (lower / "tree-gone" / "a" / "b").mkdir(parents=True)
    (lower / "tree-gone" / "a" / "b" / "c").write_text("x")
    (lower / "link").symlink_to("keep.txt")
    options = (
        f"lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=off,metacopy=off,index=off"
    )
    mounted = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    if mounted.returncode != 0:
        pytest.skip(f"overlay mount unavailable: {mounted.stderr.strip()}")
    try:
        (merged / "new.txt").write_text("new")
        (merged / "modify.txt").write_text("after, and longer")
        (merged / "delete.txt").unlink()
        (merged / "rename-me.txt").rename(merged / "renamed.txt")
        os.chmod(merged / "chmod.txt", 0o600)
        shutil.rmtree(merged / "replaced")
        (merged / "replaced").mkdir()
        (merged / "replaced" / "fresh").write_text("fresh")
        (merged / "merged" / "deep" / "edit").write_text("upper")
        (merged / "merged" / "deep" / "added").write_text("upper")
        (merged / "new-dir" / "inner").mkdir(parents=True)
        (merged / "new-dir" / "inner" / "f").write_text("f")
        shutil.rmtree(merged / "tree-gone")
        (merged / "link").unlink()
        (merged / "link").symlink_to("new.txt")
        (merged / "newlink").symlink_to("/etc/passwd")
        shown = _view(merged)
    finally:
        subprocess.run(["umount", str(merged)], check=True, timeout=20)
    assert shown != _view(lower)
    apply(upper, lower)
    assert _view(lower) == shown
    assert (lower / "renamed.txt").read_text() == "renamed"
    assert not (lower / "replaced" / "old").exists()


@needs_root
def test_chown_tree_never_hands_on_a_file_with_another_name_elsewhere(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not the job's")
    root = tmp_path / "root"
    root.mkdir()
    os.link(outside, root / "linked")
    (root / "own").write_text("x")
    with opened(root) as fd:
        tree.chown_tree(fd, 2_000_000_000, 2_000_000_000)
    assert outside.stat().st_uid == os.getuid()
    assert (root / "own").stat().st_uid == 2_000_000_000
