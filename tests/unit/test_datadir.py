"""One process runs jobs from a data directory: a second one is refused, saying which holds it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from interpreter.datadir import DataDirLock
from interpreter.errors import ConfigurationError


def test_a_second_holder_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    first, second = DataDirLock(tmp_path / "data"), DataDirLock(tmp_path / "data")
    first.acquire()
    try:
        with pytest.raises(ConfigurationError) as refused:
            second.acquire()
        assert f"another process (pid {os.getpid()}) runs jobs from {tmp_path / 'data'}" in (
            refused.value.message
        )
        assert "its own INTERPRETER_DATA_DIR" in refused.value.message
    finally:
        first.release()
    second.acquire()  # free again
    second.release()


def test_the_lock_is_not_inherited_by_the_jobs(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path)
    lock.acquire()
    try:
        fd = lock._fd
        assert fd is not None and not os.get_inheritable(fd)
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # closed at a job's exec
    finally:
        lock.release()
