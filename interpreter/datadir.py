"""One process runs jobs from a data directory.

Its SQLite file, output files and scratch directories are that process's own, and at start it
cleans up after a dead predecessor (kills what its jobs left behind, removes their files): a
second live process on the same directory would take the first one's jobs for leftovers. An
exclusive ``flock`` on ``<data dir>/server.lock`` makes that a clear refusal instead; the kernel
drops it when the process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from interpreter.errors import ConfigurationError

LOCK_NAME = "server.lock"


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: the jobs this process starts must not inherit (and outlive it with) the lock
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigurationError(
                f"another process (pid {holder}) runs jobs from {self.path.parent}: give each "
                "server and worker its own INTERPRETER_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
