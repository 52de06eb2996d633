"""Workspace volumes with real loop devices, ext4 and overlay mounts (root only).

A job's writes go through the view as its uid (``dd`` and ``sh`` run with ``user=``), the way
the sandbox's processes will.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from interpreter.errors import ConfigurationError, ExecutionError
from interpreter.sandbox import mounts, volumes
from interpreter.sandbox.volumes import (
    JobVolume,
    VolumeFactory,
    VolumeSize,
    check_available,
    recover,
)

UID = GID = 2_000_000_000  # no such user: the kernel does not mind
JOB_CREDENTIALS: dict[str, Any] = {"user": UID, "group": GID, "extra_groups": []}
MiB = 2**20


def images(factory: VolumeFactory) -> list[Path]:
    """The volume images in the factory's directory, not the blank templates they are copied
    from."""
    return [p for p in factory.volumes_dir.iterdir() if not p.name.startswith("template-")]


def _unusable() -> str | None:
    if os.geteuid() != 0:
        return "workspace volumes mount filesystems: root only"
    with tempfile.TemporaryDirectory(prefix="volumes-check-") as base:
        os.chmod(base, 0o711)
        try:
            check_available(Path(base, "volumes"), Path(base, "mnt"))
        except ConfigurationError as exc:
            return exc.message
        finally:
            recover(Path(base, "mnt"), Path(base, "volumes"))
    return None


UNUSABLE = _unusable()
if UNUSABLE and os.environ.get("CI"):  # CI runs as root with loop devices: never skip there
    raise RuntimeError(f"the volume tests must run in CI, but: {UNUSABLE}")
pytestmark = pytest.mark.skipif(UNUSABLE is not None, reason=UNUSABLE or "")


@pytest.fixture
def base() -> Iterator[Path]:
    # Not under tmp_path, whose parents are 0700: the mounts dir's parents must be searchable
    path = Path(tempfile.mkdtemp(prefix="volumes-test-"))
    os.chmod(path, 0o711)
    yield path
    recover(path / "mnt", path / "volumes")
    shutil.rmtree(path)


@pytest.fixture
def factory(base: Path) -> Iterator[VolumeFactory]:
    made = VolumeFactory(base / "volumes", base / "mnt", VolumeSize(8 * MiB, 1000), spares=0)
    yield made
    made.close()


@pytest.fixture
def lower_fd(base: Path) -> Iterator[int]:
    lower = base / "lower"
    lower.mkdir()
    (lower / "kept.txt").write_text("from the lower directory")
    fd = os.open(lower, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    yield fd
    os.close(fd)


def margin(limit_bytes: int) -> int:
    """How far past its limit a volume may let a job write (the sizing's margin, rounded up)."""
    return limit_bytes // 256 + MiB


def as_job(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, **JOB_CREDENTIALS, capture_output=True, text=True)


def mounted_under(directory: Path) -> list[str]:
    prefix = os.path.realpath(directory) + "/"
    with open("/proc/self/mountinfo") as handle:
        return [line.split()[4] for line in handle if line.split()[4].startswith(prefix)]


def loop_backing(device: str) -> Path:
    return Path("/sys/block", os.path.basename(device), "loop", "backing_file")


def loops_of(factory: VolumeFactory) -> list[str]:
    """Loop devices backed by an image of the factory's (deleted or not)."""
    prefix = os.path.realpath(factory.volumes_dir) + "/"
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().startswith(prefix):
                found.append(backing.parent.parent.name)
        except FileNotFoundError:  # freed meanwhile
            pass
    return found


def wait_for_spares(factory: VolumeFactory, count: int) -> set[str]:
    """The mount points of the factory's spares once ``count`` of them are ready."""
    for _ in range(500):
        spares = {p for p in mounted_under(factory.mounts_dir) if "/spare-" in p}
        if len(spares) == count and len(factory._ready) == count:
            return spares
        time.sleep(0.01)
    raise AssertionError(f"{count} spare volumes not ready in 5 s")


@pytest.fixture
def spared(base: Path) -> Iterator[VolumeFactory]:
    """A factory with one spare volume of its default size mounted ahead."""
    made = VolumeFactory(base / "volumes", base / "mnt", VolumeSize(8 * MiB, 1000), spares=1)
    made.start()
    try:
        wait_for_spares(made, 1)
        yield made
    finally:
        made.close()


def test_view_root_belongs_to_the_job_uid_with_mode_0700(
    factory: VolumeFactory, lower_fd: int
) -> None:
    with factory.volume() as volume:
        view = volume.mount(lower_fd, UID, GID, "job-1")
        st = os.stat(view)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (UID, GID, 0o700)
        assert (view / "kept.txt").read_text() == "from the lower directory"
        assert view == factory.mounts_dir / "job-1"
        assert os.stat(factory.mounts_dir).st_mode & 0o7777 == 0o711
        assert os.stat(factory.volumes_dir).st_mode & 0o7777 == 0o700


def test_writing_twice_the_limit_fails_with_enospc_near_the_limit(
    factory: VolumeFactory, lower_fd: int
) -> None:
    with factory.volume() as volume:
        view = volume.mount(lower_fd, UID, GID, "job-1")
        done = as_job("dd", "if=/dev/zero", "of=big", "bs=1M", "count=16", cwd=view)
        assert done.returncode != 0
        assert "No space left on device" in done.stderr
        landed = os.stat(view / "big").st_size
        assert volume.limit_bytes - MiB <= landed <= volume.limit_bytes + margin(8 * MiB)
        assert volume.used_bytes() <= volume.limit_bytes + margin(8 * MiB)


def test_creating_more_files_than_the_inode_cap_fails_with_enospc(
    factory: VolumeFactory, lower_fd: int
) -> None:
    with factory.volume(VolumeSize(8 * MiB, 1000)) as volume:
        view = volume.mount(lower_fd, UID, GID, "job-1")
        script = "i=0; while printf '' > f$i; do i=$((i + 1)); done 2>/dev/null; echo $i"
        done = as_job("sh", "-c", script + "; printf '' > last", cwd=view)
        assert "No space left on device" in done.stdout + done.stderr
        created = int(done.stdout.split()[0])
        assert 1000 <= created <= 1000 + 64
        assert volume.used_inodes() == created


def test_an_unlinked_open_file_counts_toward_the_limit(
    factory: VolumeFactory, lower_fd: int
) -> None:
    with factory.volume() as volume:
        view = volume.mount(lower_fd, UID, GID, "job-1")
        written = 0
        with open(view / "hidden", "wb", buffering=0) as handle:
            os.unlink(view / "hidden")
            with pytest.raises(OSError) as raised:
                for _ in range(16):
                    written += handle.write(b"\0" * MiB)
            assert raised.value.errno == errno.ENOSPC
            assert written <= volume.limit_bytes + margin(8 * MiB)
            assert volume.used_bytes() >= volume.limit_bytes - MiB
        assert volume.used_bytes() < MiB  # closed: the blocks are free again


def test_a_path_longer_than_4096_characters_counts_toward_the_limit(
    factory: VolumeFactory, lower_fd: int
) -> None:
    with factory.volume() as volume:
        view = volume.mount(lower_fd, UID, GID, "job-1")
        name, depth = "d" * 200, 30
        fd = os.open(view, os.O_PATH | os.O_DIRECTORY)
        for _ in range(depth):  # relative steps: no call ever sees the whole path
            os.mkdir(name, dir_fd=fd)
            os.chown(name, UID, GID, dir_fd=fd)
            deeper = os.open(name, os.O_PATH | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        try:
            with pytest.raises(OSError) as raised:
                os.stat(view.joinpath(*[name] * depth))
            assert raised.value.errno == errno.ENAMETOOLONG  # what a scan by path cannot see
            done = subprocess.run(
                ["dd", "if=/dev/zero", f"of=/proc/self/fd/{fd}/deep", "bs=1M", "count=16"],
                **JOB_CREDENTIALS,
                pass_fds=(fd,),
                capture_output=True,
                text=True,
            )
        finally:
            os.close(fd)
        assert "No space left on device" in done.stderr, done.stderr
        used = volume.used_bytes()
        assert volume.limit_bytes - MiB <= used <= volume.limit_bytes + margin(8 * MiB)


def test_discard_frees_the_loop_device_and_deletes_the_image(
    factory: VolumeFactory, lower_fd: int
) -> None:
    volume = factory.volume()
    volume.mount(lower_fd, UID, GID, "job-1")
    device = volume.device
    assert device is not None
    backing = loop_backing(device).read_text().strip()
    assert backing.startswith(str(factory.volumes_dir))
    volume.discard()
    volume.discard()  # idempotent
    assert not loop_backing(device).exists()
    # our image is attached to no device any more (another test's job may take the device
    # itself at once, and /dev/loop1 is a prefix of /dev/loop11: compare whole entries)
    listed = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert not [line for line in listed.splitlines() if f"({backing})" in line]
    assert not Path(backing).exists()
    assert images(factory) == []
    assert list(factory.mounts_dir.iterdir()) == []
    assert mounted_under(factory.mounts_dir) == []


def test_the_lower_layer_is_the_directory_opened_not_a_path_swapped_later(
    factory: VolumeFactory, base: Path
) -> None:
    (base / "a").mkdir()
    (base / "a" / "from-a").touch()
    (base / "b").mkdir()
    (base / "b" / "from-b").touch()
    (base / "link").symlink_to(base / "a")
    fd = os.open(base / "link", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        (base / "swap").symlink_to(base / "b")
        os.replace(base / "swap", base / "link")  # the link now names b
        os.rename(base / "a", base / "a-moved")  # and a's path is b as well
        (base / "a").symlink_to(base / "b")
        with factory.volume() as volume:
            view = volume.mount(fd, UID, GID, "job-1")
            os.close(fd)  # the overlay holds the directory itself
            fd = -1
            assert os.listdir(view) == ["from-a"]
    finally:
        if fd >= 0:
            os.close(fd)


def test_the_upper_layer_holds_the_jobs_changes_once_the_view_is_unmounted(
    factory: VolumeFactory, lower_fd: int
) -> None:
    with factory.volume() as volume:
        view = volume.mount(lower_fd, UID, GID, "job-1")
        assert as_job("sh", "-c", "echo new > new.txt && rm kept.txt", cwd=view).returncode == 0
        volume.unmount_view()
        assert not view.exists()
        upper = volume.upper_path
        assert (upper / "new.txt").read_text() == "new\n"
        assert os.stat(upper / "new.txt").st_uid == UID
        whiteout = os.lstat(upper / "kept.txt")
        assert os.major(whiteout.st_rdev) == os.minor(whiteout.st_rdev) == 0
        fd = volume.upper_fd()
        try:
            assert sorted(os.listdir(fd)) == ["kept.txt", "new.txt"]
        finally:
            os.close(fd)


def test_used_bytes_and_inodes_count_only_what_the_job_wrote(
    factory: VolumeFactory, lower_fd: int
) -> None:
    with factory.volume() as volume:
        view = volume.mount(lower_fd, UID, GID, "job-1")
        assert (volume.used_bytes(), volume.used_inodes()) == (0, 0)
        assert as_job("dd", "if=/dev/zero", "of=one", "bs=1M", "count=1", cwd=view).returncode == 0
        assert MiB <= volume.used_bytes() <= MiB + 64 * 1024
        assert volume.used_inodes() == 1
    assert volume.used_bytes() >= MiB  # the last figures outlive the volume


@pytest.mark.parametrize(
    ("limit_bytes", "inodes"),
    [(MiB, 1000), (8 * MiB, 1_000_000), (64 * MiB, 100_000), (2**30, 10_000), (8 * 2**30, 1000)],
)
def test_an_empty_volume_leaves_the_limit_and_the_inodes_available(
    factory: VolumeFactory, lower_fd: int, limit_bytes: int, inodes: int
) -> None:
    with factory.volume(VolumeSize(limit_bytes, inodes)) as volume:
        volume.mount(lower_fd, UID, GID, "job-1")
        st = os.statvfs(volume.upper_path)
        assert limit_bytes <= st.f_bavail * st.f_frsize <= limit_bytes + margin(limit_bytes)
        assert inodes <= st.f_favail <= inodes + 1024


def test_recover_cleans_what_a_dead_server_left(factory: VolumeFactory, lower_fd: int) -> None:
    volume = factory.volume()
    volume.mount(lower_fd, UID, GID, "job-1")
    device = volume.device
    assert device is not None and len(mounted_under(factory.mounts_dir)) == 2
    assert recover(factory.mounts_dir, factory.volumes_dir) >= 3  # two mounts, one image
    assert mounted_under(factory.mounts_dir) == []
    assert list(factory.mounts_dir.iterdir()) == []
    assert images(factory) == []
    # detached: no loop device holds an image of ours (the device's number may already serve
    # another test's volume, on this machine-wide pool)
    assert loops_of(factory) == []
    volume.discard()  # nothing left to do, and no error


def test_spares_are_made_ahead_and_deleted_at_close(base: Path, lower_fd: int) -> None:
    factory = VolumeFactory(base / "volumes", base / "mnt", VolumeSize(8 * MiB, 1000), spares=2)
    factory.start()
    try:
        points = wait_for_spares(factory, 2)
        spares = {str(image) for image in images(factory)}
        assert len(spares) == 2 and len(loops_of(factory)) == 2
        with factory.volume() as volume:
            volume.mount(lower_fd, UID, GID, "job-1")
            assert volume.device is not None
            assert loop_backing(volume.device).read_text().strip() in spares
            assert os.path.realpath(volume.upper_path.parent) in points
    finally:
        factory.close()
    assert images(factory) == []


def test_close_unmounts_the_spares_and_frees_their_loop_devices(base: Path) -> None:
    factory = VolumeFactory(base / "volumes", base / "mnt", VolumeSize(8 * MiB, 1000), spares=2)
    factory.start()
    try:
        points = wait_for_spares(factory, 2)
        for point in points:
            assert sorted(os.listdir(point)) == ["lost+found", "upper", "work"]
            assert os.stat(Path(point) / "upper").st_mode & 0o7777 == 0o700
    finally:
        factory.close()
    assert mounted_under(factory.mounts_dir) == []
    assert list(factory.mounts_dir.iterdir()) == []
    assert loops_of(factory) == []
    assert images(factory) == []


def test_a_mounted_spare_leaves_only_the_overlay_on_the_jobs_path(
    spared: VolumeFactory, lower_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_thread = threading.get_ident()
    calls: list[str] = []

    def counted(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == job_thread:  # not the refill's
                calls.append(f"mount {args[2]}" if name == "mount" else name)
            return function(*args, **kwargs)

        return call

    for name in ("_mkfs", "_sparse_copy", "_attach_loop"):
        monkeypatch.setattr(volumes, name, counted(name, getattr(volumes, name)))
    monkeypatch.setattr(mounts, "mount", counted("mount", mounts.mount))
    with spared.volume() as volume:
        view = volume.mount(lower_fd, UID, GID, "job-1")
        assert calls == ["mount overlay"]
        assert volume.upper_path.parent.name.startswith("spare-")
        st = os.stat(view)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (UID, GID, 0o700)
        assert (view / "kept.txt").read_text() == "from the lower directory"


def test_a_mounted_spare_keeps_the_limit_and_counts_from_zero(
    spared: VolumeFactory, lower_fd: int
) -> None:
    with spared.volume() as volume:
        view = volume.mount(lower_fd, UID, GID, "job-1")
        assert volume.upper_path.parent.name.startswith("spare-")
        assert (volume.used_bytes(), volume.used_inodes()) == (0, 0)
        done = as_job("dd", "if=/dev/zero", "of=big", "bs=1M", "count=16", cwd=view)
        assert "No space left on device" in done.stderr
        landed = os.stat(view / "big").st_size
        assert volume.limit_bytes - MiB <= landed <= volume.limit_bytes + margin(8 * MiB)
        assert volume.used_inodes() == 1


def test_another_size_than_the_default_does_not_take_a_spare(
    spared: VolumeFactory, lower_fd: int
) -> None:
    with spared.volume(VolumeSize(MiB, 100)) as volume:
        volume.mount(lower_fd, UID, GID, "job-1")
        assert volume.upper_path.parent.name == "job-1.vol"
        st = os.statvfs(volume.upper_path)
        assert MiB <= st.f_bavail * st.f_frsize <= MiB + margin(MiB)
    assert len(spared._ready) == 1


def test_a_spare_that_fails_to_mount_is_discarded_logged_and_not_retried_at_once(
    base: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[Path] = []

    def no_loop(image: Path) -> tuple[str, int]:
        attempts.append(image)
        raise OSError(errno.EBUSY, "no free loop device")

    monkeypatch.setattr(volumes, "_attach_loop", no_loop)
    factory = VolumeFactory(base / "volumes", base / "mnt", VolumeSize(8 * MiB, 1000), spares=1)
    factory.start()
    try:
        for _ in range(500):
            if "spare workspace volume not made" in caplog.text:
                break
            time.sleep(0.01)
        assert "no free loop device" in caplog.text
        time.sleep(0.3)
        assert len(attempts) == 1  # waits before the next attempt
        assert factory.take(factory.default) is None
        assert images(factory) == []
        assert list(factory.mounts_dir.iterdir()) == []
    finally:
        started = time.monotonic()
        factory.close()
    assert time.monotonic() - started < 1.0  # close does not wait the retry out


def test_recover_cleans_the_spares_a_dead_server_left(base: Path, lower_fd: int) -> None:
    factory = VolumeFactory(base / "volumes", base / "mnt", VolumeSize(8 * MiB, 1000), spares=2)
    factory.start()
    try:
        wait_for_spares(factory, 2)
        assert recover(factory.mounts_dir, factory.volumes_dir) >= 4  # two mounts, two images
        assert mounted_under(factory.mounts_dir) == []
        assert list(factory.mounts_dir.iterdir()) == []
        assert loops_of(factory) == []
        assert images(factory) == []
    finally:
        factory.close()  # nothing left to do, and no error


@pytest.mark.parametrize("name", ["a,b", "a:b", "../x", "x.vol", ""])
def test_a_name_that_could_reach_the_mount_options_or_another_path_is_refused(
    factory: VolumeFactory, lower_fd: int, name: str
) -> None:
    volume = JobVolume(factory, factory.default)
    with pytest.raises(ExecutionError):
        volume.mount(lower_fd, UID, GID, name)
    assert images(factory) == []
    assert list(factory.mounts_dir.iterdir()) == []


def test_without_loop_configure_the_device_still_frees_itself(
    factory: VolumeFactory, lower_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(volumes._kernel, "loop_configure", False)  # as before Linux 5.8
    volume = factory.volume()
    volume.mount(lower_fd, UID, GID, "job-1")
    assert volume.device is not None
    assert loop_backing(volume.device).exists()
    volume.discard()
    assert not loop_backing(volume.device).exists()


def test_a_loop_device_another_process_took_first_is_skipped(
    factory: VolumeFactory, lower_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure = volumes._configure_loop
    calls: list[int] = []

    def taken_once(loop_fd: int, file_fd: int, image: Path) -> None:
        calls.append(loop_fd)
        if len(calls) == 1:
            raise OSError(errno.EBUSY, "taken")
        configure(loop_fd, file_fd, image)

    monkeypatch.setattr(volumes, "_configure_loop", taken_once)
    with factory.volume() as volume:
        volume.mount(lower_fd, UID, GID, "job-1")
        assert len(calls) == 2


def test_an_overlay_option_the_kernel_refuses_fails_the_mount_rather_than_go_without(
    factory: VolumeFactory, lower_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = (*volumes.OVERLAY_OPTIONS, "no_such_option=on")  # as an older kernel sees xino
    monkeypatch.setattr(volumes, "OVERLAY_OPTIONS", options)
    with factory.volume() as volume, pytest.raises(ExecutionError) as info:
        volume.mount(lower_fd, UID, GID, "job-1")
    assert "/run" not in info.value.message and str(factory.mounts_dir) not in info.value.message
    assert list(factory.mounts_dir.iterdir()) == []


def test_discard_detaches_a_busy_volume_and_the_device_frees_at_last_close(
    factory: VolumeFactory, lower_fd: int, caplog: pytest.LogCaptureFixture
) -> None:
    volume = factory.volume()
    view = volume.mount(lower_fd, UID, GID, "job-1")
    assert volume.device is not None
    held = os.open(view / "kept.txt", os.O_RDONLY)
    try:
        volume.discard()
        assert "detaching it lazily" in caplog.text
        assert mounted_under(factory.mounts_dir) == []
        assert list(factory.mounts_dir.iterdir()) == []
        assert images(factory) == []
        assert loop_backing(volume.device).exists()  # the open file still holds it
    finally:
        os.close(held)
    assert not loop_backing(volume.device).exists()
