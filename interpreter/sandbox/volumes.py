"""A job's workspace on a volume of its own, so the kernel enforces its disk limit.

While a job runs, its working directory (the *view*) is an overlay: the lower layer is the job's
directory on the host, opened by the caller and named to the kernel by descriptor; the upper
layer lives on a small ext4 filesystem of its own (a sparse image file on a loop device) sized to
the job's limit, with a capped inode count. Writing past the limit or creating files past the cap
fails with ENOSPC, whatever the path length, however many files, open or unlinked. After the job
the caller applies the upper layer to the lower directory, then the volume is unmounted and its
image deleted (the loop device frees itself at the last unmount).

A few volumes of the default size are kept ready by a thread, already attached and mounted at
``<mounts dir>/spare-<hex>.vol`` with their ``upper`` and ``work`` made, so that a job's path only
hands ``upper`` to the job's uid and mounts the overlay; other sizes are made when asked for.

    check_available(volumes_dir, mounts_dir)       ConfigurationError saying how to fix it
    VolumeFactory(volumes_dir, mounts_dir, size)   blank volumes, a few mounted ahead by a thread
        .volume(size) -> JobVolume
    JobVolume.mount(lower_fd, uid, gid, name)      -> the view, <mounts dir>/<name>
        .usage() / .used_bytes() / .used_inodes() / .upper_path / .unmount_view() / .discard()
    recover(mounts_dir, volumes_dir)               what a dead server left mounted or on disk

Why one module of ~800 lines: a job's volume is one lifecycle (template, spare, mount, measure,
unmount, recover after a crash) over one set of kernel objects; its parts share their invariants.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from interpreter.errors import ConfigurationError, ExecutionError
from interpreter.sandbox import mounts
from interpreter.sandbox.uids import secure_directory

__all__ = ["JobVolume", "VolumeFactory", "VolumeSize", "check_available", "recover"]

logger = logging.getLogger(__name__)

BLOCK_SIZE = 4096
INODE_SIZE = 256  # room for nanosecond timestamps
BLOCKS_PER_GROUP = BLOCK_SIZE * 8  # one block bitmap block per group
MAX_INODES_PER_GROUP = BLOCK_SIZE * 8  # one inode bitmap block per group
FS_INODES = 16  # inodes 1-11 (reserved, lost+found), upper, work, work/work, the shared whiteout
EMPTY_BLOCKS = 16  # root, lost+found (4), upper, work, work/work, and a few to spare
MARGIN_DIVISOR = 512  # 0.2 % more, for extent blocks and directories on a full volume
DESCRIPTOR_SIZE = 64  # a group descriptor, with the 64bit feature
RESERVED_CLUSTERS_MAX = 4096  # ext4 keeps min(2 %, 4096 blocks) back for its own metadata

MKFS_SEARCH_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
MKFS_TIMEOUT_S = 60.0
MAX_TEMPLATES = 16  # blank images kept to copy from, one per (limit, inodes) asked recently
SPARE_RETRY_S = 5.0  # after a spare failed (a full disk, no free loop device): not a busy loop
EXT4_OPTIONS = "noinit_itable,nobarrier"  # nothing here outlives the job: no flush is worth it
# Turned off so the upper layer holds plain files and directories only: no redirects, no
# metadata-only copies, no index (required: see _mount_overlay).
OVERLAY_OPTIONS = ("redirect_dir=off", "index=off", "xino=off", "metacopy=off")

LOOP_CONTROL = "/dev/loop-control"
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_CONFIGURE = 0x4C0A  # Linux 5.8
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_AUTOCLEAR = 4
LOOP_INFO64_SIZE = 232
LOOP_INFO64_FLAGS_AT = 52
LOOP_INFO64_NAME_AT = 56
LO_NAME_SIZE = 64
LOOP_ATTEMPTS = 16  # another process may take the free device first

MS_NOSUID, MS_NODEV, MS_SILENT = mounts.MS_NOSUID, mounts.MS_NODEV, mounts.MS_SILENT
CAP_SYS_ADMIN = 21

NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")  # no '.': "<name>.vol" can never be another's view


@dataclass(slots=True)
class _Kernel:
    """What this kernel turned out to accept (learnt on first use)."""

    loop_configure: bool = True


_kernel = _Kernel()


@dataclass(frozen=True, slots=True)
class VolumeSize:
    """What a job may store: ``limit_bytes`` of data and ``inodes`` files and directories."""

    limit_bytes: int
    inodes: int

    def __post_init__(self) -> None:
        if self.limit_bytes < BLOCK_SIZE or self.inodes < 1:
            raise ValueError(f"a volume needs a limit of at least 4 KiB and 1 inode: {self}")
        _image_blocks(self.limit_bytes, self.fs_inodes)  # ValueError: more inodes than can be

    @property
    def fs_inodes(self) -> int:
        """The filesystem's inode count (mkfs rounds it up to whole inode table blocks)."""
        return self.inodes + FS_INODES

    @property
    def image_bytes(self) -> int:
        """The image's size: the limit plus what ext4 keeps for itself, so that at least
        ``limit_bytes`` stay available after mount (see ``_image_blocks``)."""
        return _image_blocks(self.limit_bytes, self.fs_inodes) * BLOCK_SIZE


