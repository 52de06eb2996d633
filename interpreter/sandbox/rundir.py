"""The sandbox's own directory on the host: ``<run dir>/<instance>``, root-owned, searchable.

bubblewrap runs as the job's unprivileged uid, so every path it binds must be searchable by
that uid all the way down. Nothing of the data directory is (it stays 0700); instead the server
mounts what jobs need under a directory of its own, one per data directory (``<instance>``):

- ``etc/``: the sandbox's ``/etc``, copies of a few public files;
- ``prefix/<n>``: read-only binds of interpreters installed outside ``/usr`` (a pyenv under
  ``/root``, ``/opt/node``), bound by descriptor;
- ``mnt/<job>``: each running job's working directory while it runs (``volumes.py``: an
  overlay over the directory, opened by descriptor, on a capped filesystem of the job's own).

``mnt`` is a private mount point, so job mounts propagate to no other mount namespace. The
process that runs jobs holds ``<instance>/lock`` (an flock the kernel drops when it dies); at
start whatever a dead predecessor left mounted there is detached, and so is every instance whose
lock nobody holds any more: a server that died leaves nothing mounted for long.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from interpreter import tree
from interpreter.errors import ConfigurationError
from interpreter.sandbox import mounts
from interpreter.sandbox.uids import secure_directory

__all__ = ["RunDir"]

LOCK_ATTEMPTS = 50
LOCK_RETRY_S = 0.02

logger = logging.getLogger(__name__)


class RunDir:
    def __init__(self, run_dir: Path, data_dir: Path) -> None:
        self.data_dir = Path(os.path.realpath(data_dir))
        instance = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:16]
        self.root = run_dir / instance
        self.etc = self.root / "etc"
        self.prefixes = self.root / "prefix"
        self.mounts = self.root / "mnt"
        self._lock_fd: int | None = None

    def setup(self) -> None:
        """Create the directories, take this instance's lock, and detach what a previous
        process left mounted here or in instances nobody holds any more."""
        secure_directory(self.root.parent, 0o711)
        self._take_lock()
        self._sweep_orphans()
        for directory in (self.prefixes, self.mounts):
            secure_directory(directory, 0o711)
        self.recover()
        mounts.make_private(self.mounts)

    def _take_lock(self) -> None:
        holder = "?"
        for _ in range(LOCK_ATTEMPTS):
            try:
                secure_directory(self.root, 0o711)
                fd = os.open(
                    self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
                )
            except FileNotFoundError:  # another process swept the stale instance meanwhile
                time.sleep(LOCK_RETRY_S)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                time.sleep(LOCK_RETRY_S)  # a process sweeping stale instances holds it briefly
                continue
            if os.fstat(fd).st_nlink == 0:  # swept away while we waited: make it anew
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._lock_fd = fd
            return
        raise ConfigurationError(
            f"another process (pid {holder}) runs jobs from {self.data_dir}: give each server "
            "and worker its own INTERPRETER_DATA_DIR"
        )

    def recover(self) -> None:
        _detach(self.root)

    def _sweep_orphans(self) -> None:
        """Detach and remove the instances no live process holds (their servers are gone)."""
        for entry in self.root.parent.iterdir():
            if entry == self.root or not (entry / "lock").is_file():
                continue
            try:
                fd = os.open(entry / "lock", os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _detach(entry)
                if mounts.mounted_under(entry):
                    continue  # never delete through a mount that would not go
                tree.remove_path(entry)
            except BlockingIOError:
                continue  # in use
            except OSError as exc:
                logger.warning("sandbox run directory %s not swept: %s", entry.name, exc)
            finally:
                os.close(fd)

    def bind_prefixes(self, prefixes: Iterable[str]) -> list[tuple[str, str]]:
        """Bind each install prefix read-only under ``prefix/``: (where bwrap finds it, where
        the job sees it)."""
        pairs: list[tuple[str, str]] = []
        for index, prefix in enumerate(prefixes):
            point = self.prefixes / str(index)
            point.mkdir(mode=0o711, exist_ok=True)
            fd = os.open(prefix, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                mounts.bind_fd(fd, point, read_only=True)
            finally:
                os.close(fd)
            pairs.append((str(point), prefix))
        return pairs

    def close(self) -> None:
        """Detach the prefixes, whatever a job left mounted, and ``mnt`` itself."""
        self.recover()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _detach(root: Path) -> None:
    """Unmount everything under ``root`` (deepest first) and remove the empty mount points."""
    for point in mounts.mounted_under(root):
        mounts.unmount(point)
    for directory in (root / "prefix", root / "mnt"):
        if not directory.is_dir():
            continue
        for entry in list(directory.iterdir()):
            with contextlib.suppress(OSError):
                entry.rmdir()
