"""Host uids for jobs: one per running job, never 0 and never the server's own.

Every server and worker on a machine draws from ``INTERPRETER_SANDBOX_UIDS`` and holds an
``flock`` on ``<run dir>/uids/<uid>`` for as long as a job runs as that uid (the kernel drops the
lock when the holder dies), so two processes never hand out the same uid at once, whatever their
data directories. A uid is given back only once the job's cgroup is empty and removed: no process
of the previous job can still run as it.

"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from interpreter.errors import ConfigurationError, ExecutionError

__all__ = ["UidLease", "UidPool", "secure_directory"]


def secure_directory(path: Path, mode: int) -> None:
    """Make ``path`` a directory of the server's user with ``mode`` (missing parents 0711, so
    that the jobs' uids can search through them); refuse a symlink or a directory someone else
    owns, since the sandbox's locks, mounts and images live there."""
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
            os.chmod(directory, mode if directory == path else 0o711)  # past the umask
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise ConfigurationError(
            f"{path} must be a directory owned by the server's user (uid {os.geteuid()}); it is not"
        )
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


@dataclass(eq=False)
class UidLease:
    """A uid held for one job."""

    uid: int
    _fd: int = field(repr=False)
    _pool: UidPool = field(repr=False)

    def release(self) -> None:
        """Give the uid back (once every process that ran as it is gone); idempotent."""
        self._pool._release(self)


class UidPool:
    """Leases uids of ``[first, last]``, locked machine-wide under ``lock_dir``."""

    def __init__(self, first: int, last: int, lock_dir: Path) -> None:
        if first <= 0 or first <= os.geteuid() <= last:
            raise ConfigurationError(
                f"INTERPRETER_SANDBOX_UIDS {first}-{last} must not hold uid 0 or the server's "
                f"own uid ({os.geteuid()})"
            )
        self.first, self.last = first, last
        self.lock_dir = lock_dir
        secure_directory(lock_dir, 0o700)
        self._lock = threading.Lock()
        self._next = first

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def describe(self) -> str:
        return f"{self.first}-{self.last} (one per running job)"

    def acquire(self) -> UidLease:
        """A free uid; ``ExecutionError`` when every uid of the range is taken."""
        with self._lock:
            return self._take()

    def _take(self) -> UidLease:
        for _ in range(self.size):
            uid = self._next
            self._next = uid + 1 if uid < self.last else self.first
            fd = os.open(
                self.lock_dir / str(uid),
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise ExecutionError(f"cannot lock sandbox uid {uid}: {exc}") from exc
            return UidLease(uid, fd, self)
        raise ExecutionError(
            f"every sandbox uid ({self.first}-{self.last}) is in use on this machine; "
            "widen INTERPRETER_SANDBOX_UIDS"
        )

    def _release(self, lease: UidLease) -> None:
        with self._lock:
            if lease._fd >= 0:
                os.close(lease._fd)
                lease._fd = -1


def hold_shared(lock_dir: Path, uid: int, patience_s: float = 2.0) -> int | None:
    """Hold ``uid`` out of every server's leases on this machine (a shared lock on its lock
    file: servers that share it may all hold it; none leases it meanwhile), waiting up to
    ``patience_s`` for a job that runs as it now. The descriptor to close, or None."""
    fd = os.open(lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    give_up = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() > give_up:
                os.close(fd)
                return None
        time.sleep(0.05)