@functools.lru_cache(maxsize=64)
def _image_blocks(limit_bytes: int, fs_inodes: int) -> int:
    """Blocks of an image that leaves the limit available (plus a margin) on the mounted volume:
    the limit and the inode tables to start with, grown by the shortfall of
    ``_available_blocks`` until it covers it."""
    limit = -(-limit_bytes // BLOCK_SIZE)
    wanted = limit + limit // MARGIN_DIVISOR + EMPTY_BLOCKS
    total = wanted + -(-fs_inodes * INODE_SIZE // BLOCK_SIZE)
    while (available := _available_blocks(total, fs_inodes)) < wanted:
        total += wanted - available
    return total


def _available_blocks(total: int, fs_inodes: int) -> int:
    """What ext4 leaves free on an image of ``total`` blocks, as mkfs lays it out: all blocks
    but each group's two bitmaps and inode table, the superblock and descriptor copies, and the
    clusters ext4 keeps back (2 %, at most 4096 blocks)."""
    blocks, groups, itable = _layout(total, fs_inodes)
    descriptors = -(-groups * DESCRIPTOR_SIZE // BLOCK_SIZE)
    copies = sum(_has_superblock(group) for group in range(groups))
    overhead = groups * (2 + itable) + copies * (1 + descriptors)
    return blocks - overhead - min(blocks // 50, RESERVED_CLUSTERS_MAX)


def _layout(total: int, fs_inodes: int) -> tuple[int, int, int]:
    """(blocks, groups, inode table blocks per group) of mkfs on ``total`` blocks: fewer blocks
    per group while a group would hold more inodes than its bitmap can; a last group too small
    for its own tables (and 50 blocks) left out."""
    per_group, blocks = BLOCKS_PER_GROUP, total
    least_groups = -(-fs_inodes // MAX_INODES_PER_GROUP)
    while True:
        groups = -(-blocks // per_group)
        inodes = -(-fs_inodes // groups)
        if inodes > MAX_INODES_PER_GROUP:  # mkfs takes 8 blocks off a group at a time: jump
            fitting = (-(-total // (least_groups - 1)) - 1) // 8 * 8
            per_group, blocks = min(per_group - 8, fitting), total
            if per_group < 256:
                raise ValueError(f"{fs_inodes} inodes do not fit {total} blocks")
            continue
        itable = -(-inodes * INODE_SIZE // BLOCK_SIZE)
        tables = 2 + itable
        if _has_superblock(groups - 1):
            tables += 1 + -(-groups * DESCRIPTOR_SIZE // BLOCK_SIZE)
        rest = blocks % per_group
        if groups > 1 and rest and rest < tables + 50:
            blocks -= rest
            continue
        return blocks, groups, itable


def _has_superblock(group: int) -> bool:
    """Groups 0, 1 and the powers of 3, 5 and 7 hold a superblock copy (sparse_super)."""
    if group < 2:
        return True
    for base in (3, 5, 7):
        power = base
        while power < group:
            power *= base
        if power == group:
            return True
    return False


# -- kernel calls ---------------------------------------------------------------------------
def _attach_loop(image: Path) -> tuple[str, int]:
    """Attach ``image`` to a free loop device that frees itself at its last close (autoclear).

    Returns the device and an open descriptor of it: the caller closes it once the device is
    mounted (closing it before that frees the device again)."""
    file_fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(LOOP_ATTEMPTS):
            control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
            try:
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
            finally:
                os.close(control)
            device = f"/dev/loop{number}"
            loop_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            try:
                _configure_loop(loop_fd, file_fd, image)
            except OSError as exc:
                os.close(loop_fd)
                if exc.errno == errno.EBUSY:
                    continue
                raise
            return device, loop_fd
        raise OSError(errno.EBUSY, f"no free loop device after {LOOP_ATTEMPTS} attempts")
    finally:
        os.close(file_fd)


def _configure_loop(loop_fd: int, file_fd: int, image: Path) -> None:
    info = bytearray(LOOP_INFO64_SIZE)
    struct.pack_into("I", info, LOOP_INFO64_FLAGS_AT, LO_FLAGS_AUTOCLEAR)
    name = os.fsencode(image)[: LO_NAME_SIZE - 1]
    info[LOOP_INFO64_NAME_AT : LOOP_INFO64_NAME_AT + len(name)] = name
    if _kernel.loop_configure:
        config = struct.pack("II", file_fd, 0) + bytes(info) + bytes(64)
        try:
            fcntl.ioctl(loop_fd, LOOP_CONFIGURE, config)
            return
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTTY):
                raise
            _kernel.loop_configure = False  # before Linux 5.8: two calls instead
    fcntl.ioctl(loop_fd, LOOP_SET_FD, file_fd)
    try:
        fcntl.ioctl(loop_fd, LOOP_SET_STATUS64, bytes(info))
    except OSError:
        with contextlib.suppress(OSError):
            fcntl.ioctl(loop_fd, LOOP_CLR_FD, 0)
        raise


def _mount_blank(image: Path, point: Path) -> str:
    """Mount the blank ext4 ``image`` at ``point`` (made here, 0700) and make its ``upper`` and
    ``work`` (root's, 0700); returns the loop device. Undoes what it did when it fails."""
    os.mkdir(point, 0o700)
    mounted = False
    try:
        device, loop_fd = _attach_loop(image)
        try:
            flags = MS_NOSUID | MS_NODEV | MS_SILENT
            mounts.mount(device, str(point), "ext4", flags, EXT4_OPTIONS)
        finally:
            os.close(loop_fd)
        mounted = True
        os.chmod(point, 0o700)
        os.mkdir(point / "upper", 0o700)
        os.mkdir(point / "work", 0o700)
    except BaseException:
        if mounted:
            with contextlib.suppress(OSError):
                mounts.unmount(point)
        _remove_point(point)
        raise
    return device


@dataclass(frozen=True, slots=True)
class _Spare:
    """A blank volume mounted ahead: ``image`` on ``device``, mounted at ``point`` with its
    ``upper`` and ``work`` made."""

    image: Path
    point: Path
    device: str

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            mounts.unmount(self.point)
        _remove_point(self.point)
        self.image.unlink(missing_ok=True)


def _mount_overlay(view: Path, lower_fd: int, upper_fd: int, work_fd: int) -> None:
    """Every path reaches the kernel as ``/proc/self/fd/<n>``: digits only, so no ',' or ':'
    of a directory's name can ever reach the option string. Every option of
    ``OVERLAY_OPTIONS`` is required (Linux 4.19 and later know them all): without them the
    upper layer could hold redirects or metadata-only copies, which applying it to the lower
    directory does not understand."""
    layers = (
        f"lowerdir=/proc/self/fd/{lower_fd},upperdir=/proc/self/fd/{upper_fd},"
        f"workdir=/proc/self/fd/{work_fd}"
    )
    data = ",".join((layers, *OVERLAY_OPTIONS))
    mounts.mount("overlay", str(view), "overlay", MS_NOSUID | MS_NODEV, data)


def _mkfs(mkfs: str, image: Path, size: VolumeSize) -> None:
    """A blank ext4 image of ``size`` at ``image`` (made aside, then renamed into place)."""
    partial = image.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size.image_bytes)  # sparse: blocks are allocated as they are written
    finally:
        os.close(fd)
    options = (
        f"-q -F -b {BLOCK_SIZE} -m 0 -N {size.fs_inodes} -I {INODE_SIZE} "
        "-O ^has_journal,^resize_inode -E lazy_itable_init=1,nodiscard"
    )
    argv = [mkfs, *options.split(), str(partial)]
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=MKFS_TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        partial.unlink(missing_ok=True)
        detail = exc.stderr.decode(errors="replace").strip()
        raise OSError(errno.EIO, f"mkfs.ext4 failed ({exc.returncode}): {detail}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        partial.unlink(missing_ok=True)
        raise OSError(errno.EIO, f"mkfs.ext4 failed: {exc}") from exc
    os.rename(partial, image)


def _sparse_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` (made aside, then renamed into place), its holes kept."""
    partial = target.with_suffix(".tmp")
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            end = os.fstat(src).st_size
            os.ftruncate(dst, end)
            offset = 0
            while offset < end:
                try:
                    data = os.lseek(src, offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole from here on
                        break
                    raise
                hole = os.lseek(src, data, os.SEEK_HOLE)
                while data < hole:
                    copied = os.copy_file_range(src, dst, hole - data, data, data)
                    if copied == 0:
                        raise OSError(errno.EIO, f"{source} ended early")
                    data += copied
                offset = hole
        except BaseException:
            os.close(dst)
            partial.unlink(missing_ok=True)
            raise
        os.close(dst)
    finally:
        os.close(src)
    os.rename(partial, target)


def _check_searchable(path: Path) -> None:
    """Every directory above ``path`` must be searchable by the jobs' uids."""
    for directory in path.parents:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            raise ConfigurationError(
                f"{directory} must be searchable by the jobs' uids (bubblewrap runs as them and "
                f"looks up {path} through it): chmod o+x {directory}, or choose a directory for "
                "the sandbox's mounts whose parents are"
            )


# -- the factory ----------------------------------------------------------------------------
class VolumeFactory:
    """Blank images under ``volumes_dir`` (root-only, 0700); volumes mount under ``mounts_dir``.

    ``spares`` volumes of ``default`` are made and mounted ahead by a thread once ``start()``
    ran (each holds a loop device until taken or closed), so making the image, attaching it,
    mounting the ext4 and its first directories are off a job's path; other sizes, and the
    default when no spare is ready, are made when asked for. Thread-safe.
    """

    def __init__(
        self, volumes_dir: Path, mounts_dir: Path, default: VolumeSize, spares: int = 2
    ) -> None:
        mkfs = shutil.which("mkfs.ext4", path=MKFS_SEARCH_PATH)
        if mkfs is None:
            raise ConfigurationError(_NO_MKFS)
        self.mkfs = mkfs
        self.volumes_dir = volumes_dir
        self.mounts_dir = mounts_dir
        self.default = default
        self.spares = spares
        try:
            secure_directory(volumes_dir, 0o700)
            secure_directory(mounts_dir, 0o711)
            _check_searchable(mounts_dir)
        except OSError as exc:
            raise ConfigurationError(f"workspace volumes cannot use {exc.filename}: {exc}") from exc
        self._ready: deque[_Spare] = deque()
        self._templates: dict[VolumeSize, Path] = {}
        self._templates_lock = threading.Lock()
        self._changed = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start making and mounting spare volumes in the background."""
        with self._changed:
            if self._thread is None and not self._closed and self.spares > 0:
                self._thread = threading.Thread(target=self._refill, name="volume-spares")
                self._thread.daemon = True
                self._thread.start()

    def volume(self, size: VolumeSize | None = None) -> JobVolume:
        """A volume of ``size`` (the default when None), not mounted yet."""
        return JobVolume(self, size or self.default)

    def take(self, size: VolumeSize) -> _Spare | None:
        """A mounted blank volume of ``size``, now the caller's to discard; None when there is
        none ready (another size than the default, or the spares all taken)."""
        if size != self.default:
            return None
        with self._changed:
            if not self._ready:
                return None
            spare = self._ready.popleft()
            self._changed.notify_all()
            return spare

    def image(self, size: VolumeSize) -> Path:
        """A new blank image of ``size``, not mounted, now the caller's to delete."""
        image = self._new_path()
        self._blank(image, size)
        return image

    def close(self) -> None:
        """Stop the thread; unmount the spare volumes and delete their images."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._changed:
            spares = list(self._ready)
            self._ready.clear()
        for spare in spares:
            spare.discard()
        with self._templates_lock:
            while self._templates:
                self._templates.popitem()[1].unlink(missing_ok=True)

    def _blank(self, image: Path, size: VolumeSize) -> None:
        """A blank image of ``size`` at ``image``: a sparse copy of that size's template. mkfs
        runs once per size (4 ms); copying the template's few hundred KiB costs about 0.1 ms
        (ext4 mounts several filesystems with one UUID without complaint)."""
        with self._templates_lock:
            template = self._templates.pop(size, None)
            if template is None or not template.exists():
                template = self.volumes_dir / f"template-{size.limit_bytes}-{size.inodes}.img"
                template.unlink(missing_ok=True)
                _mkfs(self.mkfs, template, size)
            self._templates[size] = template  # the most recently used last
            while len(self._templates) > MAX_TEMPLATES:
                oldest = next(iter(self._templates))
                self._templates.pop(oldest).unlink(missing_ok=True)
            _sparse_copy(template, image)

    def _new_path(self) -> Path:
        return self.volumes_dir / f"{uuid.uuid4().hex}.img"

    def _refill(self) -> None:
        while True:
            with self._changed:
                while not self._closed and len(self._ready) >= self.spares:
                    self._changed.wait()
                if self._closed:
                    return
            try:
                spare = self._mount_spare()
            except OSError as exc:
                logger.warning("spare workspace volume not made: %s", exc)
                with self._changed:  # a full disk must not spin this loop, nor a job's take
                    self._changed.wait_for(lambda: self._closed, timeout=SPARE_RETRY_S)
                continue
            with self._changed:
                if not self._closed:
                    self._ready.append(spare)
                    continue
            spare.discard()
            return

    def _mount_spare(self) -> _Spare:
        image = self._new_path()
        self._blank(image, self.default)
        point = self.mounts_dir / f"spare-{image.stem}.vol"
        try:
            device = _mount_blank(image, point)
        except BaseException:
            image.unlink(missing_ok=True)
            raise
        return _Spare(image, point, device)


# -- one job's volume -----------------------------------------------------------------------
class JobVolume:
    """One job's volume: ``mount()`` it, run the job in the view, apply ``upper_path`` to the
    lower directory, ``discard()`` it. Usable as a context manager (discarded at exit)."""

    def __init__(self, factory: VolumeFactory, size: VolumeSize) -> None:
        self.factory = factory
        self.size = size
        self.device: str | None = None  # /dev/loopN while mounted
        self._lock = threading.Lock()
        self._image: Path | None = None
        self._volume: Path | None = None  # the ext4's: <mounts dir>/<name>.vol or spare-<hex>.vol
        self._view: Path | None = None  # the overlay's, <mounts dir>/<name>
        self._view_mounted = False
        self._volume_mounted = False
        self._empty_blocks = 0
        self._empty_inodes = 0
        self._last = (0, 0)  # (bytes, inodes) when last seen mounted
        self._discarded = False

    @property
    def limit_bytes(self) -> int:
        return self.size.limit_bytes

    @property
    def view_path(self) -> Path:
        """The job's working directory, owned by its uid (0700)."""
        if self._view is None:
            raise ExecutionError("the volume is not mounted")
        return self._view

    @property
    def upper_path(self) -> Path:
        """What the job changed: files it wrote, whiteouts (0/0 character devices) for what it
        deleted, directories marked opaque (``trusted.overlay.opaque``) where it replaced one."""
        if self._volume is None:
            raise ExecutionError("the volume is not mounted")
        return self._volume / "upper"

    def upper_fd(self) -> int:
        """A new descriptor of ``upper_path`` (O_DIRECTORY); the caller closes it before
        ``discard()``, which otherwise finds the volume busy and detaches it lazily."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(self.upper_path, flags)

    def mount(self, lower_fd: int, uid: int, gid: int, name: str) -> Path:
        """Mount the view ``<mounts dir>/<name>`` over the directory open as ``lower_fd``;
        its root is owned by ``uid``:``gid``, mode 0700. ``ExecutionError`` when it cannot."""
        if not NAME.fullmatch(name):
            raise ExecutionError(f"volume name {name!r} must match {NAME.pattern}")
        try:
            is_directory = stat.S_ISDIR(os.fstat(lower_fd).st_mode)
        except OSError as exc:
            raise ExecutionError(f"the lower layer of volume {name}: {exc}") from exc
        if not is_directory:
            raise ExecutionError(f"the lower layer of volume {name} must be a directory")
        with self._lock:
            if self._discarded or self._image is not None:
                raise ExecutionError("a volume is mounted once")
            try:
                self._mount(lower_fd, uid, gid, name)
            except OSError as exc:
                self._discard()
                logger.error("workspace volume %s: %s", name, exc)
                why = exc.strerror or "see the server's log"
                raise ExecutionError(f"cannot make the job's workspace volume: {why}") from exc
        return self.view_path

    def _mount(self, lower_fd: int, uid: int, gid: int, name: str) -> None:
        points = self.factory.mounts_dir
        spare = self.factory.take(self.size)
        if spare is not None:
            self._image, volume, device = spare.image, spare.point, spare.device
        else:
            self._image = self.factory.image(self.size)
            volume = points / f"{name}.vol"
            device = _mount_blank(self._image, volume)
        self._volume, self.device, self._volume_mounted = volume, device, True
        upper, work, view = volume / "upper", volume / "work", points / name
        os.chown(upper, uid, gid)
        os.chmod(upper, 0o700)
        os.mkdir(view, 0o700)
        self._view = view
        flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        upper_fd = os.open(upper, flags)
        try:
            work_fd = os.open(work, flags)
            try:
                _mount_overlay(view, lower_fd, upper_fd, work_fd)
            finally:
                os.close(work_fd)
        finally:
            os.close(upper_fd)
        self._view_mounted = True
        empty = os.statvfs(volume)
        self._empty_blocks = empty.f_blocks - empty.f_bfree
        self._empty_inodes = empty.f_files - empty.f_ffree

    def used_bytes(self) -> int:
        """Bytes the job's files take on the volume (data, directories, extent blocks)."""
        return self._usage()[0]

    def used_inodes(self) -> int:
        """Files, directories and links the job made on the volume."""
        return self._usage()[1]

    def usage(self) -> tuple[int, int]:
        """(bytes, inodes) the job has used: one statvfs for both."""
        return self._usage()

    def _usage(self) -> tuple[int, int]:
        with self._lock:
            self._sample()
            return self._last

    def _sample(self) -> None:
        if self._volume_mounted and self._volume is not None:
            st = os.statvfs(self._volume)
            used = (st.f_blocks - st.f_bfree - self._empty_blocks) * st.f_frsize
            self._last = (max(used, 0), max(st.f_files - st.f_ffree - self._empty_inodes, 0))

    def unmount_view(self) -> None:
        """Unmount the overlay only (before the upper is applied to the lower directory: the
        kernel does not allow a lower layer to change under a mounted overlay). Idempotent."""
        with self._lock:
            self._unmount_view()

    def _unmount_view(self) -> None:
        if self._view is not None:
            if self._view_mounted:
                mounts.unmount(self._view)
                self._view_mounted = False
            _remove_point(self._view)

    def discard(self) -> None:
        """Unmount the overlay and the ext4 and delete the image. Idempotent, from any thread."""
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        if self._discarded:
            return
        self._discarded = True
        with contextlib.suppress(OSError):
            self._sample()  # the last figures stay readable
        self._unmount_view()
        if self._volume is not None:
            if self._volume_mounted:
                mounts.unmount(self._volume)
                self._volume_mounted = False
            _remove_point(self._volume)
        if self._image is not None:
            self._image.unlink(missing_ok=True)

    def __enter__(self) -> JobVolume:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()


def _remove_point(point: Path) -> None:
    try:
        os.rmdir(point)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("volume mount point %s left in place: %s", point, exc)


# -- start-up -------------------------------------------------------------------------------
def recover(mounts_dir: Path, volumes_dir: Path) -> int:
    """Unmount what a dead server left under ``mounts_dir`` (overlays first), free loop devices
    still backed by its images, delete the images. Returns how many things were cleaned."""
    cleaned = 0
    table = mounts.mount_table(mounts_dir)
    points = sorted(table, key=lambda p: (p[1] != "overlay", -len(p[0].parts)))
    for point, _fstype in points:
        cleaned += mounts.unmount(point)
    if mounts_dir.is_dir():
        for entry in mounts_dir.iterdir():
            with contextlib.suppress(OSError):
                entry.rmdir()
    cleaned += _detach_loops(volumes_dir)
    if volumes_dir.is_dir():
        for entry in volumes_dir.iterdir():  # images, and lower directories of trials
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            cleaned += 1
    if cleaned:
        logger.info("cleaned %d workspace volume leftovers of a previous server", cleaned)
    return cleaned


def _detach_loops(volumes_dir: Path) -> int:
    """Loop devices still backed by an image under ``volumes_dir`` (one attached without the
    autoclear flag, by a server that died between the two calls of older kernels)."""
    prefix = os.path.realpath(volumes_dir).rstrip("/") + "/"
    detached = 0
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if not backing.read_text().startswith(prefix):
                continue
            fd = os.open(f"/dev/{backing.parent.parent.name}", os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, LOOP_CLR_FD, 0)
                detached += 1
            finally:
                os.close(fd)
    return detached


_NO_MKFS = (
    "workspace volumes need mkfs.ext4, which is not installed "
    "(Debian/Ubuntu: apt-get install e2fsprogs; Fedora/RHEL: dnf install e2fsprogs)"
)


def check_available(volumes_dir: Path, mounts_dir: Path) -> None:
    """``ConfigurationError``, saying how to fix it, unless volumes work here: root with
    CAP_SYS_ADMIN, the loop devices, mkfs.ext4, ext4 and overlay in the kernel, and a trial
    volume made in ``volumes_dir``, mounted in ``mounts_dir``, written to and discarded."""
    if os.geteuid() != 0 or not _has_cap_sys_admin():
        raise ConfigurationError(
            "workspace volumes are mounted by the server: run it as root with CAP_SYS_ADMIN "
            "(in a container: --privileged, or --cap-add SYS_ADMIN with the loop devices)"
        )
    try:
        os.close(os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        raise ConfigurationError(
            f"workspace volumes need loop devices, but {LOOP_CONTROL} cannot be opened "
            f"({exc.strerror}): on a host, load the loop module (modprobe loop); in a container, "
            "give it the loop devices (--privileged, or --device /dev/loop-control plus "
            "--device /dev/loop0 ... /dev/loopN for as many jobs as run at once)"
        ) from exc
    if shutil.which("mkfs.ext4", path=MKFS_SEARCH_PATH) is None:
        raise ConfigurationError(_NO_MKFS)
    for fstype in ("ext4", "overlay"):
        if not _filesystem_known(fstype):
            raise ConfigurationError(
                f"workspace volumes need the {fstype} filesystem, which this kernel neither has "
                f"nor can load: load it on the host (modprobe {fstype}) or use a kernel with it"
            )
    factory = VolumeFactory(volumes_dir, mounts_dir, VolumeSize(2**20, 64), spares=0)
    with tempfile.TemporaryDirectory(prefix="trial-", dir=volumes_dir) as lower:
        lower_fd = os.open(lower, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with factory.volume() as volume:
                view = volume.mount(lower_fd, 0, 0, f"trial-{uuid.uuid4().hex}")
                (view / "probe").write_bytes(b"x" * BLOCK_SIZE)
                if volume.used_bytes() < BLOCK_SIZE:
                    raise ExecutionError("a file written to the view did not land on the volume")
        except ExecutionError as exc:
            raise ConfigurationError(
                f"a trial workspace volume failed: {exc.message} (the kernel log may say more)"
            ) from exc
        finally:
            os.close(lower_fd)


def _has_cap_sys_admin() -> bool:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    return False


def _filesystem_known(fstype: str) -> bool:
    """In /proc/filesystems, or a module the kernel loads on the first mount."""
    with open("/proc/filesystems") as handle:
        if any(line.split()[-1:] == [fstype] for line in handle):
            return True
    release = os.uname().release
    for index in ("modules.dep", "modules.builtin"):
        with contextlib.suppress(OSError), open(f"/lib/modules/{release}/{index}") as handle:
            if any(f"/{fstype}.ko" in line.split(":")[0] for line in handle):
                return True
    return False
