"""mount(2) and umount2(2) for the server's own mounts under its run directory, and what
``/proc/self/mountinfo`` says is mounted there.

Sources a job could race are given by descriptor (``/proc/self/fd/N``, which the kernel follows
to that very directory): the read-only binds of interpreters' install prefixes (``bind_fd``)
and the layers of each job's overlay (``volumes.py``).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
from pathlib import Path

__all__ = [
    "bind_fd",
    "is_mount_point",
    "make_private",
    "mount",
    "mount_table",
    "mounted_under",
    "unmount",
]

logger = logging.getLogger(__name__)

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# The C library already loaded in this process (find_library would run ldconfig at import)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _check(result: int, what: str, path: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}", path)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    """mount(2); ``OSError`` (errno set) when the kernel refuses."""
    _check(
        _libc.mount(
            source.encode() if source is not None else None,
            os.fsencode(target),
            fstype.encode() if fstype is not None else None,
            flags,
            data.encode() if data else None,
        ),
        "mount",
        target,
    )


def bind_fd(fd: int, target: Path, read_only: bool = False) -> None:
    """Bind the directory open as ``fd`` onto ``target`` (nosuid, nodev)."""
    mount(f"/proc/self/fd/{fd}", str(target), None, MS_BIND)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0)
    try:
        mount(None, str(target), None, flags)
    except OSError:
        unmount(target)
        raise


def make_private(directory: Path) -> None:
    """Make ``directory`` a mount point of its own whose mounts propagate nowhere (a shared
    ``/run`` would otherwise copy every job's mount into its peers)."""
    if not is_mount_point(directory):
        mount(str(directory), str(directory), None, MS_BIND)
    mount(None, str(directory), None, MS_PRIVATE)


def unmount(target: Path) -> bool:
    """Unmount ``target``, detaching it lazily when it is busy (and saying so). False when
    nothing was mounted there."""
    if _libc.umount2(os.fsencode(target), UMOUNT_NOFOLLOW) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
        return False
    logger.warning("mount %s: %s; detaching it lazily", target, os.strerror(code))
    if _libc.umount2(os.fsencode(target), UMOUNT_NOFOLLOW | MNT_DETACH) != 0:
        code = ctypes.get_errno()
        logger.error("mount %s left in place: %s", target, os.strerror(code))
    return True


def mount_table(directory: Path) -> list[tuple[Path, str]]:
    """(mount point, filesystem type) of each mount strictly below ``directory``, deepest
    first (the order to unmount them in)."""
    prefix = os.path.realpath(directory).rstrip("/") + "/"
    found: list[tuple[Path, str]] = []
    try:
        with open("/proc/self/mountinfo") as handle:
            for line in handle:
                fields = line.split()
                point = _unescape(fields[4])
                if point.startswith(prefix):
                    found.append((Path(point), fields[fields.index("-") + 1]))
    except OSError:
        return []
    return sorted(found, key=lambda entry: len(entry[0].parts), reverse=True)


def mounted_under(directory: Path) -> list[Path]:
    """Mount points strictly below ``directory``, deepest first."""
    return [point for point, _ in mount_table(directory)]


def is_mount_point(directory: Path) -> bool:
    target = os.path.realpath(directory)
    try:
        with open("/proc/self/mountinfo") as handle:
            return any(_unescape(line.split()[4]) == target for line in handle)
    except OSError:
        return False


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
